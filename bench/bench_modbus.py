"""Modbus throughput and CPU cost: the driver path next to the bare pymodbus client reading the same
blocks from the same simulator in the same run.

The simulator (``mos-sim modbus`` with ``simulators/scenarios/bulk.yaml``) runs in its own
process and serves 10 devices, one TCP port each, with 1,000 holding registers of moving uint16
values. Every device is read as 8 requests of 125 registers. In this process, one after the
other, each measured over the same window:

* bare pymodbus: ``AsyncModbusTcpClient.read_holding_registers`` for the 8 blocks of each
  device (the library's own cost: framing, decoding the registers into a list);
* driver path: ``ModbusDriver`` (plan, schedule, numpy block decode, one ``ReadingBatch`` per
  cycle) + ``Normaliser`` (scale/offset/quality → line protocol bytes): 1,000 uint16 tags per
  device, so a point is a register on both sides.

Both run paced (every 100 ms: 100,000 points/s offered) and as fast as they can. CPU is this
process's user+system time (``getrusage``) over the window; CPU per million points is what the
SPEC's overhead target compares (≤ 2× the bare library).

    python bench/bench_modbus.py [--quick]    # ≤ 60 s (quick ≤ 15 s); writes bench/results/modbus.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from measure import cpu_seconds, free_port_block, process_cpu_seconds  # noqa: E402
from pymodbus.client import AsyncModbusTcpClient  # noqa: E402

from drivers.modbus import ModbusDevice, ModbusDriver  # noqa: E402
from mos_agent.batch import ReadingBatch  # noqa: E402
from mos_agent.config.models import AgentSection  # noqa: E402
from mos_agent.driver_api import DriverContext  # noqa: E402
from mos_agent.localservers import wait_for_port  # noqa: E402
from mos_agent.normalise import Normaliser  # noqa: E402

DEVICES = 10
REGISTERS = 1000
BLOCK = 125
INTERVAL = 0.1
SCENARIO = REPO / "simulators" / "scenarios" / "bulk.yaml"


class Window:
    """Counts points and CPU between start() and stop()."""

    def __init__(self) -> None:
        self.points = 0
        self.counting = False
        self.cpu0 = self.wall0 = 0.0
        self.cpu = self.wall = 0.0

    def start(self) -> None:
        self.points = 0
        self.counting = True
        self.cpu0, self.wall0 = cpu_seconds(), time.perf_counter()

    def stop(self) -> None:
        self.counting = False
        self.cpu, self.wall = cpu_seconds() - self.cpu0, time.perf_counter() - self.wall0

    def result(self) -> dict[str, float]:
        return {
            "points": self.points,
            "seconds": round(self.wall, 2),
            "points_per_s": round(self.points / self.wall),
            "cpu_s": round(self.cpu, 3),
            "cpu_s_per_million_points": round(self.cpu / self.points * 1e6, 2) if self.points else None,
        }


async def measure(window: Window, warmup: float, duration: float) -> None:
    await asyncio.sleep(warmup)
    window.start()
    await asyncio.sleep(duration)
    window.stop()


async def bare_client(ports: list[int], paced: bool, warmup: float, duration: float) -> dict[str, float]:
    window = Window()
    clients = [AsyncModbusTcpClient("127.0.0.1", port=p, timeout=5, retries=0, reconnect_delay=0) for p in ports]
    for c in clients:
        if not await c.connect():
            raise RuntimeError("bare client cannot connect")

    stop = False

    async def poll(client: AsyncModbusTcpClient) -> None:
        loop = asyncio.get_running_loop()
        start, tick = loop.time(), 0
        # a flag, not cancellation: Python 3.11's wait_for (inside pymodbus) can swallow a cancel
        while not stop:
            for first in range(0, REGISTERS, BLOCK):
                rr = await client.read_holding_registers(first, count=BLOCK, device_id=1)
                if rr.isError() or len(rr.registers) != BLOCK:
                    raise RuntimeError(f"bad answer {rr}")
                if window.counting:
                    window.points += BLOCK
            if paced:
                tick += 1
                now = loop.time()
                while start + tick * INTERVAL <= now:
                    tick += 1
                await asyncio.sleep(start + tick * INTERVAL - now)
            else:
                await asyncio.sleep(0)

    tasks = [asyncio.create_task(poll(c)) for c in clients]
    try:
        await measure(window, warmup, duration)
    finally:
        stop = True
        await asyncio.wait(tasks, timeout=10)
        for t in tasks:
            t.cancel()
        for c in clients:
            c.close()
    return window.result()


class _EncodingSink:
    """The driver's emit: normalise and encode each batch to line protocol (what the agent does
    before the buffer), counting points inside the window."""

    def __init__(self, window: Window) -> None:
        self.window = window
        self.normaliser: Normaliser | None = None
        self.encoded_bytes = 0

    async def __call__(self, batch: ReadingBatch) -> None:
        assert self.normaliser is not None
        chunk = self.normaliser.process(batch)
        if self.window.counting:
            self.window.points += len(batch)
            self.encoded_bytes += len(chunk.body)


async def driver_path(ports: list[int], paced: bool, warmup: float, duration: float) -> dict[str, Any]:
    window = Window()
    agent = AgentSection(id="bench", site="lab")
    drivers: list[ModbusDriver] = []
    sinks: list[_EncodingSink] = []
    for i, port in enumerate(ports):
        device = ModbusDevice.model_validate({
            "name": f"bulk-{i:02d}", "driver": "modbus", "asset": {"area": "lab"}, "stage": "utility",
            "poll_interval": "100ms" if paced else "1ms",
            "connection": {"host": "127.0.0.1", "port": port, "unit_id": 1, "timeout": "5s"},
            # what `mos-sim modbus --scenario bulk.yaml --print-device-file` lists
            "tags": [{"name": f"r_{k}", "address": f"hr:{k}", "type": "uint16", "category": "process"}
                     for k in range(REGISTERS)],
        })
        sink = _EncodingSink(window)
        ctx = DriverContext(agent, device, sink)
        sink.normaliser = Normaliser(ctx.series)
        sinks.append(sink)
        drivers.append(ModbusDriver(ctx))
    logging.getLogger("mos_agent").setLevel("ERROR")  # "max" mode overruns every cycle by design
    tasks = [asyncio.create_task(d.run()) for d in drivers]
    try:
        await measure(window, warmup, duration)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    result: dict[str, Any] = dict(window.result())
    encoded_bytes = sum(sink.encoded_bytes for sink in sinks)
    result["line_protocol_bytes_per_point"] = round(encoded_bytes / window.points, 1) if window.points else None
    result["overruns"] = sum(d.ctx.status.overruns for d in drivers)
    result["requests_per_device_cycle"] = drivers[0].plan.request_count
    result["errors"] = {k: v for d in drivers for k, v in d.ctx.status.errors.items() if k != "overrun"}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short windows (≤ 15 s in all)")
    args = parser.parse_args(argv)
    warmup, duration = (0.5, 2.0) if args.quick else (1.0, 10.0)
    started = time.monotonic()
    base = free_port_block(DEVICES)
    ports = list(range(base, base + DEVICES))
    sim = subprocess.Popen([sys.executable, "-m", "simulators.cli", "modbus", "--scenario", str(SCENARIO),
                            "--port", str(base), "--count", str(DEVICES)], cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    results: dict[str, dict[str, Any]] = {}
    try:
        for p in ports:
            wait_for_port(p, timeout=30)
        print(f"simulator up after {time.monotonic() - started:.1f}s", flush=True)
        for mode, paced in (("paced", True), ("max", False)):
            sim_cpu0 = process_cpu_seconds(sim.pid)
            results[f"bare_{mode}"] = asyncio.run(bare_client(ports, paced, warmup, duration))
            results[f"bare_{mode}"]["simulator_cpu_s"] = round(process_cpu_seconds(sim.pid) - sim_cpu0, 2)
            sim_cpu0 = process_cpu_seconds(sim.pid)
            results[f"driver_{mode}"] = asyncio.run(driver_path(ports, paced, warmup, duration))
            results[f"driver_{mode}"]["simulator_cpu_s"] = round(process_cpu_seconds(sim.pid) - sim_cpu0, 2)
            print(f"{mode} done after {time.monotonic() - started:.1f}s", flush=True)
    finally:
        sim.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            sim.wait(10)
        if sim.poll() is None:
            sim.kill()
    took = time.monotonic() - started

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    print(f"\nModbus: {DEVICES} devices × {REGISTERS} registers ({REGISTERS // BLOCK} reads of {BLOCK}), "
          f"simulator in its own process; window {duration:g}s each")
    print(f"{'':34}{'bare pymodbus':>16}{'driver path':>16}{'ratio':>8}")
    for mode in ("paced", "max"):
        bare, drv = results[f"bare_{mode}"], results[f"driver_{mode}"]
        label = "every 100 ms" if mode == "paced" else "as fast as possible"
        print(f"{label + ': points/s':34}{bare['points_per_s']:>16,}{drv['points_per_s']:>16,}"
              f"{ratio(drv['points_per_s'], bare['points_per_s']) or '':>8}")
        print(f"{label + ': CPU s / million points':34}{bare['cpu_s_per_million_points']:>16}"
              f"{drv['cpu_s_per_million_points']:>16}"
              f"{ratio(drv['cpu_s_per_million_points'], bare['cpu_s_per_million_points']) or '':>8}")
    paced_ratio = ratio(results["driver_paced"]["cpu_s_per_million_points"],
                        results["bare_paced"]["cpu_s_per_million_points"])
    max_ratio = ratio(results["driver_max"]["cpu_s_per_million_points"],
                      results["bare_max"]["cpu_s_per_million_points"])
    figures = [
        {"name": "Modbus driver path, paced 100 ms", "value": results["driver_paced"]["points_per_s"],
         "unit": "points/s", "reference": "bare pymodbus client, same blocks",
         "reference_value": results["bare_paced"]["points_per_s"], "target": "≥ 100,000 points/s offered",
         "ok": results["driver_paced"]["points_per_s"] >= 0.95 * results["bare_paced"]["points_per_s"]},
        {"name": "Modbus driver path, as fast as possible", "value": results["driver_max"]["points_per_s"],
         "unit": "points/s", "reference": "bare pymodbus client, same blocks",
         "reference_value": results["bare_max"]["points_per_s"], "target": "", "ok": None},
        {"name": "Modbus driver path CPU per million points (paced)",
         "value": results["driver_paced"]["cpu_s_per_million_points"], "unit": "CPU s",
         "reference": "bare pymodbus", "reference_value": results["bare_paced"]["cpu_s_per_million_points"],
         "target": "≤ 2× bare library", "ok": paced_ratio is not None and paced_ratio <= 2.0},
        {"name": "Modbus driver path CPU per million points (max)",
         "value": results["driver_max"]["cpu_s_per_million_points"], "unit": "CPU s",
         "reference": "bare pymodbus", "reference_value": results["bare_max"]["cpu_s_per_million_points"],
         "target": "≤ 2× bare library", "ok": max_ratio is not None and max_ratio <= 2.0},
    ]
    out = {"quick": args.quick, "seconds": round(took, 1), "figures": figures,
           "details": {"devices": DEVICES, "registers_per_device": REGISTERS, "block": BLOCK,
                       "window_seconds": duration, "cpu_ratio_paced": paced_ratio, "cpu_ratio_max": max_ratio,
                       **results}}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "modbus.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote bench/results/modbus.json ({took:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
