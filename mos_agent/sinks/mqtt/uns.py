"""Unified Namespace form: one retained JSON message per reading on its ISA-95 topic.

Topic ``{prefix}/{enterprise}/{site}/{area}/{line}/{cell}/{equipment}/{category}/{tag}`` (absent
levels skipped); payload ``{"value": …, "unit": …, "quality": …, "quality_code": …, "kind": …,
"stage": …, "timestamp": "<RFC 3339>", "timestamp_ms": …}`` with ``"text"`` in place of
``"value"`` for strings. Live readings are retained so the topic always holds the newest value;
backlog readings are not, or a replayed old value would replace a newer retained one. The agent's
own ``{prefix}/{enterprise}/{site}/_agent/{agent id}/status`` is retained ``{"online": true}``,
with the will ``{"online": false}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from mos_agent.sinks.mqtt.messages import Message
from mos_agent.sinks.mqtt.rows import Reading, Series
from mos_agent.status import MqttSinkStats

# '+' and '#' are wildcards and '/' separates levels: a name containing one would publish to a
# different topic than its own, so it is replaced.
_TOPIC_SAFE = str.maketrans({"/": "_", "+": "_", "#": "_", "\0": "_"})


def topic_level(name: str) -> str:
    return name.translate(_TOPIC_SAFE) or "_"


def rfc3339(timestamp_ns: int) -> str:
    """UTC with as many fractional digits as the time needs (3, 6 or 9)."""
    seconds, fraction = divmod(timestamp_ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if fraction % 1_000_000 == 0:
        return f"{base}.{fraction // 1_000_000:03d}Z"
    if fraction % 1_000 == 0:
        return f"{base}.{fraction // 1_000:06d}Z"
    return f"{base}.{fraction:09d}Z"


class UnsEncoder:
    def __init__(self, prefix: str | None, enterprise: str | None, site: str, agent_id: str, qos: int) -> None:
        self.root = [*(p for p in (prefix or "").split("/") if p), *([enterprise] if enterprise else [])]
        self.status_topic = "/".join([*self.root, site, "_agent", topic_level(agent_id), "status"])
        self.qos = qos
        # per series: its topic and the JSON between the value and the time, built once
        self._series: dict[Series, tuple[str, str, str]] = {}

    def status(self, online: bool) -> Message:
        return Message(self.status_topic, json.dumps({"online": online}).encode(), 1, True)

    def _parts(self, series: Series) -> tuple[str, str, str]:
        parts = self._series.get(series)
        if parts is None:
            levels = [topic_level(name) for _, name in series.levels]
            topic = "/".join([*self.root, *levels, topic_level(series.category), topic_level(series.tag)])
            middle = (f',"unit":{json.dumps(series.unit)},"quality":{json.dumps(series.quality)},"quality_code":')
            tail = f',"kind":{json.dumps(series.kind)},"stage":{json.dumps(series.stage)},"timestamp":"'
            parts = (topic, middle, tail)
            self._series[series] = parts
        return parts

    def encode(self, readings: Iterable[Reading], historical: bool) -> list[Message]:
        retain = not historical
        qos = self.qos
        messages = []
        for series, value, text, code, timestamp_ns in readings:
            topic, middle, tail = self._parts(series)
            if text is not None:
                head = '{"text":' + json.dumps(text, ensure_ascii=False)
            elif value is None:
                head = '{"value":null'
            else:
                head = '{"value":' + repr(float(value))
            body = (f'{head}{middle}{code}{tail}{rfc3339(timestamp_ns)}",'
                    f'"timestamp_ms":{timestamp_ns // 1_000_000}}}')
            messages.append(Message(topic, body.encode(), qos, retain))
        return messages


class UnsPublisher:
    """The session's view of the UNS form (see :class:`mos_agent.sinks.mqtt.session.Publisher`)."""

    def __init__(self, encoder: UnsEncoder) -> None:
        self.encoder = encoder

    def will(self) -> Message:
        return self.encoder.status(False)

    def connect_sent(self) -> None:
        pass

    def connected(self) -> None:
        pass

    def subscriptions(self) -> list[tuple[str, int]]:
        return []

    def on_connected(self) -> list[Message]:
        return [self.encoder.status(True)]

    def on_message(self, topic: str, payload: bytes) -> tuple[list[Message], str | None]:
        return [], None

    def blocked(self) -> str | None:
        return None

    def encode(self, readings: Iterable[Reading], historical: bool) -> list[Message]:
        return self.encoder.encode(readings, historical)

    def tick(self) -> list[Message]:
        return []

    def farewell(self) -> list[Message]:
        return [self.encoder.status(False)]

    def fill_status(self, stats: MqttSinkStats) -> None:
        stats.format = "uns"
