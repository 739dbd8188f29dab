"""Sparkplug topics: ``spBv1.0/{group_id}/{message_type}/{edge_node_id}[/{device_id}]`` and the
primary host's ``spBv1.0/STATE/{host_id}`` with its 3.0 JSON payload."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

NAMESPACE = "spBv1.0"
STATE = "STATE"
# MQTT topic separators and wildcards cannot be part of a Sparkplug id.
_FORBIDDEN = frozenset("/+#")


class MessageType(enum.StrEnum):
    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    NDATA = "NDATA"
    DDATA = "DDATA"
    NCMD = "NCMD"
    DCMD = "DCMD"

    @property
    def is_device(self) -> bool:
        return self.value[0] == "D"


def id_problem(value: str) -> str | None:
    """Why ``value`` cannot be a group, edge node, device or host id, or ``None`` if it can."""
    if not value:
        return "must not be empty"
    bad = sorted(set(value) & _FORBIDDEN)
    if bad:
        return f"must not contain {' '.join(repr(c) for c in bad)} (MQTT topic separators and wildcards)"
    return None


def _check_id(kind: str, value: str) -> None:
    problem = id_problem(value)
    if problem:
        raise ValueError(f"Sparkplug {kind} {value!r} {problem}")


@dataclass(frozen=True, slots=True)
class Topic:
    """An edge node or device topic."""

    group_id: str
    message_type: MessageType
    edge_node_id: str
    device_id: str | None = None

    def __post_init__(self) -> None:
        _check_id("group id", self.group_id)
        _check_id("edge node id", self.edge_node_id)
        if self.message_type.is_device:
            if self.device_id is None:
                raise ValueError(f"a {self.message_type} topic needs a device id")
            _check_id("device id", self.device_id)
        elif self.device_id is not None:
            raise ValueError(f"a {self.message_type} topic has no device id")

    def __str__(self) -> str:
        tail = f"/{self.device_id}" if self.device_id is not None else ""
        return f"{NAMESPACE}/{self.group_id}/{self.message_type}/{self.edge_node_id}{tail}"


def topic(group_id: str, message_type: MessageType | str, edge_node_id: str, device_id: str | None = None) -> str:
    """The topic string, checked."""
    return str(Topic(group_id, MessageType(message_type), edge_node_id, device_id))


def parse_topic(text: str) -> Topic:
    """An edge node or device topic; raises ``ValueError`` for anything else (STATE topics
    included: see :func:`parse_state_topic`)."""
    parts = text.split("/")
    if len(parts) not in (4, 5) or parts[0] != NAMESPACE:
        raise ValueError(f"not a Sparkplug B topic: {text!r} (expected {NAMESPACE}/GROUP/TYPE/NODE[/DEVICE])")
    try:
        message_type = MessageType(parts[2])
    except ValueError:
        raise ValueError(f"unknown Sparkplug message type {parts[2]!r} in {text!r}") from None
    return Topic(parts[1], message_type, parts[3], parts[4] if len(parts) == 5 else None)


def state_topic(host_id: str) -> str:
    _check_id("host id", host_id)
    return f"{NAMESPACE}/{STATE}/{host_id}"


def parse_state_topic(text: str) -> str | None:
    """The host id of a ``spBv1.0/STATE/{host_id}`` topic, or ``None`` for any other topic."""
    parts = text.split("/")
    if len(parts) == 3 and parts[0] == NAMESPACE and parts[1] == STATE and parts[2]:
        return parts[2]
    return None


@dataclass(frozen=True, slots=True)
class HostState:
    """A primary host application's STATE message (Sparkplug 3.0 JSON form)."""

    online: bool
    timestamp: int  # ms since the epoch, as the host sent it

    def encode(self) -> bytes:
        return json.dumps({"online": self.online, "timestamp": self.timestamp}).encode()


def parse_host_state(data: bytes) -> HostState:
    """``{"online": bool, "timestamp": int}``; raises ``ValueError`` for anything else (including the
    plain ``ONLINE``/``OFFLINE`` of Sparkplug 2.2 hosts)."""
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"STATE payload is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("STATE payload is not a JSON object")
    online, timestamp = body.get("online"), body.get("timestamp")
    if not isinstance(online, bool):
        raise ValueError("STATE payload has no boolean 'online'")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        raise ValueError("STATE payload has no numeric 'timestamp'")
    return HostState(online, int(timestamp))
