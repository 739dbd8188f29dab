"""The KPI engine's share of the agent's CPU: ``mos-agent run`` reading 10 bulk Modbus devices ×
1,000 registers every 100 ms (100,000 points/s) into VictoriaMetrics, with a ``kpi:`` block on
every device (state tag, produced and scrap counters), one shift covering the day and
``kpi.interval: 1s`` (sixty times the usual rate of records), next to the same agent without KPIs.

Figures:

* KPI engine CPU as a share of the agent's CPU — the engine's own thread CPU (``time.thread_time``
  around feeding and ticking, reported in ``/status``) over the agent process's CPU
  (``/proc/<pid>/stat``) in the same window. Target < 5 %.
* agent CPU per million points with KPIs, next to the mean of the same agent without KPIs run
  before and after it (on a shared machine the difference is mostly run-to-run noise; the
  engine's own figure is the measurement).

    python bench/bench_kpi.py [--quick]

Full ≈ 2 minutes, ``--quick`` ≈ 70 s (more on a busy machine). Writes bench/results/kpi.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from agent_process import AgentRun, stop_process, write_agent  # noqa: E402
from measure import free_port_block  # noqa: E402

from mos_agent.localservers import free_port, wait_for_port  # noqa: E402
from tests.support.servers import VictoriaMetrics  # noqa: E402

BULK = REPO / "simulators" / "scenarios" / "bulk.yaml"
DEVICES = 10
TAGS_PER_DEVICE = 1000
TARGET_SHARE = 5.0  # percent
KPI_BLOCK = {
    "state": {"tag": "r_0", "classes": {"production": [30000], "delay": [10000], "down": [50000]}},
    "produced": "r_1", "scrap": "r_2", "ideal_cycle_time": "100ms",
}


def log(message: str) -> None:
    print(f"[kpi] {message}", flush=True)


def devices(ports: list[int], with_kpi: bool) -> list[dict[str, Any]]:
    from simulators.modbus import Scenario, device_file_text

    scenario = Scenario.load(BULK)
    out = []
    for i, port in enumerate(ports):
        data = yaml.safe_load(device_file_text(scenario, name=f"kpi-{i:02d}", port=port))
        data["asset"] = {"area": "bench", "line": "kpi"}
        data["poll_interval"] = "100ms"
        data["connection"]["timeout"] = "2s"
        if with_kpi:
            data["kpi"] = KPI_BLOCK
        out.append(data)
    return out


def run(workdir: Path, vm: VictoriaMetrics, ports: list[int], with_kpi: bool, warmup: float,
        window: float, name: str) -> dict[str, Any]:
    directory = workdir / name
    health = f"127.0.0.1:{free_port()}"
    config = write_agent(directory, devices(ports, with_kpi), vm.url, health)
    if with_kpi:
        data = yaml.safe_load(config.read_text())
        data["shifts"] = [{"name": "all-day", "start": "00:00", "end": "00:00"}]
        data["kpi"] = {"interval": "1s"}
        config.write_text(yaml.safe_dump(data, sort_keys=False))
    agent = AgentRun(config, health, directory / "agent.log")
    try:
        agent.wait_flowing()
        time.sleep(warmup)
        first, engine0 = agent.sample(), _engine(agent)
        time.sleep(window)
        last, engine1 = agent.sample(), _engine(agent)
    finally:
        agent.stop()
    dt = last["t"] - first["t"]
    committed = last["committed"] - first["committed"]
    cpu = last["cpu"] - first["cpu"]
    result = {
        "with_kpi": with_kpi, "window_s": round(dt, 1), "committed_per_s": round(committed / dt),
        "agent_cpu_s": round(cpu, 3),
        "cpu_s_per_million_points": round(cpu / committed * 1e6, 3) if committed else None,
    }
    if with_kpi:
        engine_cpu = engine1["cpu_seconds"] - engine0["cpu_seconds"]
        result.update({"engine_cpu_s": round(engine_cpu, 4), "engine_share_percent": round(100 * engine_cpu / cpu, 3),
                       "kpi_records": engine1["records_emitted"] - engine0["records_emitted"],
                       "equipment": engine1["equipment"]})
    return result


def _engine(agent: AgentRun) -> dict[str, Any]:
    status = agent.status() or {}
    engine = status.get("kpi_engine") or {}
    return {"cpu_seconds": engine.get("cpu_seconds", 0.0), "records_emitted": engine.get("records_emitted", 0),
            "equipment": len(status.get("kpi") or [])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    warmup, window = (2.0, 6.0) if args.quick else (3.0, 20.0)
    workdir = Path(tempfile.mkdtemp(prefix="bench-kpi-", dir="/var/tmp"))
    vm = VictoriaMetrics.start(workdir / "vm")
    base = free_port_block(DEVICES)
    sim_log = (workdir / "sim.log").open("ab")
    sim = subprocess.Popen([sys.executable, "-m", "simulators.cli", "modbus", "--scenario", str(BULK),
                            "--port", str(base), "--count", str(DEVICES)], cwd=REPO, stdout=sim_log,
                           stderr=subprocess.STDOUT)
    results: dict[str, Any] = {"figures": [], "details": {}}
    try:
        ports = [base + i for i in range(DEVICES)]
        for port in ports:
            wait_for_port(port, timeout=60)
        offered = DEVICES * TAGS_PER_DEVICE * 10
        log(f"{DEVICES} devices × {TAGS_PER_DEVICE:,} registers every 100 ms = {offered:,} points/s, "
            f"{window:g}s windows, without and with KPIs")
        # without, with, without again: the reference is the mean of the runs around the measured one,
        # so a drift of the machine's load does not pass for the engine's cost
        before = run(workdir, vm, ports, False, warmup, window, "before")
        log(f"without KPIs: {before}")
        with_kpi = run(workdir, vm, ports, True, warmup, window, "with")
        log(f"with KPIs: {with_kpi}")
        after = run(workdir, vm, ports, False, warmup, window, "after")
        log(f"without KPIs again: {after}")
        without = {"cpu_s_per_million_points": round((before["cpu_s_per_million_points"]
                                                      + after["cpu_s_per_million_points"]) / 2, 3)}
        load = (f"{with_kpi['committed_per_s']:,} points/s committed, KPIs on {with_kpi['equipment']} devices, "
                f"records every 1 s, {window:g}s window")
        share = with_kpi["engine_share_percent"]
        results["figures"] = [
            {"name": "KPI engine share of agent CPU", "value": share, "unit": "%", "load": load,
             "reference": "engine thread CPU / agent process CPU, same window",
             "target": f"< {TARGET_SHARE:g} %", "ok": share < TARGET_SHARE},
            {"name": "agent CPU per million points, with KPIs", "value": with_kpi["cpu_s_per_million_points"],
             "unit": "s", "load": load, "reference": "the same agent without KPIs, runs before and after",
             "reference_value": without["cpu_s_per_million_points"]},
        ]
        results["details"] = {"without_kpi_before": before, "with_kpi": with_kpi, "without_kpi_after": after,
                              "offered": offered}
    finally:
        stop_process(sim)
        sim_log.close()
        vm.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir, ignore_errors=True)
    out = HERE / "results" / "kpi.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    for f in results["figures"]:
        log(f"{f['name']}: {f['value']} {f['unit']} (reference {f.get('reference_value', f['reference'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
