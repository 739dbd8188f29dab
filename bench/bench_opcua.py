"""OPC UA acquisition: the agent's path (OpcUaDriver + Normaliser, up to encoded line protocol)
next to the bare asyncua client doing the same work, against ``mos-sim opcua`` in a separate
process, in the same run.

* poll: 2,000 nodes read in a loop as fast as the server answers — bare ``client.read_values``
  against the driver's poll loop (one Read per round, decoded into a batch and normalised);
* subscribe: 2,000 monitored items changing twice a second — asyncua's handler API
  (``datachange_notification`` per value) against the driver's batch subscription;
* end to end: ``mos-agent run`` (driver → normaliser → buffer → influxdb sink → VictoriaMetrics)
  polling the 2,000 nodes every 100 ms (20,000 values/s offered) next to a bare client reading
  them at the same pace, and subscribed to them next to the bare subscription: delivered
  values/s, whether the load is sustained (delivered ≥ 95% of offered, lag not growing) and the
  agent process's CPU per million values.

Figures: values/s and CPU seconds per million values (the simulator's CPU is not counted). SPEC
target: the agent's CPU per million ≤ 2× the bare library's.

    python bench/bench_opcua.py            # ≤ 90 s
    python bench/bench_opcua.py --quick    # ≤ 40 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from asyncua import Client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent_process import AgentRun, write_agent  # noqa: E402

from drivers.opcua import OpcUaDriver  # noqa: E402
from drivers.opcua.config import OpcUaDevice  # noqa: E402
from mos_agent.batch import ReadingBatch  # noqa: E402
from mos_agent.config.models import AgentSection  # noqa: E402
from mos_agent.driver_api import DriverContext  # noqa: E402
from mos_agent.localservers import free_port  # noqa: E402
from mos_agent.normalise import Normaliser  # noqa: E402
from mos_agent.taxonomy import DEFAULT_STAGES  # noqa: E402
from tests.support.servers import VictoriaMetrics  # noqa: E402

RESULTS = ROOT / "bench" / "results"
NODES = 2000
CHANGE_RATE = 2.0  # bulk node updates per second in the subscribe phase
E2E_POLL_INTERVAL = 0.1  # end to end: every node every 100 ms = 20,000 values/s offered
SUSTAINED_SHARE = 0.95


@dataclass
class Measure:
    values: int
    seconds: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.values / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_million(self) -> float:
        return self.cpu / self.values * 1e6 if self.values else float("inf")


async def measure(count: Callable[[], int], seconds: float, warmup: float) -> Measure:
    """Values counted and CPU used by this process over ``seconds`` after ``warmup``."""
    await asyncio.sleep(warmup)
    start_values, start_wall, start_cpu = count(), time.monotonic(), time.process_time()
    await asyncio.sleep(seconds)
    return Measure(count() - start_values, time.monotonic() - start_wall, time.process_time() - start_cpu)


def node_ids() -> list[str]:
    return [f"ns=2;s=Machine.Bulk.Value{i:04d}" for i in range(NODES)]


# ---------------------------------------------------------------- bare asyncua


async def bare_poll(endpoint: str, seconds: float, warmup: float, interval: float | None = None) -> Measure:
    """Reads every node in one call, again and again: as fast as the server answers, or every
    ``interval`` seconds."""
    client = Client(endpoint, timeout=10)
    await client.connect()
    try:
        nodes = [client.get_node(n) for n in node_ids()]
        counted = 0
        stop = False
        loop_time = asyncio.get_running_loop().time

        async def loop() -> None:
            nonlocal counted
            due = loop_time()
            while not stop:
                values = await client.read_values(nodes)
                counted += len(values)
                if interval:
                    due += interval
                    await asyncio.sleep(max(0.0, due - loop_time()))

        task = asyncio.create_task(loop())
        result = await measure(lambda: counted, seconds, warmup)
        stop = True
        await task
        return result
    finally:
        await client.disconnect()


class _Counter:
    def __init__(self) -> None:
        self.count = 0

    def datachange_notification(self, node: object, val: object, data: object) -> None:
        self.count += 1


async def bare_subscribe(endpoint: str, seconds: float, warmup: float) -> Measure:
    client = Client(endpoint, timeout=10)
    await client.connect()
    try:
        handler = _Counter()
        subscription = await client.create_subscription(100, handler)
        await subscription.subscribe_data_change([client.get_node(n) for n in node_ids()], queuesize=10)
        result = await measure(lambda: handler.count, seconds, warmup)
        await subscription.delete()
        return result
    finally:
        await client.disconnect()


# ---------------------------------------------------------------- the agent's path


def device_file(endpoint: str, mode: str, poll_interval: str) -> dict:
    return {
        "name": "bench-cnc", "driver": "opcua", "asset": {"area": "machining"}, "stage": "machining",
        "connection": {"endpoint": endpoint, "timeout": "10s"},
        "mode": mode, "poll_interval": poll_interval,
        "subscription": {"publishing_interval": "100ms", "queue_size": 10, "max_items_per_subscription": NODES},
        "tags": [{"name": f"value_{i:04d}", "node": n, "unit": "%", "category": "process"}
                 for i, n in enumerate(node_ids())],
    }


async def agent(endpoint: str, mode: str, seconds: float, warmup: float, state_dir: Path) -> Measure:
    device = OpcUaDevice.model_validate(device_file(endpoint, mode, "1ms"), context={"stages": list(DEFAULT_STAGES)})
    counted = 0
    normaliser: Normaliser | None = None

    async def emit(batch: ReadingBatch) -> None:
        nonlocal counted
        assert normaliser is not None
        chunk = normaliser.process(batch)
        counted += chunk.points
        await asyncio.sleep(0)  # the pipeline's queue hand-off

    ctx = DriverContext(AgentSection(id="bench", site="bench", state_dir=state_dir), device, emit)
    normaliser = Normaliser(ctx.series)
    task = asyncio.create_task(OpcUaDriver(ctx).run())
    try:
        deadline = time.monotonic() + 30
        while counted == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return await measure(lambda: counted, seconds, warmup)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# ---------------------------------------------------------------- the whole agent


def full_agent(endpoint: str, mode: str, seconds: float, warmup: float, workdir: Path, store_url: str) -> dict:
    """``mos-agent run`` with the 2,000 nodes (polled every 100 ms, or subscribed) into the store:
    what it delivers and the CPU its process spends, over ``seconds`` after ``warmup``."""
    health = f"127.0.0.1:{free_port()}"
    directory = workdir / f"agent-{mode}"
    device = device_file(endpoint, mode, f"{E2E_POLL_INTERVAL * 1000:g}ms")
    run = AgentRun(write_agent(directory, [device], store_url, health), health, directory / "agent.log")
    try:
        run.wait_flowing()
        time.sleep(warmup)
        first = run.sample()
        time.sleep(seconds / 2)
        middle = run.sample()
        time.sleep(seconds / 2)
        last = run.sample()
    finally:
        run.stop()
    wall = last["t"] - first["t"]
    committed, sent = last["committed"] - first["committed"], last["sent"] - first["sent"]
    return {"seconds": wall, "committed_per_s": committed / wall, "sent_per_s": sent / wall,
            "cpu_per_million": (last["cpu"] - first["cpu"]) / committed * 1e6 if committed else float("inf"),
            "lag_points": [first["lag_points"], middle["lag_points"], last["lag_points"]]}


# ---------------------------------------------------------------- run


def start_simulator(port: int, bulk_rate: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators.cli", "opcua", "--port", str(port), "--bulk", str(NODES),
         "--update-rate", "0", "--bulk-rate", str(bulk_rate)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("mos-sim opcua:"):
        proc.kill()
        raise RuntimeError(f"simulator did not start: {line}{proc.stderr.read() if proc.stderr else ''}")
    return proc


def stop_simulator(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


_STARTED = time.monotonic()


def progress(text: str) -> None:
    print(f"[opcua {time.monotonic() - _STARTED:5.1f}s] {text}", file=sys.stderr, flush=True)


async def run_phase(name: str, endpoint: str, seconds: float, warmup: float,
                    bare: Callable[[str, float, float], Awaitable[Measure]], state_dir: Path) -> dict:
    limit = seconds + warmup + 60  # a stuck measurement fails the bench instead of hanging it
    progress(f"{name}: bare asyncua")
    reference = await asyncio.wait_for(bare(endpoint, seconds, warmup), limit)
    progress(f"{name}: agent (driver + normaliser)")
    ours = await asyncio.wait_for(agent(endpoint, name, seconds, warmup, state_dir), limit)
    ratio = ours.cpu_per_million / reference.cpu_per_million
    return {"agent": ours, "bare": reference, "ratio": ratio}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs (≤ 15 s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    seconds, warmup = (1.5, 0.3) if args.quick else (6.0, 1.0)
    started = time.monotonic()
    port = free_port()
    endpoint = f"opc.tcp://127.0.0.1:{port}/"
    progress(f"starting mos-sim opcua with {NODES} bulk nodes")
    proc = start_simulator(port, CHANGE_RATE)
    results: dict[str, dict] = {}
    e2e: dict[str, dict] = {}
    e2e_seconds, e2e_warmup = (3.0, 1.5) if args.quick else (8.0, 2.0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results["poll"] = asyncio.run(run_phase("poll", endpoint, seconds, warmup, bare_poll, Path(tmp)))
            results["subscribe"] = asyncio.run(run_phase("subscribe", endpoint, seconds, warmup, bare_subscribe,
                                                         Path(tmp)))
            store = VictoriaMetrics.start(Path(tmp) / "vm")
            try:
                for mode in ("poll", "subscribe"):
                    progress(f"{mode}: mos-agent run into VictoriaMetrics")
                    e2e[mode] = full_agent(endpoint, mode, e2e_seconds, e2e_warmup, Path(tmp), store.url)
            finally:
                store.stop()
            progress(f"poll: bare asyncua every {E2E_POLL_INTERVAL * 1000:g} ms")
            e2e["poll"]["bare"] = asyncio.run(bare_poll(endpoint, e2e_seconds, e2e_warmup, E2E_POLL_INTERVAL))
            e2e["subscribe"]["bare"] = results["subscribe"]["bare"]
    finally:
        stop_simulator(proc)

    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    print(f"\nOPC UA, {NODES} nodes, mos-sim opcua in its own process ({os.cpu_count()} cores), "
          f"{seconds:g}s per measurement")
    print(f"{'':<11}{'agent values/s':>16}{'bare values/s':>16}{'agent CPU s/M':>15}{'bare CPU s/M':>14}"
          f"{'ratio':>8}")
    figures = []
    for phase, r in results.items():
        a, b = r["agent"], r["bare"]
        print(f"{phase:<11}{a.rate:>16,.0f}{b.rate:>16,.0f}{a.cpu_per_million:>15.2f}{b.cpu_per_million:>14.2f}"
              f"{r['ratio']:>7.2f}×")
        figures.append({"name": f"opcua {phase}: CPU per million values", "value": round(a.cpu_per_million, 2),
                        "unit": "CPU s/M", "reference": f"bare asyncua {phase}",
                        "reference_value": round(b.cpu_per_million, 2), "target": "≤ 2× reference",
                        "ok": r["ratio"] <= 2.0})
        figures.append({"name": f"opcua {phase}: values/s", "value": round(a.rate), "unit": "values/s",
                        "reference": f"bare asyncua {phase}", "reference_value": round(b.rate)})
    offered = {"poll": NODES / E2E_POLL_INTERVAL, "subscribe": NODES * CHANGE_RATE}
    for mode, r in e2e.items():
        bare: Measure = r["bare"]
        lags = r["lag_points"]
        growing = lags[2] > lags[0] + offered[mode] * 0.5  # more than half a second's worth
        sustained = r["sent_per_s"] >= SUSTAINED_SHARE * offered[mode] and not growing
        ratio = r["cpu_per_million"] / bare.cpu_per_million
        print(f"end to end, {mode}: {r['sent_per_s']:,.0f} values/s delivered of {offered[mode]:,.0f} offered "
              f"({'sustained' if sustained else 'NOT sustained'}), agent {r['cpu_per_million']:.2f} CPU s/M vs "
              f"bare {bare.cpu_per_million:.2f} ({ratio:.2f}×)")
        load = (f"{NODES:,} nodes {'every 100 ms' if mode == 'poll' else f'changing {CHANGE_RATE:g}/s, subscribed'}"
                f" = {offered[mode]:,.0f} values/s offered, {e2e_seconds:g}s; mos-agent run → buffer → "
                f"VictoriaMetrics; sink lag {lags[0]:,} → {lags[2]:,} points")
        figures.append({"name": f"OPC UA {mode} → buffer → store, delivered", "value": round(r["sent_per_s"]),
                        "unit": "values/s", "reference": "offered", "reference_value": round(offered[mode]),
                        "target": "offered load, no growing lag", "ok": sustained, "load": load})
        figures.append({"name": f"OPC UA {mode} → store: agent CPU per million values",
                        "value": round(r["cpu_per_million"], 2), "unit": "CPU s/M",
                        "reference": f"bare asyncua {mode}" + (" at the same pace" if mode == "poll" else ""),
                        "reference_value": round(bare.cpu_per_million, 2), "target": "≤ 2× reference",
                        "ok": ratio <= 2.0, "load": load})
    took = time.monotonic() - started
    print(f"(took {took:.0f}s; subscribe rates are bound by the simulator's {NODES} × {CHANGE_RATE:g}/s changes)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "opcua.json").write_text(json.dumps({
        "quick": args.quick, "nodes": NODES, "seconds_per_measurement": seconds, "took": round(took, 1),
        "phases": {phase: {"agent": vars(r["agent"]) | {"rate": r["agent"].rate,
                                                        "cpu_per_million": r["agent"].cpu_per_million},
                           "bare": vars(r["bare"]) | {"rate": r["bare"].rate,
                                                      "cpu_per_million": r["bare"].cpu_per_million},
                           "ratio": r["ratio"]} for phase, r in results.items()},
        "end_to_end": {mode: {k: (vars(v) if isinstance(v, Measure) else v) for k, v in r.items()}
                       for mode, r in e2e.items()},
        "figures": figures,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
