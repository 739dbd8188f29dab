"""``mos-sim mqtt``: environment sensors and energy meters publishing JSON over MQTT.

Topics follow a unified-namespace tree, ``<prefix>/<area>/<line>/<equipment>/<kind>`` (for example
``acme/changwon/stamping/line-1/env-01/environment``), so one MQTT device file with
``{area}/{line}/{equipment}`` captures reads them all (``--print-device-file`` prints it).

* environment: ``{"ts": …, "temperature": °C, "humidity": %, "pm25": µg/m³}``
* energy: ``{"ts": …, "power": kW, "energy": kWh counter}``

Fault injection: ``--burst-every`` (a device flushes a backlog as a JSON array of samples),
``--malformed-ratio`` (not JSON, truncated JSON, missing key, wrong type, oversized payload),
``--disconnect-every/--disconnect-for`` (the publisher drops its connection), and with
``--embedded-broker`` (a Mosquitto of its own) ``--outage-every/--outage-for`` stop and restart
the broker. ``kill -USR1`` triggers an outage (or a disconnect) at once.

``--sparkplug`` publishes as a Sparkplug B edge node instead (see :mod:`simulators.sparkplug_node`).

Programmatic use (tests, benchmarks)::

    sim = MqttSimulator(SimulatorConfig(port=1883, devices=4, rate=100))
    sim.start(); ...; sim.stop(); sim.stats
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from mos_agent.localservers import Mosquitto

AREAS = ("stamping", "machining", "welding", "assembly", "painting")
KINDS = ("environment", "energy")
POINTS_PER_MESSAGE = {"environment": 3, "energy": 2}
TIMESTAMP_FORMATS = ("ms", "s", "ns", "iso", "none")
MALFORMED_KINDS = ("not_json", "truncated", "missing_key", "wrong_type", "oversized")
OVERSIZED_BYTES = 300 * 1024  # over the driver's default max_payload (256 KiB)


@dataclass
class Equipment:
    area: str
    line: str
    name: str
    kind: str  # environment | energy
    phase: float = 0.0
    base_power: float = 20.0
    energy_kwh: float = 0.0
    last_energy_time: float | None = None


@dataclass
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "acme/changwon"
    qos: int = 1
    devices: int = 6
    rate: float = 10.0  # messages per second over all devices
    timestamp: str = "ms"
    malformed_ratio: float = 0.0
    burst_every: float = 0.0  # seconds; 0 = no bursts
    burst_size: int = 20
    disconnect_every: float = 0.0
    disconnect_for: float = 2.0
    outage_every: float = 0.0  # embedded broker only
    outage_for: float = 5.0
    embedded_broker: bool = False
    client_id: str = "mos-sim-mqtt"
    username: str | None = None
    password: str | None = None
    seed: int | None = None
    equipment: list[Equipment] = field(default_factory=list)

    def resolved_equipment(self) -> list[Equipment]:
        if self.equipment:
            return self.equipment
        out = []
        for i in range(self.devices):
            kind = KINDS[i % 2]
            area = AREAS[(i // 2) % len(AREAS)]
            line = f"line-{(i // (2 * len(AREAS))) % 3 + 1}"
            prefix = "env" if kind == "environment" else "meter"
            out.append(Equipment(area, line, f"{prefix}-{i // 2 + 1:02d}", kind))
        return out


@dataclass
class SimulatorStats:
    messages: int = 0  # handed to the client
    acknowledged: int = 0  # confirmed by the broker (QoS 1) or written (QoS 0)
    points: int = 0  # well-formed readings in the messages handed over
    bad_points: int = 0  # readings a reader must report as bad (malformed messages)
    malformed: dict[str, int] = field(default_factory=dict)
    bursts: int = 0
    disconnects: int = 0
    outages: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"messages": self.messages, "acknowledged": self.acknowledged, "points": self.points,
                "bad_points": self.bad_points,
                "malformed": dict(self.malformed), "bursts": self.bursts, "disconnects": self.disconnects,
                "outages": self.outages}


class MqttSimulator:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.equipment = config.resolved_equipment()
        if not self.equipment:
            raise ValueError("the simulator needs at least one device")
        self.random = random.Random(config.seed)
        for eq in self.equipment:
            eq.phase = self.random.uniform(0, 2 * math.pi)
            eq.base_power = self.random.uniform(5.0, 50.0)
            eq.energy_kwh = self.random.uniform(1_000.0, 50_000.0)
        self.stats = SimulatorStats()
        self.broker: Mosquitto | None = None  # when embedded
        self._broker_dir: tempfile.TemporaryDirectory | None = None
        self._client: mqtt.Client | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._next = 0
        self._fault_now = threading.Event()
        self._online = threading.Event()
        self._online.set()

    # ------------------------------------------------------------ topics and payloads

    def topic(self, eq: Equipment) -> str:
        return f"{self.config.prefix}/{eq.area}/{eq.line}/{eq.name}/{eq.kind}"

    def _stamp(self, t: float) -> Any:
        fmt = self.config.timestamp
        if fmt == "ms":
            return int(t * 1000)
        if fmt == "s":
            return round(t, 3)
        if fmt == "ns":
            return int(t * 1e9)
        if fmt == "iso":
            return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"
        return None

    def sample(self, eq: Equipment, t: float) -> dict[str, Any]:
        """One reading set of ``eq`` at time ``t`` (slow daily-ish waves plus noise)."""
        rnd = self.random
        wave = math.sin(2 * math.pi * t / 600.0 + eq.phase)
        doc: dict[str, Any] = {}
        stamp = self._stamp(t)
        if stamp is not None:
            doc["ts"] = stamp
        if eq.kind == "environment":
            doc["temperature"] = round(22.0 + 3.0 * wave + rnd.gauss(0, 0.1), 2)
            doc["humidity"] = round(45.0 + 10.0 * wave + rnd.gauss(0, 0.5), 1)
            spike = 40.0 if rnd.random() < 0.01 else 0.0
            doc["pm25"] = round(max(0.0, 12.0 + 4.0 * wave + rnd.gauss(0, 1.0) + spike), 1)
        else:
            load = 0.6 + 0.4 * wave if rnd.random() > 0.05 else 0.05  # occasional idle
            power = max(0.0, eq.base_power * load + rnd.gauss(0, 0.3))
            if eq.last_energy_time is not None:
                eq.energy_kwh += power * max(0.0, t - eq.last_energy_time) / 3600.0
            eq.last_energy_time = t
            doc["power"] = round(power, 3)
            doc["energy"] = round(eq.energy_kwh, 4)
        return doc

    def malformed(self, eq: Equipment, t: float) -> tuple[str, bytes]:
        """A broken message; which kind says how many of its readings are lost (see
        ``next_message``)."""
        kind = self.random.choice(MALFORMED_KINDS)
        doc = self.sample(eq, t)
        key = "temperature" if eq.kind == "environment" else "power"
        if kind == "not_json":
            payload = b"ERR sensor timeout"
        elif kind == "truncated":
            payload = json.dumps(doc).encode()[:-7]
        elif kind == "missing_key":
            doc.pop(key)
            payload = json.dumps(doc).encode()
        elif kind == "wrong_type":
            doc[key] = "n/a"
            payload = json.dumps(doc).encode()
        else:
            doc["debug"] = "x" * OVERSIZED_BYTES
            payload = json.dumps(doc).encode()
        return kind, payload

    # ------------------------------------------------------------ publishing

    def next_message(self, t: float | None = None) -> tuple[str, bytes, int, int]:
        """The next message in round-robin order: (topic, payload, well-formed points, bad points)."""
        t = time.time() if t is None else t
        eq = self.equipment[self._next % len(self.equipment)]
        self._next += 1
        points = POINTS_PER_MESSAGE[eq.kind]
        if self.config.malformed_ratio and self.random.random() < self.config.malformed_ratio:
            kind, payload = self.malformed(eq, t)
            self.stats.malformed[kind] = self.stats.malformed.get(kind, 0) + 1
            # a missing key or a wrong type spoils one reading; the rest spoil the whole message
            lost = 1 if kind in ("missing_key", "wrong_type") else points
            return self.topic(eq), payload, points - lost, lost
        return self.topic(eq), json.dumps(self.sample(eq, t)).encode(), points, 0

    def burst(self, t: float | None = None) -> tuple[str, bytes, int, int]:
        """A backlog flush: an array of ``burst_size`` samples 100 ms apart, ending now."""
        t = time.time() if t is None else t
        eq = self.random.choice(self.equipment)
        n = self.config.burst_size
        samples = [self.sample(eq, t - (n - 1 - i) * 0.1) for i in range(n)]
        self.stats.bursts += 1
        return self.topic(eq), json.dumps(samples).encode(), n * POINTS_PER_MESSAGE[eq.kind], 0

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._lock:
            self.stats.acknowledged += 1

    def connect(self) -> mqtt.Client:
        cfg = self.config
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cfg.client_id, protocol=mqtt.MQTTv311)
        client.max_inflight_messages_set(1000)  # the broker acks quickly on loopback; keep many in flight
        client.reconnect_delay_set(1, 5)
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password)
        client.on_publish = self._on_publish
        client.connect_async(cfg.host, cfg.port, keepalive=30)
        client.loop_start()
        self._client = client
        return client

    def publish(self, topic: str, payload: bytes, points: int, bad_points: int = 0) -> None:
        assert self._client is not None
        if not self._online.is_set():
            return  # offline: lost, as a sensor's reading would be
        self._client.publish(topic, payload, qos=self.config.qos)
        self.stats.messages += 1
        self.stats.points += points
        self.stats.bad_points += bad_points

    def publish_burst_of(self, count: int) -> None:
        """Publish ``count`` round-robin messages as fast as the client takes them."""
        for _ in range(count):
            self.publish(*self.next_message())

    def wait_acknowledged(self, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.stats.acknowledged >= self.stats.messages:
                    return True
            time.sleep(0.02)
        return False

    def _publish_loop(self) -> None:
        cfg = self.config
        started = time.monotonic()
        sent = 0
        next_burst = started + cfg.burst_every if cfg.burst_every > 0 else math.inf
        while not self._stop.is_set():
            now = time.monotonic()
            due = int((now - started) * cfg.rate) - sent
            for _ in range(min(due, 10_000)):
                self.publish(*self.next_message())
                sent += 1
            if now >= next_burst:
                self.publish(*self.burst())
                next_burst += cfg.burst_every
            wait = (sent + 1) / cfg.rate - (time.monotonic() - started)
            self._stop.wait(min(max(wait, 0.0), 0.1))

    def _fault_loop(self) -> None:
        """Publisher disconnects and broker outages, on a schedule or on SIGUSR1."""
        cfg = self.config
        every = cfg.outage_every if cfg.embedded_broker and cfg.outage_every > 0 else cfg.disconnect_every
        while not self._stop.is_set():
            triggered = self._fault_now.wait(every if every > 0 else None)
            if self._stop.is_set():
                return
            if triggered:
                self._fault_now.clear()
            if cfg.embedded_broker and (cfg.outage_every > 0 or triggered):
                self.broker_outage(cfg.outage_for)
            else:
                self.disconnect_publisher(cfg.disconnect_for)

    def disconnect_publisher(self, seconds: float) -> None:
        """The publisher goes away like a sensor losing its network: what it would have sent
        meanwhile is lost (not queued), then it connects again with the same client."""
        client = self._client
        assert client is not None
        self.stats.disconnects += 1
        log(f"publisher disconnects for {seconds:g}s")
        self._online.clear()
        client.disconnect()
        client.loop_stop()
        if self._stop.wait(seconds):
            return
        cfg = self.config
        client.connect_async(cfg.host, cfg.port, keepalive=30)
        client.loop_start()
        self._online.set()

    def broker_outage(self, seconds: float) -> None:
        """Stop the embedded broker, wait, start it again on the same port and data."""
        assert self.broker is not None
        self.stats.outages += 1
        log(f"broker outage for {seconds:g}s")
        self.broker.stop()
        self._stop.wait(seconds)
        self.broker = Mosquitto.start(self.broker.workdir, self.broker.port)

    def trigger_fault(self) -> None:
        self._fault_now.set()

    # ------------------------------------------------------------ life cycle

    def start_broker(self) -> None:
        self._broker_dir = tempfile.TemporaryDirectory(prefix="mos-sim-mqtt-")
        self.broker = Mosquitto.start(Path(self._broker_dir.name), self.config.port or None)
        self.config.port = self.broker.port

    def start(self) -> MqttSimulator:
        if self.config.embedded_broker and self.broker is None:
            self.start_broker()
        self.connect()
        self._stop.clear()
        for target, name in ((self._publish_loop, "publish"), (self._fault_loop, "faults")):
            thread = threading.Thread(target=target, name=f"mos-sim-mqtt-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._fault_now.set()
        for thread in self._threads:
            thread.join(10)
        self._threads.clear()
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self._broker_dir is not None:
            self._broker_dir.cleanup()
            self._broker_dir = None

    # ------------------------------------------------------------ device file

    def device_file(self, name: str = "plant-sensors", area: str = "utilities", stage: str = "utility") -> str:
        """A device file reading everything this simulator publishes."""
        cfg = self.config
        kinds = [eq.kind for eq in self.equipment]
        share = {kind: kinds.count(kind) / len(kinds) for kind in KINDS}
        per_message = cfg.rate

        def tag(tag_name: str, kind: str, key: str, unit: str, category: str) -> dict[str, Any]:
            spec: dict[str, Any] = {
                "name": tag_name, "topic": f"{cfg.prefix}/{{area}}/{{line}}/{{equipment}}/{kind}",
                "json": f"$.{key}", "unit": unit, "category": category,
            }
            if cfg.timestamp != "none":
                spec["timestamp"] = "$.ts"
            rate = per_message * share[kind]
            if rate > 0:
                spec["expected_rate"] = round(rate, 3)
            return spec

        tags = []
        if share["environment"]:
            tags += [tag("temperature", "environment", "temperature", "Cel", "environment"),
                     tag("humidity", "environment", "humidity", "%", "environment"),
                     tag("pm25", "environment", "pm25", "ug/m3", "environment")]
        if share["energy"]:
            tags += [tag("power", "energy", "power", "kW", "energy"),
                     tag("energy", "energy", "energy", "kW.h", "energy")]
        connection: dict[str, Any] = {"host": cfg.host, "port": cfg.port, "qos": 1}
        if cfg.username:
            connection["username"] = cfg.username
            connection["password_file"] = "/etc/mos-agent/mqtt.password"
        interval = len(self.equipment) / cfg.rate if cfg.rate > 0 else 1.0
        doc = {
            "name": name, "driver": "mqtt", "asset": {"area": area}, "stage": stage,
            "description": {"en": "Environment sensors and energy meters (mos-sim mqtt)"},
            "poll_interval": f"{max(interval, 0.001) * 1000:.0f}ms",
            "connection": connection, "tags": tags,
        }
        header = (f"# Generated by: mos-sim mqtt --print-device-file (prefix {cfg.prefix}, {len(self.equipment)} "
                  f"devices, {cfg.rate:g} messages/s)\n# {{area}}/{{line}}/{{equipment}} come from the topic.\n")
        return header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=200)


# ---------------------------------------------------------------- command line


def log(message: str) -> None:
    print(f"mos-sim mqtt: {message}", file=sys.stderr, flush=True)


def parse_duration(text: str | float | int) -> float:
    from mos_agent.config.models import parse_duration as parse

    return 0.0 if text in (0, "0", "off") else parse(text)


def load_scenario(path: Path) -> dict[str, Any]:
    """Scenario keys mirror the options: broker {host, port, embedded}, prefix, qos, rate,
    timestamp, malformed_ratio, burst {every, size}, disconnect {every, for},
    outage {every, for}, equipment [{area, line, name, kind}]."""
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a scenario is a mapping")
    allowed = {"broker", "prefix", "qos", "rate", "devices", "timestamp", "malformed_ratio", "burst",
               "disconnect", "outage", "equipment", "seed", "description"}
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(allowed))})")
    out: dict[str, Any] = {}
    broker = data.get("broker") or {}
    for key in ("host", "port"):
        if key in broker:
            out[key] = broker[key]
    if "embedded" in broker:
        out["embedded_broker"] = bool(broker["embedded"])
    for key in ("prefix", "qos", "rate", "devices", "timestamp", "malformed_ratio", "seed"):
        if key in data:
            out[key] = data[key]
    for section, keys in (("burst", ("every", "size")), ("disconnect", ("every", "for")),
                          ("outage", ("every", "for"))):
        for key in keys:
            if key in (data.get(section) or {}):
                value = data[section][key]
                out[f"{section}_{key}"] = value if key == "size" else parse_duration(value)
    if data.get("equipment"):
        out["equipment"] = [Equipment(e["area"], e["line"], e["name"], e["kind"]) for e in data["equipment"]]
        for eq in out["equipment"]:
            if eq.kind not in KINDS:
                raise ValueError(f"{path}: equipment {eq.name}: kind must be one of {', '.join(KINDS)}")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mos-sim mqtt", description=__doc__.split("\n\n")[0].replace("``", ""),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", type=Path, help="YAML scenario (options given here override it)")
    p.add_argument("--host", help="broker host (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="broker port (default 1883; with --embedded-broker: a free port)")
    p.add_argument("--embedded-broker", action="store_true", default=None,
                   help="start a Mosquitto of its own (needs the mosquitto package)")
    p.add_argument("--prefix", help="topic prefix (default acme/changwon)")
    p.add_argument("--devices", type=int, help="number of simulated sensors/meters (default 6)")
    p.add_argument("--rate", type=float, help="messages per second over all devices (default 10)")
    p.add_argument("--qos", type=int, choices=(0, 1))
    p.add_argument("--timestamp", choices=TIMESTAMP_FORMATS, help="source timestamp format (default ms)")
    p.add_argument("--malformed-ratio", type=float, help="share of malformed messages, 0..1")
    p.add_argument("--burst-every", help="a backlog array every DURATION (e.g. 30s; 0 = never)")
    p.add_argument("--burst-size", type=int, help="samples per backlog array (default 20)")
    p.add_argument("--disconnect-every", help="the publisher drops its connection every DURATION")
    p.add_argument("--disconnect-for", help="... and stays away this long (default 2s)")
    p.add_argument("--outage-every", help="with --embedded-broker: stop the broker every DURATION")
    p.add_argument("--outage-for", help="... for this long (default 5s)")
    p.add_argument("--duration", help="stop after DURATION (default: until Ctrl-C)")
    p.add_argument("--seed", type=int, help="random seed for repeatable values and faults")
    p.add_argument("--username")
    p.add_argument("--password-file", type=Path)
    p.add_argument("--print-device-file", action="store_true",
                   help="print a device file for these topics and exit")
    sparkplug = p.add_argument_group("Sparkplug B", "--sparkplug: one Sparkplug B edge node instead of JSON "
                                                   "sensors (births, DDATA by alias, rebirth on NCMD); "
                                                   "--rate is then DDATA messages per second")
    sparkplug.add_argument("--sparkplug", action="store_true", help="publish as a Sparkplug B edge node")
    sparkplug.add_argument("--group-id", default="plant-b", help="Sparkplug group id (default plant-b)")
    sparkplug.add_argument("--edge-node", default="node-7", help="edge node id (default node-7)")
    sparkplug.add_argument("--extra-metrics", type=int, default=0,
                           help="Sensor/NNN metrics per device beyond the six standard ones")
    sparkplug.add_argument("--seq-gap-every", type=int, default=0,
                           help="skip a seq number every N data messages (the reader asks for a rebirth)")
    return p


def run_sparkplug(args: argparse.Namespace) -> int:
    from simulators.sparkplug_node import SparkplugConfig, SparkplugNode

    config = SparkplugConfig(host=args.host or "127.0.0.1", port=args.port or 1883, group_id=args.group_id,
                             edge_node=args.edge_node, devices=args.devices or 2, extra_metrics=args.extra_metrics,
                             rate=args.rate or 10.0, qos=args.qos or 0, seq_gap_every=args.seq_gap_every,
                             seed=args.seed)
    node = SparkplugNode(config)
    if args.print_device_file:
        print(yaml.safe_dump(node.device_file(), sort_keys=False, allow_unicode=True, width=200), end="")
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        node.start()
    except Exception as exc:
        print(f"mos-sim mqtt: cannot start: {exc}", file=sys.stderr)
        return 1
    log(f"Sparkplug edge node spBv1.0/{config.group_id}/…/{config.edge_node} with {config.devices} devices: "
        f"{config.rate:g} DDATA/s to {config.host}:{config.port}")
    duration = parse_duration(args.duration) if args.duration else None
    deadline = time.monotonic() + duration if duration else math.inf
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            stop.wait(min(10.0, max(0.0, deadline - time.monotonic())))
            log(json.dumps(node.stats.as_dict()))
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()
    return 0


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    values: dict[str, Any] = load_scenario(args.scenario) if args.scenario else {}
    direct = ("host", "port", "prefix", "devices", "rate", "qos", "timestamp", "malformed_ratio", "burst_size",
              "seed", "username", "embedded_broker")
    for key in direct:
        value = getattr(args, key)
        if value is not None:
            values[key] = value
    for key in ("burst_every", "disconnect_every", "disconnect_for", "outage_every", "outage_for"):
        value = getattr(args, key)
        if value is not None:
            values[key] = parse_duration(value)
    if args.password_file:
        values["password"] = args.password_file.read_text().strip()
    if values.get("embedded_broker") and "port" not in values:
        values["port"] = 0
    cfg = SimulatorConfig(**values)
    if not 0.0 <= cfg.malformed_ratio <= 1.0:
        raise ValueError("--malformed-ratio must be between 0 and 1")
    if cfg.rate <= 0:
        raise ValueError("--rate must be greater than 0")
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.sparkplug:
        return run_sparkplug(args)
    try:
        cfg = config_from_args(args)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        print(f"mos-sim mqtt: {exc}", file=sys.stderr)
        return 2
    sim = MqttSimulator(cfg)
    if args.print_device_file:
        if cfg.embedded_broker and not cfg.port:
            cfg.port = 1883
        print(sim.device_file(), end="")
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: sim.trigger_fault())
    try:
        sim.start()
    except Exception as exc:
        print(f"mos-sim mqtt: cannot start: {exc}", file=sys.stderr)
        sim.stop()
        return 1
    log(f"publishing {cfg.rate:g} messages/s from {len(sim.equipment)} devices to {cfg.host}:{cfg.port} "
        f"under {cfg.prefix}/… (QoS {cfg.qos}); kill -USR1 {os.getpid()} for a fault")
    duration = parse_duration(args.duration) if args.duration else None
    deadline = time.monotonic() + duration if duration else math.inf
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            stop.wait(min(10.0, max(0.0, deadline - time.monotonic())))
            log(json.dumps(sim.stats.as_dict()))
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
