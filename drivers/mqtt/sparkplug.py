"""Sparkplug B in: messages of other edge nodes → readings, independent of the MQTT client (the
driver runs it on paho's network thread; the tests also run it directly).

Births (NBIRTH, DBIRTH) teach each metric's name, alias, datatype and ``unit`` property and carry
its current value; DATA messages carry values by alias (or by name). A metric whose name matches
one of the device's patterns (first match wins) becomes a series: equipment = the Sparkplug device
id (the edge node id for the node's own metrics), tag = the metric name, both mapped to asset names
by the same rule as MQTT topic captures; with ``edge_node: "+"`` the edge node id is the cell.
Other metrics are ignored and counted; ``bdSeq`` and ``Node Control/*`` are protocol, not data.

Each edge node's messages are checked for order (``seq`` counts 0-255 from the NBIRTH). What
cannot be trusted or named — a seq gap, an unknown alias, data before any birth — makes the
decoder ask the node to publish its births again (NCMD ``Node Control/Rebirth`` = true, at most
once per ``REBIRTH_INTERVAL`` per node); data that cannot be named is dropped and counted, never
stored under a guessed name. NDEATH / DDEATH give every series of the node / device a bad
reading (code NOT_CONNECTED).

With a persistent session the latest births are kept on disk (:class:`BirthFiles`), so data the
broker held while the agent was away can be named after a restart.

Nothing here raises for bad input: a payload that is not Sparkplug B protobuf is counted as an
error of kind ``payload`` and the flow goes on.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

from google.protobuf.message import DecodeError

from drivers.mqtt.config import MqttDevice, SparkplugMetricTag, SparkplugSource
from drivers.mqtt.decode import Rows, SeriesLimitReached
from mos_agent import sparkplug as sp
from mos_agent import units
from mos_agent.batch import SourceTimeWindow
from mos_agent.status import SparkplugInStats
from mos_agent.taxonomy import CollectorCode, Quality, asset_name_for

GOOD = int(Quality.GOOD)
UNCERTAIN = int(Quality.UNCERTAIN)
BAD = int(Quality.BAD)
NOT_CONNECTED = int(CollectorCode.NOT_CONNECTED)
NOT_A_NUMBER = int(CollectorCode.NOT_A_NUMBER)
PAYLOAD_ERROR = int(CollectorCode.PAYLOAD_ERROR)
SOURCE_TIME_REPLACED = int(CollectorCode.SOURCE_TIME_REPLACED)
NAN = math.nan
REBIRTH_INTERVAL = 5.0  # seconds: at most one rebirth request per edge node in this time
REBIRTH_METRIC = "Node Control/Rebirth"
UNMATCHED_EXAMPLES = 20  # metric names matching no pattern, kept for the status
NODE_BIRTH_FILE, DEVICE_BIRTH_PREFIX = "NBIRTH", "DBIRTH-"

_NUMERIC = frozenset((sp.DataType.INT8, sp.DataType.INT16, sp.DataType.INT32, sp.DataType.INT64,
                      sp.DataType.UINT8, sp.DataType.UINT16, sp.DataType.UINT32, sp.DataType.UINT64,
                      sp.DataType.FLOAT, sp.DataType.DOUBLE, sp.DataType.DATETIME))
_TEXT = frozenset((sp.DataType.STRING, sp.DataType.TEXT, sp.DataType.UUID))
_PROTOCOL_METRIC = ("bdSeq", "Node Control/")

# register(pattern, asset overrides, tag name, unit, data type) -> series index
RegisterFn = Callable[[SparkplugMetricTag, dict[str, str], str, str | None, str], int]
# publish(topic, payload): send a command to an edge node
PublishFn = Callable[[str, bytes], None]


def sparkplug_filters(source: SparkplugSource) -> list[str]:
    """The node's (or every node's) NBIRTH/NDATA/NDEATH and its devices' DBIRTH/DDATA/DDEATH."""
    group, node = source.group_id, source.edge_node
    return [f"{sp.NAMESPACE}/{group}/{kind}/{node}" for kind in ("NBIRTH", "NDATA", "NDEATH")] + \
           [f"{sp.NAMESPACE}/{group}/{kind}/{node}/+" for kind in ("DBIRTH", "DDATA", "DDEATH")]


