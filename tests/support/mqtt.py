"""MQTT test helpers: a recording subscriber on the real broker, and Eclipse Tahu's JavaScript
Sparkplug B codec (npm ``sparkplug-payload`` under Node.js) as an implementation independent of
ours."""

from __future__ import annotations

import base64
import json
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.waiting import wait_until

SPARKPLUG_JS = Path(__file__).resolve().parents[1] / "sparkplug_js"


class SparkplugJs:
    """``decode`` and ``encode`` through tests/sparkplug_js/codec.js; 64-bit integers come back as
    decimal strings."""

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


class MqttRecorder:
    """A subscriber on the real broker that keeps every message it receives, in order."""

    def __init__(self, port: int, topic: str, qos: int = 1) -> None:
        self.topic = topic
        self.messages: list[paho.MQTTMessage] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not subscribed.wait(15):
            raise TimeoutError(f"could not subscribe to {topic!r}")

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(message)

    def snapshot(self) -> list[paho.MQTTMessage]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, predicate: Callable[[list[paho.MQTTMessage]], bool],
                 timeout: float = 30.0) -> list[paho.MQTTMessage]:
        """The messages received once ``predicate(messages)`` holds; fails the test after
        ``timeout`` with the topics received so far."""

        def ready() -> tuple[list[paho.MQTTMessage]] | None:
            messages = self.snapshot()
            return (messages,) if predicate(messages) else None

        return wait_until(ready, timeout, what=lambda: f"messages on {self.topic!r}; received: "
                          f"{[m.topic for m in self.snapshot()][-30:]}")[0]

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos, retain).wait_for_publish(15)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
