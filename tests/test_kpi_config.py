"""KPI configuration: the README's examples validate, the example plant carries KPIs, the catalogue
lists each dataset's KPI series, and the calendar's checks reject what they should."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from drivers.modbus.config import ModbusDevice
from mos_agent import cli
from mos_agent.catalog import build_catalog
from mos_agent.catalog.jsonld import ISO_22400_2
from mos_agent.config.loader import load_config
from mos_agent.config.models import AgentConfig
from mos_agent.kpi.engine import calendar_from_config, state_class_lookup
from mos_agent.kpi.figures import KPI_NAMES, TIME_CLASSES

REPO = Path(__file__).resolve().parent.parent


def _readme_kpi_blocks(name: str) -> list[str]:
    text = (REPO / name).read_text(encoding="utf-8")
    section = text.split("## Edge KPIs (ISO 22400-2)" if name == "README.md" else "## 엣지 KPI (ISO 22400-2)")[1]
    section = section.split("\n## ")[0]
    return re.findall(r"```yaml\n(.*?)```", section, flags=re.S)


def test_the_readme_examples_validate() -> None:
    device_block, agent_block = _readme_kpi_blocks("README.md")
    device = ModbusDevice.model_validate({
        "name": "press-01", "driver": "modbus", "asset": {"area": "stamping"}, "stage": "forming",
        "connection": {"host": "127.0.0.1"},
        "tags": [{"name": "machine_state", "address": "hr:0", "category": "equipment_state"},
                 {"name": "stroke_count", "address": "hr:2", "type": "uint32", "category": "production"},
                 {"name": "scrap_count", "address": "hr:4", "category": "quality"}],
        **yaml.safe_load(device_block)})
    assert device.kpi is not None and device.kpi.scrap == "scrap_count" and device.kpi.ideal_cycle_time == 1.2
    lookup = state_class_lookup(device.kpi)
    assert {TIME_CLASSES[i] for i in lookup.values()} == set(TIME_CLASSES)
    agent_data = yaml.safe_load(agent_block)
    agent_data["agent"].update({"id": "gw", "site": "changwon"})
    config = AgentConfig.model_validate(agent_data)
    assert [s.name for s in config.shifts] == ["day", "night", "saturday"] and config.kpi.interval == 60
    assert calendar_from_config(config).timezone == "Asia/Seoul"
    assert _readme_kpi_blocks("README.ko.md") == [device_block, agent_block]


def test_the_example_plant_has_kpis_and_a_two_shift_calendar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOS_INFLUX_TOKEN", "example")
    loaded = load_config(REPO / "configs" / "agent.yaml")
    assert [(s.name, s.start, s.end) for s in loaded.agent.shifts] == [("day", "08:00", "20:00"),
                                                                       ("night", "20:00", "08:00")]
    assert loaded.agent.agent.timezone == "Asia/Seoul"
    press = next(d for d in loaded.devices if d.name == "press-01")
    assert press.kpi is not None and press.kpi.produced == "stroke_count"
    stroke = next(t for t in press.tags if t.name == "stroke_count")
    assert stroke.data_type() == "uint16"  # wraps, like the simulator's


def test_catalogue_lists_the_kpi_series_of_each_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOS_INFLUX_TOKEN", "example")
    catalog = build_catalog(load_config(REPO / "configs" / "agent.yaml"))
    datasets = {d["dct:identifier"].rsplit("/", 1)[1]: d for d in catalog["@graph"][0]["dcat:dataset"]}
    press = datasets["press-01"]
    assert [s["mos:tagName"] for s in press["mos:kpiSeries"]] == list(KPI_NAMES)
    assert ISO_22400_2.uri in [c.get("@id") for c in press["dct:conformsTo"]]
    assert {"@id": "mos:category-kpi"} in press["dcat:theme"]
    units = {s["mos:tagName"]: (s["mos:ucumCode"], s["mos:uneceCode"]) for s in press["mos:kpiSeries"]}
    assert units["oee"] == ("%", "P1") and units["apt"] == ("s", "SEC") and units["pq"] == ("1", "C62")
    assert all(s["mos:shift"] == ["day", "night"] for s in press["mos:kpiSeries"])
    cnc = datasets["cnc-01"]  # no kpi: block, no KPI series
    assert "mos:kpiSeries" not in cnc
    assert ISO_22400_2.uri not in [c.get("@id") for c in cnc["dct:conformsTo"]]
    concepts = [g for g in catalog["@graph"] if g.get("skos:notation") == "kpi"]
    assert len(concepts) == 1


@pytest.mark.parametrize(("shifts", "message"), [
    ([{"name": "a", "start": "06:00", "end": "14:00"}, {"name": "b", "start": "13:59:59", "end": "22:00"}],
     "overlaps shift 'a'"),
    ([{"name": "a", "start": "00:00", "end": "00:00"}, {"name": "b", "start": "10:00", "end": "11:00",
                                                         "days": ["sun"]}], "overlaps shift 'a'"),
    ([{"name": "a", "start": "22:00", "end": "06:00", "days": ["sun"]},
      {"name": "b", "start": "05:00", "end": "07:00", "days": ["mon"]}], "on mon"),
    ([{"name": "a", "start": "08:00", "end": "17:00", "breaks": ["16:30-17:30"]}], "not inside the shift"),
    ([{"name": "a", "start": "08:00", "end": "17:00", "breaks": ["10:00-11:00", "10:30-10:45"]}], "overlap"),
    ([{"name": "a", "start": "24:00", "end": "06:00"}], "hours 00-23"),
])
def test_calendar_mistakes_are_refused(shifts: list[dict], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        AgentConfig.model_validate({"agent": {"id": "gw", "site": "s"}, "shifts": shifts})
    assert message in str(caught.value)


def test_kpi_interval_is_at_least_a_second() -> None:
    with pytest.raises(ValidationError, match="interval must be at least 1s"):
        AgentConfig.model_validate({"agent": {"id": "gw", "site": "s"}, "kpi": {"interval": "500ms"}})


def test_shifts_that_touch_do_not_overlap() -> None:
    weekdays = ["mon", "tue", "wed", "thu", "fri"]
    config = AgentConfig.model_validate({"agent": {"id": "gw", "site": "s"}, "shifts": [
        {"name": "day", "start": "08:00", "end": "20:00", "days": weekdays},
        {"name": "night", "start": "20:00", "end": "08:00", "days": weekdays},  # Friday's ends Saturday 08:00
        {"name": "sat", "start": "08:00", "end": "12:00", "days": ["sat"]}]})
    assert [s.name for s in config.shifts] == ["day", "night", "sat"]


def test_validate_summarises_the_kpis(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                      tmp_path: Path) -> None:
    monkeypatch.setenv("MOS_INFLUX_TOKEN", "example")
    assert cli.main(["validate", "-c", str(REPO / "configs" / "agent.yaml")]) == 0
    # both presses of the example are one model: their profile carries the KPI block
    assert ("kpi        2 equipment (press-01, press-02), every 60s; shifts day 08:00-20:00, night 20:00-08:00 "
            "(Asia/Seoul)") in capsys.readouterr().out
    # KPIs without a calendar validate, and the summary says nothing will be computed
    for folder, name in (("devices", "press-01.yaml"), ("profiles", "transfer-press-400t.yaml")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_text((REPO / "configs" / folder / name).read_text())
    (tmp_path / "agent.yaml").write_text("agent: {id: gw, site: changwon, timezone: UTC}\n")
    assert cli.main(["validate", "-c", str(tmp_path / "agent.yaml")]) == 0
    assert "shifts none: nothing is planned, no KPI is computed (UTC)" in capsys.readouterr().out


def test_the_press_simulator_plays_every_time_class_and_its_stroke_counter_wraps() -> None:
    from simulators.modbus import DEFAULT_SCENARIO, Scenario, device_file_text

    scenario = Scenario.load(DEFAULT_SCENARIO)
    device = ModbusDevice.model_validate(yaml.safe_load(device_file_text(scenario)))
    assert device.kpi is not None
    lookup = state_class_lookup(device.kpi)
    state_point = next(p for p in scenario.points if p.name == device.kpi.state.tag)
    assert state_point.model.state is not None
    played = {step.state for step in scenario.cycle}
    classes = {TIME_CLASSES[lookup[state_point.model.state[state]]] for state in played}
    assert classes == set(TIME_CLASSES)  # production, setup, delay, down, planned_down all occur
    # the cycle's own figures: availability 80 %, as the scenario's comment says
    per_state = {s: sum(step.duration for step in scenario.cycle if step.state == s) for s in played}
    assert per_state["run"] / (sum(per_state.values()) - per_state["maintenance"]) == pytest.approx(0.8)

    strokes = next(p for p in scenario.points if p.name == device.kpi.produced)
    assert strokes.value_type == "uint16" and strokes.model.counter is not None
    counter = strokes.model.counter
    running_to_wrap = (65536 - counter.start) / counter.rate
    assert running_to_wrap < scenario.time_in_state("run", 600.0)  # it wraps within the first ten minutes


def test_opc_ua_states_as_text_and_the_driver_readme_example() -> None:
    from drivers.opcua.config import OpcUaDevice

    text = (REPO / "drivers" / "opcua" / "README.md").read_text(encoding="utf-8")
    section = text.split("## Machine states and KPIs (OPC 40001-1)")[1].split("\n## ")[0]
    example = yaml.safe_load(re.findall(r"```yaml\n(.*?)```", section, flags=re.S)[0])
    base = {"name": "cnc-01", "driver": "opcua", "asset": {"area": "machining"}, "stage": "machining",
            "connection": {"endpoint": "opc.tcp://127.0.0.1:4840"}}
    device = OpcUaDevice.model_validate({**base, **example})
    assert device.kpi is not None
    lookup = state_class_lookup(device.kpi)
    assert TIME_CLASSES[lookup["Executing"]] == TIME_CLASSES[lookup[3.0]] == "production"
    assert TIME_CLASSES[lookup["OutOfService"]] == "down" and "NotAvailable" not in lookup

    example["tags"][1]["type"] = "string"  # a counter read as text cannot count
    with pytest.raises(ValidationError) as caught:
        OpcUaDevice.model_validate({**base, **example})
    assert "counter tag 'part_count' is string" in str(caught.value)
