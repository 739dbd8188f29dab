"""KPIs end to end: the Modbus simulator plays a press, ``mos-agent run`` computes ISO 22400 KPIs
over a one-minute shift into VictoriaMetrics, and is killed with SIGKILL in the middle of it.

The figures are checked against the raw readings the same agent stored (recomputed here with the
SPEC's counter rule), against the definitions (ratios from the time elements and quantities), and
against the outage: the time the agent was down is ``unknown``, and counts are neither lost nor
counted twice across the restart.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from mos_agent.localservers import free_port, wait_for_port
from tests.support.servers import StoreReader, VictoriaMetrics

REPO = Path(__file__).resolve().parent.parent
AGENT = Path(sys.executable).parent / "mos-agent"
SHIFT_SECONDS = 60
IDEAL_CYCLE_S = 0.008

SCENARIO = """
name: kpi press
device: {name: press-kpi, asset: {area: stamping, line: line-9}, stage: forming, poll_interval: 200ms}
cycle:
  - {state: run, for: 8s}
  - {state: idle, for: 2s}
  - {state: run, for: 6s}
  - {state: fault, for: 3s}
  - {state: setup, for: 2s}
  - {state: maintenance, for: 2s}
refresh: 50ms
points:
  - {name: machine_state, address: "hr:0", type: uint16, category: equipment_state,
     model: {state: {run: 1, idle: 2, fault: 3, setup: 4, maintenance: 5}}}
  - {name: stroke_count, address: "hr:1", type: uint16, category: production,
     model: {counter: {start: 63000, rate: 100, in_state: run}}}
  - {name: scrap_count, address: "hr:2", type: uint16, category: quality,
     model: {counter: {start: 0, rate: 3, in_state: run}}}
kpi:
  state: {tag: machine_state, classes: {production: [1], delay: [2], down: [3], setup: [4], planned_down: [5]}}
  produced: stroke_count
  scrap: scrap_count
  ideal_cycle_time: 8ms
