"""Sparkplug B in: 10,000 metrics/s from an edge node through ``mos-agent run`` into
VictoriaMetrics, next to a bare paho-mqtt subscriber decoding the same stream.

The edge node is ``mos-sim mqtt --sparkplug`` (in this process): 10 devices of 101 metrics (100
matched by the device's patterns, ``Vibration/RMS`` ignored), 100 DDATA a second by alias at QoS 1
— 10,000 stored metrics a second. Each subscriber gets the stream alone for the same time:

* bare paho-mqtt: QoS 1, auto-ack, parses every payload with the generated protobuf classes
  (what any Sparkplug consumer pays at least);
* full agent: ``mos-agent run`` with a ``format: sparkplug`` MQTT device (births, aliases,
  patterns, acks after the buffer commit) → SQLite buffer → influxdb sink → VictoriaMetrics. Its
  rate is what it committed over the window; afterwards every committed point is counted in the
  store.

    python bench/bench_sparkplug_in.py [--quick]   # ≤ 60 s (quick ≤ 30 s); writes bench/results/sparkplug_in.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from agent_process import AgentRun, write_agent  # noqa: E402
from measure import cpu_seconds  # noqa: E402

from mos_agent.localservers import Mosquitto, free_port  # noqa: E402
from simulators.sparkplug_node import SparkplugConfig, SparkplugNode  # noqa: E402
from tests.support.servers import StoreReader, VictoriaMetrics, running  # noqa: E402

DEVICES = 10
EXTRA_METRICS = 95  # + the six standard ones = 101 a device, 100 of them matched
STORED_PER_MESSAGE = 100
RATE = 100.0  # DDATA messages/s: 10,000 stored metrics/s
TARGET = RATE * STORED_PER_MESSAGE


def node_config(port: int) -> SparkplugConfig:
    return SparkplugConfig(port=port, devices=DEVICES, extra_metrics=EXTRA_METRICS, rate=RATE, qos=1, seed=1,
                           client_id="bench-edge-node")


def child_bare(port: int, seconds: float, result: Any) -> None:
    """A bare subscriber for ``seconds`` once the first message came: messages, metrics, CPU."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from mos_agent.sparkplug import sparkplug_b_pb2 as pb

    counts = {"messages": 0, "metrics": 0}
    first: list[float] = []

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        payload = pb.Payload()
        payload.ParseFromString(msg.payload)
        counts["messages"] += 1
        counts["metrics"] += len(payload.metrics)
        if not first:
            first.append(time.monotonic())

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare-sparkplug")
    client.on_message = on_message
    client.on_connect = lambda c, u, f, rc, p: c.subscribe("spBv1.0/#", 1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    deadline = time.monotonic() + 30
    while not first and time.monotonic() < deadline:
        time.sleep(0.01)
    messages0, metrics0 = counts["messages"], counts["metrics"]
    cpu0, wall0 = cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    wall, cpu = time.monotonic() - wall0, cpu_seconds() - cpu0
    out = {"messages": counts["messages"] - messages0, "metrics": counts["metrics"] - metrics0, "seconds": wall,
           "cpu": cpu}
    client.disconnect()
    client.loop_stop()
    result.put(out)


def measure_bare(port: int, seconds: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    result = ctx.Queue()
    proc = ctx.Process(target=child_bare, args=(port, seconds, result))
    proc.start()
    time.sleep(1.0)  # subscribed before the node's births
    node = SparkplugNode(node_config(port)).start()
    try:
        out = result.get(timeout=seconds + 60)
    finally:
        node.stop()
        proc.join(30)
    return out


def wait_stored(reader: StoreReader, expected: int, timeout: float) -> int:
    """Points in the store: a number or text is one ``_value`` or ``_text`` sample; a bad reading
    (the node's death) has no value, only its ``_quality_code`` sample."""
    deadline = time.monotonic() + timeout
    while True:
        stored = reader.count('{__name__=~".+_value|.+_text"}') \
            + reader.count('{__name__=~".+_quality_code",quality="bad"}')
        if stored >= expected or time.monotonic() > deadline:
            return stored
        time.sleep(0.2)


def measure_agent(workdir: Path, broker: Mosquitto, store: VictoriaMetrics, seconds: float) -> dict[str, Any]:
    health = f"127.0.0.1:{free_port()}"
    node = SparkplugNode(node_config(broker.port))
    device = node.device_file()
    device["connection"]["port"] = broker.port
    device["connection"]["receive_maximum"] = 10_000
    config = write_agent(workdir, [device], store.url, health, agent_id="bench-sparkplug")
    run = AgentRun(config, health, workdir / "agent.log")
    try:
        deadline = time.monotonic() + 30
        while (st := run.status()) is None or st["devices"][0]["state"] != "running":
            if run.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"agent did not start: {run.tail(2000)}")
            time.sleep(0.05)
        node.start()
        run.wait_flowing(30)
        time.sleep(1.0)  # past the births
        begin = run.sample()
        time.sleep(seconds)
        end = run.sample()
        node.stop()
        # everything committed reaches the store
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            st = run.status()
            if st and st["sinks"][0]["sent_points"] >= st["pipeline"]["committed_points"] \
                    and st["devices"][0]["points_read"] == st["pipeline"]["committed_points"]:
                break
            time.sleep(0.2)
        st = run.status() or {}
        committed = st["pipeline"]["committed_points"]
        stored = wait_stored(StoreReader(store.url), committed, timeout=60)
        device_status = st["devices"][0]
        return {"points": end["committed"] - begin["committed"], "seconds": end["t"] - begin["t"],
                "cpu": end["cpu"] - begin["cpu"], "committed": committed, "stored": stored,
                "published_metrics": node.stats.metrics, "sparkplug": device_status.get("sparkplug"),
                "errors": device_status.get("errors")}
    finally:
        run.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    seconds = 6.0 if args.quick else 20.0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-sparkplug-in-") as tmp:
        workdir = Path(tmp)
        with running(Mosquitto.start(workdir / "mosquitto")) as broker, \
                running(VictoriaMetrics.start(workdir / "vm")) as store:
            bare = measure_bare(broker.port, seconds)
            agent = measure_agent(workdir / "agent", broker, store, seconds)
    took = time.monotonic() - started
    bare_rate = bare["metrics"] / bare["seconds"]
    agent_rate = agent["points"] / agent["seconds"]
    bare_cost = bare["cpu"] / bare["metrics"] * 1e6 if bare["metrics"] else float("nan")
    agent_cost = agent["cpu"] / agent["points"] * 1e6 if agent["points"] else float("nan")
    load = f"{DEVICES} devices × {STORED_PER_MESSAGE + 1} metrics, {RATE:g} DDATA/s by alias, QoS 1, {seconds:g}s"
    figures = [
        {"name": "Sparkplug in → buffer → store (mos-agent run)", "value": round(agent_rate), "unit": "points/s",
         "load": f"{load}; all {agent['committed']:,} committed points in VictoriaMetrics: "
                 f"{agent['stored'] >= agent['committed']}",
         "reference": "bare paho + protobuf subscriber, same stream", "reference_value": round(bare_rate),
         "target": f"≥ {TARGET:,.0f} points/s, all in the store",
         "ok": agent_rate >= 0.95 * TARGET and agent["stored"] >= agent["committed"]},
        {"name": "Sparkplug in agent CPU per million points", "value": round(agent_cost, 2), "unit": "CPU s",
         "reference": "bare paho + protobuf subscriber", "reference_value": round(bare_cost, 2),
         "target": "", "ok": None},
    ]
    out = {"quick": args.quick, "seconds": round(took, 1), "figures": figures,
           "details": {"bare": bare, "agent": agent}}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "sparkplug_in.json").write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
