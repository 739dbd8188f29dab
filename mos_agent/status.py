"""What the agent reports about itself, as typed data: one :class:`StatusReport` of dataclasses.

Each component fills its own part — :meth:`mos_agent.buffer.Buffer.stats` the buffer,
:class:`mos_agent.sinks.runner.SinkRunner` and :class:`mos_agent.sinks.forward.StoreAndForward` the
sinks, :class:`mos_agent.pipeline.Agent` the devices and the pipeline — and ``Agent.status()``
assembles the report. Everything that shows the status renders this one report: ``/status``
(:meth:`StatusReport.to_dict`, JSON), ``/metrics`` and ``/healthz`` (:mod:`mos_agent.health`),
``mos-agent status`` (which reads the JSON back with :meth:`StatusReport.from_dict`) and the demo.

Adding a field: give it a default in its dataclass. The JSON key is the field name; enums are
written as their value; a report from an agent that does not have the field yet reads as the
default. This module imports nothing else of the agent, so every layer can use it.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar


class DeviceState(enum.StrEnum):
    STARTING = "starting"
    CONNECTING = "connecting"
    RUNNING = "running"
    DEGRADED = "degraded"  # connected, but some tags fail
    DOWN = "down"  # not connected; retrying with backoff
    STOPPED = "stopped"


class SinkState(enum.StrEnum):
    IDLE = "idle"
    SENDING = "sending"  # live batches
    DRAINING = "draining"  # a backlog beside the live data
    RETRYING = "retrying"  # a write failed; the same batch again after backoff
    AUTH_FAILED = "auth_failed"  # credentials refused; retried slowly
    FAILED = "failed"  # the worker itself failed (buffer I/O); restarted after a pause
    STOPPED = "stopped"

    @property
    def delivering(self) -> bool:
        """False while the sink cannot deliver (what ``/healthz`` reports as unhealthy)."""
        return self not in (SinkState.RETRYING, SinkState.AUTH_FAILED, SinkState.FAILED)


@dataclass(slots=True)
class AgentInfo:
    id: str = ""
    site: str = ""
    version: str = ""
    pid: int = 0
    uptime_s: float = 0.0
    ready: bool = False


@dataclass(slots=True)
class SparkplugInStats:
    """An MQTT device reading Sparkplug B edge nodes (``format: sparkplug``)."""

    group_id: str = ""
    edge_node: str = ""  # "+": every edge node of the group
    edge_nodes_online: int = 0  # born and not dead
    births: int = 0  # NBIRTH and DBIRTH messages received
    deaths: int = 0  # NDEATH and DDEATH messages received
    metrics: int = 0  # metrics learnt from births and stored as series
    unmatched_metrics: int = 0  # metric names (from births) that match no pattern: ignored
    unmatched_examples: list[str] = field(default_factory=list)  # the first of those names
    ignored_points: int = 0  # values of unmatched metrics
    rebirth_requests: int = 0  # NCMD Node Control/Rebirth sent
    seq_gaps: int = 0
    unknown_aliases: int = 0  # DATA messages with metrics no birth named
    data_before_birth: int = 0  # DATA messages of a node or device not (or no longer) born
    dropped_points: int = 0  # values that could not be named, so not stored


@dataclass(slots=True)
class DeviceStats:
    name: str = ""
    driver: str = ""
    asset: str = ""  # site/area/line/cell/equipment
    state: DeviceState = DeviceState.STARTING
    last_error: str | None = None
    last_error_time: float | None = None
    errors: dict[str, int] = field(default_factory=dict)  # by kind: timeout, exception, payload…
    overruns: int = 0  # poll cycles that ran past the next tick
    skipped_polls: int = 0  # polls those overruns skipped
    skipped_points: int = 0  # readings the skipped polls would have made
    # asset name → the source's own text, where a name taken at run time (an MQTT topic capture)
    # had to be made an asset name (mos_agent.taxonomy.asset_name_for)
    source_names: dict[str, str] = field(default_factory=dict)
    series: int = 0
    points_read: int = 0
    points_kept: int = 0
    points_bad: int = 0
    points_per_s: float = 0.0
    last_value_time: float | None = None
    sparkplug: SparkplugInStats | None = None  # MQTT devices with format: sparkplug


@dataclass(slots=True)
class PipelineStats:
    committed_points: int = 0
    points_per_s: float = 0.0
    handoff_queue: int = 0
    commit_failures: int = 0


@dataclass(slots=True)
class BufferStats:
    path: str = ""
    points: int = 0
    bytes: int = 0
    rows: int = 0
    max_size: int = 0
    overflow: str = ""
    oldest_age_s: float | None = None
    dropped_points: int = 0
    overflow_episodes: int = 0
    overflowing: bool = False
    dead_letter_rows: int = 0
    dead_letter_points: int = 0
    moved_aside: list[str] = field(default_factory=list)
    disk_free_bytes: int = 0  # free on the state directory's filesystem, at the last append
    disk_total_bytes: int = 0  # that filesystem's size (the status page shows the headroom)
    min_free_space: int = 0  # kept free: below it the disk is the buffer's cap
    disk_full: bool = False  # a disk-full episode is on (the overflow policy applies)
    disk_full_episodes: int = 0
    disk_full_reason: str | None = None


@dataclass(slots=True)
class SinkLag:
    """What a sink has not received yet (from its cursor in the buffer)."""

    points: int = 0
    oldest_ns: int | None = None  # created time of the oldest such row
    live_points: int = 0  # after the live cursor: the latency of fresh data
    live_oldest_ns: int | None = None
    backlog_points: int = 0  # in the backlog range being drained


@dataclass(slots=True)
class MqttSinkStats:
    """The northbound MQTT sink's session (``format: uns|sparkplug``)."""

    format: str = ""
    broker: str = ""  # host:port
    connected: bool = False
    connections: int = 0  # sessions established since start
    messages_published: int = 0
    # sparkplug
    group_id: str | None = None
    edge_node_id: str | None = None
    bd_seq: int | None = None  # of the current (or last) connection
    primary_host_online: bool | None = None  # None: no primary host configured
    births: int = 0  # NBIRTH sequences published (connections and rebirths)
    rebirth_requests: int = 0
    device_deaths: int = 0
    skipped_dead_points: int = 0  # failed reads of devices already declared dead (DDEATH)


