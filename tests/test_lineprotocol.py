"""Escaping: arbitrary asset and tag names survive SeriesTable + Normaliser → influxdb-client →
a real store (VictoriaMetrics) unchanged, and our own line-protocol parser agrees."""

from __future__ import annotations

import itertools
import time

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS

from mos_agent.batch import ReadingBatch
from mos_agent.lineprotocol import escape_tag, parse_lines, series_prefix
from mos_agent.normalise import Normaliser
from mos_agent.series import SeriesSpec, SeriesTable, make_asset
from tests.support.servers import StoreReader, VictoriaMetrics

# Names may hold anything an integrator or a device could produce except control characters
# (Cc: NUL, tab, newline...) and lone surrogates (Cs, not encodable as UTF-8).
_CHAR = st.characters(blacklist_categories=("Cc", "Cs"))
_AWKWARD = st.sampled_from([" ", ",", "=", '"', "'", "\\", "#", "한", "국", "🚀", "🏭", "\u00a0", "\u2028"])
NAMES = st.one_of(
    st.text(_CHAR, min_size=1, max_size=24),
    st.lists(st.one_of(_AWKWARD, _CHAR), min_size=1, max_size=12).map("".join),
    # a trailing backslash must not escape the separator that follows it
    st.text(st.one_of(_AWKWARD, _CHAR), max_size=8).map(lambda s: s + "\\"),
)
NAME_LISTS = st.lists(NAMES, min_size=1, max_size=25, unique=True)

_runs = itertools.count()


def _table(run: str, names: list[str]) -> SeriesTable:
    table = SeriesTable()
    for i, name in enumerate(names):
        table.add(SeriesSpec(
            asset=make_asset({"site": "lp", "area": run, "line": f"n{i}", "equipment": name}),
            tag=name, category="process", kind="sample", stage="forming"))
    return table


def _encode(run: str, names: list[str], timestamp_ns: int) -> bytes:
    table = _table(run, names)
    batch = ReadingBatch.build(np.arange(len(names)), np.arange(len(names), dtype=np.float64), timestamp_ns)
    return Normaliser(table).process(batch).body


def _wait_for_series(store: StoreReader, selector: str, expected: int, timeout: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    series: list[dict] = []
    while time.monotonic() < deadline:
        series = store.export(selector)
        if len(series) >= expected:
            return series
        time.sleep(0.1)
    return series


def test_names_round_trip_through_the_store(victoria: VictoriaMetrics, store: StoreReader) -> None:
    with InfluxDBClient(url=victoria.url, token="t", org="x") as client:
        write_api = client.write_api(write_options=SYNCHRONOUS)

        # Each example is one batch of names: VictoriaMetrics makes new series searchable about a
        # second after they arrive, so one write and one wait per example keeps this quick.
        @settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(names=NAME_LISTS)
        def round_trip(names: list[str]) -> None:
            run = f"run{next(_runs)}"
            body = _encode(run, names, time.time_ns())
            write_api.write(bucket="b", org="x", record=body)
            series = _wait_for_series(store, f'{{__name__="process_value",area="{run}"}}', len(names))
            by_line = {s["metric"]["line"]: s for s in series}
            assert len(by_line) == len(names), f"expected {len(names)} series, store has {sorted(by_line)}"
            for i, name in enumerate(names):
                got = by_line[f"n{i}"]
                assert got["metric"]["tag"] == name
                assert got["metric"]["equipment"] == name
                assert got["values"] == [i]

        round_trip()


@settings(max_examples=300, deadline=None)
@given(names=NAME_LISTS)
def test_names_round_trip_through_our_parser(names: list[str]) -> None:
    body = _encode("parse", names, 1_000)
    parsed = list(parse_lines(body))
    assert [tags["tag"] for _, tags, _, _ in parsed] == names
    assert [tags["equipment"] for _, tags, _, _ in parsed] == names
    assert [fields["value"] for _, _, fields, _ in parsed] == [float(i) for i in range(len(names))]


def test_trailing_backslash_is_doubled() -> None:
    assert escape_tag("a\\") == "a\\\\"
    assert series_prefix("process", [("tag", "a\\"), ("stage", "x")]) == "process,tag=a\\\\,stage=x "


def test_separators_are_escaped_and_empty_values_left_out() -> None:
    assert series_prefix("process", [("tag", "a b,c=d"), ("unit", None), ("kind", "")]) == "process,tag=a\\ b\\,c\\=d "