"""


def _start_agent(config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([str(AGENT), "run", "-c", str(config)], stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_until(moment: float) -> None:
    while (left := moment - time.time()) > 0:
        time.sleep(min(left, 0.5))


def _counted(samples: list[tuple[int, float]], start_ms: int, end_ms: int) -> float:
    """The SPEC's counter rule over stored raw samples: deltas of samples within [start, end),
    the first against the last sample before the start; a decrease is a wrap when the previous
    value was in the top 10 % of uint16, else a reset."""
    total = 0.0
    previous: float | None = None
    for t, value in sorted(samples):
        if t >= end_ms:
            break
        if previous is not None and t >= start_ms:
            if value >= previous:
                total += value - previous
            elif previous >= 0.9 * 65536:
                total += value - previous + 65536
            else:
                total += value
        previous = value
    return total


def _series(store: StoreReader, selector: str) -> list[tuple[int, float]]:
    return [(t, v) for s in store.export(selector) for t, v in zip(s["timestamps"], s["values"], strict=True)]


@pytest.mark.slow
def test_a_short_shift_with_a_kill_9_in_the_middle(tmp_path: Path, victoria: VictoriaMetrics,
                                                  store: StoreReader) -> None:
    scenario = tmp_path / "press.yaml"
    scenario.write_text(SCENARIO)
    port = free_port()
    sim_log = (tmp_path / "sim.log").open("ab")
    sim = subprocess.Popen([sys.executable, "-m", "simulators.cli", "modbus", "--scenario", str(scenario),
                            "--port", str(port)], cwd=REPO, stdout=sim_log, stderr=subprocess.STDOUT)
    agent: subprocess.Popen | None = None
    try:
        wait_for_port(port, timeout=30)
        device = subprocess.run([sys.executable, "-m", "simulators.cli", "modbus", "--scenario", str(scenario),
                                 "--port", str(port), "--print-device-file"], cwd=REPO, capture_output=True,
                                text=True, check=True, timeout=60).stdout
        (tmp_path / "devices").mkdir()
        (tmp_path / "devices" / "press-kpi.yaml").write_text(device)

        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=12)
        end = start + timedelta(seconds=SHIFT_SECONDS)
        health = f"127.0.0.1:{free_port()}"
        config = tmp_path / "agent.yaml"
        config.write_text(yaml.safe_dump({
            "agent": {"id": "gw-kpi", "site": "changwon", "state_dir": str(tmp_path / "state"), "health": health,
                      "timezone": "UTC"},
            "devices": "devices/*.yaml",
            "sinks": [{"type": "influxdb", "url": victoria.url, "org": "mdcg", "bucket": "factory", "token": "t",
                       "flush_interval": "200ms"}],
            "shifts": [{"name": "short", "start": f"{start:%H:%M:%S}", "end": f"{end:%H:%M:%S}"}],
            "kpi": {"interval": "2s"},
        }))
        log = tmp_path / "agent.log"
        agent = _start_agent(config, log)
        start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)

        # mid-shift: shift-to-date records are in the store; then the agent dies without warning
        _wait_until(start.timestamp() + 22)
        assert store.count('{__name__="kpi_value",tag="pot",shift="short"}') >= 3, log.read_text()[-3000:]
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        killed = time.time()
        time.sleep(6)
        agent = _start_agent(config, log)
        restarted = time.time()

        _wait_until(end.timestamp() + 2)
        deadline = time.monotonic() + 90
        final: dict[str, float] = {}
        while time.monotonic() < deadline:
            final = {s["metric"]["tag"]: v for s in store.export('{__name__="kpi_value",shift="short"}')
                     for t, v in zip(s["timestamps"], s["values"], strict=True) if t == end_ms}
            if {"pot", "pq", "oee"} <= set(final):
                break
            time.sleep(0.5)
        assert {"pot", "pq", "sq", "gq", "apt", "unknown", "oee", "availability", "effectiveness",
                "quality_rate"} <= set(final), (final, log.read_text()[-3000:])

        # time elements: the whole shift is accounted for, the outage as unknown
        assert final["pot"] == SHIFT_SECONDS and final["pbt"] == pytest.approx(SHIFT_SECONDS - final["pdot"])
        parts = sum(final[k] for k in ("apt", "aust", "adet", "adot", "pdot", "unknown"))
        assert parts == pytest.approx(final["pot"], abs=1e-3)
        down = restarted - killed
        assert down <= final["unknown"] <= down + 25, (final, down)
        for element in ("apt", "aust", "adet", "adot", "pdot"):
            assert final[element] > 0, (element, final)

        # quantities: the agent's raw readings, recounted here, across the wrap and the restart
        strokes = _series(store, '{__name__="production_value",tag="stroke_count"}')
        in_shift = [v for t, v in sorted(strokes) if start_ms <= t < end_ms]
        assert any(b < a for a, b in itertools.pairwise(in_shift)), "no wrap inside the shift"
        assert final["pq"] == _counted(strokes, start_ms, end_ms)
        assert final["sq"] == _counted(_series(store, '{__name__="quality_value",tag="scrap_count"}'),
                                       start_ms, end_ms)
        assert final["gq"] == final["pq"] - final["sq"]

        # ratios from their definitions
        assert final["availability"] == pytest.approx(100 * final["apt"] / final["pbt"])
        assert final["effectiveness"] == pytest.approx(100 * IDEAL_CYCLE_S * final["pq"] / final["apt"])
        assert final["quality_rate"] == pytest.approx(100 * final["gq"] / final["pq"])
        assert final["oee"] == pytest.approx(final["availability"] * final["effectiveness"]
                                             * final["quality_rate"] / 10_000)

        # shift-to-date figures came every interval, before and after the kill
        pot_times = sorted(t for s in store.export('{__name__="kpi_value",tag="pot",shift="short"}')
                           for t in s["timestamps"])
        assert len([t for t in pot_times if t < killed * 1000]) >= 3
        assert len([t for t in pot_times if restarted * 1000 < t < end_ms]) >= 3
        labels = store.export('{__name__="kpi_value",tag="oee"}')[0]["metric"]
        assert {k: labels.get(k) for k in ("site", "area", "line", "equipment", "stage", "shift", "unit",
                                           "quality")} == {
            "site": "changwon", "area": "stamping", "line": "line-9", "equipment": "press-kpi",
            "stage": "forming", "shift": "short", "unit": "%", "quality": "good"}
    finally:
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()
        sim.terminate()
        sim.wait(10)
        sim_log.close()
