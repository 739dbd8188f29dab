"""ISO 22400-2 KPIs on a simulated clock, checked against figures computed by hand.

The day shift used throughout: 08:00-17:00 UTC with a break 12:00-13:00, so POT = 8 h = 28,800 s.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from drivers.modbus.config import ModbusDevice
from mos_agent.batch import ReadingBatch
from mos_agent.config.models import AgentConfig
from mos_agent.driver_api import build_series_table
from mos_agent.kpi.calendar import NS, ShiftCalendar, ShiftRule, parse_clock
from mos_agent.kpi.engine import KpiEngine
from mos_agent.kpi.equipment import CounterTrack, EquipmentKpi
from mos_agent.kpi.figures import TIME_CLASSES, UNKNOWN
from mos_agent.lineprotocol import parse_lines
from mos_agent.normalise import Normaliser
from mos_agent.taxonomy import Quality

UTC = ZoneInfo("UTC")
PRODUCTION, SETUP, DELAY, DOWN, PLANNED_DOWN = (TIME_CLASSES.index(c) for c in
                                                ("production", "setup", "delay", "down", "planned_down"))


def at(clock: str, day: int = 2, zone: ZoneInfo = UTC) -> int:
    """Nanoseconds of ``clock`` (HH:MM[:SS[.f]]) on 2026-12-``day`` in ``zone``."""
    parts = clock.split(":")
    seconds = float(parts[2]) if len(parts) > 2 else 0.0
    whole = int(seconds)
    moment = datetime(2026, 12, day, int(parts[0]), int(parts[1]), whole, tzinfo=zone)
    return int(moment.timestamp()) * NS + round((seconds - whole) * NS)


def day_calendar(zone: str = "UTC") -> ShiftCalendar:
    return ShiftCalendar([ShiftRule.build("day", parse_clock("08:00"), parse_clock("17:00"),
                                          [(parse_clock("12:00"), parse_clock("13:00"))])], zone)


def press(calendar: ShiftCalendar, ideal_cycle_s: float = 1.2) -> EquipmentKpi:
    return EquipmentKpi(calendar, ideal_cycle_s, CounterTrack.for_type("uint16"),
                        good=CounterTrack.for_type("uint32"))


def play_day_shift(kpi: EquipmentKpi) -> list:
    """Every time class, an unmapped value, a bad sample, a break, a counter wrap at 65535, a counter
    reset. Returns the shifts closed on the way."""
    finals = []
    produced, good = kpi.produced, kpi.good
    assert good is not None
    finals += kpi.state_sample(at("07:50"), PRODUCTION)  # before the shift: not planned
    for clock, value in (("07:55", 65000), ("07:59:59.5", 65000), ("08:00", 65000)):
        finals += kpi.counter_sample(produced, at(clock), value)
    finals += kpi.counter_sample(good, at("07:59:59.5"), 1000)
    finals += kpi.counter_sample(good, at("08:00"), 1000)
    finals += kpi.counter_sample(produced, at("08:30"), 65530)  # +530
    finals += kpi.state_sample(at("09:00"), SETUP)
    finals += kpi.counter_sample(produced, at("09:00"), 4)  # wrap: +10
    finals += kpi.state_sample(at("09:30"), PRODUCTION)
    finals += kpi.counter_sample(produced, at("10:00"), 1004)  # +1000
    finals += kpi.counter_sample(produced, at("11:00"), 100)  # reset (1004 is not near the top): +100
    finals += kpi.state_sample(at("11:30"), DELAY)  # 11:30-12:00 counts, 12:00-12:30 is the break
    finals += kpi.state_sample(at("12:30"), PRODUCTION)
    finals += kpi.state_sample(at("14:00"), DOWN)
    finals += kpi.state_sample(at("14:45"), UNKNOWN)  # a bad-quality sample
    finals += kpi.state_sample(at("15:00"), UNKNOWN)  # a value no class lists
    finals += kpi.state_sample(at("15:15"), PLANNED_DOWN)
    finals += kpi.state_sample(at("15:45"), PRODUCTION)
    finals += kpi.counter_sample(produced, at("16:30"), 13460)  # +13360 → PQ 15000
    finals += kpi.counter_sample(good, at("16:30"), 15250)  # GQ 14250
    finals += kpi.advance(at("17:30"))
    finals += kpi.counter_sample(produced, at("17:30"), 14000)  # after the shift: nobody's
    return finals


def test_a_shift_with_every_time_class_matches_the_hand_computed_figures() -> None:
    kpi = press(day_calendar())
    finals = play_day_shift(kpi)
    assert len(finals) == 1
    final = finals[0]
    assert (final.shift, final.start_ns, final.end_ns, final.at_ns) == ("day", at("08:00"), at("17:00"), at("17:00"))
    v = final.values
    # APT 08:00-09:00, 09:30-11:30, 13:00-14:00, 15:45-17:00
    assert v["apt"] == 3600 + 7200 + 3600 + 4500 == 18900
    assert v["aust"] == 1800
    assert v["adet"] == 1800  # the break is not planned time
    assert v["adot"] == 2700
    assert v["pdot"] == 1800
    assert v["unknown"] == 1800  # bad sample 14:45-15:00, unmapped value 15:00-15:15
    assert v["pot"] == 28800
    assert v["pbt"] == 27000
    assert v["pq"] == 530 + 10 + 1000 + 100 + 13360 == 15000
    assert v["gq"] == 14250 and v["sq"] == 750
    assert v["availability"] == pytest.approx(70.0)
    assert v["effectiveness"] == pytest.approx(100 * 1.2 * 15000 / 18900)  # 95.238 %
    assert v["quality_rate"] == pytest.approx(95.0)
    assert v["oee"] == pytest.approx(63.333333, abs=1e-5)
    assert kpi.last_complete == final and kpi.shift is None


def test_shift_to_date_figures_count_planned_time_so_far() -> None:
    kpi = press(day_calendar())
    kpi.state_sample(at("07:50"), PRODUCTION)
    kpi.state_sample(at("09:00"), SETUP)
    kpi.state_sample(at("09:30"), PRODUCTION)
    kpi.advance(at("12:30"))
    so_far = kpi.figures(at("12:30"))
    assert so_far is not None and not so_far.final
    assert so_far.values["pot"] == 4 * 3600  # 08:00-12:30 less half an hour of break
    assert so_far.values["apt"] == 3600 + 9000 == 12600 and so_far.values["aust"] == 1800
    assert so_far.values["availability"] == pytest.approx(87.5)
    assert "effectiveness" not in so_far.values or so_far.values["pq"] == 0


def test_counter_wraps_at_the_width_of_its_type_and_resets_otherwise() -> None:
    u16 = CounterTrack.for_type("uint16")
    assert u16.delta(65535, 0) == 1  # wrap
    assert u16.delta(65530, 4) == 10
    assert u16.delta(58983, 10) == 10 + 65536 - 58983  # 58,983 is in the top 10 %
    assert u16.delta(58000, 10) == 10  # not near the top: a reset to 0, then 10 counted
    i16 = CounterTrack.for_type("int16")
    assert i16.delta(32767, -32768) == 1  # a signed counter wraps to its lowest value
    u32 = CounterTrack.for_type("uint32")
    assert u32.delta(2**32 - 1, 5) == 6
    assert u32.delta(65535, 0) == 0  # far from the top of 32 bits: a reset
    unknown_width = CounterTrack.for_type("float")
    assert unknown_width.delta(65535, 3) == 3  # no width known: every decrease is a reset
    scaled = CounterTrack.for_type("uint16", scale=10.0)  # a counter of tens
    assert scaled.delta(655350, 0) == 10


def test_a_night_shift_crossing_midnight_ends_exactly_at_its_end() -> None:
    seoul = ZoneInfo("Asia/Seoul")
    calendar = ShiftCalendar([ShiftRule.build("night", parse_clock("22:00"), parse_clock("06:00"),
                                              [(parse_clock("02:00"), parse_clock("02:30"))])], "Asia/Seoul")
    kpi = press(calendar)
    kpi.state_sample(at("21:00", 2, seoul), PRODUCTION)
    kpi.counter_sample(kpi.produced, at("22:00", 2, seoul), 100)
    assert kpi.advance(at("23:59:59", 2, seoul)) == []
    kpi.counter_sample(kpi.produced, at("03:00", 3, seoul), 20100)
    finals = kpi.advance(at("06:00:01", 3, seoul))
    assert [f.shift for f in finals] == ["night"]
    final = finals[0]
    assert final.start_ns == at("22:00", 2, seoul) and final.end_ns == at("06:00", 3, seoul)
    assert final.at_ns == final.end_ns
    assert final.values["pot"] == 8 * 3600 - 1800 == final.values["apt"]
    assert final.values["pq"] == 20000
    assert final.values["availability"] == 100.0


def test_calendar_finds_shifts_by_weekday_and_across_midnight() -> None:
    rules = [ShiftRule.build("day", parse_clock("08:00"), parse_clock("17:00"), days=["mon", "tue", "wed"]),
             ShiftRule.build("night", parse_clock("22:00"), parse_clock("06:00:30"), days=["wed"])]
    calendar = ShiftCalendar(rules, "UTC")
    # 2026-12-02 is a Wednesday
    assert calendar.instance_at(at("10:00", 2)).name == "day"
    assert calendar.instance_at(at("10:00", 3)) is None  # no day shift on Thursday
    night = calendar.instance_at(at("06:00:15", 3))  # Wednesday's night, into Thursday
    assert night is not None and night.name == "night" and night.end_ns == at("06:00:30", 3)
    assert calendar.instance_at(at("06:00:30", 3)) is None
    assert calendar.next_start_after(at("06:00:30", 3)) == at("08:00", 7)  # Monday


def test_zero_denominators_are_not_emitted() -> None:
    idle = press(day_calendar())
    idle.advance(at("07:00"))
    finals = idle.advance(at("17:00"))  # no state sample all shift
    values = finals[0].values
    assert values["unknown"] == values["pot"] == 28800
    assert values["availability"] == 0.0  # PBT > 0, nothing produced
    assert "effectiveness" not in values and "quality_rate" not in values and "oee" not in values

    maintenance = press(day_calendar())
    maintenance.state_sample(at("07:00"), PLANNED_DOWN)
    values = maintenance.advance(at("17:00"))[0].values
    assert values["pdot"] == values["pot"] and values["pbt"] == 0
    assert "availability" not in values and "oee" not in values


def test_effectiveness_above_100_percent_is_reported_not_capped() -> None:
    kpi = press(day_calendar(), ideal_cycle_s=2.0)
    finals = play_day_shift(kpi)
    assert finals[0].values["effectiveness"] == pytest.approx(100 * 2.0 * 15000 / 18900)  # 158.7 %
    assert finals[0].values["oee"] == pytest.approx(70 * 158.730159 * 95 / 10000, rel=1e-6)


def test_a_restart_continues_without_losing_or_double_counting() -> None:
    calendar = day_calendar()
    running = press(calendar)
    running.state_sample(at("07:50"), PRODUCTION)
    running.counter_sample(running.produced, at("08:00"), 100)
    running.counter_sample(running.produced, at("10:00"), 1100)
    running.advance(at("10:00"))
    saved = running.to_json()  # what was committed before the kill
    running.counter_sample(running.produced, at("10:20"), 1300)  # seen, never saved: the agent dies

    restarted = press(calendar)
    restarted.restore(saved)
    restarted.advance(at("10:30"))  # the agent is back at 10:30
    restarted.state_sample(at("10:30"), PRODUCTION)
    restarted.counter_sample(restarted.produced, at("10:30"), 1400)
    restarted.advance(at("11:00"))
    so_far = restarted.figures(at("11:00"))
    assert so_far is not None
    assert so_far.values["pq"] == 1300  # 100 → 1400, each count once
    assert so_far.values["apt"] == 2 * 3600 + 1800  # 08:00-10:00 and 10:30-11:00
    assert so_far.values["unknown"] == 1800  # 10:00-10:30: not observed


def test_a_counter_gap_across_a_shift_change_is_not_credited() -> None:
    kpi = press(day_calendar())
    kpi.counter_sample(kpi.produced, at("06:00"), 100)  # the agent then is down until 09:00
    kpi.counter_sample(kpi.produced, at("09:00"), 900)
    kpi.counter_sample(kpi.produced, at("09:01"), 910)
    kpi.advance(at("09:01"))
    assert kpi.figures(at("09:01")).values["pq"] == 10


# ---------------------------------------------------------------- the engine, fed like the agent feeds it


def _agent_config(state_dir: Path, **extra) -> AgentConfig:
    return AgentConfig.model_validate({
        "agent": {"id": "gw", "site": "changwon", "state_dir": str(state_dir), "timezone": "UTC"},
        "shifts": [{"name": "day", "start": "08:00", "end": "17:00", "breaks": ["12:00-13:00"]}],
        "kpi": {"interval": "1m"}, **extra})


def _device(states: list, text_state: bool = False) -> ModbusDevice:
    return ModbusDevice.model_validate({
        "name": "press-01", "driver": "modbus", "asset": {"area": "stamping", "line": "line-1"},
        "stage": "forming", "connection": {"host": "127.0.0.1"},
        "tags": [
            {"name": "machine_state", "address": "hr:0", "type": "string:8" if text_state else "uint16",
             "category": "equipment_state"},
            {"name": "stroke_count", "address": "hr:4", "type": "uint16", "category": "production"},
            {"name": "scrap_parts", "address": "hr:5", "type": "uint16", "category": "quality"},
            {"name": "pressure", "address": "hr:6", "type": "float32", "category": "process", "unit": "bar"},
        ],
        "kpi": {"state": {"tag": "machine_state", "classes": {"production": states, "down": [3, "Stopped"]}},
                "produced": "stroke_count", "scrap": "scrap_parts", "ideal_cycle_time": "1s"},
    })


class Feeder:
    """Feeds the engine the way the agent does: a device's raw batch, normalised."""

    def __init__(self, engine: KpiEngine, device: ModbusDevice, config: AgentConfig) -> None:
        self.table = build_series_table(config.agent, device)
        self.normaliser = Normaliser(self.table)
        feed = engine.attach(device, self.table)
        assert feed is not None
        self.feed = feed

    def poll(self, t_ns: int, state: float | str, strokes: float, scrap: float, quality: int = Quality.GOOD) -> None:
        texts = {0: state} if isinstance(state, str) else None
        batch = ReadingBatch.build([0, 1, 2, 3], [float("nan") if texts else state, strokes, scrap, 180.0], t_ns,
                                   quality=[quality, Quality.GOOD, Quality.GOOD, Quality.GOOD], texts=texts)
        self.feed.observe(batch, self.normaliser.normalised(batch))


