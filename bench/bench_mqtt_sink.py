"""Northbound MQTT, Sparkplug B: CPU per point of the agent's sink path next to a bare paho-mqtt
publisher sending the same payloads to the same broker, at 20,000 points/s.

Both run alone, one after the other, in their own process, for the same points (20 devices ×
100 tags, every tag every 100 ms) and report the CPU time they used per point (all threads):

* bare paho-mqtt: what a hand-written Sparkplug publisher costs at least — for each 250 ms of
  points, one DDATA per device built with the generated protobuf classes (alias, timestamp,
  double value per metric; the minimum the specification asks for), published at QoS 1 and
  waited for until the broker acknowledged it.
* the sink: ``MqttSink`` (format sparkplug) fed the buffer's payloads as the sink runner hands
  them over (gzipped line protocol from the normaliser, ``batch_size`` 5000 points): decompress,
  parse, build DDATA by alias (Quality only where it changed), publish QoS 1, wait for every
  acknowledgement. Births and the session are set up before the clock starts.

Target: the sink ≤ 2× the bare publisher's CPU per point. Each takes 3 turns of 15 s (quick: 2 of
5 s), alternating; the best turn of each is the figure. Each round's pair and its ratio are kept
too (``details.round_ratios``, printed to stderr): on a busy machine a round's two turns share its
load, so the spread of the round ratios shows how far the figure can be trusted.

    python bench/bench_mqtt_sink.py [--quick]   # ≤ 120 s (quick ≤ 40 s); writes bench/results/mqtt_sink.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import queue
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from measure import cpu_seconds  # noqa: E402

from mos_agent.localservers import Mosquitto  # noqa: E402
from tests.support.servers import running  # noqa: E402

DEVICES = 20
TAGS = 100
PERIOD_S = 0.1  # every tag every 100 ms: 20 × 100 / 0.1 = 20,000 points/s
BATCH_POINTS = 5000  # what the sink runner hands over at a time (its default batch_size)
RATE = DEVICES * TAGS / PERIOD_S
GROUP = "bench"
NODE = "bench-agent"


def _series() -> list[Any]:
    from mos_agent.series import SeriesSpec, make_asset

    specs = []
    for d in range(DEVICES):
        asset = make_asset({"site": "changwon", "area": "stamping", "line": "line-1", "equipment": f"press-{d:02d}"})
        specs += [SeriesSpec(asset=asset, tag=f"t{t:03d}", category="process", kind="sample", stage="forming",
                             unit="bar", data_type="float32") for t in range(TAGS)]
    return specs


def _values(cycle: int) -> np.ndarray:
    """Every tag's value in poll cycle ``cycle``: a slow ramp with a per-tag offset."""
    return np.arange(DEVICES * TAGS, dtype=np.float64) * 0.25 + cycle * 0.5


def sink_payloads(seconds: float) -> list[Any]:
    """The buffer's payloads for ``seconds`` of data: the normaliser's line protocol, gzipped as
    the buffer stores it, cut into sink batches of BATCH_POINTS."""
    from mos_agent.batch import ReadingBatch
    from mos_agent.normalise import Normaliser
    from mos_agent.payload import Payload, compress
    from mos_agent.series import SeriesTable

    specs = _series()
    tables = []
    for d in range(DEVICES):
        table = SeriesTable()
        for spec in specs[d * TAGS:(d + 1) * TAGS]:
            table.add(spec)
        tables.append(table)
    normalisers = [Normaliser(t) for t in tables]
    base_ns = time.time_ns() - 3600 * 10**9
    lines: list[bytes] = []
    for cycle in range(int(seconds / PERIOD_S)):
        values = _values(cycle)
        ts = base_ns + int(cycle * PERIOD_S * 1e9)
        for d, normaliser in enumerate(normalisers):
            batch = ReadingBatch.build(np.arange(TAGS), values[d * TAGS:(d + 1) * TAGS], ts)
            lines += normaliser.process(batch).body.splitlines(keepends=True)
    payloads = []
    for start in range(0, len(lines), BATCH_POINTS):
        chunk = b"".join(lines[start:start + BATCH_POINTS])
        payloads.append(Payload(len(lines[start:start + BATCH_POINTS]), gzipped=compress(chunk)))
    return payloads


def child_sink(port: int, seconds: float, state_dir: str, result: Any) -> None:
    from mos_agent.config.models import AgentSection, MqttSinkConfig
    from mos_agent.sinks.mqtt import MqttSink

    payloads = sink_payloads(seconds)
    config = MqttSinkConfig(type="mqtt", url=f"mqtt://127.0.0.1:{port}", format="sparkplug", group_id=GROUP)
    agent = AgentSection(id=NODE, site="changwon", state_dir=Path(state_dir))
    sink = MqttSink("sparkplug", config, agent=agent, state_dir=Path(state_dir), series=_series())
    sink.write(payloads[0])  # connect, births, first batch: not timed
    interval = BATCH_POINTS / RATE
    cpu0, wall0 = cpu_seconds(), time.monotonic()
    points = 0
    for i, payload in enumerate(payloads[1:]):
        delay = wall0 + i * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sink.write(payload)
        points += payload.points
    cpu, wall = cpu_seconds() - cpu0, time.monotonic() - wall0
    published = sink.status().messages_published
    sink.close()
    result.put({"points": points, "cpu": cpu, "seconds": wall, "messages": published})