def quality_of(code: int) -> int:
    """The quality class of a Sparkplug ``Quality`` property. Codes below 256 are OPC DA quality
    bytes, as Ignition and Sparkplug edge nodes send them (192 good, 64-127 uncertain, 0-63 bad);
    codes of 65,536 and up are OPC UA StatusCodes (severity in the top two bits); anything else
    (Ignition's 500 stale, say) is bad."""
    if 0 <= code < 256:
        level = code & 0xC0
        return GOOD if level == 0xC0 else UNCERTAIN if level == 0x40 else BAD
    if code >= 0x10000:
        severity = (code >> 30) & 0x3
        return GOOD if severity == 0 else UNCERTAIN if severity == 1 else BAD
    return BAD


def birth_unit(value: sp.Value) -> str | None:
    """A birth's ``unit`` property as a UCUM code of the unit table (common spellings such as
    ``°C`` or ``kWh`` included), or ``None``."""
    if not isinstance(value, str) or not value:
        return None
    if units.lookup(value) is not None:
        return value
    spelt = units.COMMON_SPELLINGS.get(value)
    return spelt if spelt is not None and units.lookup(spelt) is not None else None


def rebirth_payload(now_ms: int) -> bytes:
    payload = sp.Payload(timestamp=now_ms)
    sp.add_metric(payload, datatype=sp.DataType.BOOLEAN, value=True, timestamp_ms=now_ms, name=REBIRTH_METRIC)
    return sp.encode(payload)


@dataclass(slots=True)
class Known:
    """A metric learnt from a birth."""

    name: str
    device: str | None  # the Sparkplug device id; None for the edge node's own metrics
    datatype: int
    series: int | None  # None: it matches no pattern, or its datatype carries no scalar value
    text: bool = False  # stored as text (String, Text, UUID)
    quality: int = GOOD  # the last Quality the node sent for it (DATA repeats it only on a change)
    code: int = 0


@dataclass(slots=True)
class EdgeNode:
    """What is known of one edge node since its last NBIRTH."""

    name: str
    born: bool = False
    seq: int | None = None
    bd_seq: int | None = None
    by_alias: dict[int, Known] = field(default_factory=dict)
    # (device id or None for the node's own metrics, metric name) -> metric
    by_name: dict[tuple[str | None, str], Known] = field(default_factory=dict)
    # device id (None: the node itself) -> the series it has; a device is known once born
    series_of: dict[str | None, list[int]] = field(default_factory=dict)
    last_rebirth: float = -math.inf