def _records(body: bytes) -> list[tuple[dict, float, int]]:
    return [(tags, fields["value"], ts) for measurement, tags, fields, ts in parse_lines(body)
            if measurement == "kpi"]


def test_engine_emits_kpi_records_with_the_store_mapping(tmp_path: Path) -> None:
    config = _agent_config(tmp_path)
    engine = KpiEngine(config, tmp_path, now_ns=at("15:58:30"))
    feeder = Feeder(engine, _device([1]), config)
    feeder.poll(at("15:58:30"), 1, 100, 0)
    early = engine.tick(at("15:58:59"))
    assert early is None or early.points == 0  # not yet due
    feeder.poll(at("15:59:00"), 1, 160, 2)
    out = engine.tick(at("15:59:00"))
    assert out is not None and out.points > 0
    records = _records(out.body)
    tags, value, ts = next(r for r in records if r[0]["tag"] == "pq")
    assert value == 60 and ts == at("15:59:00")
    assert tags == {"site": "changwon", "area": "stamping", "line": "line-1", "equipment": "press-01",
                    "stage": "forming", "shift": "day", "tag": "pq", "unit": "1", "quality": "good"}
    units = {r[0]["tag"]: r[0]["unit"] for r in records}
    assert units["availability"] == units["oee"] == "%" and units["apt"] == units["unknown"] == "s"
    assert units["sq"] == "1"
    by_tag = {r[0]["tag"]: r[1] for r in records}
    assert by_tag["sq"] == 2 and by_tag["gq"] == 58
    assert by_tag["pot"] == 7 * 3600 - 60  # 08:00-15:59 less the break
    assert by_tag["apt"] == 30  # observed since 15:58:30

    feeder.poll(at("16:59:59.5"), 1, 3700, 2)
    out = engine.tick(at("17:00:00.7"))
    finals = [r for r in _records(out.body) if r[2] == at("17:00")]
    assert {r[0]["tag"] for r in finals} >= {"oee", "availability", "effectiveness", "quality_rate", "pq"}
    final = {r[0]["tag"]: r[1] for r in finals}
    assert final["apt"] == pytest.approx(3600 + 90)  # 15:58:30 to 17:00 less nothing (break passed)
    assert final["pq"] == 3600 and final["sq"] == 2
    status = engine.status()[0]
    assert status.last_complete is not None and status.last_complete.shift == "day" and status.last_complete.final
    assert status.last_complete.end == at("17:00") / 1e9 and status.last_complete.kpi["pq"] == 3600
    assert [c.shift for c in status.completed] == ["day"]
    assert status.current is None  # outside every shift now
    later = engine.tick(at("17:02"))
    assert later is None or later.points == 0  # outside every shift nothing is emitted


