"""DataValue → readings, value by value: timestamps and their fallbacks, StatusCode severity, the
value types OPC UA sends, arrays and what has no reading in it. Pure functions over asyncua's own
types, no server needed."""

from __future__ import annotations

import datetime as dt
import math

from asyncua import ua

from drivers.opcua.config import OpcUaTag
from drivers.opcua.decode import Item, Rows, quality_of, time_ns
from mos_agent.batch import SourceTimeWindow
from mos_agent.taxonomy import CollectorCode, Quality

T_SOURCE = dt.datetime(2025, 3, 1, 8, 30, 0, 123456, tzinfo=dt.UTC)
T_SERVER = dt.datetime(2025, 3, 1, 8, 30, 1, tzinfo=dt.UTC)
NOW_NS = 1_750_000_000_000_000_000


def item(type_: str = "auto", series: int = 0, enum: dict[int, str] | None = None,
         encoding: str | None = None) -> Item:
    tag = OpcUaTag(name="t", node="ns=2;s=X", category="process", type=type_)
    return Item(ua.NodeId("X", 2), series, tag, "t", 1.0, enum_names=enum, encoding=encoding)


def one(value: object, type_: str = "auto", status: int = 0, source: dt.datetime | None = T_SOURCE,
        server: dt.datetime | None = T_SERVER, enum: dict[int, str] | None = None,
        variant: ua.VariantType | None = None,
        encoding: str | None = None) -> tuple[list[tuple[float | str | None, int, int, int]], Rows]:
    rows = Rows()
    added: list[int] = []

    def add_element(it: Item, index: int) -> int:
        added.append(index)
        return 100 + index

    dv = ua.DataValue(Value=ua.Variant(value, variant), StatusCode=ua.StatusCode(status),
                      SourceTimestamp=source, ServerTimestamp=server)
    rows.add(item(type_, enum=enum, encoding=encoding), dv, NOW_NS, add_element, SourceTimeWindow())
    out = []
    for row in range(len(rows)):
        v = rows.texts.get(row, rows.values[row])
        out.append((None if isinstance(v, float) and math.isnan(v) else v, rows.quality[row], rows.codes[row],
                    rows.series[row]))
    return out, rows


def test_timestamps_source_then_server_then_acquisition() -> None:
    assert time_ns(T_SOURCE) == 1_740_817_800_123_456_000
    assert one(1.5)[1].times == [time_ns(T_SOURCE)]
    assert one(1.5, source=None)[1].times == [time_ns(T_SERVER)]
    assert one(1.5, source=None, server=None)[1].times == [NOW_NS]
    # OPC UA's "no time" (1601-01-01) counts as none
    assert one(1.5, source=dt.datetime(1601, 1, 1, tzinfo=dt.UTC))[1].times == [time_ns(T_SERVER)]


def test_status_code_severity_becomes_quality_and_the_code_is_kept() -> None:
    assert quality_of(0) == Quality.GOOD
    assert quality_of(ua.StatusCodes.UncertainLastUsableValue) == Quality.UNCERTAIN
    assert quality_of(ua.StatusCodes.BadSensorFailure) == Quality.BAD
    assert quality_of(0xC0000000) == Quality.BAD
    rows, _ = one(None, status=ua.StatusCodes.BadSensorFailure)
    assert rows == [(None, Quality.BAD, ua.StatusCodes.BadSensorFailure, 0)]
    rows, _ = one(3.25, status=ua.StatusCodes.UncertainSensorNotAccurate)
    assert rows == [(3.25, Quality.UNCERTAIN, ua.StatusCodes.UncertainSensorNotAccurate, 0)]


def test_value_types() -> None:
    assert one(True)[0] == [(1.0, 0, 0, 0)]
    assert one(42, variant=ua.VariantType.UInt32)[0] == [(42.0, 0, 0, 0)]
    assert one("O1001_FLANGE")[0] == [("O1001_FLANGE", 0, 0, 0)]
    assert one(ua.LocalizedText("Executing", "en"))[0] == [("Executing", 0, 0, 0)]
    assert one(ua.QualifiedName("Idle", 2))[0] == [("Idle", 0, 0, 0)]
    assert one(T_SERVER)[0] == [("2025-03-01T08:30:01+00:00", 0, 0, 0)]
    # a Good value without a value: NaN, which the normaliser turns into a bad NOT_A_NUMBER reading
    assert one(None)[0] == [(None, 0, 0, 0)]