class BirthFiles:
    """The latest NBIRTH of each edge node and DBIRTH of each of its devices, as received, in
    ``directory/<node>/`` (names percent-encoded): what a restarted driver needs to name the
    data its persistent session kept. Written when a birth arrives (rare), removed on death."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _node_dir(self, node_id: str) -> Path:
        return self.directory / quote(node_id, safe="")

    @staticmethod
    def _write(path: Path, payload: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(path.name + ".part")
        part.write_bytes(payload)
        os.replace(part, path)

    def save_node(self, node_id: str, payload: bytes) -> None:
        """A new NBIRTH: the node's devices must be born again after it."""
        shutil.rmtree(self._node_dir(node_id), ignore_errors=True)
        self._write(self._node_dir(node_id) / NODE_BIRTH_FILE, payload)

    def save_device(self, node_id: str, device_id: str, payload: bytes) -> None:
        self._write(self._node_dir(node_id) / (DEVICE_BIRTH_PREFIX + quote(device_id, safe="")), payload)

    def forget_node(self, node_id: str) -> None:
        shutil.rmtree(self._node_dir(node_id), ignore_errors=True)

    def forget_device(self, node_id: str, device_id: str) -> None:
        (self._node_dir(node_id) / (DEVICE_BIRTH_PREFIX + quote(device_id, safe=""))).unlink(missing_ok=True)

    def load(self) -> list[tuple[str, sp.Payload, list[tuple[str, sp.Payload]]]]:
        """(node id, NBIRTH, [(device id, DBIRTH)]) of every node kept; a file that does not parse
        is removed (the node is then asked for a rebirth as if nothing had been kept)."""
        if not self.directory.is_dir():
            return []
        out = []
        for node_dir in sorted(self.directory.iterdir()):
            try:
                node_birth = sp.decode((node_dir / NODE_BIRTH_FILE).read_bytes())
                devices = [(unquote(path.name[len(DEVICE_BIRTH_PREFIX):]), sp.decode(path.read_bytes()))
                           for path in sorted(node_dir.glob(DEVICE_BIRTH_PREFIX + "*")) if path.suffix != ".part"]
            except (OSError, DecodeError):
                shutil.rmtree(node_dir, ignore_errors=True)
                continue
            out.append((unquote(node_dir.name), node_birth, devices))
        return out