@dataclass(slots=True)
class SinkStats:
    name: str = ""
    type: str = ""
    state: SinkState = SinkState.IDLE
    sent_points: int = 0
    sent_batches: int = 0  # buffer batches fully handled
    sent_requests: int = 0  # successful writes (a split batch takes several)
    sent_bytes: int = 0  # request bodies the store accepted, as sent (compressed when gzip is on)
    retried: int = 0
    dead_lettered_points: int = 0
    last_error: str | None = None
    last_error_time: float | None = None
    last_success_time: float | None = None
    lag_points: int = 0
    lag_seconds: float = 0.0
    live_lag_points: int = 0
    live_lag_seconds: float = 0.0
    backlog_points: int = 0
    dropped_points: int = 0  # of this sink's unsent points, by the buffer's overflow policy
    # share: contracts sinks only — readings that came after their window was released, and the
    # windows still open
    late_points: int = 0
    open_windows: int = 0
    mqtt: MqttSinkStats | None = None  # type: mqtt only


@dataclass(slots=True)
class ContractStats:
    """A sharing contract and what it has released (from the audit, so earlier runs count)."""

    id: str = ""
    consumer: str = ""
    sink: str = ""
    status: str = ""  # pending | active | expired
    valid_from: str | None = None  # RFC 3339, UTC
    valid_to: str | None = None
    datasets: list[str] = field(default_factory=list)
    resolution: str = ""  # raw | 1m …
    points_released: int = 0
    last_release: str | None = None