def test_type_hints() -> None:
    assert one(2, "enum", enum={0: "Automatic", 2: "MDI"}, variant=ua.VariantType.Int32)[0] == [("MDI", 0, 0, 0)]
    assert one(7, "enum", enum={0: "Automatic"}, variant=ua.VariantType.Int32)[0] == [("7", 0, 0, 0)]
    assert one(12, "string", variant=ua.VariantType.Int32)[0] == [("12", 0, 0, 0)]
    assert one("17.5", "number")[0] == [(17.5, 0, 0, 0)]
    rows, collected = one("seventeen", "number")
    assert rows == [(None, Quality.BAD, CollectorCode.DECODE_ERROR, 0)]
    assert collected.errors["decode"][0] == 1


def test_arrays_register_element_series_and_flatten() -> None:
    rows, _ = one([1.0, 2.0, 3.0])
    assert [(v, s) for v, _, _, s in rows] == [(1.0, 100), (2.0, 101), (3.0, 102)]
    rows, _ = one([[1, 2], [3, 4]], variant=ua.VariantType.Int32)
    assert [(v, s) for v, _, _, s in rows] == [(1.0, 100), (2.0, 101), (3.0, 102), (4.0, 103)]
    rows, _ = one(["a", "b"])
    assert [v for v, *_ in rows] == ["a", "b"]


def test_what_has_no_reading_becomes_a_bad_decode_error() -> None:
    rows, collected = one(b"\x00\x01", variant=ua.VariantType.ByteString)
    assert rows == [(None, Quality.BAD, CollectorCode.DECODE_ERROR, 0)]
    assert "ByteString" in collected.errors["decode"][1]
    rows, collected = one(ua.Range(Low=0, High=1), variant=ua.VariantType.ExtensionObject)
    assert rows == [(None, Quality.BAD, CollectorCode.DECODE_ERROR, 0)]
    assert "structure" in collected.errors["decode"][1]


def test_batch_columns() -> None:
    _, rows = one([1.0, 2.0])
    rows.failed([5], CollectorCode.CONNECTION_LOST, NOW_NS)
    batch = rows.to_batch()
    assert batch.series.tolist() == [100, 101, 5]
    assert batch.quality.tolist() == [0, 0, 2] and batch.codes.tolist() == [0, 0, 1002]
    assert batch.timestamps.tolist() == [time_ns(T_SOURCE)] * 2 + [NOW_NS]


def test_a_timestamp_outside_the_window_becomes_the_acquisition_time_flagged_uncertain() -> None:
    """A SourceTimestamp in 2300 is beyond int64 nanoseconds: building the time column used to
    raise OverflowError and restart the driver, losing every other reading of the batch."""
    future = dt.datetime(2300, 1, 1, tzinfo=dt.UTC)
    out, rows = one(1.5, source=future)
    assert out == [(1.5, Quality.UNCERTAIN, CollectorCode.SOURCE_TIME_REPLACED, 0)]
    assert rows.times == [NOW_NS] and rows.errors["timestamp"][0] == 1
    rows.to_batch()  # fits the int64 column
    # the server's timestamp stands in only when it is plausible itself
    assert one(1.5, source=None, server=future)[1].times == [NOW_NS]
    assert one(1.5, source=dt.datetime(1985, 1, 1, tzinfo=dt.UTC))[1].times == [NOW_NS]
    # a bad or uncertain status keeps its own code; only the time is replaced
    out, rows = one(1.5, status=0x40000000, source=future)
    assert out == [(1.5, Quality.UNCERTAIN, 0x40000000, 0)] and rows.times == [NOW_NS]
    out, rows = one(None, status=0x80000000, source=future)
    assert out == [(None, Quality.BAD, 0x80000000, 0)] and rows.times == [NOW_NS]


def test_strings_in_a_declared_code_page_are_read_in_it() -> None:
    raw = "온도 센서".encode("cp949").decode("utf-8", "surrogateescape")  # as asyncua decodes it
    assert one(raw, encoding="cp949")[0] == [("온도 센서", Quality.GOOD, 0, 0)]
    assert one(ua.LocalizedText(raw, "ko"), encoding="euc_kr")[0] == [("온도 센서", Quality.GOOD, 0, 0)]
    # undeclared: handed on as it came (the normaliser stores U+FFFD for what is not Unicode)
    assert one(raw)[0] == [(raw, Quality.GOOD, 0, 0)]


def test_an_array_nested_deeper_than_python_recurses_is_a_decode_error() -> None:
    value: list = [1.0]
    for _ in range(5000):
        value = [value]
    out, rows = one(value)
    assert out == [(None, Quality.BAD, CollectorCode.DECODE_ERROR, 0)] and rows.errors["decode"][0] == 1
