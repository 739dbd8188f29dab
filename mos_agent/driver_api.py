"""The one small interface between the core and a protocol driver.

A driver is a class registered under the entry-point group ``mos_agent.drivers``. The core never
imports a protocol library; it only knows this interface:

* ``device_model`` — the pydantic model of the driver's device file (a :class:`DeviceBase`
  subclass with its own ``connection`` and tag models); ``mos-agent validate`` uses it.
* ``run()`` — acquire until cancelled, handing :class:`ReadingBatch` es to ``ctx.emit`` (which
  applies back-pressure: it waits while the buffer stage is full) and reporting its state through
  ``ctx.set_state``. Failed reads are emitted as bad-quality rows, never swallowed.
* ``read_once()`` — connect, read every configured tag once, disconnect (``mos-agent read``).

Rows reference ``ctx.series``: configured tag ``i`` is series ``i``; drivers that discover series
at run time register them with ``ctx.add_series`` first.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mos_agent.batch import ReadingBatch
from mos_agent.config.models import AgentSection, DeviceBase, TagBase
from mos_agent.series import SeriesSpec, SeriesTable, make_asset
from mos_agent.status import DeviceState, SparkplugInStats

__all__ = ["DeviceState", "DeviceStatus", "Driver", "DriverContext", "build_series_table", "raise_if_cancelled",
           "series_spec_for", "tick_grid"]


def raise_if_cancelled() -> None:
    """Python 3.11's ``asyncio.wait_for`` (which pymodbus and asyncua await every answer with)
    returns the answer instead of raising when a cancellation arrives together with it; the request
    to cancel is still recorded on the task. A driver loop calls this once a round and honours it,
    or a busy device could never be stopped."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def tick_grid(now: float, interval: float) -> int:
    """Index of the last tick at or before ``now`` (event loop clock) on the grid of multiples of
    ``interval``. Poll loops count their ticks from it — tick ``k`` is due at ``k * interval`` —
    so every poll of the same interval, whatever its device, is due at the same instant: the
    process wakes once for all of them, and their batches reach the buffer in one commit."""
    return math.floor(now / interval)


@dataclass
class DeviceStatus:
    state: DeviceState = DeviceState.STARTING
    last_error: str | None = None
    last_error_time: float | None = None
    errors: dict[str, int] = field(default_factory=dict)  # by kind: timeout, exception, payload…
    overruns: int = 0  # poll cycles that ran past the next tick
    skipped_polls: int = 0  # ticks those cycles skipped: polls that never happened
    skipped_points: int = 0  # the readings those polls would have made
    # asset name → the source's own text, where a name taken at run time (an MQTT topic capture)
    # had to be made an asset name
    source_names: dict[str, str] = field(default_factory=dict)
    sparkplug: SparkplugInStats | None = None  # set by a driver reading Sparkplug B edge nodes