class SparkplugDecoder:
    def __init__(self, device: MqttDevice, register: RegisterFn, publish: PublishFn,
                 stats: SparkplugInStats | None = None, max_payload: int | None = None,
                 clock: Callable[[], float] = time.monotonic, births: BirthFiles | None = None,
                 window: SourceTimeWindow | None = None, source_names: dict[str, str] | None = None) -> None:
        assert device.sparkplug is not None
        self.device = device
        self.source = device.sparkplug
        self.patterns = device.metric_tags
        self.register = register
        self.publish = publish
        self.max_payload = max_payload if max_payload is not None else device.connection.max_payload
        self.stats = stats if stats is not None else SparkplugInStats()
        self.stats.group_id = self.source.group_id
        self.stats.edge_node = self.source.edge_node
        self.clock = clock
        self.nodes: dict[str, EdgeNode] = {}
        self._unmatched: set[str] = set()
        self.births = births
        self.window = window if window is not None else SourceTimeWindow()
        # asset or tag name → the source's text, for the names asset_name_for changed (in the status)
        self.source_names = source_names if source_names is not None else {}

    def restore(self) -> None:
        """Learn again the births an earlier run kept (their values were stored then), so the
        messages the broker held for the session while the agent was away can be named. The
        first ``seq`` after them is not checked: which message was acknowledged last is not
        known."""
        if self.births is None:
            return
        scratch = Rows()
        counted = self.stats.births
        for node_id, node_birth, device_births in self.births.load():
            node = self._node(node_id)
            self._node_birth(node, node_birth, 0, scratch)
            for device_id, device_birth in device_births:
                self._device_birth(node, device_id, device_birth, 0, scratch)
            node.seq = None
        self.stats.births = counted  # counted by the run that received them

    # ------------------------------------------------------------ subscriptions and commands

    def request_rebirth(self, node_id: str) -> bool:
        """Ask ``node_id`` for its births (at most once per ``REBIRTH_INTERVAL``); True if sent."""
        node = self._node(node_id)
        now = self.clock()
        if now - node.last_rebirth < REBIRTH_INTERVAL:
            return False
        node.last_rebirth = now
        self.stats.rebirth_requests += 1
        self.publish(sp.topic(self.source.group_id, sp.MessageType.NCMD, node_id),
                     rebirth_payload(int(time.time() * 1000)))
        return True

    def on_connected(self) -> None:
        """A named edge node whose births are not known yet is asked for them at once."""
        if not self.source.every_node and not self._node(self.source.edge_node).born:
            self.request_rebirth(self.source.edge_node)

    def _node(self, node_id: str) -> EdgeNode:
        node = self.nodes.get(node_id)
        if node is None:
            node = self.nodes[node_id] = EdgeNode(node_id)
        return node

    # ------------------------------------------------------------ messages

    def decode(self, topic: str, payload: bytes | bytearray, arrival_ns: int, rows: Rows) -> None:
        rows.messages += 1
        try:
            parsed = sp.parse_topic(topic)
        except ValueError as exc:
            rows.error("topic", str(exc))
            return
        kind = parsed.message_type
        if parsed.group_id != self.source.group_id or kind in (sp.MessageType.NCMD, sp.MessageType.DCMD):
            return
        if len(payload) > self.max_payload:
            rows.error("payload", f"{topic}: payload of {len(payload)} bytes is over max_payload "
                                  f"({self.max_payload} bytes)")
            return
        try:
            message = sp.decode(bytes(payload))
        except DecodeError as exc:
            rows.error("payload", f"{topic}: not a Sparkplug B payload ({exc})")
            return
        node = self._node(parsed.edge_node_id)
        device_id = parsed.device_id
        if kind == sp.MessageType.NBIRTH:
            self._node_birth(node, message, arrival_ns, rows)
            self._keep(rows, lambda births: births.save_node(node.name, bytes(payload)))
            return
        if kind == sp.MessageType.NDEATH:
            if self._node_death(node, message, arrival_ns, rows):
                self._keep(rows, lambda births: births.forget_node(node.name))
            return
        if not node.born:
            # anything else needs the node's birth first (its seq, its aliases)
            self._unnamed(node, len(message.metrics), "data_before_birth")
            return
        self._check_seq(node, message)
        if kind == sp.MessageType.NDATA:
            self._data(node, None, message, arrival_ns, rows)
        elif device_id is None:
            return
        elif kind == sp.MessageType.DBIRTH:
            self._device_birth(node, device_id, message, arrival_ns, rows)
            self._keep(rows, lambda births: births.save_device(node.name, device_id, bytes(payload)))
        elif kind == sp.MessageType.DDATA:
            if device_id not in node.series_of:
                self._unnamed(node, len(message.metrics), "data_before_birth")
            else:
                self._data(node, device_id, message, arrival_ns, rows)
        elif kind == sp.MessageType.DDEATH and self._device_death(node, device_id, message, arrival_ns, rows):
            self._keep(rows, lambda births: births.forget_device(node.name, device_id))

    def _keep(self, rows: Rows, change: Callable[[BirthFiles], None]) -> None:
        """Bring the kept births up to date; a failure to write them costs only the naming of
        data held for the session across a restart, so it is counted and the flow goes on."""
        if self.births is not None:
            try:
                change(self.births)
            except OSError as exc:
                rows.error("state", f"cannot keep the Sparkplug births in {self.births.directory}: {exc}")

    def _check_seq(self, node: EdgeNode, message: sp.Payload) -> None:
        """On a ``seq`` gap asks for a rebirth (what came between is lost); the message itself is
        still read, its aliases still name its metrics."""
        if not message.HasField("seq"):
            return
        seq = message.seq
        if node.seq is not None and seq != (node.seq + 1) % 256:
            self.stats.seq_gaps += 1
            self.request_rebirth(node.name)
        node.seq = seq

    def _unnamed(self, node: EdgeNode, metrics: int, reason: str) -> None:
        """Data that cannot be named: dropped, counted, and the node asked for its births."""
        setattr(self.stats, reason, getattr(self.stats, reason) + 1)
        self.stats.dropped_points += metrics
        self.request_rebirth(node.name)

    # ------------------------------------------------------------ births and deaths

    def _node_birth(self, node: EdgeNode, message: sp.Payload, arrival_ns: int, rows: Rows) -> None:
        node.born = True
        node.seq = message.seq if message.HasField("seq") else None
        node.by_alias.clear()
        node.by_name.clear()
        node.series_of = {None: []}
        node.bd_seq = None
        for metric in message.metrics:
            if metric.name == "bdSeq":
                value = sp.get_value(metric)
                node.bd_seq = int(value) if isinstance(value, int) else None
        self.stats.births += 1
        self.stats.edge_nodes_online = sum(n.born for n in self.nodes.values())
        self._learn(node, None, message, arrival_ns, rows)

    def _device_birth(self, node: EdgeNode, device_id: str, message: sp.Payload, arrival_ns: int,
                      rows: Rows) -> None:
        for key in [key for key in node.by_name if key[0] == device_id]:
            del node.by_name[key]
        for alias in [alias for alias, known in node.by_alias.items() if known.device == device_id]:
            del node.by_alias[alias]  # a device born again may number its metrics anew
        node.series_of[device_id] = []
        self.stats.births += 1
        self._learn(node, device_id, message, arrival_ns, rows)

    def _learn(self, node: EdgeNode, device_id: str | None, message: sp.Payload, arrival_ns: int,
               rows: Rows) -> None:
        overrides = {"equipment": self._name(device_id if device_id is not None else node.name)}
        if self.source.every_node:
            overrides["cell"] = self._name(node.name)
        series_list = node.series_of[device_id]
        for metric in message.metrics:
            if not metric.HasField("name"):
                rows.error("payload", f"a birth of {node.name} has a metric without a name")
                continue
            name = metric.name
            if name.startswith(_PROTOCOL_METRIC):
                continue
            known = Known(name, device_id, metric.datatype, None, metric.datatype in _TEXT)
            # a transient metric is not to be stored, the specification says
            pattern = None if metric.is_transient else self._pattern_for(name)
            if pattern is None:
                if name not in self._unmatched and not metric.is_transient:
                    self._unmatched.add(name)
                    self.stats.unmatched_metrics += 1
                    if len(self.stats.unmatched_examples) < UNMATCHED_EXAMPLES:
                        self.stats.unmatched_examples.append(name)
            elif metric.datatype not in _NUMERIC and metric.datatype not in _TEXT \
                    and metric.datatype != sp.DataType.BOOLEAN:
                rows.error("datatype", f"{node.name}: metric {name!r} has datatype {metric.datatype}, which "
                                       f"carries no single value; ignored")
            else:
                properties = sp.get_properties(metric.properties)
                unit = pattern.unit or birth_unit(_property(properties, "unit", "engUnit"))
                data_type = "string" if known.text else "bool" if metric.datatype == sp.DataType.BOOLEAN \
                    else "float"
                try:
                    known.series = self.register(pattern, overrides, self._name(name), unit, data_type)
                except SeriesLimitReached as exc:
                    rows.error("series_limit", str(exc))
                if known.series is not None:
                    series_list.append(known.series)
                    self.stats.metrics += 1
            node.by_name[(device_id, name)] = known
            if metric.HasField("alias"):
                node.by_alias[metric.alias] = known
            self._reading(known, metric, message, arrival_ns, rows)

    def _node_death(self, node: EdgeNode, message: sp.Payload, arrival_ns: int, rows: Rows) -> bool:
        """True if the node was alive and is now dead."""
        if not node.born:
            return False
        bd_seq = next((sp.get_value(m) for m in message.metrics if m.name == "bdSeq"), None)
        if node.bd_seq is not None and isinstance(bd_seq, int) and bd_seq != node.bd_seq:
            return False  # the will of an earlier session, arriving after the node was born again
        node.born = False
        node.seq = None
        self.stats.deaths += 1
        self.stats.edge_nodes_online = sum(n.born for n in self.nodes.values())
        # The will's timestamp is that of the connection it was registered on: arrival it is.
        for series_list in node.series_of.values():
            self._not_connected(series_list, arrival_ns, False, rows)
        node.series_of.clear()
        node.by_alias.clear()
        node.by_name.clear()
        return True

    def _device_death(self, node: EdgeNode, device_id: str, message: sp.Payload, arrival_ns: int,
                      rows: Rows) -> bool:
        """True if the device was alive and is now dead."""
        series_list = node.series_of.pop(device_id, None)
        if series_list is None:
            return False
        self.stats.deaths += 1
        sourced = message.HasField("timestamp")
        self._not_connected(series_list, message.timestamp * 1_000_000 if sourced else arrival_ns, sourced, rows)
        return True

    @staticmethod
    def _not_connected(series_list: list[int], stamp: int, sourced: bool, rows: Rows) -> None:
        for series in series_list:
            rows.bad(series, stamp, sourced, NOT_CONNECTED)

    def _name(self, text: str) -> str:
        name = asset_name_for(text)  # the rule topic captures follow
        if name != text and len(self.source_names) < self.device.connection.max_series:
            self.source_names[name] = text
        return name

    def _pattern_for(self, name: str) -> SparkplugMetricTag | None:
        for pattern in self.patterns:
            if pattern.matches(name):
                return pattern
        return None

    # ------------------------------------------------------------ data

    def _data(self, node: EdgeNode, device_id: str | None, message: sp.Payload, arrival_ns: int,
              rows: Rows) -> None:
        by_alias, by_name = node.by_alias, node.by_name
        unknown = 0
        for metric in message.metrics:
            aliased = metric.HasField("alias")
            known = by_alias.get(metric.alias) if aliased else by_name.get((device_id, metric.name))
            if known is None:
                if not metric.name.startswith(_PROTOCOL_METRIC):
                    unknown += 1
                continue
            self._reading(known, metric, message, arrival_ns, rows)
        if unknown:
            self.stats.unknown_aliases += 1
            self.stats.dropped_points += unknown
            self.request_rebirth(node.name)

    def _reading(self, known: Known, metric: sp.Metric, message: sp.Payload, arrival_ns: int, rows: Rows) -> None:
        if len(metric.properties.keys):
            properties = sp.get_properties(metric.properties)
            quality = _property(properties, "Quality", "quality")
            if isinstance(quality, int):
                if quality < 0:
                    # the specification's Quality is an Int32: an OPC UA StatusCode with its Bad
                    # bit set arrives negative; it is read (and stored) as the unsigned code it is
                    quality &= 0xFFFFFFFF
                known.quality = quality_of(quality)
                code = _property(properties, "quality_code")
                known.code = code if isinstance(code, int) else (0 if known.quality == GOOD else quality)
        series = known.series
        if series is None:
            self.stats.ignored_points += 1
            return
        if metric.HasField("timestamp"):
            stamp, sourced = metric.timestamp * 1_000_000, True
        elif message.HasField("timestamp"):
            stamp, sourced = message.timestamp * 1_000_000, True
        else:
            stamp, sourced = arrival_ns, False
        quality, code = known.quality, known.code
        if sourced and not self.window.accepts(stamp, arrival_ns):
            rows.error("timestamp", f"metric {known.name!r}: timestamp {stamp // 1_000_000} ms is outside the "
                                    f"plausible time window; arrival time used, quality uncertain")
            stamp, sourced = arrival_ns, False
            if quality == GOOD:
                quality, code = UNCERTAIN, SOURCE_TIME_REPLACED
        value = sp.get_value(metric, known.datatype)
        if value is None:
            number = NAN
            if quality != BAD or not code:
                code = NOT_A_NUMBER if metric.is_null else PAYLOAD_ERROR
                if not metric.is_null:
                    rows.error("payload", f"metric {known.name!r} has no value")
            quality = BAD
        elif known.text:
            rows.texts[len(rows.series)] = str(value)
            number = NAN
        elif isinstance(value, bool | int | float):
            number = float(value)
        else:
            rows.error("payload", f"metric {known.name!r} holds {type(value).__name__}, not a "
                                  f"{sp.DataType(known.datatype).name.lower()}")
            number, quality, code = NAN, BAD, PAYLOAD_ERROR
        rows.add(series, number, stamp, quality, code, sourced)


def _property(properties: dict[str, sp.Value], *keys: str) -> sp.Value:
    for key in keys:
        if key in properties:
            return properties[key]
    return None
