"""The Sparkplug B 3.0 edge node the MQTT sink presents: its metrics, aliases, sequence numbers
and the payloads of its births, data and deaths. No network code: the session in
:mod:`mos_agent.sinks.mqtt.session` publishes what this builds, in the order it builds it.

- Edge node id = agent id; one Sparkplug device per equipment; metric name ``{category}/{tag}``.
- Aliases are unique across the node and given in configuration order (a metric seen only at run
  time, such as an MQTT topic capture, gets the next free alias and a new DBIRTH of its device).
- ``seq`` is 0 on every NBIRTH and one more (mod 256) on every later message of the session;
  NDEATH has none. DATA metrics carry only the alias (no name, no datatype).
- DBIRTH carries every metric with its current value (``is_null`` before the first), datatype and
  properties ``unit`` (UCUM code), ``quality`` (the taxonomy's class: good, uncertain or bad) and
  ``Quality`` (the specification's Int32 codes: 192 good, 0 bad; uncertain readings are not good,
  so 0). DATA metrics add ``Quality`` and ``quality`` when they differ from the last ones sent, and
  ``quality_code`` (the source's code) when it is not 0.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, groupby, repeat
from operator import attrgetter
from pathlib import Path
from typing import Any, cast

from mos_agent.series import SeriesSpec
from mos_agent.sinks.base import DeviceStates
from mos_agent.sinks.mqtt.messages import Message
from mos_agent.sinks.mqtt.rows import Reading, Readings, Series
from mos_agent.sparkplug import (
    QUALITY_BAD,
    QUALITY_GOOD,
    QUALITY_PROPERTY,
    DataType,
    MessageType,
    Metric,
    Payload,
    Value,
    add_metric,
    decode,
    encode,
    get_value,
    parse_host_state,
    state_topic,
    to_wire,
    topic,
    value_field,
)
from mos_agent.status import MqttSinkStats

BDSEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"
UNIT_PROPERTY = "unit"
# The taxonomy's quality class (good | uncertain | bad) beside the specification's Int32 ``Quality``,
# so a host sees the same three classes as every other sink.
QUALITY_CLASS_PROPERTY = "quality"
CODE_PROPERTY = "quality_code"
# Metrics per DDATA message: keeps a message well below brokers' packet limits (EMQX: 1 MB).
MAX_METRICS_PER_MESSAGE = 2000

_INTEGER_TYPES = frozenset(("int16", "uint16", "int32", "uint32", "int64"))


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    datatype: DataType
    unit: str | None = None


def device_of(levels: Sequence[tuple[str, str]]) -> str:
    """The Sparkplug device of an asset path: its equipment (or the deepest level it has)."""
    return levels[-1][1] if levels else "_agent"


def metric_spec(spec: SeriesSpec) -> tuple[str, MetricSpec]:
    """The device and metric a configured series becomes. Integer registers without scale or
    offset stay integers (Int64: every Sparkplug consumer reads it alike), bools are Boolean,
    strings and enumerations String, everything else Double."""
    data_type = spec.data_type
    if data_type == "bool":
        datatype = DataType.BOOLEAN
    elif data_type.startswith("string") or data_type == "enum":
        datatype = DataType.STRING
    elif data_type in _INTEGER_TYPES and spec.scale == 1.0 and spec.offset == 0.0:
        datatype = DataType.INT64
    elif data_type == "uint64" and spec.scale == 1.0 and spec.offset == 0.0:
        datatype = DataType.UINT64
    else:
        datatype = DataType.DOUBLE
    levels = [(k, v) for k, v in spec.asset if k != "enterprise"]
    return device_of(levels), MetricSpec(f"{spec.category}/{spec.tag}", datatype, spec.unit)


def configured_metrics(series: Iterable[SeriesSpec]) -> dict[str, list[MetricSpec]]:
    """Devices and their metrics, in configuration order."""
    devices: dict[str, list[MetricSpec]] = {}
    for spec in series:
        device, metric = metric_spec(spec)
        devices.setdefault(device, []).append(metric)
    return devices


@dataclass(slots=True)
class MetricState:
    spec: MetricSpec
    alias: int
    last: Reading | None = None  # the newest reading sent live: its value goes in births
    good: bool = True  # the quality hosts were last told (good until told otherwise)
    field: str = ""  # the value field its datatype selects

    def __post_init__(self) -> None:
        self.field = value_field(self.spec.datatype)

    @property
    def quality(self) -> int:
        return QUALITY_GOOD if self.good else QUALITY_BAD


@dataclass(slots=True)
class DeviceBook:
    metrics: dict[str, MetricState] = field(default_factory=dict)
    born: bool = False  # a DBIRTH was sent in this session and no DDEATH since


def _convert(datatype: DataType, reading: Reading) -> Value:
    """The reading's value as the metric's datatype holds it (``None`` where it has none)."""
    _, value, text, _, _ = reading
    if text is not None:
        if datatype == DataType.STRING:
            return text
        try:
            number = float(text)
        except ValueError:
            return None
    elif value is None:
        return None
    else:
        number = float(value)
    if datatype == DataType.DOUBLE:
        return number
    if datatype == DataType.BOOLEAN:
        return number != 0.0
    if datatype in (DataType.INT64, DataType.UINT64):
        if number != number or number in (float("inf"), float("-inf")):
            return None
        return round(number) if datatype == DataType.INT64 else max(0, round(number))
    if datatype == DataType.STRING:
        return repr(number)
    return number


class EdgeNode:
    def __init__(self, group_id: str, edge_node_id: str, configured: Mapping[str, Sequence[MetricSpec]]) -> None:
        self.group_id = group_id
        self.edge_node_id = edge_node_id
        self.devices: dict[str, DeviceBook] = {}
        self._state_of: dict[Series, MetricState] = {}  # by the parser's interned series
        # plain series (see _find_plain) → alias: found once, emptied when a quality turns bad
        self._plain_alias: dict[Series, int] = {}
        self._next_alias = 0
        self._seq = 0
        for device, metrics in configured.items():
            for metric in metrics:
                self._register(device, metric)

    def _register(self, device: str, spec: MetricSpec) -> MetricState:
        book = self.devices.setdefault(device, DeviceBook())
        state = MetricState(spec, self._next_alias)
        self._next_alias += 1
        book.metrics[spec.name] = state
        return state

    # ------------------------------------------------------------ sequence numbers

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % 256
        return seq

    # ------------------------------------------------------------ session life cycle

    def will(self, bdseq: int) -> Payload:
        """The NDEATH registered as the will of the connection with this ``bdseq``: no seq."""
        payload = Payload(timestamp=_now_ms())
        add_metric(payload, name=BDSEQ, datatype=DataType.INT64, value=bdseq, timestamp_ms=payload.timestamp)
        return payload

    def node_birth(self, bdseq: int) -> Payload:
        """NBIRTH: seq 0, the session's ``bdSeq`` and ``Node Control/Rebirth`` = false (neither has
        an alias: the rebirth metric must not, and hosts look both up by name). Every device must
        be born again after it."""
        for book in self.devices.values():
            book.born = False
        self._seq = 0
        now = _now_ms()
        payload = Payload(timestamp=now, seq=self._next_seq())
        add_metric(payload, name=BDSEQ, datatype=DataType.INT64, value=bdseq, timestamp_ms=now)
        add_metric(payload, name=REBIRTH, datatype=DataType.BOOLEAN, value=False, timestamp_ms=now)
        return payload

    def device_birth(self, device: str) -> Payload:
        """DBIRTH with every metric of ``device``: name, alias, datatype, current value (or
        is_null), ``unit`` and ``Quality``."""
        book = self.devices[device]
        now = _now_ms()
        payload = Payload(timestamp=now, seq=self._next_seq())
        for state in book.metrics.values():
            spec = state.spec
            last = state.last
            quality_class = last[0].quality if last is not None else ("good" if state.good else "bad")
            properties: dict[str, tuple[int, Value]] = {QUALITY_PROPERTY: (DataType.INT32, state.quality),
                                                        QUALITY_CLASS_PROPERTY: (DataType.STRING, quality_class)}
            if spec.unit:
                properties[UNIT_PROPERTY] = (DataType.STRING, spec.unit)
            add_metric(payload, name=spec.name, alias=state.alias, datatype=spec.datatype,
                       value=None if last is None else _convert(spec.datatype, last),
                       timestamp_ms=now if last is None else last[4] // 1_000_000, properties=properties)
        book.born = True
        return payload

    def device_death(self, device: str) -> Payload:
        self.devices[device].born = False
        return Payload(timestamp=_now_ms(), seq=self._next_seq())

    # ------------------------------------------------------------ data

    def learn(self, readings: Readings) -> set[str]:
        """Register metrics and devices seen for the first time; returns the devices whose birth
        certificate no longer lists all their metrics (they need a new DBIRTH)."""
        grown: set[str] = set()
        state_of = self._state_of
        if state_of.keys() >= set(readings.series):
            return grown
        for series, text in zip(readings.series, readings.texts or repeat(None), strict=False):
            if series in state_of:
                continue
            book = self.devices.get(series.device)
            state = book.metrics.get(series.metric) if book is not None else None
            if state is None:
                datatype = DataType.STRING if text is not None else DataType.DOUBLE
                state = self._register(series.device, MetricSpec(series.metric, datatype, series.unit))
                grown.add(series.device)
            state_of[series] = state
        return grown

    def _find_plain(self, series: Iterable[Series]) -> None:
        """Enter the plain series among ``series`` (learnt ones) in the plain alias table: of good
        quality, of a Double metric whose hosts were last told good quality."""
        plain = self._plain_alias
        state_of = self._state_of
        for s in set(series).difference(plain):
            state = state_of[s]
            if s.good and state.good and state.spec.datatype == DataType.DOUBLE:
                plain[s] = state.alias

    def data(self, readings: Readings, historical: bool,
             dead: Callable[[str], bool]) -> tuple[list[tuple[MessageType, str, Payload]], int]:
        """The messages for a batch of readings, in publishing order: per device a DBIRTH first
        where its birth certificate is missing or out of date, then DDATA by alias with its
        readings in their order (at most MAX_METRICS_PER_MESSAGE a message). Historical readings
        carry ``is_historical`` and do not become the value a later DBIRTH reports. A device that
        is not born and ``dead`` (the agent reports it down) is not born again for failed reads:
        they are skipped and counted (the second value returned); a good reading of it is born.

        Readings come in runs of one device (a driver's batch). A run of plain readings — numbers
        with quality code 0 of plain series (see :meth:`_find_plain`), the steady state — goes
        into its DDATA by column, three attribute sets a metric; any other run reading by
        reading (:meth:`_add_readings`)."""
        series = readings.series
        plain = self._plain_alias
        grown: set[str] = set()
        aliases: list[int | None]
        try:  # the steady state: every series plain, every reading a number with code 0
            aliases = list(map(plain.__getitem__, series))
            all_plain = readings.numbers_only
        except KeyError:
            grown = self.learn(readings)
            self._find_plain(series)
            aliases = list(map(plain.get, series))
            all_plain = False
        times = readings.times
        # a driver's batch shares one time: each distinct one is converted once
        ms_of = {t: t // 1_000_000 for t in set(times)}
        times_ms = list(map(ms_of.__getitem__, times))
        values, codes = readings.values, readings.codes
        messages: list[tuple[MessageType, str, Payload]] = []
        # per device of this batch: [payload, its metrics.add, metrics in it], or None while its
        # failed reads are being skipped
        open_: dict[str, list[Any] | None] = {}
        skipped = 0
        start = 0
        for device, run in groupby(series, key=_device):
            stop = start + len(list(run))
            if all_plain or (None not in aliases[start:stop] and None not in values[start:stop]
                             and (codes is None or not any(codes[start:stop]))):
                entry = open_.get(device)
                if entry is None:  # not open: met first, or only failed reads skipped so far
                    if not self.devices[device].born or device in grown:
                        grown.discard(device)
                        messages.append((MessageType.DBIRTH, device, self.device_birth(device)))
                    entry = open_[device] = self._open(device, messages)
                while start < stop:
                    if entry[2] >= MAX_METRICS_PER_MESSAGE:
                        entry = open_[device] = self._open(device, messages)
                    end = min(stop, start + MAX_METRICS_PER_MESSAGE - entry[2])
                    # this run holds only plain readings: every alias and value is set
                    _add_plain(entry[1], cast("list[int]", aliases[start:end]), times_ms[start:end],
                               cast("list[float]", values[start:end]), historical)
                    entry[2] += end - start
                    start = end
            else:
                run_skipped, turned_bad = self._add_readings(readings[start:stop], historical, dead, open_,
                                                             messages, grown)
                skipped += run_skipped
                if turned_bad:  # the plain alias table was emptied: no more plain runs in this batch
                    aliases = [None] * len(aliases)
            start = stop
        self._remember_newest(readings, historical,
                              None if not skipped else [open_.get(s.device) is not None for s in series])
        return messages, skipped

    def _add_readings(self, readings: Iterable[Reading], historical: bool, dead: Callable[[str], bool],
                      open_: dict[str, list[Any] | None], messages: list[tuple[MessageType, str, Payload]],
                      grown: set[str]) -> tuple[int, bool]:
        """Add readings one by one (see :meth:`data`): the common reading — a number of good
        quality, as good as the one before — is one ``metrics.add`` call; everything else goes
        through :func:`add_metric`. Returns the number of readings skipped and whether a metric's
        quality turned from good to bad (which empties the plain alias table)."""
        state_of = self._state_of
        devices = self.devices
        skipped = 0
        turned_bad = False
        double = DataType.DOUBLE
        # the device's entry is looked up when the device changes, not for every reading
        run_device: str | None = None
        entry: list[Any] | None = None
        for r in readings:
            series, value, _, code, timestamp_ns = r
            if series.device != run_device or entry is None or entry[2] >= MAX_METRICS_PER_MESSAGE:
                device = series.device
                # absent: the device's first reading in this batch; None: skipping its failed reads
                known = open_.get(device, _FIRST)
                run_device, entry = device, None
                if isinstance(known, list):
                    entry = known if known[2] < MAX_METRICS_PER_MESSAGE else self._open(device, messages)
                else:
                    if not series.good and (known is None or (not devices[device].born and dead(device))):
                        open_[device] = None
                        skipped += 1
                        continue
                    if not devices[device].born or device in grown:
                        grown.discard(device)
                        messages.append((MessageType.DBIRTH, device, self.device_birth(device)))
                    entry = self._open(device, messages)
                open_[device] = entry
            entry[2] += 1
            state = state_of[series]
            same_quality = series.good is state.good
            datatype = state.spec.datatype
            if same_quality and not code and value is not None:
                if datatype == double:
                    metric = entry[1](alias=state.alias, timestamp=timestamp_ns // 1_000_000, double_value=value)
                else:
                    metric = entry[1](alias=state.alias, timestamp=timestamp_ns // 1_000_000)
                    setattr(metric, state.field, to_wire(datatype, _convert(datatype, r)))
                if historical:
                    metric.is_historical = True
            else:
                properties: dict[str, tuple[int, Value]] | None = None
                if not same_quality or code:
                    properties = {QUALITY_PROPERTY: (DataType.INT32, QUALITY_GOOD if series.good else QUALITY_BAD),
                                  QUALITY_CLASS_PROPERTY: (DataType.STRING, series.quality)}
                    if code:
                        properties[CODE_PROPERTY] = (DataType.INT64, code)
                add_metric(entry[0], alias=state.alias, datatype=datatype, value=_convert(datatype, r),
                           timestamp_ms=timestamp_ns // 1_000_000, with_datatype=False, is_historical=historical,
                           properties=properties)
                if state.good and not series.good:
                    # plain series of this metric are no longer plain: hosts must hear of good again
                    self._plain_alias.clear()
                    turned_bad = True
                state.good = series.good
        return skipped, turned_bad

    def _remember_newest(self, readings: Readings, historical: bool, sent: list[bool] | None) -> None:
        """The newest reading of each series becomes the value births report: the last one of the
        batch (``sent``: of those not skipped), unless replayed history is older."""
        series = readings.series
        if sent is None:
            newest = dict(zip(series, range(len(series)), strict=True))
        else:
            indices = list(compress(range(len(series)), sent))
            newest = dict(zip(map(series.__getitem__, indices), indices, strict=True))
        state_of = self._state_of
        for state, r in zip(map(state_of.__getitem__, newest), readings.pick(list(newest.values())), strict=True):
            if not historical or state.last is None or r[4] >= state.last[4]:
                state.last = r

    def _open(self, device: str, messages: list[tuple[MessageType, str, Payload]]) -> list[Any]:
        payload = Payload(timestamp=_now_ms(), seq=self._next_seq())
        messages.append((MessageType.DDATA, device, payload))
        return [payload, payload.metrics.add, 0]


def _add_plain(add: Callable[[], Metric], aliases: list[int], times_ms: list[int], values: list[float],
               historical: bool) -> None:
    """Append plain Double metrics by alias (attribute sets cost less than keyword arguments)."""
    if historical:
        for alias, timestamp, value in zip(aliases, times_ms, values, strict=True):
            metric = add()
            metric.alias = alias
            metric.timestamp = timestamp
            metric.double_value = value
            metric.is_historical = True
    else:
        for alias, timestamp, value in zip(aliases, times_ms, values, strict=True):
            metric = add()
            metric.alias = alias
            metric.timestamp = timestamp
            metric.double_value = value


_device = attrgetter("device")
_FIRST = object()  # a device not met yet in a batch


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# Agent device states in which a device delivers nothing current: its DDEATH is published.
DEAD_STATES = frozenset(("down", "stopped"))



class BdSeqStore:
    """The birth/death sequence number of the last MQTT CONNECT, kept in a small file so it goes
    on counting across restarts (a host matches an NDEATH to its NBIRTH by it)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def last(self) -> int | None:
        try:
            value = json.loads(self.path.read_text()).get("bdSeq")
        except (OSError, ValueError, AttributeError):
            return None
        return value if isinstance(value, int) and 0 <= value <= 255 else None

    def following(self) -> int:
        """The value for the next CONNECT: one more than the last (255 wraps to 0), 0 at first."""
        last = self.last()
        return 0 if last is None else (last + 1) % 256

    def store(self, value: int) -> None:
        """Keep ``value`` durably as the last one used."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w") as f:
            json.dump({"bdSeq": value}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


class SparkplugPublisher:
    """The session's view of the edge node (see :class:`mos_agent.sinks.mqtt.session.Publisher`):
    NDEATH will with a new bdSeq per CONNECT, NCMD (and the primary host's STATE) subscribed
    before NBIRTH, births once the primary host is online (if one is configured), rebirth on a
    ``Node Control/Rebirth`` NCMD, DDEATH when the agent reports a device down, NDEATH on an
    orderly disconnect and when the primary host goes offline."""

    def __init__(self, node: EdgeNode, bdseq_store: BdSeqStore, *, qos: int, primary_host_id: str | None = None,
                 device_states: DeviceStates | None = None, logger: logging.Logger | None = None) -> None:
        self.node = node
        self.store = bdseq_store
        self.qos = qos
        self.primary_host_id = primary_host_id
        self.device_states = device_states
        self.log = logger or logging.getLogger("mos_agent.sinks.mqtt")
        self.bdseq: int | None = None
        self.host_online = primary_host_id is None
        self._host_timestamp: int | None = None
        self._ncmd_topic = topic(node.group_id, MessageType.NCMD, node.edge_node_id)
        self._topics: dict[tuple[MessageType, str | None], str] = {}
        self._state_topic = state_topic(primary_host_id) if primary_host_id else None
        self.births = 0
        self.rebirth_requests = 0
        self.device_deaths = 0
        self.skipped_dead_points = 0

    def _topic(self, message_type: MessageType, device: str | None = None) -> str:
        # checked once per message type and device, not for every message
        key = (message_type, device)
        name = self._topics.get(key)
        if name is None:
            name = self._topics[key] = topic(self.node.group_id, message_type, self.node.edge_node_id, device)
        return name

    def _ndeath(self) -> Message:
        assert self.bdseq is not None
        return Message(self._topic(MessageType.NDEATH), encode(self.node.will(self.bdseq)), 1, False)

    # ------------------------------------------------------------ session hooks

    def will(self) -> Message:
        self.bdseq = self.store.following()
        return self._ndeath()

    def connect_sent(self) -> None:
        # a CONNECT with this bdSeq went out: the next one counts on from it (a connection that
        # failed before its CONNECT does not)
        assert self.bdseq is not None
        self.store.store(self.bdseq)

    def connected(self) -> None:
        self.host_online = self.primary_host_id is None

    def subscriptions(self) -> list[tuple[str, int]]:
        subs = [(self._ncmd_topic, 1)]
        if self._state_topic:
            subs.append((self._state_topic, 1))
        return subs

    def on_connected(self) -> list[Message]:
        return self._births() if self.host_online else []

    def _births(self) -> list[Message]:
        assert self.bdseq is not None
        self.births += 1
        messages = [Message(self._topic(MessageType.NBIRTH), encode(self.node.node_birth(self.bdseq)), 0)]
        states = self._states()
        for device, book in self.node.devices.items():
            if book.metrics and states.get(device) not in DEAD_STATES:
                messages.append(Message(self._topic(MessageType.DBIRTH, device),
                                        encode(self.node.device_birth(device)), 0))
        return messages

    def on_message(self, topic_name: str, payload: bytes) -> tuple[list[Message], str | None]:
        if topic_name == self._ncmd_topic:
            return self._command(payload), None
        if self._state_topic is not None and topic_name == self._state_topic:
            return self._host_state(payload)
        return [], None

    def _command(self, payload: bytes) -> list[Message]:
        try:
            command = decode(payload)
        except Exception as exc:
            self.log.warning("ignoring an NCMD that is not a Sparkplug B payload: %s", exc)
            return []
        for metric in command.metrics:
            if metric.name == REBIRTH and get_value(metric, DataType.BOOLEAN) is True:
                self.rebirth_requests += 1
                if not self.host_online:
                    return []
                self.log.info("Sparkplug rebirth requested (NCMD); publishing NBIRTH and DBIRTHs")
                return self._births()
        return []

    def _host_state(self, payload: bytes) -> tuple[list[Message], str | None]:
        try:
            state = parse_host_state(payload)
        except ValueError as exc:
            self.log.warning("ignoring primary host STATE message: %s", exc)
            return [], None
        if self._host_timestamp is not None and state.timestamp < self._host_timestamp:
            return [], None  # an older message than the one we acted on
        self._host_timestamp = state.timestamp
        if state.online and not self.host_online:
            self.host_online = True
            self.log.info("primary host %s is online; publishing births", self.primary_host_id)
            return self._births(), None
        if not state.online and self.host_online:
            self.host_online = False
            return [], f"primary host {self.primary_host_id} went offline"
        return [], None

    def blocked(self) -> str | None:
        if not self.host_online:
            return f"waiting for primary host {self.primary_host_id} to come online (STATE)"
        return None

    def _states(self) -> Mapping[str, str]:
        if self.device_states is None:
            return {}
        try:
            return self.device_states()
        except Exception as exc:  # the agent's view is changing under us (a reload): next tick
            self.log.debug("device states unavailable: %s", exc)
            return {}

    def encode(self, readings: Readings, historical: bool) -> list[Message]:
        states: Mapping[str, str] | None = None

        def dead(device: str) -> bool:
            nonlocal states
            if states is None:
                states = self._states()
            return states.get(device) in DEAD_STATES

        built, skipped = self.node.data(readings, historical, dead)
        self.skipped_dead_points += skipped
        return [Message(self._topic(kind, device), encode(payload), 0 if kind == MessageType.DBIRTH else self.qos)
                for kind, device, payload in built]

    def tick(self) -> list[Message]:
        if not self.host_online:
            return []
        states = self._states()
        messages = []
        for device, book in self.node.devices.items():
            if book.born and states.get(device) in DEAD_STATES:
                self.device_deaths += 1
                messages.append(Message(self._topic(MessageType.DDEATH, device),
                                        encode(self.node.device_death(device)), 0))
        return messages

    def farewell(self) -> list[Message]:
        return [self._ndeath()] if self.bdseq is not None else []

    def fill_status(self, stats: MqttSinkStats) -> None:
        stats.format = "sparkplug"
        stats.group_id = self.node.group_id
        stats.edge_node_id = self.node.edge_node_id
        stats.bd_seq = self.bdseq
        stats.primary_host_online = self.host_online if self.primary_host_id else None
        stats.births = self.births
        stats.rebirth_requests = self.rebirth_requests
        stats.device_deaths = self.device_deaths
        stats.skipped_dead_points = self.skipped_dead_points
