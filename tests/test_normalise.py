"""Normaliser: raw batch → exact line-protocol lines (scale/offset, deadband, NaN, range, text)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mos_agent.batch import ReadingBatch
from mos_agent.lineprotocol import parse_lines, with_quality_codes
from mos_agent.normalise import Normaliser
from mos_agent.series import SeriesSpec, SeriesTable, make_asset
from mos_agent.taxonomy import CollectorCode, Quality

ASSET = make_asset({"enterprise": "acme", "site": "changwon", "area": "stamping", "line": "line-1",
                    "equipment": "press-01"})
TAGS = "site=changwon,area=stamping,line=line-1,equipment=press-01"


def table_of(*specs: SeriesSpec) -> SeriesTable:
    table = SeriesTable()
    for spec in specs:
        table.add(spec)
    return table


def spec(tag: str, **kw) -> SeriesSpec:
    defaults = {"category": "process", "kind": "sample", "stage": "forming", "unit": "bar"}
    return SeriesSpec(asset=ASSET, tag=tag, **{**defaults, **kw})


def lines(body: bytes) -> list[str]:
    return body.decode().splitlines()


def prefix(tag: str, quality: str, category: str = "process", kind: str = "sample", unit: str | None = "bar") -> str:
    unit_part = f",unit={unit}" if unit else ""
    return f"{category},{TAGS},tag={tag},stage=forming,kind={kind}{unit_part},quality={quality}"


def test_scale_and_offset_are_applied() -> None:
    norm = Normaliser(table_of(spec("pressure", scale=0.25, offset=1.5), spec("plain")))
    chunk = norm.process(ReadingBatch.build([0, 1, 0], [10.0, 7.0, -2.0], [1000, 1000, 2000]))
    assert lines(chunk.body) == [
        f"{prefix('pressure', 'good')} value=4.0 1000",
        f"{prefix('plain', 'good')} value=7.0 1000",
        f"{prefix('pressure', 'good')} value=1.0 2000",
    ]
    assert chunk.points == 3
    assert chunk.newest_ns == 2000


def test_deadband_suppresses_small_moves_but_passes_quality_changes() -> None:
    norm = Normaliser(table_of(spec("pressure", deadband=0.5)))
    outputs = []
    # one row per batch: the vectorised path
    for value, quality, t in [(10.0, Quality.GOOD, 1), (10.2, Quality.GOOD, 2), (10.6, Quality.GOOD, 3),
                              (10.6, Quality.UNCERTAIN, 4), (10.7, Quality.UNCERTAIN, 5), (10.7, Quality.GOOD, 6)]:
        outputs += lines(norm.process(ReadingBatch.build([0], [value], [t], quality=int(quality))).body)
    assert outputs == [
        f"{prefix('pressure', 'good')} value=10.0 1",
        f"{prefix('pressure', 'good')} value=10.6 3",
        f"{prefix('pressure', 'uncertain')} value=10.6 4",
        f"{prefix('pressure', 'good')} value=10.7 6",
    ]
    assert norm.counts.suppressed == 2
    assert norm.counts.kept == 4


def test_deadband_with_repeated_series_in_one_batch() -> None:
    norm = Normaliser(table_of(spec("pressure", deadband=1.0), spec("speed", unit="/min")))
    batch = ReadingBatch.build([0, 1, 0, 0, 1, 0], [5.0, 100.0, 5.5, 6.0, 100.0, 6.2],
                               [1, 1, 2, 3, 3, 4], quality=[0, 0, 0, 0, 0, 2])
    assert lines(norm.process(batch).body) == [
        f"{prefix('pressure', 'good')} value=5.0 1",
        f"{prefix('speed', 'good', unit='/min')} value=100.0 1",
        f"{prefix('pressure', 'good')} value=6.0 3",
        # no deadband on speed: an unchanged value is still written
        f"{prefix('speed', 'good', unit='/min')} value=100.0 3",
        # bad quality is a change of quality class, and a bad row carries no value: its code is
        # its only field, written even when 0
        f"{prefix('pressure', 'bad')} quality_code=0i 4",
    ]


def test_nan_and_infinity_become_bad_not_a_number() -> None:
    norm = Normaliser(table_of(spec("pressure"), spec("temperature", unit="Cel")))
    chunk = norm.process(ReadingBatch.build([0, 1, 0], [np.nan, np.inf, 3.5], [10, 10, 20]))
    assert lines(chunk.body) == [
        f"{prefix('pressure', 'bad')} quality_code={CollectorCode.NOT_A_NUMBER.value}i 10",
        f"{prefix('temperature', 'bad', unit='Cel')} quality_code=1004i 10",
        f"{prefix('pressure', 'good')} value=3.5 20",
    ]
    assert norm.counts.not_a_number == 2
    assert norm.counts.bad == 2


def test_out_of_range_is_uncertain_and_keeps_its_value() -> None:
    norm = Normaliser(table_of(spec("pressure", range=(0.0, 250.0), scale=0.5)))
    chunk = norm.process(ReadingBatch.build([0, 0, 0, 0], [100.0, 600.0, -2.0, 500.0], [1, 2, 3, 4]))
    assert lines(chunk.body) == [
        f"{prefix('pressure', 'good')} value=50.0 1",
        f"{prefix('pressure', 'uncertain')} value=300.0,quality_code={CollectorCode.OUT_OF_RANGE.value}i 2",
        f"{prefix('pressure', 'uncertain')} value=-1.0,quality_code=1005i 3",
        # the bounds themselves are in range
        f"{prefix('pressure', 'good')} value=250.0 4",
    ]
    assert norm.counts.out_of_range == 2


def test_failed_reads_are_bad_records_with_the_collector_code() -> None:
    norm = Normaliser(table_of(spec("pressure"), spec("speed", unit=None)))
    chunk = norm.process(ReadingBatch.failed([0, 1], CollectorCode.TIMEOUT, timestamp_ns=99))
    assert lines(chunk.body) == [
        f"{prefix('pressure', 'bad')} quality_code=1001i 99",
        f"{prefix('speed', 'bad', unit=None)} quality_code=1001i 99",
    ]


def test_text_rows_are_string_fields_escaped() -> None:
    table = table_of(spec("program", category="production", kind="event", unit=None, data_type="string"),
                     spec("pressure"))
    norm = Normaliser(table)
    text = 'PRG "A-7"\\ end\nline 2'
    batch = ReadingBatch.build([0, 1, 0], [np.nan, 2.5, np.nan], [5, 5, 6], quality=[0, 0, 2],
                               codes=[0, 0, 7], texts={0: text, 2: "ignored because bad"})
    assert lines(norm.process(batch).body) == [
        prefix("program", "good", category="production", kind="event", unit=None)
        + ' text="PRG \\"A-7\\"\\\\ end\\nline 2" 5',
        f"{prefix('pressure', 'good')} value=2.5 5",
        prefix("program", "bad", category="production", kind="event", unit=None) + " quality_code=7i 6",
    ]
    # the last text is remembered per series (for status views)
    assert table.last_text[0] == "ignored because bad"


def test_normalised_rows_do_not_touch_deadband_state() -> None:
    table = table_of(spec("pressure", deadband=5.0))
    norm = Normaliser(table)
    rows = norm.normalised(ReadingBatch.build([0], [1.0], [1]))
    assert rows.values.tolist() == [1.0]
    assert np.isnan(table.last_value[0])
    # so the first processed value is still written
    assert norm.process(ReadingBatch.build([0], [1.0], [2])).points == 1


def test_empty_batch_keeps_its_commit_callbacks() -> None:
    norm = Normaliser(table_of(spec("pressure")))
    called: list[int] = []
    batch = ReadingBatch.build([], [], [])
    batch.on_committed.append(lambda: called.append(1))
    chunk = norm.process(batch)
    assert chunk.body == b"" and chunk.points == 0
    for callback in chunk.on_committed:
        callback()
    assert called == [1]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5),
                          st.one_of(st.integers(0, 65535).map(float), st.integers(-(2**53), 2**53).map(float),
                                    st.just(-0.0),
                                    st.floats(allow_nan=False, allow_infinity=False)),
                          st.sampled_from([Quality.GOOD, Quality.UNCERTAIN]),
                          st.sampled_from([0, 0, 0, 1005, 2151677952]),
                          st.sampled_from([1000, 1000, 2000, 1764590000000000000])),
                min_size=1, max_size=40),
       st.booleans())
def test_number_rows_are_encoded_exactly_like_one_f_string_a_row(rows, consecutive) -> None:
    """The batch encoder (list slices, shared tails, integers plus ``.0``) against the plain
    per-row rule for any mix of series order, quality, value, code and time; code 0 is not
    written."""
    names = [f"t{i}" for i in range(6)]
    norm = Normaliser(table_of(*(spec(name) for name in names)))
    if consecutive:  # a polled block: series 0, 1, 2 … of one quality, one time
        rows = [(i % 6, v, rows[0][2], rows[0][3], rows[0][4]) for i, (_, v, *_rest) in enumerate(rows[:6])]
    series, values, quality, codes, times = (list(column) for column in zip(*rows, strict=True))
    # source times: written as given, however many rows share one
    chunk = norm.process(ReadingBatch.build(series, values, times, quality, codes, source_time=True))
    quality_names = {Quality.GOOD: "good", Quality.UNCERTAIN: "uncertain"}
    assert lines(chunk.body) == [
        f"{prefix(names[s], quality_names[q])} value={v!r}{f',quality_code={c}i' if c else ''} {t}"
        for s, v, q, c, t in rows
    ]


def test_good_points_carry_no_quality_code_and_codes_come_back_for_sinks_that_want_them() -> None:
    """Code 0 is left out (the quality tag says good); ``with_quality_codes`` restores it on every
    line without a code, and only there, whatever the line's fields."""
    table = table_of(spec("pressure", range=(0.0, 100.0)), spec("speed", unit="/min"),
                     spec("program", category="production", kind="event", unit=None, data_type="string"))
    norm = Normaliser(table)
    batch = ReadingBatch.build([0, 1, 2, 0, 1, 2], [1.5, 7.0, np.nan, 500.0, np.nan, np.nan], [1, 1, 1, 2, 2, 2],
                               quality=[0, 1, 0, 0, 0, 2], codes=[0, 0, 0, 0, 0, 9],
                               texts={2: 'say "quality_code=1i 5"', 5: "gone"})
    body = norm.process(batch).body
    assert lines(body) == [
        f"{prefix('pressure', 'good')} value=1.5 1",
        f"{prefix('speed', 'uncertain', unit='/min')} value=7.0 1",
        prefix("program", "good", category="production", kind="event", unit=None)
        + ' text="say \\"quality_code=1i 5\\"" 1',
        f"{prefix('pressure', 'uncertain')} value=500.0,quality_code={CollectorCode.OUT_OF_RANGE.value}i 2",
        f"{prefix('speed', 'bad', unit='/min')} quality_code={CollectorCode.NOT_A_NUMBER.value}i 2",
        prefix("program", "bad", category="production", kind="event", unit=None) + " quality_code=9i 2",
    ]
    restored = lines(with_quality_codes(body))
    assert restored == [
        f"{prefix('pressure', 'good')} value=1.5,quality_code=0i 1",
        f"{prefix('speed', 'uncertain', unit='/min')} value=7.0,quality_code=0i 1",
        prefix("program", "good", category="production", kind="event", unit=None)
        + ' text="say \\"quality_code=1i 5\\"",quality_code=0i 1',
        *lines(body)[3:],
    ]
    # parsed back, every line has its code: 0 where it was left out
    assert [fields["quality_code"] for _, _, fields, _ in parse_lines(with_quality_codes(body))] == \
        [0, 0, 0, CollectorCode.OUT_OF_RANGE.value, CollectorCode.NOT_A_NUMBER.value, 9]
    assert with_quality_codes(with_quality_codes(body)) == with_quality_codes(body)
