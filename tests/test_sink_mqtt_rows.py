"""Line protocol back into readings for the MQTT sink: the column fast path and the line-by-line
path agree with the reference parser (mos_agent.lineprotocol.parse_lines) on every body."""

from __future__ import annotations

import numpy as np
import pytest

from mos_agent.batch import ReadingBatch
from mos_agent.lineprotocol import LineProtocolError, parse_lines
from mos_agent.normalise import Normaliser
from mos_agent.series import SeriesSpec, SeriesTable, make_asset
from mos_agent.sinks.mqtt.rows import ReadingParser
from mos_agent.taxonomy import Quality


def _body(values, quality=Quality.GOOD, codes=0, texts=None, tag="t", equipment="press-01") -> bytes:
    table = SeriesTable()
    asset = make_asset({"site": "changwon", "area": "stamping", "equipment": equipment})
    for i in range(3):
        table.add(SeriesSpec(asset=asset, tag=f"{tag}{i}", category="process", kind="sample", stage="forming",
                             unit="bar"))
    n = len(values)
    batch = ReadingBatch.build(np.arange(n) % 3, values, 1_767_225_600_000_000_000 + np.arange(n) * 1000, quality,
                               codes, texts, source_time=True)
    return Normaliser(table).process(batch).body


def _reference(body: bytes) -> list[tuple]:
    out = []
    for measurement, tags, fields, ts in parse_lines(body):
        value = fields.get("value")
        out.append((measurement, tags.get("tag"), tags.get("equipment"), tags["quality"],
                    float(value) if value is not None else None, fields.get("text"), fields.get("quality_code", 0), ts))
    return out


def _ours(parser: ReadingParser, body: bytes) -> list[tuple]:
    return [(s.category, s.tag, s.device, s.quality, value, text, code, ts)
            for s, value, text, code, ts in parser.parse(body)]


BODIES = {
    "numbers": _body([1.5, -2.0, 3e-7, 1e300]),
    "failed reads": _body([np.nan, np.nan], quality=Quality.BAD, codes=1002),
    "uncertain with a code": _body([5.0, 6.0], quality=Quality.UNCERTAIN, codes=1005),
    "text": _body([np.nan, 4.0, np.nan], texts={0: 'a "quoted" text, with spaces', 2: "back\\slash"}),
    "escaped names": _body([1.0, 2.0], tag="a tag,with=specials "),
}


@pytest.mark.parametrize("name", list(BODIES))
def test_every_body_reads_as_the_reference_parser_reads_it(name: str) -> None:
    body = BODIES[name]
    parser = ReadingParser()
    assert _ours(parser, body) == _reference(body)  # first time: heads learnt line by line
    assert _ours(parser, body) == _reference(body)  # then from the remembered heads
    # and in a body of mixed kinds
    mixed = b"".join(BODIES.values())
    assert _ours(parser, mixed) == _reference(mixed)


def test_a_series_is_one_object_whichever_path_read_it() -> None:
    parser = ReadingParser()
    first = parser.parse(BODIES["numbers"])
    again = parser.parse(BODIES["numbers"])
    assert all(a[0] is b[0] for a, b in zip(first, again, strict=True))
    # the second time the body is read by columns, not line by line
    by_columns = parser._parse_numbers(BODIES["numbers"].decode())
    assert by_columns is not None and list(by_columns) == list(again)
    assert parser._parse_numbers(BODIES["failed reads"].decode()) is None


def test_a_malformed_line_is_named() -> None:
    parser = ReadingParser()
    body = BODIES["numbers"] + b"process,tag=x value=oops 1\n"
    with pytest.raises(LineProtocolError, match="line 5"):
        parser.parse(body)