@dataclass(slots=True)
class StoreStats:
    """The buffer and every sink reading from it."""

    buffer: BufferStats = field(default_factory=BufferStats)
    sinks: list[SinkStats] = field(default_factory=list)


@dataclass(slots=True)
class KpiFigures:
    """ISO 22400 KPIs of one equipment for one shift instance, to date or final."""

    shift: str = ""
    start: float = 0.0  # the shift instance's start and end (Unix seconds)
    end: float = 0.0
    at: float = 0.0  # as of this time (the end for a final figure)
    final: bool = False
    kpi: dict[str, float] = field(default_factory=dict)  # oee availability … pq gq sq; ratios only when defined


@dataclass(slots=True)
class KpiStats:
    """The KPIs of one equipment: the running shift to date and the shifts completed."""

    equipment: str = ""
    asset: str = ""  # site/area/line/cell/equipment
    device: str = ""
    current: KpiFigures | None = None
    last_complete: KpiFigures | None = None
    completed: list[KpiFigures] = field(default_factory=list)  # the last complete instance of each shift name


@dataclass(slots=True)
class KpiEngineStats:
    equipment: int = 0
    records_emitted: int = 0
    cpu_seconds: float = 0.0  # the engine's own CPU time (feeding and ticking)


@dataclass(slots=True)
class StatusReport:
    agent: AgentInfo = field(default_factory=AgentInfo)
    devices: list[DeviceStats] = field(default_factory=list)
    pipeline: PipelineStats = field(default_factory=PipelineStats)
    buffer: BufferStats = field(default_factory=BufferStats)
    sinks: list[SinkStats] = field(default_factory=list)
    contracts: list[ContractStats] = field(default_factory=list)
    kpi: list[KpiStats] = field(default_factory=list)
    kpi_engine: KpiEngineStats = field(default_factory=KpiEngineStats)
    time: float = 0.0  # when the report was made (Unix seconds)

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``/status``."""
        return dataclasses.asdict(self, dict_factory=_json_dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StatusReport:
        """A report read back from ``/status`` JSON; keys this version does not know are ignored."""
        return _from_dict(cls, data)

    def problems(self) -> list[str]:
        """Why the agent is unhealthy (empty when healthy): not ready, a device down, a sink not
        delivering, the buffer's disk full."""
        reasons: list[str] = []
        if not self.agent.ready:
            reasons.append("not ready")
        reasons += [f"device {d.name} down: {d.last_error}" for d in self.devices if d.state == DeviceState.DOWN]
        reasons += [f"sink {s.name} {s.state}: {s.last_error}" for s in self.sinks if not s.state.delivering]
        if self.buffer.disk_full:
            reasons.append(f"buffer disk full ({self.buffer.disk_full_reason}): dropping data by the overflow "
                           f"policy {self.buffer.overflow}")
        return reasons


class StatusSource(Protocol):
    """What shows the agent's status needs of it (the health server, the web page)."""

    def status(self) -> StatusReport:
        """A fresh report."""
        ...

    def health(self) -> tuple[bool, list[str]]:
        """Healthy or not, and why not."""
        ...


def _json_dict(items: list[tuple[str, Any]]) -> dict[str, Any]:
    return {key: value.value if isinstance(value, enum.Enum) else value for key, value in items}


T = TypeVar("T")


def _from_dict(cls: type[T], data: dict[str, Any]) -> T:
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            values[f.name] = _convert(hints[f.name], data[f.name])
    return cls(**values)


def _convert(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        return [_convert(item, v) for v in value]
    if origin is dict:
        _, item = typing.get_args(hint)
        return {k: _convert(item, v) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(options[0], value) if len(options) == 1 else value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _from_dict(hint, value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        # a state a newer agent knows and this version does not stays the plain string it was
        return hint(value) if value in hint._value2member_map_ else value
    return value
