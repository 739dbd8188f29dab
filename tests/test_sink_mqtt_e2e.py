"""``mos-agent run`` publishing northbound over MQTT, end to end: the Modbus simulator as the
plant, a real Mosquitto, the agent as a subprocess that is killed with SIGKILL and whose broker
is restarted. Every Sparkplug message is decoded by our codec and by Eclipse Tahu's JavaScript
codec (see test_sink_mqtt_sparkplug.py for the message-level rules)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mos_agent import sparkplug as sp
from mos_agent.localservers import Mosquitto, free_port, wait_for_port
from tests.support.mqtt import MqttRecorder, by_type, decode_all, metric
from tests.support.servers import running
from tests.support.waiting import wait_until

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


@pytest.fixture
def modbus_device(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The simulated stamping press, polled every 100 ms."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "simulators.cli", "modbus", "--port", str(port)],
                            stdout=(tmp_path / "sim.log").open("wb"), stderr=subprocess.STDOUT)
    try:
        out = subprocess.run([sys.executable, "-m", "simulators.cli", "modbus", "--port", str(port),
                              "--print-device-file", "--name", "press-01"], capture_output=True, text=True,
                             check=True)
        wait_for_port(port)
        device = yaml.safe_load(out.stdout)
        device["poll_interval"] = "100ms"
        yield device
    finally:
        proc.terminate()
        proc.wait(10)


class Agent:
    """``mos-agent run`` with one device and the given sinks."""

    def __init__(self, tmp_path: Path, device: dict[str, Any], sinks: list[dict[str, Any]],
                 health: str = "off") -> None:
        self.tmp_path = tmp_path
        (tmp_path / "devices").mkdir(exist_ok=True)
        (tmp_path / "devices" / "press-01.yaml").write_text(yaml.safe_dump(device, sort_keys=False))
        self.config = tmp_path / "agent.yaml"
        self.config.write_text(yaml.safe_dump({
            "agent": {"id": "gw-1", "enterprise": "acme", "site": "changwon", "state_dir": str(tmp_path / "state"),
                      "health": health, "shutdown_timeout": "10s"},
            "devices": "devices/*.yaml", "sinks": sinks}))
        self.log = tmp_path / "agent.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Agent:
        self.proc = subprocess.Popen([str(BIN / "mos-agent"), "run", "-c", str(self.config)],
                                     stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        return self

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        agent.stop()


def sparkplug_sink(port: int, **options: Any) -> dict[str, Any]:
    return {"type": "mqtt", "name": "scada", "url": f"mqtt://127.0.0.1:{port}", "format": "sparkplug",
            "group_id": "changwon", "flush_interval": "200ms", **options}


def test_will_after_kill9_and_bdseq_across_restarts(tmp_path: Path, mosquitto: Mosquitto, modbus_device, agents,
                                                    mqtt_recorder, sparkplug_js) -> None:
    recorder = mqtt_recorder("spBv1.0/#")
    agent = Agent(tmp_path, modbus_device, [sparkplug_sink(mosquitto.port)])
    agents.append(agent.start())
    recorder.wait_for(lambda ms: any("/DDATA/" in m.topic for m in ms), timeout=60)
    decoded = decode_all(recorder.snapshot(), sparkplug_js)
    [dbirth] = by_type(decoded, "DBIRTH", "press-01")[:1]
    configured = {f"{t['category']}/{t['name']}" for t in modbus_device["tags"]}
    assert {m.name for m in dbirth.ours.metrics} == configured  # every configured metric in the birth
    units = {m.name: sp.get_properties(m.properties).get("unit") for m in dbirth.ours.metrics}
    assert units["process/hydraulic_pressure"] == "bar" and units["production/stroke_count"] is None

    agent.kill9()
    messages = recorder.wait_for(lambda ms: any("/NDEATH/" in m.topic for m in ms), timeout=60)
    decoded = decode_all(messages, sparkplug_js)
    [nbirth] = by_type(decoded, "NBIRTH")
    [ndeath] = by_type(decoded, "NDEATH")  # the will the broker published for the killed agent
    assert sp.get_value(metric(ndeath.ours, "bdSeq")) == sp.get_value(metric(nbirth.ours, "bdSeq")) == 0
    assert ndeath.seq is None and ndeath.qos == 1 and not ndeath.retain

    agents.append(agent.start())
    messages = recorder.wait_for(lambda ms: len([m for m in ms if "/NBIRTH/" in m.topic]) == 2, timeout=60)
    births = by_type(decode_all(messages, sparkplug_js), "NBIRTH")
    assert [sp.get_value(metric(b.ours, "bdSeq")) for b in births] == [0, 1]
    assert births[1].seq == 0


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()
    except OSError:
        return None


def test_uns_status_metrics_and_will_after_kill9(tmp_path: Path, mosquitto: Mosquitto, modbus_device, agents,
                                                 mqtt_recorder) -> None:
    status_topic = "factory/acme/changwon/_agent/gw-1/status"
    recorder = mqtt_recorder("factory/#")
    health = f"127.0.0.1:{free_port()}"
    agent = Agent(tmp_path, modbus_device, [{"type": "mqtt", "url": f"mqtt://127.0.0.1:{mosquitto.port}",
                                             "format": "uns", "prefix": "factory", "flush_interval": "200ms"}],
                  health=health)
    agents.append(agent.start())
    messages = recorder.wait_for(lambda ms: any(m.topic.endswith("/process/hydraulic_pressure") for m in ms),
                                 timeout=60)
    reading = next(m for m in messages if m.topic.endswith("/process/hydraulic_pressure"))
    assert reading.topic == "factory/acme/changwon/stamping/line-1/cell-2/press-01/process/hydraulic_pressure"
    assert json.loads(reading.payload)["unit"] == "bar"
    # the sink's session in /status and /metrics
    status = wait_until(lambda: (body := _get(f"http://{health}/status")) and json.loads(body)["sinks"][0]["mqtt"],
                        what="the mqtt sink in /status")
    assert status["format"] == "uns" and status["connected"] and status["broker"] == f"127.0.0.1:{mosquitto.port}"
    metrics = _get(f"http://{health}/metrics") or ""
    assert 'mos_agent_mqtt_connected{format="uns",sink="mqtt"} 1.0' in metrics
    agent.kill9()
    recorder.wait_for(lambda ms: any(m.topic == status_topic and json.loads(m.payload) == {"online": False}
                                     for m in ms), timeout=60)
    [retained] = mqtt_recorder(status_topic).wait_for(lambda ms: len(ms) >= 1)
    assert retained.retain and json.loads(retained.payload) == {"online": False}


def _history(state_dir: Path) -> set[tuple[str, int]]:
    """What the local history sink stored: (metric name, ms)."""
    with sqlite3.connect(state_dir / "history.sqlite") as conn:
        rows = conn.execute("SELECT s.measurement, s.tag, p.ts_ns FROM points p JOIN series s ON s.id = p.series_id")
        return {(f"{measurement}/{tag}", ts // 1_000_000) for measurement, tag, ts in rows}


def test_broker_restart_replays_the_outage_as_history(tmp_path: Path, modbus_device, agents, sparkplug_js) -> None:
    # QoS 0 births are queued for the test's persistent session too, so nothing passes it by
    # while it reconnects after the restart
    broker_dir = tmp_path / "broker"
    conf = "queue_qos0_messages true"
    with running(Mosquitto.start(broker_dir, extra_conf=conf)) as broker:
        port = broker.port
        recorder = MqttRecorder(port, "spBv1.0/#", client_id="test-recorder")
        try:
            agent = Agent(tmp_path, modbus_device, [sparkplug_sink(port, batch_size=50),
                                                    {"type": "sqlite", "flush_interval": "200ms"}])
            agents.append(agent.start())
            recorder.wait_for(lambda ms: len([m for m in ms if "/DDATA/" in m.topic]) >= 3, timeout=60)
            broker.stop()
            outage_start = time.time() * 1000
            time.sleep(3)  # the agent keeps polling; its MQTT sink buffers
            outage_end = time.time() * 1000
            broker.proc = Mosquitto.start(broker_dir, port, extra_conf=conf).proc
            recorder.wait_for(lambda ms: len([m for m in ms if "/NBIRTH/" in m.topic]) >= 2, timeout=90)
            time.sleep(1)
            agent.stop()  # flushes what is left to both sinks
            time.sleep(1)
            messages = recorder.snapshot()
        finally:
            recorder.close()
    decoded = decode_all(messages, sparkplug_js)
    births = by_type(decoded, "NBIRTH")
    assert [sp.get_value(metric(b.ours, "bdSeq")) for b in births][:2] == [0, 1]  # a new session
    names: dict[int, str] = {}
    received: set[tuple[str, int]] = set()
    historical: list[int] = []
    replayed: dict[str, list[int]] = {}
    for d in decoded:
        if d.type == "DBIRTH":
            names.update({m.alias: m.name for m in d.ours.metrics})
        elif d.type == "DDATA":
            for m in d.ours.metrics:
                received.add((names[m.alias], m.timestamp))
                if m.is_historical:
                    historical.append(m.timestamp)
                    replayed.setdefault(names[m.alias], []).append(m.timestamp)
    # replayed in the order acquired
    assert replayed and all(times == sorted(times) for times in replayed.values())
    # everything the agent acquired reached the broker: what the local history holds, MQTT got
    stored = _history(tmp_path / "state")
    assert stored and stored <= received, sorted(stored - received)[:10]
    # the outage went out as history (but the batch in flight when it began, sent as live)
    in_outage = [ts for name, ts in stored if outage_start + 1000 <= ts <= outage_end]
    assert in_outage and set(in_outage) <= set(historical)