def child_bare(port: int, seconds: float, result: Any) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from mos_agent.sparkplug import sparkplug_b_pb2 as pb

    cycles = int(seconds / PERIOD_S)
    base_ms = time.time_ns() // 1_000_000 - 3_600_000
    # the same points as plain columns, made before the clock starts
    columns = [(_values(c).tolist(), base_ms + int(c * PERIOD_S * 1000)) for c in range(cycles)]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare-sparkplug")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    topics = [f"spBv1.0/{GROUP}/DDATA/bare/press-{d:02d}" for d in range(DEVICES)]
    cycles_per_batch = max(1, round(BATCH_POINTS / (DEVICES * TAGS)))
    interval = cycles_per_batch * PERIOD_S
    seq = 0
    points = messages = 0
    cpu0, wall0 = cpu_seconds(), time.monotonic()
    for b, start in enumerate(range(1, cycles, cycles_per_batch)):
        delay = wall0 + b * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        infos = []
        batch = columns[start:start + cycles_per_batch]
        for d, topic in enumerate(topics):
            payload = pb.Payload(timestamp=time.time_ns() // 1_000_000, seq=seq)
            seq = (seq + 1) % 256
            add = payload.metrics.add
            for values, ts in batch:
                for t in range(TAGS):
                    add(alias=d * TAGS + t, timestamp=ts, double_value=values[d * TAGS + t])
                    points += 1
            infos.append(client.publish(topic, payload.SerializeToString(), 1))
            messages += 1
        for info in infos:
            info.wait_for_publish(30)
    cpu, wall = cpu_seconds() - cpu0, time.monotonic() - wall0
    client.disconnect()
    client.loop_stop()
    result.put({"points": points, "cpu": cpu, "seconds": wall, "messages": messages})


def measure(target: Any, *args: Any) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    result = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, result))
    proc.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            out = result.get(timeout=1)
        except queue.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"{target.__name__} ended without a result (exit {proc.exitcode})") from None
            continue
        proc.join(30)
        return out
    proc.kill()
    raise TimeoutError(f"{target.__name__} gave no result within 300 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    seconds, rounds = (5.0, 2) if args.quick else (15.0, 3)
    # bare and sink take turns, each round on a fresh broker; the best round of each counts (other
    # work on the box only ever adds CPU time)
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "sink": []}
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-sink-") as tmp:
        for r in range(rounds):
            with running(Mosquitto.start(Path(tmp) / f"mosquitto-{r}")) as broker:
                runs["bare"].append(measure(child_bare, broker.port, seconds))
                runs["sink"].append(measure(child_sink, broker.port, seconds, str(Path(tmp) / f"state-{r}")))
    best = {name: min(results, key=lambda x: x["cpu"] / x["points"]) for name, results in runs.items()}
    round_ratios = []
    for r, (bare_run, sink_run) in enumerate(zip(runs["bare"], runs["sink"], strict=True)):
        bare_us, sink_us = (x["cpu"] / x["points"] * 1e6 for x in (bare_run, sink_run))
        round_ratios.append(round(sink_us / bare_us, 2))
        print(f"round {r}: bare {bare_us:.2f} µs/point, sink {sink_us:.2f} µs/point, ratio {sink_us / bare_us:.2f}",
              file=sys.stderr)
    bare, sink = best["bare"], best["sink"]
    per_point = {name: r["cpu"] / r["points"] * 1e6 for name, r in best.items()}
    ratio = per_point["sink"] / per_point["bare"]
    figures = [
        {"name": "Sparkplug sink CPU per point", "value": round(per_point["sink"], 2), "unit": "µs",
         "reference": "bare paho + protobuf DDATA publisher", "reference_value": round(per_point["bare"], 2),
         "target": "≤ 2× reference", "ok": ratio <= 2.0,
         "load": f"{RATE:,.0f} points/s, {DEVICES} devices × {TAGS} tags, QoS 1, best of {rounds} × {seconds:g}s"},
        {"name": "Sparkplug sink rate achieved", "value": round(sink["points"] / sink["seconds"]), "unit": "points/s",
         "reference": "bare publisher", "reference_value": round(bare["points"] / bare["seconds"]),
         "target": f"{RATE:,.0f}", "ok": sink["points"] / sink["seconds"] >= 0.95 * RATE},
    ]
    out = {"figures": figures, "ratio": round(ratio, 2),
           "details": {"best": best, "round_ratios": round_ratios, "rounds": runs}}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "mqtt_sink.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