def device_asset(agent: AgentSection, device: DeviceBase,
                 asset_overrides: dict[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    """The asset path of a device's series, with optional levels filled at run time."""
    levels: dict[str, str | None] = {
        "enterprise": agent.enterprise,
        "site": agent.site,
        "area": device.asset.area,
        "line": device.asset.line,
        "cell": device.asset.cell,
        "equipment": device.name,
    }
    if asset_overrides:
        levels.update(asset_overrides)
    return make_asset(levels)


def series_spec_for(agent: AgentSection, device: DeviceBase, tag: TagBase,
                    asset_overrides: dict[str, str] | None = None, tag_name: str | None = None,
                    asset: tuple[tuple[str, str], ...] | None = None) -> SeriesSpec:
    """The series a configured tag produces, with optional asset levels filled at run time
    (``asset``, when given, is the device's :func:`device_asset`, computed once for all its tags)."""
    return SeriesSpec(
        asset=asset if asset is not None else device_asset(agent, device, asset_overrides),
        tag=tag_name or tag.name,
        category=tag.category,
        kind=tag.effective_kind(),
        stage=device.stage,
        unit=tag.unit,
        data_type=tag.data_type(),
        scale=tag.scale,
        offset=tag.offset,
        deadband=tag.deadband,
        range=tag.range,
    )


def build_series_table(agent: AgentSection, device: DeviceBase) -> SeriesTable:
    table = SeriesTable()
    asset = device_asset(agent, device)
    table.add_many(series_spec_for(agent, device, tag, asset=asset) for tag in device.configured_tags())
    return table


EmitFn = Callable[[ReadingBatch], Awaitable[None]]


class DriverContext:
    """What the core hands a driver: its configuration, series table, emit and status."""

    def __init__(self, agent: AgentSection, device: DeviceBase, emit: EmitFn,
                 series: SeriesTable | None = None, logger: logging.Logger | None = None,
                 time_resolution_ns: int = 1) -> None:
        self.agent = agent
        # the step acquisition times of a series are kept apart by (the sinks' coarsest precision)
        self.time_resolution_ns = time_resolution_ns
        self.device = device
        self.series = series if series is not None else build_series_table(agent, device)
        self.status = DeviceStatus()
        self.log = logger or logging.getLogger(f"mos_agent.device.{device.name}")
        self._emit = emit
        self._error_log_times: dict[str, float] = {}
        # set by the agent when /metrics is on; poll drivers report each request's round trip
        self.read_latency_hook: Callable[[float], None] | None = None

    @property
    def state_dir(self) -> Path:
        return self.agent.state_dir

    def state_path(self, name: str) -> Path:
        """A file of the driver's own that survives restarts: ``<state_dir>/devices/<device>/<name>``
        (the directory is made)."""
        directory = Path(self.agent.state_dir) / "devices" / self.device.name
        directory.mkdir(parents=True, exist_ok=True)
        return directory / name

    async def emit(self, batch: ReadingBatch) -> None:
        """Hand a batch on; waits while the buffer stage is full. When it returns the batch is
        normalised — its timestamps are the ones that will be stored (acquisition times moved
        apart in place) — and queued: it is committed only after the caller next yields to the
        event loop, so what a driver records right after ``emit``, before its next ``await``,
        is recorded before the commit. ``on_committed`` runs after the commit."""
        if len(batch) or batch.on_committed:
            await self._emit(batch)

    def add_series(self, tag: TagBase, asset_overrides: dict[str, str] | None = None,
                   tag_name: str | None = None) -> int:
        return self.series.add(series_spec_for(self.agent, self.device, tag, asset_overrides, tag_name))

    def observe_read(self, seconds: float) -> None:
        """Record one read request's round trip (feeds the read-latency histogram)."""
        if self.read_latency_hook is not None:
            self.read_latency_hook(seconds)

    def count_overrun(self, skipped_polls: int, skipped_points: int) -> None:
        """A poll cycle ran past its successor's tick and ``skipped_polls`` polls of
        ``skipped_points`` readings in all will not happen: counted in the status, so the loss
        shows as a number (the log says so at most every 30 s)."""
        st = self.status
        st.overruns += 1
        st.skipped_polls += skipped_polls
        st.skipped_points += skipped_points

    def set_state(self, state: DeviceState, error: str | None = None) -> None:
        if state != self.status.state:
            self.log.info("device %s: %s%s", self.device.name, state.value, f" ({error})" if error else "")
        self.status.state = state
        if error:
            self.status.last_error = error
            self.status.last_error_time = time.time()

    def report_error(self, kind: str, message: str, count: int = 1) -> None:
        """Count an error by kind and log it at most once every 30 s per kind."""
        st = self.status
        st.errors[kind] = st.errors.get(kind, 0) + count
        st.last_error = message
        st.last_error_time = time.time()
        now = time.monotonic()
        if now - self._error_log_times.get(kind, -1e9) >= 30.0:
            self._error_log_times[kind] = now
            self.log.warning("device %s: %s: %s (%d so far)", self.device.name, kind, message, st.errors[kind])


class Driver(ABC):
    device_model: ClassVar[type[DeviceBase]]
    # Standard the source protocol conforms to, for the catalogue's dct:conformsTo.
    standard: ClassVar[str] = ""
    standard_uri: ClassVar[str] = ""

    def __init__(self, ctx: DriverContext) -> None:
        self.ctx = ctx

    @property
    def device(self) -> Any:
        return self.ctx.device

    @abstractmethod
    async def run(self) -> None:
        """Acquire until cancelled. Must handle its own reconnects; never raise for a device
        fault (report it and retry); a cancellation must close connections."""

    @abstractmethod
    async def read_once(self) -> ReadingBatch:
        """Connect, read every configured tag once, disconnect. Raises on connection failure."""

    @classmethod
    def expected_points_per_second(cls, device: DeviceBase) -> float:
        """For ``validate``'s summary: configured tags over their poll interval."""
        return len(device.tags) / device.poll_interval

    @classmethod
    def publishing_interval(cls, device: DeviceBase) -> float | None:
        """Temporal resolution (seconds) for the catalogue; None where the source decides."""
        return device.poll_interval
