"""Acceptance of the product contract's "Edge KPIs (ISO 22400-2)": the device and agent file
forms exactly as written there (names, ports and times adapted), ``validate``'s located errors,
and a short shift with a break read from the Modbus simulator into VictoriaMetrics: the store
mapping (measurement ``kpi``, the tag set, ``tag`` values, field ``value``), shift-to-date
records and the final record timestamped exactly at the shift's end, ``mos-agent kpi`` and
``/metrics``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from mos_agent import cli
from mos_agent.config.loader import load_config
from mos_agent.localservers import free_port
from mos_agent.pipeline import Agent
from simulators.modbus import ModbusSimulator, Scenario
from tests.support.servers import StoreReader, VictoriaMetrics
from tests.support.waiting import wait_until_async

BIN = Path(sys.executable).parent
ZONE = "Asia/Seoul"
STORE_TAGS = {"site", "area", "line", "cell", "equipment", "stage", "shift", "tag", "unit", "quality"}
KPI_TAG_VALUES = {"oee", "availability", "effectiveness", "quality_rate", "pot", "pdot", "pbt", "apt", "aust",
                  "adet", "adot", "unknown", "pq", "gq", "sq"}

# The SPEC's device-file block, verbatim but for the comments.
KPI_BLOCK = """\
kpi:
  state:
    tag: machine_state
    classes:
      production: [1]
      setup: [4]
      delay: [2]
      down: [3]
      planned_down: [5]
  produced: stroke_count
  good: good_parts
  ideal_cycle_time: 1.2s
"""

DEVICE = """\
name: press-01
driver: modbus
asset: {area: stamping, line: line-1, cell: cell-2}
stage: forming
connection: {host: 127.0.0.1, port: 1502, unit_id: 1, timeout: 1s}
poll_interval: 500ms
tags:
  - {name: stroke_count, address: "hr:10", type: uint32, category: production}
  - {name: good_parts, address: "hr:12", type: uint32, category: production}
  - {name: machine_state, address: "hr:14", type: uint16, category: equipment_state}
""" + KPI_BLOCK

AGENT = """\
agent:
  id: gw-changwon-01
  site: changwon
  state_dir: state
  health: "off"
  timezone: Asia/Seoul
