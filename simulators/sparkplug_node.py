"""``mos-sim mqtt --sparkplug``: a Sparkplug B 3.0 edge node with devices, for the MQTT driver's
Sparkplug input and the demo.

On connecting the node publishes NBIRTH (``bdSeq``, ``Node Control/Rebirth``, ``Uptime``) and a
DBIRTH per device (names, aliases, datatypes, ``unit`` properties, current values), then DDATA by
alias only, ``seq`` counting 0-255. Its will is the NDEATH with the session's ``bdSeq``; an orderly
stop publishes it too. An NCMD ``Node Control/Rebirth`` = true makes it publish its births again.
Fault injection: ``seq_gap_every`` skips a ``seq`` number every N data messages.

Devices (ids with a space and capitals, to show the name mapping): ``Press 01``, ``Oven-2``, … each
with ``Temperature`` (Double, Cel), ``Pressure`` (Float, bar), ``Parts/Count`` (Int64),
``Running`` (Boolean), ``Mode`` (String), ``Vibration/RMS`` (Double, mm/s), and
``extra_metrics`` more ``Sensor/NNN`` (Double) for load tests.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from mos_agent import sparkplug as sp

DT = sp.DataType
DEVICE_NAMES = ("Press 01", "Oven-2", "Robot 3", "Filler-4", "Labeler 5", "Palletizer-6")
REBIRTH = "Node Control/Rebirth"


@dataclass
class SparkplugConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    group_id: str = "plant-b"
    edge_node: str = "node-7"
    devices: int = 2
    extra_metrics: int = 0  # Sensor/NNN metrics per device beyond the six standard ones
    rate: float = 10.0  # DDATA messages per second over all devices (each carries every metric)
    qos: int = 0  # the specification's QoS for births and data
    seq_gap_every: int = 0  # skip a seq number every N data messages (0: never)
    client_id: str = ""
    seed: int | None = None


@dataclass
class SparkplugStats:
    messages: int = 0
    births: int = 0  # NBIRTH sequences (connect and rebirths)
    rebirths: int = 0  # answered rebirth requests
    data_messages: int = 0
    metrics: int = 0  # metric values published in DATA messages
    seq_gaps: int = 0
    deaths: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class SimMetric:
    name: str
    datatype: int
    alias: int
    unit: str | None = None
    value: Any = None


@dataclass
class SimDevice:
    device_id: str
    metrics: list[SimMetric] = field(default_factory=list)
    phase: float = 0.0
    parts: int = 0


class SparkplugNode:
    def __init__(self, config: SparkplugConfig) -> None:
        self.config = config
        self.random = random.Random(config.seed)
        self.stats = SparkplugStats()
        self.bd_seq = 0
        self.seq = 0
        self.started = time.time()
        self.devices: list[SimDevice] = []
        alias = 1
        for i in range(config.devices):
            name = DEVICE_NAMES[i] if i < len(DEVICE_NAMES) else f"Machine {i + 1}"
            device = SimDevice(name, phase=self.random.uniform(0, 2 * math.pi))
            specs: list[tuple[str, int, str | None]] = [
                ("Temperature", DT.DOUBLE, "Cel"), ("Pressure", DT.FLOAT, "bar"), ("Parts/Count", DT.INT64, None),
                ("Running", DT.BOOLEAN, None), ("Mode", DT.STRING, None), ("Vibration/RMS", DT.DOUBLE, "mm/s"),
                *((f"Sensor/{n:03d}", DT.DOUBLE, None) for n in range(config.extra_metrics)),
            ]
            for name_, datatype, unit in specs:
                device.metrics.append(SimMetric(name_, datatype, alias, unit))
                alias += 1
            self.devices.append(device)
        self._client: mqtt.Client | None = None
        self._lock = threading.Lock()  # births and data are numbered in the order they are sent
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_device = 0
        self._last_ms = 0

    # ------------------------------------------------------------ payloads

    def topic(self, kind: str, device_id: str | None = None) -> str:
        return sp.topic(self.config.group_id, kind, self.config.edge_node, device_id)

    def _now_ms(self) -> int:
        """Now, in ms, and later than the last message's time: two messages in one millisecond
        would give a series two values at one time, of which a store keeps one."""
        self._last_ms = max(int(time.time() * 1000), self._last_ms + 1)
        return self._last_ms

    def _next_seq(self) -> int:
        seq = self.seq
        self.seq = (self.seq + 1) % 256
        return seq

    def _update(self, device: SimDevice, t: float) -> None:
        wave = math.sin(2 * math.pi * t / 600.0 + device.phase)
        device.parts += 1
        values = {"Temperature": round(180.0 + 5.0 * wave + self.random.gauss(0, 0.2), 3),
                  "Pressure": round(6.0 + wave, 2), "Parts/Count": device.parts, "Running": wave > -0.9,
                  "Mode": "AUTO" if wave > -0.9 else "SETUP",
                  "Vibration/RMS": round(abs(2.0 + wave + self.random.gauss(0, 0.1)), 3)}
        for metric in device.metrics:
            metric.value = values.get(metric.name, round(50.0 + 10.0 * wave + self.random.random(), 3))

    def death_payload(self) -> bytes:
        payload = sp.Payload(timestamp=int(time.time() * 1000))
        sp.add_metric(payload, datatype=DT.INT64, value=self.bd_seq, timestamp_ms=payload.timestamp, name="bdSeq")
        return sp.encode(payload)

    def node_birth(self) -> bytes:
        now = self._now_ms()
        self.seq = 0
        payload = sp.Payload(timestamp=now, seq=self._next_seq())
        sp.add_metric(payload, datatype=DT.INT64, value=self.bd_seq, timestamp_ms=now, name="bdSeq")
        sp.add_metric(payload, datatype=DT.BOOLEAN, value=False, timestamp_ms=now, name=REBIRTH)
        sp.add_metric(payload, datatype=DT.INT64, value=int(time.time() - self.started), timestamp_ms=now,
                      name="Uptime", alias=0)
        return sp.encode(payload)

    def device_birth(self, device: SimDevice) -> bytes:
        now = self._now_ms()
        if device.metrics[0].value is None:  # a rebirth repeats the current values
            self._update(device, now / 1000)
        payload = sp.Payload(timestamp=now, seq=self._next_seq())
        for m in device.metrics:
            properties = {"unit": (DT.STRING, m.unit)} if m.unit else None
            sp.add_metric(payload, datatype=m.datatype, value=m.value, timestamp_ms=now, name=m.name, alias=m.alias,
                          properties=properties)
        return sp.encode(payload)

    def device_data(self, device: SimDevice) -> bytes:
        now = self._now_ms()
        self._update(device, now / 1000)
        self.stats.data_messages += 1
        if self.config.seq_gap_every and self.stats.data_messages % self.config.seq_gap_every == 0:
            self._next_seq()  # a message lost on the way, as the host sees it
            self.stats.seq_gaps += 1
        payload = sp.Payload(timestamp=now, seq=self._next_seq())
        for m in device.metrics:
            sp.add_metric(payload, datatype=m.datatype, value=m.value, timestamp_ms=now, alias=m.alias,
                          with_datatype=False)
        self.stats.metrics += len(device.metrics)
        return sp.encode(payload)

    # ------------------------------------------------------------ publishing

    def _publish(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        assert self._client is not None
        self.stats.messages += 1
        return self._client.publish(topic, payload, qos=self.config.qos)

    def publish_births(self) -> None:
        with self._lock:
            self._publish(self.topic("NBIRTH"), self.node_birth())
            for device in self.devices:
                self._publish(self.topic("DBIRTH", device.device_id), self.device_birth(device))
            self.stats.births += 1

    def publish_data(self, count: int = 1) -> None:
        """``count`` DDATA messages, devices in turn."""
        with self._lock:
            for _ in range(count):
                device = self.devices[self._next_device % len(self.devices)]
                self._next_device += 1
                self._publish(self.topic("DDATA", device.device_id), self.device_data(device))

    def publish_device_death(self, index: int = 0) -> None:
        with self._lock:
            device = self.devices[index]
            payload = sp.Payload(timestamp=self._now_ms(), seq=self._next_seq())
            self._publish(self.topic("DDEATH", device.device_id), sp.encode(payload))
            self.stats.deaths += 1

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            return
        client.subscribe(self.topic("NCMD"), 1)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        self.publish_births()
        self._connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            payload = sp.decode(bytes(message.payload))
        except Exception:  # a command the node cannot read is ignored, as a real node would
            return
        if any(m.name == REBIRTH and sp.get_value(m) is True for m in payload.metrics):
            self.stats.rebirths += 1
            self.publish_births()

    def connect(self, timeout: float = 15.0) -> SparkplugNode:
        """Connect (will: NDEATH), publish the births; returns once they are out."""
        cfg = self.config
        self.bd_seq = (self.bd_seq + 1) % 256 if self._client is not None else self.bd_seq
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cfg.client_id or f"sim-{cfg.edge_node}",
                             protocol=mqtt.MQTTv311)
        client.max_inflight_messages_set(1000)
        client.will_set(self.topic("NDEATH"), self.death_payload(), qos=1, retain=False)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        self._connected.clear()
        client.connect(cfg.host, cfg.port, keepalive=30)
        client.loop_start()
        if not self._connected.wait(timeout):
            raise TimeoutError(f"edge node could not connect to {cfg.host}:{cfg.port}")
        return self

    def _publish_loop(self) -> None:
        started = time.monotonic()
        sent = 0
        rate = self.config.rate
        while not self._stop.is_set():
            due = int((time.monotonic() - started) * rate) - sent
            if due > 0:
                self.publish_data(min(due, 10_000))
                sent += min(due, 10_000)
            self._stop.wait(min(max((sent + 1) / rate - (time.monotonic() - started), 0.0), 0.1))

    def start(self) -> SparkplugNode:
        """Connect and publish ``rate`` DDATA messages a second until :meth:`stop`."""
        self.connect()
        self._stop.clear()
        self._thread = threading.Thread(target=self._publish_loop, name="mos-sim-sparkplug", daemon=True)
        self._thread.start()
        return self

    def stop(self, death: bool = True) -> None:
        """Stop publishing; ``death``: publish the NDEATH first (an orderly stop), else just drop
        the connection (the broker then sends the will when the session times out or the socket
        breaks; :meth:`kill` breaks it at once)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        client = self._client
        if client is None:
            return
        if death:
            with self._lock:
                client.publish(self.topic("NDEATH"), self.death_payload(), qos=1).wait_for_publish(10)
                self.stats.deaths += 1
        client.disconnect()
        client.loop_stop()

    def kill(self) -> None:
        """Drop the connection without a DISCONNECT, so the broker publishes the will (NDEATH)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        client = self._client
        if client is not None:
            client.loop_stop()
            sock = client.socket()
            if sock is not None:
                sock.close()

    def device_file(self, name: str = "node-7", area: str = "assembly", stage: str = "assembly") -> dict[str, Any]:
        """A device file reading this node's metrics (all but ``Vibration/*``)."""
        cfg = self.config
        return {
            "name": name, "driver": "mqtt", "asset": {"area": area}, "stage": stage,
            "description": {"en": "A Sparkplug B edge node (mos-sim mqtt --sparkplug)"},
            "connection": {"host": cfg.host, "port": cfg.port, "qos": 1},
            "format": "sparkplug",
            "sparkplug": {"group_id": cfg.group_id, "edge_node": cfg.edge_node},
            "tags": [
                {"metric": "Temperature", "category": "process"},
                {"metric": "Pressure", "category": "process"},
                {"metric": "Parts/*", "category": "production"},
                {"metric": "Running", "category": "equipment_state"},
                {"metric": "Mode", "category": "equipment_state"},
                {"metric": "Sensor/*", "category": "process"},
                {"metric": "Uptime", "category": "equipment_state", "unit": "s", "kind": "sample"},
            ],
        }
