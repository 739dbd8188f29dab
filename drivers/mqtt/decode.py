"""Message → readings, independent of the MQTT client (the driver runs it on paho's network thread;
the test cases run it directly).

Per message: the topic picks the tags whose template matches it (cached per topic, so after the
first message of a topic this is one dict lookup) and the series its captures make; the payload
is parsed once and each tag's JSON path, type and timestamp path applied. A top-level JSON array
is a list of samples: a tag whose path starts with a key (or is ``$``) reads every element.

Nothing here raises for bad input: a payload that is not JSON, lacks a required path, holds the
wrong type, is too big or nested too deep becomes a bad-quality row (code PAYLOAD_ERROR) for each
tag the topic carries, each counted as one error of kind ``payload`` — the flow never stops. A
source time outside the agent's ``source_time`` window is replaced by the arrival time (quality
uncertain, code SOURCE_TIME_REPLACED, counted as a ``timestamp`` error). Payload bytes are read
in the tag's (or device's) ``encoding`` when it declares one, else as UTF-8 with undecodable
bytes replaced; captured topic levels become asset names through :func:`asset_name_for`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from drivers.mqtt.config import MqttDevice, MqttTag
from drivers.mqtt.paths import CAPTURE_LEVELS, MISSING, JsonPath, TopicTemplate, timestamp_to_ns
from drivers.mqtt.redelivery import Remembered
from mos_agent.batch import ReadingBatch, SourceTimeWindow
from mos_agent.taxonomy import CollectorCode, Quality, asset_name_for

GOOD = int(Quality.GOOD)
UNCERTAIN = int(Quality.UNCERTAIN)
BAD = int(Quality.BAD)
PAYLOAD_ERROR = int(CollectorCode.PAYLOAD_ERROR)
SOURCE_TIME_REPLACED = int(CollectorCode.SOURCE_TIME_REPLACED)
NAN = float("nan")
TOPIC_CACHE_LIMIT = 100_000

_NUMBER, _BOOL, _STRING = 0, 1, 2
_TYPE_CODES = {"number": _NUMBER, "bool": _BOOL, "string": _STRING}
_BOOL_WORDS = {"true": 1.0, "on": 1.0, "yes": 1.0, "1": 1.0, "false": 0.0, "off": 0.0, "no": 0.0, "0": 0.0}
# Asset levels that group the ones after them: a captured line makes the device's own cell meaningless.
_GROUPING = ("area", "line", "cell")


class SeriesLimitReached(Exception):
    pass


# register(tag index, asset overrides) -> series index
RegisterFn = Callable[[int, dict[str, str]], int]


@dataclass(frozen=True, slots=True)
class Route:
    index: int  # the tag's position in the device file (= its configured series)
    tag: MqttTag
    template: TopicTemplate
    path: JsonPath
    timestamp: JsonPath | None
    type_code: int
    required: bool
    per_element: bool  # applies to every element of a top-level array
    encoding: str | None  # how the payload's bytes are read; None: UTF-8


@dataclass(frozen=True, slots=True)
class Target:
    route: Route
    series: int


class Rows:
    """Columns of decoded readings, plus the errors met, until the driver flushes them."""

    __slots__ = ("codes", "errors", "messages", "quality", "redelivered", "remembered", "series", "source_rows",
                 "stamps", "texts", "values")

    def __init__(self) -> None:
        self.series: list[int] = []
        self.values: list[float] = []
        self.stamps: list[int] = []
        self.quality: list[int] = []
        self.codes: list[int] = []
        self.texts: dict[int, str] = {}
        self.errors: dict[str, list] = {}  # kind -> [count, last message]
        self.messages = 0
        self.source_rows: list[int] = []  # rows whose time the source gave (or a first delivery)
        self.remembered: list[Remembered] = []  # messages whose readings' times are to be remembered
        self.redelivered = 0  # messages given their first delivery's times

    def __len__(self) -> int:
        return len(self.series)

    def error(self, kind: str, message: str, count: int = 1) -> None:
        entry = self.errors.get(kind)
        if entry is None:
            self.errors[kind] = [count, message]
        else:
            entry[0] += count
            entry[1] = message

    def add(self, series: int, value: float, stamp: int, quality: int, code: int, sourced: bool) -> None:
        if sourced:
            self.source_rows.append(len(self.series))
        self.series.append(series)
        self.values.append(value)
        self.stamps.append(stamp)
        self.quality.append(quality)
        self.codes.append(code)

    def bad(self, series: int, stamp: int, sourced: bool = False, code: int = PAYLOAD_ERROR) -> None:
        self.add(series, NAN, stamp, BAD, code, sourced)

    def restore_times(self, first_row: int, times: tuple[int, ...]) -> bool:
        """Give the rows of a redelivered message from ``first_row`` on the times its first
        delivery was stored with (if it made as many readings then)."""
        if len(self.series) - first_row != len(times):
            return False
        self.stamps[first_row:] = times
        self.source_rows.extend(range(first_row, len(self.series)))
        self.redelivered += 1
        return True

    def to_batch(self) -> ReadingBatch:
        batch = ReadingBatch.build(self.series, self.values, self.stamps, self.quality, self.codes,
                                   self.texts or None)
        if self.source_rows:
            batch.source_time = np.zeros(len(batch), dtype=bool)
            batch.source_time[self.source_rows] = True
        return batch


def asset_overrides(captured: dict[str, str]) -> dict[str, str]:
    """Captured levels replace the device's; grouping levels below the deepest captured one are
    emptied (the device's own cell does not belong to a line taken from the topic)."""
    overrides = {level: asset_name_for(value) for level, value in captured.items()}
    deepest = max((_GROUPING.index(level) for level in captured if level in _GROUPING), default=None)
    if deepest is not None:
        for level in _GROUPING[deepest + 1:]:
            overrides.setdefault(level, "")
    return overrides


def parse_payload(payload: bytes | bytearray, encoding: str | None) -> tuple[object, bool]:
    """The payload as JSON (True second) or, if it is not JSON, as stripped text (False).
    Bytes that are not valid in the encoding (UTF-8 unless declared) become U+FFFD; JSON nested
    deeper than Python's recursion limit raises RecursionError."""
    if encoding is None:
        try:
            return json.loads(payload), True
        except UnicodeDecodeError:
            text = payload.decode("utf-8", "replace")
        except ValueError:
            return payload.decode("utf-8", "replace").strip(), False
    else:
        text = payload.decode(encoding, "replace")
    try:
        return json.loads(text), True
    except ValueError:
        return text.strip(), False


class Decoder:
    def __init__(self, device: MqttDevice, register: RegisterFn, max_payload: int | None = None,
                 window: SourceTimeWindow | None = None, source_names: dict[str, str] | None = None) -> None:
        self.device = device
        self.register = register
        # asset name → captured text, for the names asset_name_for changed (shown in the status)
        self.source_names = source_names if source_names is not None else {}
        self.max_payload = max_payload if max_payload is not None else device.connection.max_payload
        self.window = window if window is not None else SourceTimeWindow()
        self.routes = [
            Route(i, tag, tag.template, tag.path, tag.timestamp_path, _TYPE_CODES[tag.type], tag.required,
                  tag.path.is_root or tag.path.starts_with_key, tag.encoding or device.encoding)
            for i, tag in enumerate(device.topic_tags)
        ]
        self._targets: dict[str, tuple[Target, ...]] = {}

    # ------------------------------------------------------------ topics

    def targets(self, topic: str, rows: Rows) -> tuple[Target, ...]:
        found = self._targets.get(topic)
        if found is None:
            found = self._resolve(topic, rows)
            if len(self._targets) >= TOPIC_CACHE_LIMIT:
                self._targets.clear()  # a topic per message id would otherwise grow this forever
            self._targets[topic] = found
        return found

    def _resolve(self, topic: str, rows: Rows) -> tuple[Target, ...]:
        levels = topic.split("/")
        found: list[Target] = []
        for route in self.routes:
            captured = route.template.match(levels)
            if captured is None:
                continue
            if not captured:
                found.append(Target(route, route.index))
                continue
            empty = [level for level in CAPTURE_LEVELS if captured.get(level) == ""]
            if empty:
                rows.error("topic", f"topic {topic!r}: empty level where {route.tag.topic!r} captures {empty[0]}")
                continue
            overrides = asset_overrides(captured)
            try:
                found.append(Target(route, self.register(route.index, overrides)))
            except SeriesLimitReached as exc:
                rows.error("series_limit", str(exc))
                continue
            for level, text in captured.items():
                name = overrides[level]
                if name != text and len(self.source_names) < self.device.connection.max_series:
                    self.source_names[name] = text
        return tuple(found)

    # ------------------------------------------------------------ payloads

    def decode(self, topic: str, payload: bytes | bytearray, arrival_ns: int, rows: Rows) -> None:
        rows.messages += 1
        targets = self._targets.get(topic)
        if targets is None:
            targets = self.targets(topic, rows)
        if not targets:
            return
        if len(payload) > self.max_payload:
            rows.error("payload", f"{topic}: payload of {len(payload)} bytes is over max_payload "
                                  f"({self.max_payload} bytes)", len(targets))
            for target in targets:
                rows.bad(target.series, arrival_ns)
            return
        encoding = targets[0].route.encoding
        try:
            if encoding is None:  # the common case inline: UTF-8 JSON, parsed straight from bytes
                try:
                    doc, is_json = json.loads(payload), True
                except ValueError:
                    doc, is_json = parse_payload(payload, encoding)
            else:
                doc, is_json = parse_payload(payload, encoding)
        except RecursionError:
            rows.error("payload", f"{topic}: JSON nested too deep to read", len(targets))
            for target in targets:
                rows.bad(target.series, arrival_ns)
            return
        for target in targets:
            route = target.route
            if route.encoding != encoding:  # tags of one topic reading its bytes differently: rare
                encoding = route.encoding
                doc, is_json = parse_payload(payload, encoding)
            if route.per_element and type(doc) is list:
                # Samples without a source time would all land on the arrival time and overwrite
                # each other in the store; a nanosecond apart they stay distinct, in order.
                for offset, element in enumerate(doc):
                    self._reading(topic, route, target.series, element, is_json, arrival_ns + offset, rows)
            else:
                self._reading(topic, route, target.series, doc, is_json, arrival_ns, rows)

    def _reading(self, topic: str, route: Route, series: int, doc: object, is_json: bool, arrival_ns: int,
                 rows: Rows) -> None:
        # any JSON value; the branches below look at its exact type
        value: Any = route.path.get(doc) if route.path.steps else doc
        stamp = arrival_ns
        quality, code = GOOD, 0
        sourced = False
        stamp_path = route.timestamp
        if stamp_path is not None:
            raw = stamp_path.get(doc)
            source = timestamp_to_ns(raw) if raw is not MISSING else None
            if source is not None:
                if self.window.accepts(source, arrival_ns):
                    stamp = source
                    sourced = True
                else:
                    quality, code = UNCERTAIN, SOURCE_TIME_REPLACED
                    if value is not MISSING:
                        rows.error("timestamp", f"{topic}: {stamp_path.source} ({raw!r:.40}) is outside the "
                                                f"plausible time window; arrival time used, quality uncertain")
            elif value is not MISSING:  # a payload without the value is reported as such below
                rows.error("timestamp", f"{topic}: {stamp_path.source} is "
                                        f"{'missing' if raw is MISSING else f'not a timestamp ({raw!r:.40})'}; "
                                        f"arrival time used")
        if value is MISSING:
            if not route.required:
                return
            if not is_json:
                rows.error("payload", f"{topic}: payload is not JSON, so {route.path.source} "
                                      f"({route.tag.name}) cannot be read")
            else:
                rows.error("payload", f"{topic}: no {route.path.source} in the payload ({route.tag.name})")
            rows.bad(series, stamp, sourced)
            return
        kind = type(value)
        type_code = route.type_code
        if type_code == _NUMBER:
            if kind is float or kind is bool:
                number = float(value)
            elif kind is int or kind is str:
                try:
                    number = float(value)
                except (ValueError, OverflowError):  # text, or an integer beyond float range
                    self._wrong_type(topic, route, value, series, stamp, sourced, rows)
                    return
            else:
                self._wrong_type(topic, route, value, series, stamp, sourced, rows)
                return
        elif type_code == _BOOL:
            if kind is bool or kind is int or kind is float:
                number = 1.0 if value else 0.0
            elif kind is str and value.strip().lower() in _BOOL_WORDS:
                number = _BOOL_WORDS[value.strip().lower()]
            else:
                self._wrong_type(topic, route, value, series, stamp, sourced, rows)
                return
        else:
            if kind is str:
                text = value
            elif kind is bool:
                text = "true" if value else "false"
            elif kind is int or kind is float:
                text = str(value)
            else:
                self._wrong_type(topic, route, value, series, stamp, sourced, rows)
                return
            rows.texts[len(rows.series)] = text
            number = NAN
        if sourced:
            rows.source_rows.append(len(rows.series))
        rows.series.append(series)
        rows.values.append(number)
        rows.stamps.append(stamp)
        rows.quality.append(quality)
        rows.codes.append(code)

    @staticmethod
    def _wrong_type(topic: str, route: Route, value: object, series: int, stamp: int, sourced: bool,
                    rows: Rows) -> None:
        shown = "null" if value is None else type(value).__name__.replace("dict", "object").replace("list", "array")
        rows.error("payload", f"{topic}: {route.path.source} ({route.tag.name}) is {shown}, "
                              f"not a {route.tag.type}")
        rows.bad(series, stamp, sourced)
