"""MQTT throughput and CPU cost, each agent figure next to a bare paho-mqtt subscriber receiving
the same messages from the same broker in the same run.

The broker (Mosquitto) holds the same N QoS 1 messages for each subscriber's persistent session
(environment sensors and energy meters from ``mos-sim mqtt``: 2 or 3 readings a message). Each
subscriber then drains its queue alone, in its own process, and reports messages/s, points/s
and the CPU time it used per million points:

* bare paho-mqtt: MQTT 5, QoS 1, auto-ack, counts messages (the library's own cost);
* bare paho-mqtt + json.loads of each payload (what any JSON consumer pays at least);
* driver path: ``MqttDriver`` (decode on the network thread, captures, JSON paths, batches,
  manual acks) + ``Normaliser`` (line protocol), acks sent as soon as a batch is encoded;
* full agent: ``mos-agent run`` (driver → normaliser → group-commit writer → SQLite buffer, acks
  after the commit → influxdb sink → VictoriaMetrics), timed until the last point is delivered.
  It starts behind a proxy that refuses connections, so its start-up CPU is not counted; then
  the proxy opens and the agent drains its queue.

    python bench/bench_mqtt.py [--quick]     # ≤ 60 s (quick ≤ 15 s); writes bench/results/mqtt.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from agent_process import AgentRun, write_agent  # noqa: E402
from measure import cpu_seconds  # noqa: E402

from drivers.mqtt.config import MqttDevice  # noqa: E402
from mos_agent.localservers import Mosquitto, free_port  # noqa: E402
from mos_agent.taxonomy import DEFAULT_STAGES  # noqa: E402
from simulators.mqtt import MqttSimulator, SimulatorConfig  # noqa: E402
from tests.support.servers import FaultProxy, VictoriaMetrics  # noqa: E402

AGENT_ID = "bench"
DEVICES = 20  # simulated sensors/meters: 10 environment (3 readings), 10 energy (2 readings)
RECEIVE_MAXIMUM = 10_000  # the driver's default; the bare subscriber gets the same window


def session_client(client_id: str, manual_ack: bool = False) -> mqtt.Client:
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                       manual_ack=manual_ack)


def connect_props() -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    props.SessionExpiryInterval = 3600
    return props


def prepare_session(port: int, client_id: str, filters: list[str]) -> None:
    """Create a persistent session with its subscriptions, then go offline: the broker queues."""
    client = session_client(client_id)
    done = []
    client.on_subscribe = lambda *args: done.append(True)
    client.connect("127.0.0.1", port, clean_start=False, properties=connect_props())
    client.loop_start()
    client.subscribe([(f, 1) for f in filters])
    deadline = time.monotonic() + 10
    while not done and time.monotonic() < deadline:
        time.sleep(0.01)
    client.disconnect()
    client.loop_stop()


def device_for(port: int, name: str = "plant-sensors") -> tuple[MqttDevice, str]:
    sim = MqttSimulator(SimulatorConfig(port=port, devices=DEVICES, rate=1000.0))
    text = sim.device_file(name=name)
    return MqttDevice.model_validate(yaml.safe_load(text), context={"stages": list(DEFAULT_STAGES)}), text


def publish(port: int, messages: int) -> tuple[int, float]:
    """The same N messages for every prepared session; returns (points, seconds)."""
    sim = MqttSimulator(SimulatorConfig(port=port, devices=DEVICES, rate=1000.0, seed=1,
                                        client_id="bench-publisher"))
    sim.connect()
    deadline = time.monotonic() + 10
    while not sim._client.is_connected() and time.monotonic() < deadline:
        time.sleep(0.01)
    base = time.time() - messages / 1000.0
    started = time.monotonic()
    points = 0
    for i in range(messages):
        topic, payload, good, _bad = sim.next_message(base + i / 1000.0)  # distinct source times
        sim.publish(topic, payload, good)
        points += good
    if not sim.wait_acknowledged(120):
        raise RuntimeError("the broker did not acknowledge every published message")
    took = time.monotonic() - started
    sim._client.disconnect()
    sim._client.loop_stop()
    return points, took


# ---------------------------------------------------------------- children (one process each)


def child_bare(port: int, messages: int, parse_json: bool) -> dict[str, Any]:
    received = 0
    first = last = 0.0

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        nonlocal received, first, last
        if parse_json:
            json.loads(msg.payload)
        received += 1
        last = time.monotonic()
        if received == 1:
            first = last

    client = session_client("bench-bare-json" if parse_json else "bench-bare")
    client.on_message = on_message
    cpu0, wall0 = cpu_seconds(), time.monotonic()
    client.connect("127.0.0.1", port, clean_start=False, properties=connect_props())
    client.loop_start()
    deadline = time.monotonic() + 120
    while received < messages and time.monotonic() < deadline:
        time.sleep(0.005)
    wall, cpu = time.monotonic() - wall0, cpu_seconds() - cpu0
    client.disconnect()
    client.loop_stop()
    return {"messages": received, "seconds": wall, "cpu": cpu, "active_seconds": last - first}


def child_driver(port: int, points: int) -> dict[str, Any]:
    from drivers.mqtt import MqttDriver
    from mos_agent.batch import ReadingBatch
    from mos_agent.config.models import AgentSection
    from mos_agent.driver_api import DriverContext
    from mos_agent.normalise import Normaliser

    device, _ = device_for(port)
    agent = AgentSection(id=AGENT_ID, enterprise="acme", site="changwon")
    normaliser: Normaliser | None = None
    encoded = 0
    done = asyncio.Event()

    async def emit(batch: ReadingBatch) -> None:
        nonlocal encoded
        assert normaliser is not None
        chunk = normaliser.process(batch)
        encoded += len(chunk.body)
        for callback in chunk.on_committed:
            callback()
        if normaliser.counts.read >= points:
            done.set()

    async def run() -> dict[str, Any]:
        nonlocal normaliser
        ctx = DriverContext(agent, device, emit)
        normaliser = Normaliser(ctx.series)
        driver = MqttDriver(ctx)
        cpu0, wall0 = cpu_seconds(), time.monotonic()
        task = asyncio.create_task(driver.run())
        try:
            await asyncio.wait_for(done.wait(), 120)
        finally:
            wall, cpu = time.monotonic() - wall0, cpu_seconds() - cpu0
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return {"points": normaliser.counts.read, "seconds": wall, "cpu": cpu, "bytes": encoded,
                "errors": dict(ctx.status.errors)}

    return asyncio.run(run())


# ---------------------------------------------------------------- full agent


def run_full_agent(workdir: Path, broker: Mosquitto, store: VictoriaMetrics, points: int,
                   device_text: str) -> dict[str, Any]:
    """``mos-agent run`` end to end: broker → driver → normaliser → buffer → influxdb sink →
    VictoriaMetrics. It starts behind a proxy that refuses connections, so its start-up CPU is not
    counted; then the proxy opens and the agent drains its session queue. The rate is timed from
    its first committed point to its last (what it takes from the broker); the CPU is counted
    until the last point is in the store, so it includes sending."""
    proxy = FaultProxy(broker.port)
    proxy.cut()
    health = f"127.0.0.1:{free_port()}"
    device = yaml.safe_load(device_text)
    device["connection"]["port"] = proxy.port
    config = write_agent(workdir, [device], store.url, health, agent_id=f"{AGENT_ID}-agent")
    run = AgentRun(config, health, workdir / "agent.log")
    try:
        deadline = time.monotonic() + 30
        while (st := run.status()) is None or not st["agent"]["ready"]:
            if run.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"agent did not start: {run.tail(2000)}")
            time.sleep(0.05)
        cpu0 = run.cpu()
        proxy.heal()
        first = all_committed = None
        committed = sent = 0
        deadline = time.monotonic() + 120
        while sent < points and time.monotonic() < deadline:
            st = run.status()
            if st:
                committed = st["pipeline"]["committed_points"]
                sent = st["sinks"][0]["sent_points"]
            now = time.monotonic()
            if committed and first is None:
                first = now
            if committed >= points and all_committed is None:
                all_committed = now
            time.sleep(0.05)
        done = time.monotonic()
        first = first or done
        return {"points": min(committed, sent), "seconds": (all_committed or done) - first,
                "delivered_after_s": round(done - first, 2), "cpu": run.cpu() - cpu0}
    finally:
        run.stop()
        proxy.close()


# ---------------------------------------------------------------- main


def run_child(role: str, port: int, amount: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", role, str(port), str(amount)],
                         capture_output=True, text=True, timeout=180, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"{role} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def per_million(cpu: float, points: int) -> float:
    return cpu / points * 1e6 if points else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--child", nargs=3, metavar=("ROLE", "PORT", "AMOUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        role, port, amount = args.child[0], int(args.child[1]), int(args.child[2])
        result = child_driver(port, amount) if role == "driver" else child_bare(port, amount, role == "bare-json")
        print(json.dumps(result))
        return 0

    messages = args.messages or (10_000 if args.quick else 40_000)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp:
        workdir = Path(tmp)
        broker = Mosquitto.start(workdir / "mosquitto")
        store = VictoriaMetrics.start(workdir / "vm")
        try:
            device, device_text = device_for(broker.port)
            filters = sorted({t.template.filter for t in device.tags})
            prepare_session(broker.port, "bench-bare", filters)
            prepare_session(broker.port, "bench-bare-json", filters)
            prepare_session(broker.port, device.client_id(AGENT_ID), filters)
            prepare_session(broker.port, device.client_id(f"{AGENT_ID}-agent"), filters)
            points, publish_seconds = publish(broker.port, messages)
            print(f"published {messages:,} messages ({points:,} points) in {publish_seconds:.1f}s; "
                  f"each of 4 sessions holds them", flush=True)

            bare = run_child("bare", broker.port, messages)
            bare_json = run_child("bare-json", broker.port, messages)
            driver = run_child("driver", broker.port, points)
            agent = run_full_agent(workdir / "agent", broker, store, points, device_text)
        finally:
            broker.stop()
            store.stop()
    took = time.monotonic() - started

    rows = [
        ("bare paho-mqtt (reference)", bare["messages"], points if bare["messages"] == messages else 0,
         bare["seconds"], bare["cpu"]),
        ("bare paho-mqtt + json.loads", bare_json["messages"], points if bare_json["messages"] == messages else 0,
         bare_json["seconds"], bare_json["cpu"]),
        ("agent driver + normaliser", messages if driver["points"] >= points else 0, driver["points"],
         driver["seconds"], driver["cpu"]),
        ("full agent, into the store", messages if agent["points"] >= points else 0, agent["points"],
         agent["seconds"], agent["cpu"]),
    ]
    print(f"\n{'subscriber':32} {'messages/s':>11} {'points/s':>10} {'CPU s / M points':>17} {'× bare':>7}")
    table = []
    bare_cost = per_million(bare["cpu"], points)
    for name, msgs, pts, seconds, cpu in rows:
        cost = per_million(cpu, pts)
        entry = {"name": name, "messages": msgs, "points": pts, "seconds": round(seconds, 3),
                 "messages_per_s": round(msgs / seconds) if seconds else None,
                 "points_per_s": round(pts / seconds) if seconds else None,
                 "cpu_s": round(cpu, 3), "cpu_s_per_million_points": round(cost, 2),
                 "cpu_vs_bare": round(cost / bare_cost, 2)}
        table.append(entry)
        print(f"{name:32} {entry['messages_per_s'] or 0:>11,} {entry['points_per_s'] or 0:>10,} "
              f"{cost:>17.2f} {entry['cpu_vs_bare']:>7.2f}")
    print(f"\n{messages:,} messages, {points:,} points; {took:.0f}s in all")

    driver_entry, agent_entry, bare_entry = table[2], table[3], table[0]
    result = {
        "quick": args.quick,
        "seconds": round(took, 1),
        "figures": [
            {"name": "MQTT driver + normaliser", "value": driver_entry["points_per_s"], "unit": "points/s",
             "reference": "bare paho-mqtt subscriber, same messages", "reference_value": bare_entry["points_per_s"],
             "target": "", "ok": None},
            {"name": "MQTT → buffer → store (mos-agent run)", "value": agent_entry["points_per_s"], "unit": "points/s",
             "load": f"{messages:,} QoS 1 messages ({points:,} points) queued for the agent's session; all in "
                     f"the store {agent['delivered_after_s']}s after the first was committed",
             "reference": "bare paho-mqtt subscriber, same messages", "reference_value": bare_entry["points_per_s"],
             "target": "", "ok": None},
            {"name": "MQTT agent CPU per million points", "value": agent_entry["cpu_s_per_million_points"],
             "unit": "CPU s", "reference": "bare paho-mqtt", "reference_value": bare_entry["cpu_s_per_million_points"],
             "target": "≤ 2× bare library", "ok": agent_entry["cpu_vs_bare"] <= 2.0},
        ],
        "details": {"messages": messages, "points": points, "devices": DEVICES,
                    "publish_seconds": round(publish_seconds, 2), "subscribers": table,
                    "driver_errors": driver.get("errors", {})},
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "mqtt.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
