"""What the MQTT sink publishes: a topic, a payload, QoS and retain flag."""

from __future__ import annotations

from typing import NamedTuple


class Message(NamedTuple):
    topic: str
    payload: bytes
    qos: int
    retain: bool = False