def test_engine_maps_text_states_and_skips_bad_samples(tmp_path: Path) -> None:
    config = _agent_config(tmp_path)
    engine = KpiEngine(config, tmp_path, now_ns=at("09:00"))
    feeder = Feeder(engine, _device(["Executing"], text_state=True), config)
    feeder.poll(at("09:00"), "Executing", 10, 0)
    feeder.poll(at("09:10"), "Stopped", 70, 0)
    feeder.poll(at("09:20"), "Executing", 80, 0, quality=Quality.BAD)  # bad: state unknown from here
    feeder.poll(at("09:30"), "Executing", 100, 0)
    engine.tick(at("09:40"))
    values = engine.equipment["changwon/stamping/line-1/press-01"].latest.values
    assert values["apt"] == 600 + 600 and values["adot"] == 600 and values["unknown"] == 3600 + 600
    assert values["pq"] == 90


def test_engine_state_survives_a_restart_from_the_saved_file(tmp_path: Path) -> None:
    config = _agent_config(tmp_path)
    engine = KpiEngine(config, tmp_path, now_ns=at("09:00"))
    feeder = Feeder(engine, _device([1]), config)
    feeder.poll(at("09:00"), 1, 100, 0)
    feeder.poll(at("09:30"), 1, 400, 5)
    out = engine.tick(at("09:30"))
    assert out is not None
    engine.save(out.state)  # the agent saves it once the records are committed
    feeder.poll(at("09:31"), 1, 420, 5)  # seen, never saved

    restarted = KpiEngine(config, tmp_path, now_ns=at("10:00"))
    feeder = Feeder(restarted, _device([1]), config)
    feeder.poll(at("10:00"), 1, 700, 6)
    restarted.tick(at("10:00"))
    values = restarted.equipment["changwon/stamping/line-1/press-01"].latest.values
    assert values["pq"] == 600 and values["sq"] == 6
    assert values["apt"] == 1800 and values["unknown"] == 3600 + 1800


