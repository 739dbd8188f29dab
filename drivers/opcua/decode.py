"""OPC UA ``DataValue`` s → columns of a :class:`ReadingBatch`.

A StatusCode's two top bits are its severity (Part 4, 7.39): 00 good, 01 uncertain, 10/11 bad;
the whole 32-bit code is kept as the reading's quality code. The source timestamp is the reading's
time, the server timestamp stands in when the source sent none, else the acquisition time.

Arrays become one series per element (``name[i]``, flattened for multi-dimensional arrays),
registered the first time an element index is seen. Strings, localized texts and enumerations
(``type: enum``) go to the batch's texts, read in the tag's ``encoding`` when it declares one
(asyncua keeps bytes that are not UTF-8 as surrogates, so the original bytes are recovered). Values
with no reading in them (structures, byte strings) become bad rows with
:attr:`CollectorCode.DECODE_ERROR` — never silently dropped. A timestamp outside the agent's
``source_time`` window (a server clock in 2300, beyond what int64 nanoseconds hold) is replaced by
the acquisition time: quality uncertain, :attr:`CollectorCode.SOURCE_TIME_REPLACED`.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from asyncua import ua

from drivers.opcua.config import OpcUaTag
from mos_agent.batch import ReadingBatch, SourceTimeWindow
from mos_agent.taxonomy import CollectorCode, Quality
from mos_agent.text import decoded

_NO_TIME_BEFORE = dt.datetime(1700, 1, 1, tzinfo=dt.UTC)  # OPC UA "no timestamp" is 1601-01-01

# StatusCode severity (top two bits) → quality class
_SEVERITY = (Quality.GOOD, Quality.UNCERTAIN, Quality.BAD, Quality.BAD)


def quality_of(code: int) -> int:
    return _SEVERITY[(code >> 30) & 3]


def status_name(code: int) -> str:
    try:
        return ua.StatusCode(code).name
    except Exception:  # an unknown code: show it in hex as OPC UA tools do
        return f"0x{code:08X}"


def time_ns(stamp: dt.datetime | None) -> int | None:
    """A DataValue timestamp in ns since the epoch (microsecond resolution, as asyncua decodes),
    or None when the server sent none."""
    if stamp is None or stamp < _NO_TIME_BEFORE:
        return None
    return round(stamp.timestamp() * 1e6) * 1000


@dataclass(slots=True, eq=False)
class Item:
    """One node the driver reads or monitors, and the series its readings go to."""

    node_id: ua.NodeId
    series: int  # the tag's own series (scalar values; bad rows before an array's size is known)
    tag: OpcUaTag
    name: str
    interval: float  # poll interval (poll) or sampling interval (subscribe)
    enum_names: dict[int, str] | None = None
    elements: list[int] = field(default_factory=list)  # series of array elements, by flat index
    numeric_type: bool | None = None  # from the node's DataType, when read at connect
    encoding: str | None = None  # the code page of its text values; None: UTF-8

    def all_series(self) -> list[int]:
        return self.elements if self.elements else [self.series]


class UnsupportedValue(Exception):
    pass


def _text_of(value: Any) -> str | None:
    """The text of a value that reads as text, or None."""
    if isinstance(value, str):
        return value
    if isinstance(value, ua.LocalizedText):
        return value.Text or ""
    if isinstance(value, ua.QualifiedName):
        return value.Name or ""
    if isinstance(value, ua.NodeId):
        return value.to_string()
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return None


def _describe(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return "a ByteString"
    if isinstance(value, ua.ExtensionObject) or hasattr(value, "__dataclass_fields__"):
        return f"a structure ({type(value).__name__}); configure its fields as separate nodes"
    return f"a value of type {type(value).__name__}"


class Rows:
    """Column lists of readings being gathered (a publish cycle, a poll round)."""

    __slots__ = ("codes", "errors", "quality", "series", "texts", "times", "values")

    def __init__(self) -> None:
        self.series: list[int] = []
        self.values: list[float] = []
        self.times: list[int] = []
        self.quality: list[int] = []
        self.codes: list[int] = []
        self.texts: dict[int, str] = {}
        self.errors: dict[str, tuple[int, str]] = {}  # kind → (count, last message)

    def __len__(self) -> int:
        return len(self.series)

    def error(self, kind: str, message: str) -> None:
        count = self.errors.get(kind, (0, ""))[0]
        self.errors[kind] = (count + 1, message)

    def failed(self, series: list[int], code: int, time_ns_: int, quality: int = Quality.BAD) -> None:
        n = len(series)
        self.series.extend(series)
        self.values.extend([math.nan] * n)
        self.times.extend([time_ns_] * n)
        self.quality.extend([quality] * n)
        self.codes.extend([code] * n)

    def _one(self, series: int, value: Any, item: Item, t: int, q: int, code: int) -> None:
        """One scalar value of ``item`` as a row of ``series``."""
        kind = item.tag.type
        if value is None:
            number = math.nan
        elif type(value) is float or type(value) is int:
            if kind == "enum" and type(value) is int:
                self._text(series, (item.enum_names or {}).get(value, str(value)), t, q, code)
                return
            if kind == "string":
                self._text(series, str(value), t, q, code)
                return
            number = float(value)
        elif type(value) is bool:
            if kind == "string":
                self._text(series, str(value).lower(), t, q, code)
                return
            number = 1.0 if value else 0.0
        else:
            text = _text_of(value)
            if text is None:
                if isinstance(value, int | float):  # numpy scalars, IntEnum
                    number = float(value)
                else:
                    self.error("decode", f"{item.name}: {_describe(value)}")
                    self.failed([series], CollectorCode.DECODE_ERROR, t)
                    return
            else:
                if item.encoding is not None and isinstance(value, str | ua.LocalizedText):
                    text = decoded(text, item.encoding)
                if kind == "number" or kind == "bool":
                    try:
                        number = float(text)
                    except ValueError:
                        self.error("decode", f"{item.name}: {text[:40]!r} is not a number (tag type {kind})")
                        self.failed([series], CollectorCode.DECODE_ERROR, t)
                        return
                else:
                    self._text(series, text, t, q, code)
                    return
        self.series.append(series)
        self.values.append(number)
        self.times.append(t)
        self.quality.append(q)
        self.codes.append(code)

    def _text(self, series: int, text: str, t: int, q: int, code: int) -> None:
        self.texts[len(self.series)] = text
        self.series.append(series)
        self.values.append(math.nan)
        self.times.append(t)
        self.quality.append(q)
        self.codes.append(code)

    def add(self, item: Item, dv: ua.DataValue, now_ns: int, add_element: Callable[[Item, int], int],
            window: SourceTimeWindow) -> None:
        """One DataValue of ``item``: ``add_element(item, index)`` registers an array element's
        series the first time it is seen."""
        status = dv.StatusCode
        code = status.value if status is not None else 0
        q = _SEVERITY[(code >> 30) & 3]
        t = time_ns(dv.SourceTimestamp)
        if t is None:
            t = time_ns(dv.ServerTimestamp) or now_ns
        if not window.accepts(t, now_ns):
            self.error("timestamp", f"{item.name}: timestamp {t // 10**9} s since 1970 is outside the plausible "
                                    "window; acquisition time used, quality uncertain")
            t = now_ns
            if q == Quality.GOOD:
                q, code = Quality.UNCERTAIN, int(CollectorCode.SOURCE_TIME_REPLACED)
        variant = dv.Value
        value = variant.Value if variant is not None else None
        if q == Quality.BAD:
            self.failed(item.all_series(), code, t)
            return
        if isinstance(value, list):
            try:
                flat = _flatten(value)
            except RecursionError:  # an array of more dimensions than anyone uses: not a reading
                self.error("decode", f"{item.name}: an array nested too deep to read")
                self.failed(item.all_series(), CollectorCode.DECODE_ERROR, t)
                return
            elements = item.elements
            while len(elements) < len(flat):
                elements.append(add_element(item, len(elements)))
            for i, element in enumerate(flat):
                self._one(elements[i], element, item, t, q, code)
            return
        self._one(item.series, value, item, t, q, code)

    def to_batch(self) -> ReadingBatch:
        """Times are the server's (source or server timestamp; the acquisition time only where it
        sent neither): written as they are, so a value polled again unchanged — same source
        timestamp — overwrites itself in the store instead of becoming a second point."""
        return ReadingBatch(
            series=np.array(self.series, dtype=np.int32),
            values=np.array(self.values, dtype=np.float64),
            timestamps=np.array(self.times, dtype=np.int64),
            quality=np.array(self.quality, dtype=np.uint8),
            codes=np.array(self.codes, dtype=np.int64),
            texts=self.texts or None,
            source_time=np.ones(len(self.series), dtype=bool),
        )


def _flatten(values: list[Any]) -> list[Any]:
    if not any(isinstance(v, list) for v in values):
        return values
    flat: list[Any] = []
    for v in values:
        if isinstance(v, list):
            flat.extend(_flatten(v))
        else:
            flat.append(v)
    return flat