devices: devices/*.yaml
shifts:
  - {name: day, start: "08:00", end: "17:00", breaks: ["12:00-13:00"]}
  - {name: night, start: "22:00", end: "06:00"}
kpi: {interval: 1m}
"""


def _validate(tmp_path: Path, agent: str, device: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "devices").mkdir(exist_ok=True)
    (tmp_path / "agent.yaml").write_text(agent)
    (tmp_path / "devices" / "press-01.yaml").write_text(device)
    return subprocess.run([str(BIN / "mos-agent"), "validate", "-c", str(tmp_path / "agent.yaml")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)


def test_the_spec_forms_validate(tmp_path: Path) -> None:
    agent = AGENT.replace('night, start: "22:00", end: "06:00"}',
                          'night, start: "22:00", end: "06:00", days: [mon, tue, wed, thu, fri]}')
    done = _validate(tmp_path, agent, DEVICE)
    assert done.returncode == 0, done.stderr
    loaded = load_config(tmp_path / "agent.yaml")
    kpi = loaded.devices[0].kpi
    assert kpi is not None and kpi.ideal_cycle_time == 1.2 and kpi.good == "good_parts" and kpi.scrap is None
    assert loaded.agent.kpi.interval == 60.0 and loaded.agent.agent.timezone == ZONE
    assert [s.name for s in loaded.agent.shifts] == ["day", "night"]
    assert loaded.agent.shifts[1].days == ["mon", "tue", "wed", "thu", "fri"]
    # text states (OPC UA MachineryItemState) and HH:MM:SS times take the same form
    text_states = DEVICE.replace("production: [1]", "production: [1, Executing]")
    seconds = agent.replace('"08:00"', '"08:00:30"')
    assert _validate(tmp_path, seconds, text_states).returncode == 0


@pytest.mark.parametrize(("agent_edit", "device_edit", "expected"), [
    (None, ("tag: machine_state", "tag: machine_stat"),
     "devices/press-01.yaml:13:10: kpi.state.tag: unknown tag 'machine_stat'"),
    (None, ('"hr:10", type: uint32', '"hr:10", type: float32'),
     "devices/press-01.yaml:20:13: kpi.produced: counter tag 'stroke_count' is float32"),
    (None, ("planned_down: [5]", "planed_down: [5]"),
     "devices/press-01.yaml:19:7: kpi.state.classes: unknown time class 'planed_down' (did you mean "
     "'planned_down'?)"),
    (None, ("down: [3]", "down: [3, 1]"),
     "devices/press-01.yaml:18:17: kpi.state.classes.down[1]: state value 1 is listed under production "
     "and down"),
    (None, ("good: good_parts", "good: good_parts\n  scrap: good_parts"),
     "devices/press-01.yaml:22:10: kpi.scrap: give exactly one of good"),
    (('start: "22:00"', 'start: "16:00"'), None,
     "agent.yaml:10:26: shifts[1].start: shift 'night' (16:00-06:00) overlaps shift 'day' (08:00-17:00)"),
    (("interval: 1m", "interval: often"), None, "agent.yaml:11:17: kpi.interval:"),
])
def test_validate_locates_every_kpi_mistake(tmp_path: Path, agent_edit: tuple[str, str] | None,
                                            device_edit: tuple[str, str] | None, expected: str) -> None:
    agent, device = AGENT, DEVICE
    if agent_edit:
        assert agent_edit[0] in agent
        agent = agent.replace(*agent_edit)
    if device_edit:
        assert device_edit[0] in device
        device = device.replace(*device_edit)
    done = _validate(tmp_path, agent, device)
    assert done.returncode == 2
    assert expected in done.stderr, done.stderr


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


SCENARIO = {
    "name": "acceptance press",
    "device": {"name": "press-01", "asset": {"area": "stamping", "line": "line-1", "cell": "cell-2"},
               "stage": "forming", "poll_interval": "200ms"},
    "cycle": [{"state": "run", "for": "2s"}, {"state": "idle", "for": "1s"}],
    "refresh": "50ms",
    "points": [
        {"name": "machine_state", "address": "hr:14", "type": "uint16", "category": "equipment_state",
         "model": {"state": {"run": 1, "idle": 2}}},
        {"name": "stroke_count", "address": "hr:10", "type": "uint32", "category": "production",
         "model": {"counter": {"start": 0, "rate": 10, "in_state": "run"}}},
        {"name": "good_parts", "address": "hr:12", "type": "uint32", "category": "production",
         "model": {"counter": {"start": 0, "rate": 9, "in_state": "run"}}},
    ],
    "kpi": yaml.safe_load(KPI_BLOCK)["kpi"],
}


@pytest.mark.slow
async def test_a_shift_with_a_break_in_the_store_the_command_and_metrics(
        tmp_path: Path, victoria: VictoriaMetrics, store: StoreReader, capsys: pytest.CaptureFixture[str]) -> None:
    zone = ZoneInfo(ZONE)
    start = datetime.now(zone).replace(microsecond=0) + timedelta(seconds=6)
    pause, resume, end = (start + timedelta(seconds=s) for s in (4, 6, 14))
    health = f"127.0.0.1:{free_port()}"
    async with ModbusSimulator(Scenario.model_validate(SCENARIO), port=free_port()) as sim:
        (tmp_path / "devices").mkdir()
        (tmp_path / "devices" / "press-01.yaml").write_text(sim.device_file())
        (tmp_path / "agent.yaml").write_text(textwrap.dedent(f"""\
            agent: {{id: gw-changwon-01, site: changwon, state_dir: state, health: "{health}", timezone: {ZONE}}}
            devices: devices/*.yaml
            sinks:
              - {{type: influxdb, url: "{victoria.url}", org: mdcg, bucket: factory, token: t, flush_interval: 200ms}}
            shifts:
              - {{name: day, start: "{start:%H:%M:%S}", end: "{end:%H:%M:%S}",
                 breaks: ["{pause:%H:%M:%S}-{resume:%H:%M:%S}"], days: [{start.strftime('%a').lower()}]}}
            kpi: {{interval: 2s}}
            """))
        agent = Agent(load_config(tmp_path / "agent.yaml"))
        await agent.start()
        try:
            def completed() -> dict[str, float] | None:
                item = agent.status().kpi[0]
                return item.last_complete.kpi if item.last_complete and item.last_complete.shift == "day" else None

            final = await wait_until_async(completed, timeout=60, what="the day shift's final figures")
            metrics = await asyncio.to_thread(_get, f"http://{health}/metrics")
            assert await asyncio.to_thread(cli.main, ["kpi", "--url", health, "--json"]) == 0
            printed = json.loads(capsys.readouterr().out)["kpi"]
            assert await asyncio.to_thread(cli.main, ["kpi", "--url", health]) == 0
            table = capsys.readouterr().out
        finally:
            await agent.stop()

    # POT = shift time minus the break; the final figure says so
    assert final["pot"] == 12 and final["pbt"] == 12 - final["pdot"]
    assert final["pq"] > 0 and 0 < final["gq"] < final["pq"]

    end_ms = int(end.timestamp() * 1000)
    start_ms = int(start.timestamp() * 1000)

    def kpi_series() -> list[dict]:
        return store.export('{__name__=~"kpi_.*"}')

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(end_ms in s["timestamps"] for s in kpi_series()):
        await asyncio.sleep(0.3)
    series = kpi_series()
    assert series
    assert {s["metric"]["__name__"] for s in series} == {"kpi_value"}  # measurement kpi, field value
    for s in series:
        labels = set(s["metric"]) - {"__name__", "db"}
        assert labels == STORE_TAGS, s["metric"]
        assert s["metric"]["tag"] in KPI_TAG_VALUES
        assert (s["metric"]["site"], s["metric"]["cell"], s["metric"]["shift"]) == ("changwon", "cell-2", "day")
    at_end = {s["metric"]["tag"]: v for s in series for t, v in zip(s["timestamps"], s["values"], strict=True)
              if t == end_ms}
    assert {"oee", "availability", "effectiveness", "quality_rate", "pot", "pbt", "apt", "pq", "gq",
            "sq"} <= set(at_end)
    assert at_end["pot"] == 12 and at_end["pq"] == final["pq"]
    units = {s["metric"]["tag"]: s["metric"]["unit"] for s in series}
    assert (units["oee"], units["pot"]) == ("%", "s")
    # shift-to-date records every interval before the end, at their computation time
    pot_times = sorted(t for s in series if s["metric"]["tag"] == "pot" for t in s["timestamps"])
    assert len([t for t in pot_times if start_ms < t < end_ms]) >= 3, pot_times

    item = printed[0]
    assert item["equipment"] == "press-01" and item["last_complete"]["shift"] == "day"
    assert item["last_complete"]["final"] and item["last_complete"]["kpi"]["pot"] == 12
    assert "press-01" in table and "day" in table
    assert 'mos_agent_kpi{equipment="press-01",kpi="pot",shift="day"} 12.0' in metrics
