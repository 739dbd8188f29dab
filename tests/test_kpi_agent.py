"""KPIs in the running agent: a simulated press read over Modbus, the figures in ``/status``,
``/metrics`` and ``mos-agent kpi``, the records in a sink, and a graceful restart that continues
the shift instead of starting it again."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from mos_agent import cli
from mos_agent.config.loader import load_config
from mos_agent.localservers import free_port
from mos_agent.pipeline import Agent
from simulators.modbus import ModbusSimulator, Scenario
from tests.support.waiting import wait_until_async

SCENARIO = {
    "name": "kpi press",
    "device": {"name": "press-kpi", "asset": {"area": "stamping", "line": "line-9"}, "stage": "forming",
               "poll_interval": "200ms"},
    "cycle": [{"state": "run", "for": "3s"}, {"state": "fault", "for": "1s"}],
    "refresh": "50ms",
    "points": [
        {"name": "machine_state", "address": "hr:0", "type": "uint16", "category": "equipment_state",
         "model": {"state": {"run": 1, "fault": 3}}},
        {"name": "stroke_count", "address": "hr:1", "type": "uint16", "category": "production",
         "model": {"counter": {"start": 100, "rate": 20, "in_state": "run"}}},
        {"name": "good_parts", "address": "hr:2", "type": "uint16", "category": "quality",
         "model": {"counter": {"start": 0, "rate": 19, "in_state": "run"}}},
    ],
    "kpi": {"state": {"tag": "machine_state", "classes": {"production": [1], "down": [3]}},
            "produced": "stroke_count", "good": "good_parts", "ideal_cycle_time": "40ms"},
}


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


async def _current(agent: Agent) -> dict[str, float]:
    status = agent.status()
    if not status.kpi or status.kpi[0].current is None:
        return {}
    return status.kpi[0].current.kpi


@pytest.mark.slow
async def test_kpis_reach_status_metrics_the_command_and_the_sinks(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime.now(UTC)
    start, end = now - timedelta(hours=1), now + timedelta(hours=1)
    health = f"127.0.0.1:{free_port()}"
    async with ModbusSimulator(Scenario.model_validate(SCENARIO), port=free_port()) as sim:
        (tmp_path / "devices").mkdir()
        (tmp_path / "devices" / "press-kpi.yaml").write_text(sim.device_file())
        (tmp_path / "agent.yaml").write_text(yaml.safe_dump({
            "agent": {"id": "gw", "site": "changwon", "state_dir": str(tmp_path / "state"), "health": health,
                      "timezone": "UTC"},
            "sinks": [{"type": "sqlite", "flush_interval": "200ms"}],
            "shifts": [{"name": "test", "start": f"{start:%H:%M:%S}", "end": f"{end:%H:%M:%S}"}],
            "kpi": {"interval": "1s"},
        }))
        agent = Agent(load_config(tmp_path / "agent.yaml"))
        await agent.start()
        try:
            figures = await wait_until_async(lambda: agent.status().kpi and agent.status().kpi[0].current
                                             and agent.status().kpi[0].current.kpi.get("pq", 0) > 20
                                             and "oee" in agent.status().kpi[0].current.kpi, what="an OEE")
            assert figures
            status = json.loads(await asyncio.to_thread(_get, f"http://{health}/status"))
            item = status["kpi"][0]
            assert (item["equipment"], item["asset"]) == ("press-kpi", "changwon/stamping/line-9/press-kpi")
            current = item["current"]
            assert current["shift"] == "test" and not current["final"]
            assert current["kpi"]["pot"] == pytest.approx(3600 + (current["at"] - now.timestamp()), abs=2)
            assert current["kpi"]["unknown"] >= 3600  # the hour before the agent started
            assert status["kpi_engine"]["records_emitted"] > 0 and status["kpi_engine"]["cpu_seconds"] > 0

            metrics = (await asyncio.to_thread(_get, f"http://{health}/metrics")).decode()
            assert 'mos_agent_kpi{equipment="press-kpi",kpi="oee",shift="test"}' in metrics
            assert 'mos_agent_kpi{equipment="press-kpi",kpi="pq",shift="test"}' in metrics

            assert await asyncio.to_thread(cli.main, ["kpi", "--url", health]) == 0
            table = capsys.readouterr().out
            assert "press-kpi" in table and "current" in table  # an 80-column console: a row per KPI
            assert re.search(r"OEE\s*│\s*[0-9.]+%", table), table
            assert await asyncio.to_thread(cli.main, ["kpi", "--url", health, "--json"]) == 0
            printed = json.loads(capsys.readouterr().out)
            assert printed["kpi"][0]["current"]["shift"] == "test"

            # a reload that changes the device keeps the shift's accounting
            counted = agent.status().kpi[0].current.kpi["pq"]
            device_file = tmp_path / "devices" / "press-kpi.yaml"
            text = device_file.read_text()
            assert 'ideal_cycle_time: "40ms"' in text
            device_file.write_text(text.replace('ideal_cycle_time: "40ms"', "ideal_cycle_time: 50ms"))
            assert await agent.reload()
            reloaded = await wait_until_async(lambda: (k := agent.status().kpi[0].current.kpi)["pq"] > counted + 20
                                              and k, what="counting on after the reload")
            assert reloaded["effectiveness"] == pytest.approx(100 * 0.05 * reloaded["pq"] / reloaded["apt"], rel=1e-3)
        finally:
            await agent.stop()
        before = agent.status().kpi[0].current
        assert before is not None
        assert (tmp_path / "state" / "kpi-state.json").exists()

        # every sink gets the records like readings: here the local history
        with sqlite3.connect(tmp_path / "state" / "history.sqlite") as db:
            rows = db.execute("SELECT s.tag, s.unit, s.labels, p.value FROM points p "
                              "JOIN series s ON s.id = p.series_id WHERE s.measurement = 'kpi'").fetchall()
        tags = {tag for tag, *_ in rows}
        assert {"oee", "availability", "effectiveness", "quality_rate", "apt", "adot", "pq", "gq", "sq"} <= tags
        assert all(json.loads(labels).get("shift") == "test" for _, _, labels, _ in rows)

        # a graceful restart continues the shift: counts and production time carry on
        stopped = datetime.now(UTC).timestamp()
        await asyncio.sleep(2)
        again = Agent(load_config(tmp_path / "agent.yaml"))
        await again.start()
        try:
            after = await wait_until_async(lambda: agent_current(again), what="figures after the restart")
        finally:
            await again.stop()
        assert after["pq"] >= before.kpi["pq"] and after["apt"] >= before.kpi["apt"]
        assert after["unknown"] >= before.kpi["unknown"] + (again.started_at - stopped) - 0.5


def agent_current(agent: Agent) -> dict[str, float] | None:
    status = agent.status()
    if status.kpi and status.kpi[0].current is not None and status.kpi[0].current.at > agent.started_at + 1:
        return status.kpi[0].current.kpi
    return None
