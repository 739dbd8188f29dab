"""The agent at the loads plants actually run, where its fixed costs (whatever wakes up whether or
not there is data) weigh most: ``mos-agent run -c FILE`` as a real subprocess, a Modbus simulator
(``mos-sim modbus``, one TCP port a device) in its own process, VictoriaMetrics in its own, all on
loopback; each agent figure beside a bare ``AsyncModbusTcpClient`` process reading the same
blocks from the same simulator at the same pace, in the same run.

Scenarios:

1. light — 10 devices × 100 moving uint16 holding registers polled every second (1,000 points/s,
   every point stored and sent): agent CPU per point and per second. Target: ≤ 2× the bare client.
   Also the bytes the agent sent to the store per point (gzip on) and the rows the store
   ingested per point (``vm_rows_inserted_total``).
2. idle — 10 devices × 100 registers whose values never change, ``deadband`` on, polled every
   second: nothing passes the deadband after the first poll, so nothing is stored or sent.
   Target: agent CPU per second ≤ 1.5× the bare client's for the same reads.

CPU is the scheduler's on-CPU time of every thread (``/proc/<pid>/task/*/schedstat``, ns; the
10 ms ticks of ``/proc/<pid>/stat`` are too coarse at a few ms a second). The agent's /status is
read only at the window's ends, outside it. The bare client runs one window before the agents and
one after; the reference is their mean (at a few ms a second, a box that gets busier or quieter
between the windows moves it by a fifth). It serves both scenarios: it makes the same requests
either way (the simulator's values moving or not costs a client nothing).

    python bench/bench_light.py [--quick] [--only light,idle]

Full ≈ 3 minutes (30 s windows), ``--quick`` ≈ 1.5 minutes (10 s windows). Writes
bench/results/light.json ({"figures": [...]} plus details).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from agent_process import AgentRun, stop_process, write_agent  # noqa: E402
from bench_agent import device_requests, figure  # noqa: E402
from measure import add_only_option, attempt, chosen, free_port_block, process_cpu_seconds_exact, write_results  # noqa: E402

from mos_agent.localservers import free_port, wait_for_port  # noqa: E402
from tests.support.servers import VictoriaMetrics  # noqa: E402

DEVICES = 10
REGISTERS = 100
POLL_INTERVAL = 1.0
SCENARIOS = ("light", "idle")
# hr:0..99 move (sine waves), hr:100..199 never change: light devices read the first block, idle
# devices the second, from one simulator process.
SCENARIO = {
    "name": "light load",
    "description": "100 moving and 100 constant uint16 holding registers",
    "device": {"name": "light", "asset": {"area": "bench"}, "stage": "utility", "poll_interval": "1s"},
    "refresh": "100ms",
    "points": [
        {"name": "moving", "address": "hr:0", "type": "uint16", "count": REGISTERS, "category": "process",
         "model": {"sine": {"mean": 30000, "amplitude": 20000, "period": "10s"}}},
        {"name": "steady", "address": f"hr:{REGISTERS}", "type": "uint16", "count": REGISTERS,
         "category": "process", "model": {"constant": 1234}},
    ],
}
DEADBAND = 1.0  # register units: constant values never pass it


def log(message: str) -> None:
    print(f"[light] {message}", flush=True)


@dataclass
class World:
    quick: bool
    workdir: Path
    vm: VictoriaMetrics
    sim: subprocess.Popen
    sim_base: int
    scenario_path: Path
    agents: list[AgentRun] = field(default_factory=list)

    @property
    def ports(self) -> list[int]:
        return [self.sim_base + i for i in range(DEVICES)]

    def devices(self, prefix: str, point: str, deadband: float = 0.0) -> list[dict[str, Any]]:
        """Device files reading only the registers of ``point`` (moving or steady)."""
        from simulators.modbus import Scenario, device_file_text

        scenario = Scenario.load(self.scenario_path)
        devices = []
        for i, port in enumerate(self.ports):
            data = yaml.safe_load(device_file_text(scenario, name=f"{prefix}-{i:02d}", port=port))
            data["asset"] = {"area": "bench", "line": prefix}
            data["connection"]["timeout"] = "2s"
            data["tags"] = [t for t in data["tags"] if t["name"].startswith(point)]
            if deadband:
                for tag in data["tags"]:
                    tag["deadband"] = deadband
            devices.append(data)
        return devices

    def start_agent(self, name: str, devices: list[dict[str, Any]]) -> AgentRun:
        directory = self.workdir / name
        health = f"127.0.0.1:{free_port()}"
        config = write_agent(directory, devices, self.vm.url, health)
        # info: the agent logs how many points it committed when it stops (nothing per point)
        data = yaml.safe_load(config.read_text())
        data["agent"]["log_level"] = "info"
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        agent = AgentRun(config, health, directory / "agent.log")
        self.agents.append(agent)
        return agent

    def vm_rows(self) -> int:
        """Rows (samples) VictoriaMetrics took in over the InfluxDB protocol so far."""
        with urllib.request.urlopen(f"{self.vm.url}/metrics", timeout=10) as r:
            text = r.read().decode()
        match = re.search(r'^vm_rows_inserted_total\{type="influx"\} (\d+)', text, re.M)
        return int(match.group(1)) if match else 0


@contextlib.contextmanager
def world(quick: bool) -> Iterator[World]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-light-", dir="/var/tmp"))
    scenario_path = workdir / "light.yaml"
    scenario_path.write_text(yaml.safe_dump(SCENARIO, sort_keys=False))
    vm = VictoriaMetrics.start(workdir / "vm")
    base = free_port_block(DEVICES)
    sim = subprocess.Popen([sys.executable, "-m", "simulators.cli", "modbus", "--scenario", str(scenario_path),
                            "--port", str(base), "--count", str(DEVICES)], cwd=REPO,
                           stdout=(workdir / "sim.log").open("ab"), stderr=subprocess.STDOUT)
    w = World(quick, workdir, vm, sim, base, scenario_path)
    try:
        for port in w.ports:
            wait_for_port(port, timeout=60)
        yield w
    finally:
        for agent in w.agents:
            with contextlib.suppress(Exception):
                agent.stop()
        stop_process(sim)
        vm.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def windows(quick: bool) -> tuple[float, float]:
    """(warm-up, window) seconds."""
    return (3.0, 10.0) if quick else (5.0, 30.0)


def measure_agent(w: World, name: str, devices: list[dict[str, Any]]) -> dict[str, Any]:
    """Agent CPU over a window, /status read just before and just after it (not inside)."""
    warmup, window = windows(w.quick)
    rows0 = w.vm_rows()
    agent = w.start_agent(name, devices)
    try:
        agent.wait_flowing()
        time.sleep(warmup)
        first = agent.status()
        cpu0, t0 = process_cpu_seconds_exact(agent.pid), time.monotonic()
        time.sleep(window)
        cpu1, t1 = process_cpu_seconds_exact(agent.pid), time.monotonic()
        last = agent.status()
        # what was committed in the window reaches the store within a flush interval or two
        time.sleep(2.5)
        settled = agent.status()
    finally:
        code = agent.stop()
    if first is None or last is None or settled is None:
        raise RuntimeError(f"agent /status not answering: {agent.tail()}")
    # rows the store took in over the agent's whole run, against every point it committed (all
    # of them are delivered by the time it stops)
    stopped = re.search(r"stopped: (\d+) points committed", agent.tail(20000))
    total_committed = int(stopped.group(1)) if stopped else 0
    time.sleep(1.0)
    rows1 = w.vm_rows()
    seconds = t1 - t0
    cpu = cpu1 - cpu0
    read = sum(d["points_read"] for d in last["devices"]) - sum(d["points_read"] for d in first["devices"])
    committed = last["pipeline"]["committed_points"] - first["pipeline"]["committed_points"]
    sink0, sink1 = first["sinks"][0], settled["sinks"][0]
    sent = sink1["sent_points"] - sink0["sent_points"]
    sent_bytes = sink1.get("sent_bytes", 0) - sink0.get("sent_bytes", 0)
    return {"seconds": round(seconds, 2), "points_read": read, "points_committed": committed,
            "points_per_s": round(read / seconds), "cpu_s": round(cpu, 4), "cpu_share": round(cpu / seconds, 5),
            "cpu_ms_per_s": round(cpu / seconds * 1000, 3),
            "cpu_us_per_point": round(cpu / read * 1e6, 2) if read else None,
            "sent_points": sent, "sent_bytes": sent_bytes,
            "sent_bytes_per_point": round(sent_bytes / sent, 2) if sent and sent_bytes else None,
            "store_rows": rows1 - rows0, "points_committed_in_run": total_committed,
            "store_rows_per_point": round((rows1 - rows0) / total_committed, 3) if total_committed else None,
            "overruns": sum(d["overruns"] for d in last["devices"]) - sum(d["overruns"] for d in first["devices"]),
            "agent_exit": code}


def measure_bare(w: World, devices: list[dict[str, Any]]) -> dict[str, Any]:
    warmup, window = windows(w.quick)
    spec = {"ports": w.ports, "requests": device_requests(devices[0]), "interval": POLL_INTERVAL,
            "warmup": warmup, "duration": window}
    out = subprocess.run([sys.executable, str(HERE / "bench_agent.py"), "--bare-client", json.dumps(spec)],
                         capture_output=True, text=True, cwd=REPO, timeout=warmup + window + 60)
    if out.returncode != 0:
        raise RuntimeError(f"bare client failed: {out.stderr[-1500:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["cpu_ms_per_s"] = round(result["cpu_s"] / result["seconds"] * 1000, 3)
    result["cpu_us_per_point"] = round(result["cpu_s"] / result["points"] * 1e6, 2) if result["points"] else None
    return result


def ratio(agent: float | None, bare: float | None) -> float | None:
    return round(agent / bare, 2) if agent and bare else None


def mean_bare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """One reference from the bare client's windows before and after the agents."""
    cpu_s = before["cpu_s"] + after["cpu_s"]
    seconds = before["seconds"] + after["seconds"]
    points = before["points"] + after["points"]
    return {"points": points, "seconds": round(seconds, 2), "cpu_s": round(cpu_s, 4),
            "points_per_s": round(points / seconds) if seconds else 0,
            "cpu_ms_per_s": round(cpu_s / seconds * 1000, 3) if seconds else None,
            "cpu_us_per_point": round(cpu_s / points * 1e6, 2) if points else None}


