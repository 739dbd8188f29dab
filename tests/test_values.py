"""What ``/values`` answers: each series' latest value, quality and code, time and text as the
normaliser left them in the series table; filters and a limit; a history sampled only while someone
asks, bounded, dropped once nobody has asked for a while."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from mos_agent.batch import ReadingBatch
from mos_agent.normalise import Normaliser
from mos_agent.series import SeriesSpec, SeriesTable, make_asset
from mos_agent.taxonomy import CollectorCode, Quality
from mos_agent.values import HISTORY_INTERVAL, HISTORY_SAMPLES, WATCH_WINDOW, ValueQuery, ValuesView

ASSET = make_asset({"site": "changwon", "area": "stamping", "equipment": "press-01"})


def spec(tag: str, **kw) -> SeriesSpec:
    defaults = {"category": "process", "kind": "sample", "stage": "forming", "unit": "bar"}
    return SeriesSpec(asset=ASSET, tag=tag, **{**defaults, **kw})


class Devices:
    """The agent as the values view sees it: device name -> series table (real tables, filled by
    a real normaliser)."""

    def __init__(self) -> None:
        self.tables: dict[str, SeriesTable] = {}

    def series_tables(self) -> dict[str, SeriesTable]:
        return self.tables


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def press() -> tuple[SeriesTable, Normaliser]:
    table = SeriesTable()
    for s in (spec("pressure", deadband=0.5), spec("strokes", category="production", unit=None),
              spec("die_id", category="production", unit=None), spec("oil_temperature", unit="Cel")):
        table.add(s)
    return table, Normaliser(table)


def by_tag(answer: dict, device: str = "press-01") -> dict[str, dict]:
    return {s["tag"]: s for s in answer["devices"][device]["series"]}


def test_latest_values_quality_codes_texts_and_times_come_from_the_series_table() -> None:
    devices, clock = Devices(), Clock()
    table, norm = press()
    devices.tables["press-01"] = table
    norm.process(ReadingBatch.build([0, 1, 2, 3], [10.0, 7.0, np.nan, 55.5], 1_700_000_000_000_000_000,
                                    texts={2: "DIE-42"}))
    # the pressure moves within its deadband (kept value stays 10.0); the temperature read fails
    norm.process(ReadingBatch.build([0, 3], [10.2, np.nan], 1_700_000_001_000_000_000,
                                    quality=[Quality.GOOD, Quality.BAD], codes=[0, CollectorCode.TIMEOUT]))
    answer = ValuesView(devices, clock).values(ValueQuery())
    series = by_tag(answer)
    assert answer["time"] == clock.now
    assert series["pressure"] | {"history": None} == {
        "tag": "pressure", "category": "process", "stage": "forming", "kind": "sample", "unit": "bar",
        "value": 10.0, "text": None, "quality": "good", "quality_code": 0, "time": 1_700_000_001.0, "history": None}
    assert series["die_id"]["text"] == "DIE-42" and series["die_id"]["value"] is None
    assert (series["oil_temperature"]["value"], series["oil_temperature"]["quality"],
            series["oil_temperature"]["quality_code"]) == (None, "bad", CollectorCode.TIMEOUT)
    assert series["strokes"]["value"] == 7.0 and series["strokes"]["unit"] is None


def test_a_series_never_read_has_no_quality_yet() -> None:
    devices = Devices()
    devices.tables["press-01"], _ = press()
    series = by_tag(ValuesView(devices, Clock()).values(ValueQuery()))
    assert series["pressure"]["quality"] is None and series["pressure"]["value"] is None
    assert series["pressure"]["time"] is None


def test_filters_and_limit_choose_the_series_and_say_how_many_matched() -> None:
    devices = Devices()
    table, norm = press()
    devices.tables["press-01"] = table
    other = SeriesTable()
    other.add(SeriesSpec(asset=make_asset({"site": "changwon", "equipment": "cnc-01"}), tag="spindle_speed",
                         category="process", kind="sample", stage="machining", unit="/min"))
    devices.tables["cnc-01"] = other
    norm.process(ReadingBatch.build([0, 1, 3], [10.0, 7.0, 20.0], 5, quality=[0, 0, Quality.UNCERTAIN]))
    view = ValuesView(devices, Clock())

    def tags(query: ValueQuery) -> dict[str, list[str]]:
        return {name: [s["tag"] for s in d["series"]] for name, d in view.values(query)["devices"].items()}

    assert tags(ValueQuery(category="production")) == {"press-01": ["strokes", "die_id"], "cnc-01": []}
    assert tags(ValueQuery(quality="uncertain")) == {"press-01": ["oil_temperature"], "cnc-01": []}
    assert tags(ValueQuery(text="TEMP")) == {"press-01": ["oil_temperature"], "cnc-01": []}
    assert tags(ValueQuery(text="cnc")) == {"press-01": [], "cnc-01": ["spindle_speed"]}  # device name matches
    assert tags(ValueQuery(device="cnc-01")) == {"cnc-01": ["spindle_speed"]}
    limited = view.values(ValueQuery(device="press-01", limit=2))["devices"]["press-01"]
    assert [s["tag"] for s in limited["series"]] == ["pressure", "strokes"]
    assert (limited["total"], limited["matched"]) == (4, 4)
    assert view.values(ValueQuery(device="no-such"))["devices"] == {}


def test_query_parameters_are_checked() -> None:
    assert ValueQuery.from_params({"q": " Temp ", "limit": "7", "quality": "bad"}) == ValueQuery(
        text="temp", limit=7, quality="bad")
    with pytest.raises(ValueError, match="quality"):
        ValueQuery.from_params({"quality": "grey"})
    with pytest.raises(ValueError, match="limit"):
        ValueQuery.from_params({"limit": "-1"})


def test_history_is_sampled_while_asked_for_bounded_and_rounded() -> None:
    devices, clock = Devices(), Clock()
    table, norm = press()
    devices.tables["press-01"] = table
    view = ValuesView(devices, clock)
    pressures = []
    for i in range(HISTORY_SAMPLES + 5):
        pressure = 10.0 + i * 1.1  # moves beyond the deadband every time
        pressures.append(pressure)
        norm.process(ReadingBatch.build([0, 1], [pressure, float(i)], 1 + i))
        view.values(ValueQuery())  # asked more often than the sampling interval: one sample per interval
        clock.now += HISTORY_INTERVAL / 2
        view.values(ValueQuery())
        clock.now += HISTORY_INTERVAL / 2
    device = view.values(ValueQuery())["devices"]["press-01"]  # (takes one more sample: the last value again)
    series = {s["tag"]: s for s in device["series"]}
    assert len(device["history_time"]) == HISTORY_SAMPLES
    assert device["history_time"] == sorted(device["history_time"])
    # the newest samples, oldest first, without float32 noise (12.3, not 12.300000190734863)
    sampled = [*pressures, pressures[-1]]
    assert series["pressure"]["history"] == [round(p, 4) for p in sampled[-HISTORY_SAMPLES:]]
    assert series["die_id"]["history"] == [None] * HISTORY_SAMPLES  # a text tag has no line to draw


async def test_history_is_dropped_once_nobody_asks() -> None:
    devices, clock = Devices(), Clock()
    table, norm = press()
    devices.tables["press-01"] = table
    norm.process(ReadingBatch.build([0], [10.0], 1))
    view = ValuesView(devices, clock)
    view.values(ValueQuery())
    assert view._history and view._release is not None
    clock.now += WATCH_WINDOW + 1
    # the one deferred call (scheduled WATCH_WINDOW ahead) finds nobody asked since: run it now
    view._release._run()
    assert view._history == {}
    # and a request after such a gap starts a fresh history
    assert view.values(ValueQuery())["devices"]["press-01"]["history_time"] == [clock.now]
    view.close()
    await asyncio.sleep(0)


def test_a_device_restarted_by_a_reload_starts_a_fresh_history() -> None:
    devices, clock = Devices(), Clock()
    devices.tables["press-01"], _ = press()
    view = ValuesView(devices, clock)
    view.values(ValueQuery())
    clock.now += HISTORY_INTERVAL
    devices.tables["press-01"], _ = press()  # a new table: the device was restarted
    assert view.values(ValueQuery())["devices"]["press-01"]["history_time"] == [clock.now]


def test_series_added_at_run_time_get_a_history_row() -> None:
    devices, clock = Devices(), Clock()
    table, norm = press()
    devices.tables["press-01"] = table
    view = ValuesView(devices, clock)
    view.values(ValueQuery())
    new = table.add(spec("discovered"))
    norm.process(ReadingBatch.build([new], [3.5], 1))
    clock.now += HISTORY_INTERVAL
    series = by_tag(view.values(ValueQuery()))
    assert series["discovered"]["history"] == [None, 3.5]
