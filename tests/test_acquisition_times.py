"""Acquisition times (rows without a source time) of one series are kept strictly increasing at the
stores' precision, so a store keeping milliseconds takes every reading of a burst; source times
are written as the source gave them."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mos_agent.batch import ReadingBatch
from mos_agent.config.models import AgentConfig
from mos_agent.normalise import Normaliser
from mos_agent.series import SeriesSpec, SeriesTable, make_asset

MS = 1_000_000
T0 = 1_764_000_000_000_000_000  # a whole second
ASSET = make_asset({"site": "changwon", "area": "stamping", "line": "line-1", "equipment": "press-01"})


def normaliser(series: int, resolution: int) -> Normaliser:
    table = SeriesTable()
    for s in range(series):
        table.add(SeriesSpec(asset=ASSET, tag=f"t{s}", category="process", kind="sample", stage="forming"))
    return Normaliser(table, resolution)


def written_times(body: bytes) -> list[int]:
    return [int(line.rsplit(b" ", 1)[1]) for line in body.splitlines()]


def test_a_burst_of_one_series_gets_one_millisecond_a_reading() -> None:
    norm = normaliser(1, MS)
    arrivals = T0 + 3_000 * np.arange(2000)  # 3 µs apart: 6 ms for the whole burst
    batch = ReadingBatch.build(np.zeros(2000), np.arange(2000.0), arrivals)
    chunk = norm.process(batch)
    times = written_times(chunk.body)
    assert times == [T0 + k * MS for k in range(2000)]
    assert batch.timestamps.tolist() == times  # in place: the driver sees what was stored
    # the next batch continues after the last step, even though its clock is behind it
    times = written_times(norm.process(ReadingBatch.build([0, 0], [1.0, 2.0], [T0 + 10 * MS, T0 + 3000 * MS])).body)
    assert times == [T0 + 2000 * MS, T0 + 3000 * MS]


def test_times_already_apart_are_kept_to_the_nanosecond() -> None:
    norm = normaliser(1, MS)
    arrivals = [T0 + 1_500, T0 + MS + 7, T0 + MS + 9, T0 + 5 * MS + 123]
    times = written_times(norm.process(ReadingBatch.build([0] * 4, [1.0] * 4, arrivals)).body)
    assert times == [T0 + 1_500, T0 + MS + 7, T0 + 2 * MS, T0 + 5 * MS + 123]


def test_series_are_kept_apart_each_on_its_own() -> None:
    """A polled block: every series once per poll; two polls within one millisecond."""
    norm = normaliser(3, MS)
    first = written_times(norm.process(ReadingBatch.build([0, 1, 2], [1.0, 2.0, 3.0], T0)).body)
    second = written_times(norm.process(ReadingBatch.build([0, 1, 2], [1.0, 2.0, 3.0], T0 + 400_000)).body)
    third = written_times(norm.process(ReadingBatch.build([1], [2.0], T0 + 10 * MS)).body)
    assert first == [T0] * 3
    assert second == [T0 + MS] * 3
    assert third == [T0 + 10 * MS]


def test_source_times_are_written_as_given() -> None:
    norm = normaliser(2, MS)
    batch = ReadingBatch.build([0, 0, 1, 1], [1.0, 2.0, 3.0, 4.0], [T0, T0, T0, T0],
                               source_time=[True, True, False, False])
    assert written_times(norm.process(batch).body) == [T0, T0, T0, T0 + MS]


def test_nanosecond_precision_still_separates_equal_times() -> None:
    norm = normaliser(1, 1)
    assert written_times(norm.process(ReadingBatch.build([0, 0, 0], [1.0, 2.0, 3.0], T0)).body) == [T0, T0 + 1, T0 + 2]


def test_the_coarsest_sink_precision_decides() -> None:
    def resolution(*sinks: dict) -> int:
        return AgentConfig.model_validate({"agent": {"id": "gw", "site": "plant"}, "sinks": list(sinks)}) \
            .time_resolution_ns()

    influx = {"type": "influxdb", "url": "http://127.0.0.1:8428", "bucket": "b"}
    assert resolution() == 1
    assert resolution(influx, {"type": "sqlite"}) == 1
    assert resolution({**influx, "precision": "ms"}, {"type": "sqlite"}, {**influx, "precision": "us"}) == MS


def model(last: dict[int, int], series: list[int], times: list[int], sourced: list[bool], step: int) -> list[int]:
    """The rule row by row: an acquisition time moves to the step after its series' last one (a
    source time counts from the next batch on)."""
    out = []
    source_steps: dict[int, int] = {}
    for s, t, fixed in zip(series, times, sourced, strict=True):
        if fixed:
            out.append(t)
            source_steps[s] = max(source_steps.get(s, 0), t // step)
            continue
        q = t // step
        if q <= last.get(s, -1):
            q = last[s] + 1
            t = q * step
        last[s] = q
        out.append(t)
    for s, q in source_steps.items():
        last[s] = max(last.get(s, 0), q)
    return out


@settings(max_examples=300, deadline=None)
@given(batches=st.lists(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 5_000_000), st.booleans()),
                                 min_size=1, max_size=30), min_size=1, max_size=4),
       step=st.sampled_from([1, 1_000, MS]))
def test_batches_match_the_row_by_row_rule(batches: list[list[tuple[int, int, bool]]], step: int) -> None:
    norm = normaliser(5, step)
    last: dict[int, int] = {}
    for rows in batches:
        series = [s for s, _, _ in rows]
        times = [T0 + t for _, t, _ in rows]
        sourced = [fixed for _, _, fixed in rows]
        expected = model(last, series, times, sourced, step)
        batch = ReadingBatch.build(series, np.ones(len(rows)), times, source_time=sourced)
        assert written_times(norm.process(batch).body) == expected
