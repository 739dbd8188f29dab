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

from mos_agent import sparkplug as sp
from tests.support.waiting import wait_until

SPARKPLUG_JS = Path(__file__).resolve().parents[1] / "sparkplug_js"
DT = sp.DataType


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

    def decode_data(self, payloads: Sequence[bytes], types: dict[int, int]) -> list[dict[str, Any]]:
        """DATA payloads decoded as a host application reads them: each metric with the datatype
        its alias had in the birth (``types``: alias -> datatype code)."""
        return self._run("decode-data", [{"payload": base64.b64encode(p).decode(),
                                          "types": {str(a): t for a, t in types.items()}} for p in payloads])

    def encode(self, payloads: Sequence[dict[str, Any]]) -> list[bytes]:
        return [base64.b64decode(b) for b in self._run("encode", payloads)]


class MqttRecorder:
    """A subscriber on the real broker that keeps every message it receives, in order."""

    def __init__(self, port: int, topic: str, qos: int = 1, client_id: str = "") -> None:
        """With a ``client_id`` the session is persistent: the broker keeps what arrives while the
        recorder reconnects (after a broker restart, say) and hands it over afterwards."""
        self.topic = topic
        self.messages: list[paho.MQTTMessage] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not client_id)
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


class Decoded:
    """One received message, decoded by both codecs (which must agree on what both express)."""

    def __init__(self, message: Any, ours: sp.Payload, theirs: dict[str, Any]) -> None:
        self.topic = sp.parse_topic(message.topic)
        self.type = self.topic.message_type
        self.qos = message.qos
        self.retain = message.retain
        self.ours = ours
        self.js = theirs

    @property
    def seq(self) -> int | None:
        return self.ours.seq if self.ours.HasField("seq") else None

    def __repr__(self) -> str:
        return f"<{self.type} {self.topic.device_id} seq={self.seq}>"


def from_node(messages: Sequence[Any]) -> list[Any]:
    """What the edge node published (not the commands and STATE messages the test sends)."""
    return [m for m in messages if "/NCMD/" not in m.topic and not m.topic.startswith("spBv1.0/STATE/")]


def decode_all(messages: Sequence[Any], sparkplug_js: Any) -> list[Decoded]:
    messages = from_node(messages)
    payloads = [bytes(m.payload) for m in messages]
    theirs = sparkplug_js.decode(payloads) if payloads else []
    decoded = []
    for message, data, js in zip(messages, payloads, theirs, strict=True):
        ours = sp.decode(data)
        # the two codecs agree on the envelope and on every metric's identity and flags
        assert js.get("seq") == (str(ours.seq) if ours.HasField("seq") else None), message.topic
        assert int(js["timestamp"]) == ours.timestamp
        assert len(js.get("metrics", [])) == len(ours.metrics)
        for jm, om in zip(js.get("metrics", []), ours.metrics, strict=True):
            assert jm.get("name") == (om.name if om.HasField("name") else None)
            assert jm.get("alias") == (str(om.alias) if om.HasField("alias") else None)
            assert int(jm["timestamp"]) == om.timestamp
            assert jm.get("isHistorical", False) == om.is_historical
            if om.HasField("datatype"):
                assert jm["type"] == DT(om.datatype).name.title().replace("Uint", "UInt"), (jm, om)
                expected = sp.get_value(om)
                got = jm["value"]
                if om.datatype in (DT.INT64, DT.UINT64) and got is not None:
                    got = int(got)
                assert got == expected, (jm, om)
        decoded.append(Decoded(message, ours, js))
    return decoded


def by_type(decoded: Sequence[Decoded], message_type: str, device: str | None = None) -> list[Decoded]:
    return [d for d in decoded if d.type == message_type and (device is None or d.topic.device_id == device)]


def metric(payload: sp.Payload, name: str) -> sp.Metric:
    [found] = [m for m in payload.metrics if m.name == name]
    return found