def test_series_a_driver_adds_at_run_time_become_equipment_of_their_own(tmp_path: Path) -> None:
    """MQTT topic captures fill the asset path at run time: every captured equipment with the KPI
    tags gets its own accounting."""
    from dataclasses import replace

    config = _agent_config(tmp_path)
    engine = KpiEngine(config, tmp_path, now_ns=at("09:00"))
    feeder = Feeder(engine, _device([1]), config)
    feeder.poll(at("09:00"), 1, 100, 0)
    captured = {}
    for spec in list(feeder.table.specs[:3]):  # the same tags at a captured equipment press-02
        asset = tuple((level, "press-02" if level == "equipment" else name) for level, name in spec.asset)
        captured[spec.tag] = feeder.table.add(replace(spec, asset=asset))
    second = ReadingBatch.build([captured["machine_state"], captured["stroke_count"], captured["scrap_parts"]],
                                [3, 500, 7], at("09:00"))
    feeder.feed.observe(second, feeder.normaliser.normalised(second))
    later = ReadingBatch.build([captured["machine_state"], captured["stroke_count"], captured["scrap_parts"]],
                               [3, 510, 8], at("09:10"))
    feeder.feed.observe(later, feeder.normaliser.normalised(later))
    feeder.poll(at("09:10"), 1, 160, 0)
    engine.tick(at("09:10"))
    one = engine.equipment["changwon/stamping/line-1/press-01"].latest.values
    two = engine.equipment["changwon/stamping/line-1/press-02"].latest.values
    assert (one["apt"], one["pq"], one["sq"]) == (600, 60, 0)
    assert (two["adot"], two["apt"], two["pq"], two["sq"]) == (600, 0, 10, 1)
    assert [s.equipment for s in engine.status()] == ["press-01", "press-02"]


def test_a_shift_that_ended_while_the_agent_was_down_gets_its_final_record_at_the_next_start(
        tmp_path: Path) -> None:
    config = _agent_config(tmp_path)
    engine = KpiEngine(config, tmp_path, now_ns=at("15:00"))
    feeder = Feeder(engine, _device([1]), config)
    feeder.poll(at("15:00"), 1, 100, 0)
    feeder.poll(at("16:00"), 1, 700, 3)
    out = engine.tick(at("16:00"))
    assert out is not None
    engine.save(out.state)  # then the agent is killed, and starts again at 18:00

    restarted = KpiEngine(config, tmp_path, now_ns=at("18:00"))
    Feeder(restarted, _device([1]), config)
    out = restarted.tick(at("18:00"))
    assert out is not None
    final = {tags["tag"]: value for tags, value, ts in _records(out.body) if ts == at("17:00")}
    assert final["pot"] == 28800 and final["apt"] == 3600  # 15:00-16:00 observed
    assert final["unknown"] == 28800 - 3600  # before the first run and while the agent was down
    assert final["pq"] == 600 and final["sq"] == 3
    assert restarted.status()[0].last_complete.final
