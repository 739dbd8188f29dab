"""Shared fixtures for tests/ and drivers/*/tests: real Mosquitto and VictoriaMetrics on free
loopback ports in temp dirs, and a fault-injecting proxy. The helpers behind them are in
tests/support (not part of the package)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from mos_agent.localservers import Mosquitto
from tests.support.servers import FaultProxy, StoreReader, VictoriaMetrics, running

REPO = Path(__file__).resolve().parent


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    with running(VictoriaMetrics.start(tmp_path / "vm")) as server:
        yield server


@pytest.fixture
def store(victoria: VictoriaMetrics) -> StoreReader:
    return StoreReader(victoria.url)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    with running(Mosquitto.start(tmp_path / "mosquitto")) as server:
        yield server


@pytest.fixture
def store_proxy(victoria: VictoriaMetrics) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the store: ``cut()``, ``heal()``, ``delay``."""
    proxy = FaultProxy(victoria.port)
    try:
        yield proxy
    finally:
        proxy.close()


SPARKPLUG_JS = REPO / "tests" / "sparkplug_js"


class SparkplugJs:
    """Eclipse Tahu's JavaScript Sparkplug B codec (npm ``sparkplug-payload``) run by Node.js: an
    implementation independent of ours. 64-bit integers come back as decimal strings."""

    def __init__(self, node: str) -> None:
        self.node = node

    def _run(self, mode: str, items: Sequence[Any]) -> list[Any]:
        result = subprocess.run([self.node, str(SPARKPLUG_JS / "codec.js"), mode], input=json.dumps(items).encode(),
                                capture_output=True, timeout=60, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"codec.js {mode} failed: {result.stderr.decode()[-2000:]}")
        return json.loads(result.stdout)

    def decode(self, payloads: Sequence[bytes]) -> list[dict[str, Any]]:
        return self._run("decode", [base64.b64encode(p).decode() for p in payloads])

    def encode(self, payloads: Sequence[dict[str, Any]]) -> list[bytes]:
        return [base64.b64decode(b) for b in self._run("encode", payloads)]


@pytest.fixture(scope="session")
def sparkplug_js() -> SparkplugJs:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the independent Sparkplug decoder (npm sparkplug-payload) "
                    "cannot run")
    if not (SPARKPLUG_JS / "node_modules" / "sparkplug-payload").is_dir():
        # ./setup.sh test installs it; a run without it must not pass silently
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=SPARKPLUG_JS, check=True,
                       capture_output=True, timeout=600)
    return SparkplugJs(node)


class MqttRecorder:
    """A subscriber on the real broker that keeps every message it receives, in order."""

    def __init__(self, port: int, topic: str, qos: int = 1) -> None:
        import threading

        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[Any] = []  # paho MQTTMessage objects (topic, payload, qos, retain)
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(15):
            raise TimeoutError(f"could not subscribe to {topic!r}")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            self.messages.append(message)

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> list[Any]:
        """Poll until ``predicate(messages)`` holds (or time runs out); returns the messages."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            messages = self.snapshot()
            if predicate(messages):
                return messages
            time.sleep(0.05)
        return self.snapshot()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos, retain).wait_for_publish(15)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def mqtt_recorder(mosquitto: Mosquitto) -> Iterator[Any]:
    """``mqtt_recorder(topic)`` subscribes on the test broker; closed at the end of the test."""
    recorders: list[MqttRecorder] = []

    def make(topic: str, qos: int = 1) -> MqttRecorder:
        recorders.append(MqttRecorder(mosquitto.port, topic, qos))
        return recorders[-1]

    yield make
    for recorder in recorders:
        recorder.close()
