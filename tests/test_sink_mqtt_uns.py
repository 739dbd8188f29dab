"""The MQTT sink in Unified Namespace form against a real Mosquitto: the ISA-95 topic grammar, the
JSON of a reading, retained live values and unretained backlog, the agent's status topic."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mos_agent.batch import ReadingBatch
from mos_agent.buffer import BatchKind
from mos_agent.config.models import AgentSection, MqttSinkConfig
from mos_agent.localservers import Mosquitto, free_port
from mos_agent.normalise import Normaliser
from mos_agent.payload import Payload
from mos_agent.series import SeriesSpec, SeriesTable, make_asset
from mos_agent.sinks.base import SinkRetryable
from mos_agent.sinks.mqtt import MqttSink
from mos_agent.taxonomy import Quality
from tests.support.mqtt import MqttRecorder
from tests.support.tls import server_certificates
from tests.support.waiting import wait_until

T0_MS = 1_767_225_600_123  # 2026-01-01T00:00:00.123Z


def _table(**levels: str) -> SeriesTable:
    table = SeriesTable()
    asset = make_asset({"enterprise": "acme", "site": "changwon", **levels})
    table.add(SeriesSpec(asset=asset, tag="pressure", category="process", kind="sample", stage="forming", unit="bar"))
    table.add(SeriesSpec(asset=asset, tag="recipe/name", category="production", kind="event", stage="forming"))
    return table


def lines(table: SeriesTable, series: list[int], values: list[float], times_ms: list[int],
          quality: int = Quality.GOOD, codes: int = 0, texts: dict[int, str] | None = None) -> Payload:
    batch = ReadingBatch.build(series, values, np.asarray(times_ms, dtype=np.int64) * 1_000_000, quality, codes, texts,
                               source_time=True)  # kept as the test gives them
    chunk = Normaliser(table).process(batch)
    return Payload(chunk.points, plain=chunk.body)


@pytest.fixture
def make_sink(mosquitto, tmp_path: Path) -> Iterator[Any]:
    sinks: list[MqttSink] = []

    def make(enterprise: str | None = "acme", **options: Any) -> MqttSink:
        config = MqttSinkConfig(type="mqtt", url=f"mqtt://127.0.0.1:{mosquitto.port}", format="uns", **options)
        agent = AgentSection(id="gw-1", enterprise=enterprise, site="changwon", state_dir=tmp_path / "state")
        sink = MqttSink("uns", config, agent=agent, state_dir=tmp_path / "state")
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


def test_topics_and_json(make_sink, mqtt_recorder) -> None:
    recorder = mqtt_recorder("factory/#")
    sink = make_sink(prefix="factory")
    table = _table(area="stamping", line="line-1", equipment="press-01")  # no cell: that level is skipped
    sink.write(lines(table, [0, 1, 0], [12.5, np.nan, np.nan], [T0_MS, T0_MS, T0_MS + 1],
                     texts={1: "PVC 3"}))
    sink.write(lines(table, [0], [np.nan], [T0_MS + 2], quality=Quality.BAD, codes=1001))
    messages = recorder.wait_for(lambda ms: len([m for m in ms if "/_agent/" not in m.topic]) >= 4)
    readings = [m for m in messages if "/_agent/" not in m.topic]
    base = "factory/acme/changwon/stamping/line-1/press-01"
    # '/' inside a tag name would open a new topic level: it is replaced
    assert [m.topic for m in readings] == [f"{base}/process/pressure", f"{base}/production/recipe_name",
                                           f"{base}/process/pressure", f"{base}/process/pressure"]
    bodies = [json.loads(m.payload) for m in readings]
    assert bodies[0] == {"value": 12.5, "unit": "bar", "quality": "good", "quality_code": 0, "kind": "sample",
                         "stage": "forming", "timestamp": "2026-01-01T00:00:00.123Z", "timestamp_ms": T0_MS}
    assert list(bodies[0]) == ["value", "unit", "quality", "quality_code", "kind", "stage", "timestamp",
                               "timestamp_ms"]
    assert bodies[1]["text"] == "PVC 3" and "value" not in bodies[1] and bodies[1]["unit"] is None
    assert bodies[1]["kind"] == "event"
    assert datetime.fromisoformat(bodies[2]["timestamp"]).timestamp() * 1000 == pytest.approx(T0_MS + 1)
    assert bodies[3]["value"] is None and bodies[3]["quality"] == "bad" and bodies[3]["quality_code"] == 1001
    assert all(m.qos == 1 for m in readings)


def test_levels_without_prefix_or_enterprise_are_skipped(make_sink, mqtt_recorder) -> None:
    recorder = mqtt_recorder("changwon/#")
    sink = make_sink(enterprise=None)
    table = _table(area="paint", equipment="booth-1")
    sink.write(lines(table, [0], [1.0], [T0_MS]))
    messages = recorder.wait_for(lambda ms: any("/process/" in m.topic for m in ms))
    assert [m.topic for m in messages if "/process/" in m.topic] == ["changwon/paint/booth-1/process/pressure"]


def test_live_values_are_retained_and_backlog_is_not(make_sink, mqtt_recorder) -> None:
    sink = make_sink(prefix="factory")
    table = _table(area="stamping", equipment="press-01")
    live_watcher = mqtt_recorder("factory/acme/changwon/stamping/press-01/#")
    sink.write(lines(table, [0], [5.0], [T0_MS + 5000]))
    sink.write(lines(table, [0], [1.0], [T0_MS + 1000]), kind=BatchKind.BACKLOG)  # older, replayed after an outage
    seen = live_watcher.wait_for(lambda ms: len(ms) >= 2)
    assert [json.loads(m.payload)["value"] for m in seen] == [5.0, 1.0]
    # a newcomer gets the newest live value from the broker, not the replayed old one
    newcomer = mqtt_recorder("factory/acme/changwon/stamping/press-01/#")
    [retained] = newcomer.wait_for(lambda ms: len(ms) >= 1, timeout=5)
    assert retained.retain and json.loads(retained.payload)["value"] == 5.0


def test_status_topic_is_retained_online_then_offline(make_sink, mqtt_recorder) -> None:
    sink = make_sink(prefix="factory")
    topic = "factory/acme/changwon/_agent/gw-1/status"
    watcher = mqtt_recorder(topic)
    watcher.wait_for(lambda ms: len(ms) >= 1)
    late = mqtt_recorder(topic)
    [online] = late.wait_for(lambda ms: len(ms) >= 1)
    assert online.retain and json.loads(online.payload) == {"online": True}
    sink.close()
    messages = watcher.wait_for(lambda ms: len(ms) >= 2)
    assert json.loads(messages[-1].payload) == {"online": False}
    [offline] = mqtt_recorder(topic).wait_for(lambda ms: len(ms) >= 1)
    assert offline.retain and json.loads(offline.payload) == {"online": False}


def test_mqtts_with_the_brokers_ca(tmp_path: Path, mqtt_recorder: Any) -> None:
    files = server_certificates(tmp_path)
    tls_port = free_port()
    # a plain listener for the test's subscriber, a TLS one for the sink
    broker = Mosquitto.start(tmp_path / "broker", extra_conf=(
        f"listener {tls_port} 127.0.0.1\ncafile {files['ca.pem']}\ncertfile {files['server.pem']}\n"
        f"keyfile {files['server.key']}\n"))
    try:
        recorder = MqttRecorder(broker.port, "factory/#")
        agent = AgentSection(id="gw-1", site="changwon", state_dir=tmp_path / "state")
        config = MqttSinkConfig(type="mqtt", url=f"mqtts://127.0.0.1:{tls_port}", format="uns", prefix="factory",
                                tls={"ca_file": files["ca.pem"]})
        sink = MqttSink("uns", config, agent=agent, state_dir=tmp_path / "state")
        try:
            sink.write(lines(_table(area="stamping", equipment="press-01"), [0], [7.5], [T0_MS]))
            messages = recorder.wait_for(lambda ms: any(m.topic.endswith("/process/pressure") for m in ms))
            assert any(json.loads(m.payload).get("value") == 7.5 for m in messages)
        finally:
            sink.close()
            recorder.close()
        # without the broker's CA the connection is refused, and the error says why
        untrusting = MqttSink("uns-2", MqttSinkConfig(type="mqtt", url=f"mqtts://127.0.0.1:{tls_port}", format="uns"),
                              agent=agent, state_dir=tmp_path / "state")
        try:
            error = wait_until(lambda: _tls_error(untrusting), what="the TLS failure")
            assert "CERTIFICATE_VERIFY_FAILED" in error
        finally:
            untrusting.close()
    finally:
        broker.stop()


def _tls_error(sink: MqttSink) -> str | None:
    """The write's failure once it names the certificate (before the first connection attempt
    the sink only knows it is not connected)."""
    try:
        sink.write(lines(_table(area="stamping", equipment="press-01"), [0], [1.0], [T0_MS]))
    except SinkRetryable as exc:
        return str(exc) if "CERTIFICATE" in str(exc) else None
    raise AssertionError("a broker with an unknown CA was trusted")