def light_figures(bare: dict[str, Any], scenarios: dict[str, dict[str, Any]], load: str,
                  window: float) -> list[dict[str, Any]]:
    reference = "bare AsyncModbusTcpClient, same blocks, same pace (mean of a window before and one after)"
    figures: list[dict[str, Any]] = []
    light = scenarios.get("light")
    if light is not None:
        r = ratio(light["cpu_us_per_point"], bare["cpu_us_per_point"])
        log(f"light: {light['points_per_s']:,} points/s, {light['cpu_ms_per_s']} ms CPU/s, "
            f"{light['cpu_us_per_point']} µs/point = {r}× bare; {light['sent_bytes_per_point']} bytes sent "
            f"and {light['store_rows_per_point']} store rows a point")
        figures.append(figure("agent CPU per point, 1,000 points/s", light["cpu_us_per_point"], "µs",
                              reference=reference, reference_value=bare["cpu_us_per_point"],
                              target="≤ 2× bare library", ok=r is not None and r <= 2.0,
                              load=f"{load}, all stored; {window:g}s; ratio {r}×"))
        figures.append(figure("agent CPU per second, 1,000 points/s", light["cpu_ms_per_s"], "ms/s",
                              reference=reference, reference_value=bare["cpu_ms_per_s"],
                              load=f"{load}; ratio {ratio(light['cpu_ms_per_s'], bare['cpu_ms_per_s'])}×"))
        figures.append(figure("bytes sent to the store per point", light["sent_bytes_per_point"], "B",
                              load=f"{load}; influxdb sink, gzip on, batches of ≤ 5,000 points"))
        rows = light["store_rows_per_point"]
        figures.append(figure("store rows per point", rows, "rows",
                              reference="VictoriaMetrics vm_rows_inserted_total", target="1 (good points)",
                              ok=rows == 1.0 if rows else None, load=f"{load}; every point good"))
    idle = scenarios.get("idle")
    if idle is not None:
        r = ratio(idle["cpu_ms_per_s"], bare["cpu_ms_per_s"])
        log(f"idle: {idle['points_per_s']:,} points/s read, {idle['points_committed']} committed, "
            f"{idle['cpu_ms_per_s']} ms CPU/s = {r}× bare")
        figures.append(figure("idle agent CPU per second", idle["cpu_ms_per_s"], "ms/s",
                              reference=reference, reference_value=bare["cpu_ms_per_s"],
                              target="≤ 1.5× bare library", ok=r is not None and r <= 1.5,
                              load=f"{load}, values constant, deadband on: "
                                   f"{idle['points_committed']} points stored in {window:g}s; ratio {r}×"))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 s windows instead of 30 s")
    add_only_option(parser, SCENARIOS)
    args = parser.parse_args(argv)
    want = set(chosen(parser, args.only, SCENARIOS))
    started = time.monotonic()
    figures: list[dict[str, Any]] = []
    details: dict[str, Any] = {}
    failures: dict[str, str] = {}
    load = f"{DEVICES} devices × {REGISTERS} holding registers @ {POLL_INTERVAL:g} s"
    with world(args.quick) as w:
        _, window = windows(w.quick)
        log(f"VictoriaMetrics on {w.vm.url}; mos-sim modbus on ports {w.ports[0]}..{w.ports[-1]}; "
            f"{window:g}s windows")
        moving = w.devices("light", "moving")
        log(f"bare AsyncModbusTcpClient: {load}")
        bare = attempt(failures, "bare", lambda: measure_bare(w, moving), log, "bare client")
        if bare is not None:
            details["bare_before"] = bare
            log(f"  {bare['points_per_s']:,} points/s, {bare['cpu_ms_per_s']} ms CPU/s, "
                f"{bare['cpu_us_per_point']} µs/point")
            scenarios: dict[str, dict[str, Any]] = {}
            if "light" in want:
                log(f"light: agent, {load}, every value moving (stored and sent)")
                light = attempt(failures, "light", lambda: measure_agent(w, "light", moving), log)
                if light is not None:
                    scenarios["light"] = light
            if "idle" in want:
                log(f"idle: agent, {load}, values never change, deadband {DEADBAND:g} (nothing stored)")
                idle = attempt(failures, "idle",
                               lambda: measure_agent(w, "idle", w.devices("idle", "steady", DEADBAND)), log)
                if idle is not None:
                    scenarios["idle"] = idle
            # The bare client again after the agents: the reference is the mean of the two windows
            # bracketing them, so a machine that got busier or quieter meanwhile skews it less.
            after = attempt(failures, "bare", lambda: measure_bare(w, moving), log, "bare client (second window)")
            if after is not None:
                details["bare_after"] = after
                log(f"bare AsyncModbusTcpClient again: {after['cpu_ms_per_s']} ms CPU/s")
                bare = mean_bare(bare, after)
            details["bare"] = bare
            details.update(scenarios)
            figures += light_figures(bare, scenarios, load, window)
    took = time.monotonic() - started
    write_results("light", quick=args.quick, seconds=took, figures=figures, failures=failures, details=details)
    log(f"wrote bench/results/light.json ({took:.0f}s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
