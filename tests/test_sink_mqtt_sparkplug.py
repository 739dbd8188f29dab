"""The MQTT sink as a Sparkplug B 3.0 edge node, against a real Mosquitto. Every message the test
subscriber receives is decoded twice, by our codec and by an independent one (Eclipse Tahu's
JavaScript sparkplug-payload), and the two must agree; then the specification's edge node rules
are checked one by one: births, aliases, seq, bdSeq, deaths, rebirth, primary host, history."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mos_agent import sparkplug as sp
from mos_agent.batch import ReadingBatch
from mos_agent.buffer import BatchKind
from mos_agent.config.models import AgentSection, MqttSinkConfig
from mos_agent.normalise import Normaliser
from mos_agent.payload import Payload
from mos_agent.series import SeriesSpec, SeriesTable, make_asset
from mos_agent.sinks.base import SinkRetryable
from mos_agent.sinks.mqtt import MqttSink
from mos_agent.sinks.mqtt.sink import bdseq_path
from mos_agent.taxonomy import Quality
from tests.support.mqtt import by_type, decode_all, from_node, metric

GROUP = "plant"
NODE = "gw-1"
DT = sp.DataType


def _spec(device: str, tag: str, category: str, data_type: str, unit: str | None = None) -> SeriesSpec:
    asset = make_asset({"site": "changwon", "area": "stamping", "line": "line-1", "equipment": device})
    return SeriesSpec(asset=asset, tag=tag, category=category, kind="sample", stage="forming", unit=unit,
                      data_type=data_type)


PRESS = [_spec("press-01", "pressure", "process", "float32", "bar"),
         _spec("press-01", "running", "equipment_state", "bool"),
         _spec("press-01", "strokes", "production", "uint32")]
OVEN = [_spec("oven-02", "recipe", "production", "string")]


class Plant:
    """Two devices' series, encoded by the real normaliser as the pipeline hands them on."""

    def __init__(self) -> None:
        self.tables = {"press-01": SeriesTable(), "oven-02": SeriesTable()}
        for spec in PRESS:
            self.tables["press-01"].add(spec)
        for spec in OVEN:
            self.tables["oven-02"].add(spec)
        self.normalisers = {name: Normaliser(table) for name, table in self.tables.items()}

    @property
    def series(self) -> list[SeriesSpec]:
        return [*PRESS, *OVEN]

    def lines(self, device: str, series: Sequence[int], values: Sequence[float], times_ms: Sequence[int],
              quality: int = Quality.GOOD, codes: int = 0, texts: dict[int, str] | None = None) -> Payload:
        # source times: kept as the test gives them
        batch = ReadingBatch.build(series, values, np.asarray(times_ms, dtype=np.int64) * 1_000_000, quality,
                                   codes, texts, source_time=True)
        chunk = self.normalisers[device].process(batch)
        return Payload(chunk.points, plain=chunk.body)


@pytest.fixture
def plant() -> Plant:
    return Plant()


@pytest.fixture
def make_sink(mosquitto, tmp_path: Path) -> Iterator[Any]:
    sinks: list[MqttSink] = []

    def make(series: Sequence[SeriesSpec] = (), *, device_states: Any = None, name: str = "north",
             **options: Any) -> MqttSink:
        config = MqttSinkConfig(type="mqtt", url=f"mqtt://127.0.0.1:{mosquitto.port}", format="sparkplug",
                                group_id=GROUP, **options)
        agent = AgentSection(id=NODE, site="changwon", state_dir=tmp_path / "state")
        sink = MqttSink(name, config, agent=agent, state_dir=tmp_path / "state", series=series,
                        device_states=device_states)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


def test_births_then_data_by_alias(make_sink, plant: Plant, mqtt_recorder, sparkplug_js) -> None:
    recorder = mqtt_recorder("spBv1.0/#")
    sink = make_sink(plant.series)
    sink.write(plant.lines("press-01", [0, 1, 2, 0], [12.5, 1, 41, 12.75], [1000, 1000, 1000, 1100]))
    sink.write(plant.lines("oven-02", [0], [np.nan], [1200], texts={0: "PVC-3"}))
    sink.write(plant.lines("press-01", [0], [np.nan], [1300], quality=Quality.BAD, codes=1001))
    messages = recorder.wait_for(lambda ms: len(ms) >= 6)
    decoded = decode_all(messages, sparkplug_js)
    assert [(d.type, d.topic.device_id) for d in decoded] == [
        ("NBIRTH", None), ("DBIRTH", "press-01"), ("DBIRTH", "oven-02"),
        ("DDATA", "press-01"), ("DDATA", "oven-02"), ("DDATA", "press-01")]
    assert all(d.topic.group_id == GROUP and d.topic.edge_node_id == NODE for d in decoded)

    nbirth = decoded[0]
    assert nbirth.seq == 0 and nbirth.qos == 0 and not nbirth.retain
    bdseq = metric(nbirth.ours, "bdSeq")
    assert bdseq.datatype == DT.INT64 and sp.get_value(bdseq) == 0
    rebirth = metric(nbirth.ours, "Node Control/Rebirth")
    assert rebirth.datatype == DT.BOOLEAN and sp.get_value(rebirth) is False and not rebirth.HasField("alias")

    # every configured metric in its device's birth: name, alias, datatype, unit, Quality
    press, oven = decoded[1].ours, decoded[2].ours
    assert [(m.name, DT(m.datatype)) for m in press.metrics] == [
        ("process/pressure", DT.DOUBLE), ("equipment_state/running", DT.BOOLEAN), ("production/strokes", DT.INT64)]
    assert [(m.name, DT(m.datatype)) for m in oven.metrics] == [("production/recipe", DT.STRING)]
    aliases = {m.name: m.alias for m in [*press.metrics, *oven.metrics]}
    assert len(set(aliases.values())) == 4  # unique across the edge node
    assert sp.get_properties(press.metrics[0].properties) == {"Quality": 192, "quality": "good", "unit": "bar"}
    assert decoded[1].js["metrics"][0]["properties"]["unit"] == {"type": "String", "value": "bar"}
    assert all(m.is_null for m in press.metrics)  # no value yet: null, not 0
    assert all(d.qos == 0 and not d.retain for d in decoded[1:3])

    # data: alias only, no name and no datatype; values as the birth's datatypes say
    data = decoded[3].ours
    assert all(not m.HasField("name") and not m.HasField("datatype") for m in data.metrics)
    types = {m.alias: DT(m.datatype) for m in [*press.metrics, *oven.metrics]}
    assert [(m.alias, sp.get_value(m, types[m.alias]), m.timestamp) for m in data.metrics] == [
        (aliases["process/pressure"], 12.5, 1000), (aliases["equipment_state/running"], True, 1000),
        (aliases["production/strokes"], 41, 1000), (aliases["process/pressure"], 12.75, 1100)]
    assert decoded[3].qos == 1 and not decoded[3].retain and not data.metrics[0].is_historical
    [recipe] = decoded[4].ours.metrics
    assert sp.get_value(recipe, DT.STRING) == "PVC-3"
    [failed] = decoded[5].ours.metrics
    assert failed.is_null and failed.WhichOneof("value") is None
    assert sp.get_properties(failed.properties) == {"Quality": 0, "quality": "bad", "quality_code": 1001}

    # seq: 0 on NBIRTH, then one more on every message
    assert [d.seq for d in decoded] == list(range(6))


def test_seq_wraps_after_255(make_sink, plant: Plant, mqtt_recorder, sparkplug_js) -> None:
    recorder = mqtt_recorder("spBv1.0/#")
    sink = make_sink(plant.series)
    for i in range(260):
        sink.write(plant.lines("press-01", [0], [float(i)], [10_000 + i]))
    messages = recorder.wait_for(lambda ms: len(ms) >= 263)  # NBIRTH, 2 DBIRTHs, 260 DDATA
    seqs = [d.seq for d in decode_all(messages, sparkplug_js)]
    assert seqs == [n % 256 for n in range(263)]


def test_rebirth_on_ncmd_keeps_bdseq_and_reports_current_values(make_sink, plant: Plant, mqtt_recorder,
                                                              sparkplug_js) -> None:
    recorder = mqtt_recorder("spBv1.0/#")
    sink = make_sink(plant.series)
    sink.write(plant.lines("press-01", [0, 2], [3.5, 7], [5000, 5000]))
    recorder.wait_for(lambda ms: len(by_type(decode_all(ms, sparkplug_js), "DDATA")) == 1)
    # the request, encoded by the independent codec as a host application would send it
    [command] = sparkplug_js.encode([{"timestamp": 1, "metrics": [
        {"name": "Node Control/Rebirth", "type": "Boolean", "value": True}]}])
    recorder.publish(f"spBv1.0/{GROUP}/NCMD/{NODE}", command, qos=0)
    messages = recorder.wait_for(lambda ms: len(by_type(decode_all(ms, sparkplug_js), "NBIRTH")) == 2)
    sink.write(plant.lines("press-01", [0], [4.5], [6000]))
    decoded = decode_all(recorder.wait_for(lambda ms: len(from_node(ms)) >= 8), sparkplug_js)
    assert [d.type for d in decoded] == ["NBIRTH", "DBIRTH", "DBIRTH", "DDATA", "NBIRTH", "DBIRTH", "DBIRTH",
                                         "DDATA"], messages
    first, second = decoded[0], decoded[4]
    assert second.seq == 0 and [d.seq for d in decoded[4:]] == [0, 1, 2, 3]
    assert sp.get_value(metric(second.ours, "bdSeq")) == sp.get_value(metric(first.ours, "bdSeq"))
    rebirth_press = decoded[5].ours
    assert sp.get_value(metric(rebirth_press, "process/pressure")) == 3.5
    assert sp.get_value(metric(rebirth_press, "production/strokes")) == 7
    assert metric(rebirth_press, "process/pressure").timestamp == 5000
    assert metric(rebirth_press, "equipment_state/running").is_null
    assert sink.status().rebirth_requests == 1


def test_bdseq_counts_up_across_restarts_and_ndeath_carries_it(make_sink, plant: Plant, mqtt_recorder,
                                                                sparkplug_js, tmp_path: Path) -> None:
    recorder = mqtt_recorder("spBv1.0/#")
    for _ in range(3):
        sink = make_sink(plant.series)
        sink.write(plant.lines("press-01", [0], [1.0], [1]))
        sink.close()  # an orderly stop publishes NDEATH before it disconnects
    decoded = decode_all(recorder.wait_for(lambda ms: len(by_type(decode_all(ms, sparkplug_js), "NDEATH")) == 3),
                         sparkplug_js)
    births = [sp.get_value(metric(d.ours, "bdSeq")) for d in by_type(decoded, "NBIRTH")]
    deaths = by_type(decoded, "NDEATH")
    assert births == [0, 1, 2]
    assert [sp.get_value(metric(d.ours, "bdSeq")) for d in deaths] == births
    assert all(d.seq is None and d.qos == 1 and not d.retain for d in deaths)  # NDEATH has no seq
    assert '"bdSeq": 2' in bdseq_path(tmp_path / "state", "north").read_text()


def test_bdseq_wraps_from_255_to_0(make_sink, plant: Plant, mqtt_recorder, sparkplug_js, tmp_path: Path) -> None:
    path = bdseq_path(tmp_path / "state", "north")
    path.parent.mkdir(parents=True)
    path.write_text('{"bdSeq": 255}')
    recorder = mqtt_recorder("spBv1.0/#")
    make_sink(plant.series)
    [nbirth] = by_type(decode_all(recorder.wait_for(lambda ms: len(ms) >= 1), sparkplug_js), "NBIRTH")[:1]
    assert sp.get_value(metric(nbirth.ours, "bdSeq")) == 0


def test_ddeath_when_the_agent_reports_a_device_down(make_sink, plant: Plant, mqtt_recorder, sparkplug_js) -> None:
    recorder = mqtt_recorder("spBv1.0/#")
    states = {"press-01": "running", "oven-02": "running"}
    sink = make_sink(plant.series, device_states=lambda: states)
    sink.write(plant.lines("press-01", [0], [1.0], [1000]))
    recorder.wait_for(lambda ms: len(ms) >= 4)
    states["press-01"] = "down"
    messages = recorder.wait_for(lambda ms: any(m.topic.endswith("/DDEATH/gw-1/press-01") for m in ms))
    # failed reads while it is down are not published: the DDEATH already marked its metrics stale
    sink.write(plant.lines("press-01", [0], [np.nan], [2000], quality=Quality.BAD, codes=1002))
    states["press-01"] = "running"
    sink.write(plant.lines("press-01", [0], [2.0], [3000]))
    decoded = decode_all(recorder.wait_for(lambda ms: len(ms) >= 7), sparkplug_js)
    assert [(d.type, d.topic.device_id) for d in decoded] == [
        ("NBIRTH", None), ("DBIRTH", "press-01"), ("DBIRTH", "oven-02"), ("DDATA", "press-01"),
        ("DDEATH", "press-01"), ("DBIRTH", "press-01"), ("DDATA", "press-01")], messages
    assert [d.seq for d in decoded] == list(range(7))  # DDEATH takes its place in the sequence
    assert decoded[4].ours.metrics == [] and decoded[4].qos == 0
    assert sp.get_value(metric(decoded[5].ours, "process/pressure")) == 1.0  # the value it had
    assert sink.status().skipped_dead_points == 1


def test_backlog_is_sent_as_historical(make_sink, plant: Plant, mqtt_recorder, sparkplug_js) -> None:
    recorder = mqtt_recorder("spBv1.0/#")
    sink = make_sink(plant.series)
    sink.write(plant.lines("press-01", [0], [9.0], [9000]))
    sink.write(plant.lines("press-01", [0, 0], [1.0, 2.0], [1000, 2000]), kind=BatchKind.BACKLOG)
    decoded = decode_all(recorder.wait_for(lambda ms: len(ms) >= 5), sparkplug_js)
    live, backlog = by_type(decoded, "DDATA")
    assert [m.is_historical for m in live.ours.metrics] == [False]
    assert [m.is_historical for m in backlog.ours.metrics] == [True, True]
    assert all(m["isHistorical"] for m in backlog.js["metrics"])
    # the value a later birth reports stays the newest live one
    sink.session.publisher.node.devices["press-01"].born = False
    sink.write(plant.lines("press-01", [1], [1.0], [9500]))
    rebirth = decode_all(recorder.wait_for(lambda ms: len(ms) >= 7), sparkplug_js)[5]
    assert rebirth.type == "DBIRTH" and sp.get_value(metric(rebirth.ours, "process/pressure")) == 9.0


def test_a_metric_not_configured_gets_an_alias_and_a_new_dbirth(make_sink, plant: Plant, mqtt_recorder,
                                                                sparkplug_js) -> None:
    recorder = mqtt_recorder("spBv1.0/#")
    sink = make_sink(PRESS)  # oven-02 and its tag are not in the configuration this sink got
    sink.write(plant.lines("oven-02", [0], [np.nan], [1000], texts={0: "A"}))
    decoded = decode_all(recorder.wait_for(lambda ms: len(ms) >= 4), sparkplug_js)
    assert [(d.type, d.topic.device_id) for d in decoded] == [
        ("NBIRTH", None), ("DBIRTH", "press-01"), ("DBIRTH", "oven-02"), ("DDATA", "oven-02")]
    [recipe] = decoded[2].ours.metrics
    assert recipe.name == "production/recipe" and recipe.datatype == DT.STRING and recipe.alias == 3
    assert decoded[3].ours.metrics[0].alias == 3


def test_primary_host_gates_births_and_its_offline_state_ends_the_session(make_sink, plant: Plant, mqtt_recorder,
                                                                         sparkplug_js) -> None:
    recorder = mqtt_recorder("spBv1.0/#")
    sink = make_sink(plant.series, primary_host_id="scada")
    with pytest.raises(SinkRetryable, match="waiting for primary host scada"):
        sink.write(plant.lines("press-01", [0], [1.0], [1000]))
    assert not [m for m in recorder.snapshot() if "/NBIRTH/" in m.topic]
    recorder.publish("spBv1.0/STATE/other", b'{"online": true, "timestamp": 5}', retain=True)
    recorder.publish("spBv1.0/STATE/scada", b'{"online": true, "timestamp": 10}', retain=True)
    recorder.wait_for(lambda ms: any("/NBIRTH/" in m.topic for m in ms))
    sink.write(plant.lines("press-01", [0], [2.0], [2000]))
    # an offline STATE older than the online one is ignored; a newer one ends the session
    recorder.publish("spBv1.0/STATE/scada", b'{"online": false, "timestamp": 9}', retain=True)
    recorder.publish("spBv1.0/STATE/scada", b'{"online": false, "timestamp": 20}', retain=True)
    recorder.wait_for(lambda ms: any("/NDEATH/" in m.topic for m in ms))
    with pytest.raises(SinkRetryable):
        sink.write(plant.lines("press-01", [0], [3.0], [3000]))
    recorder.publish("spBv1.0/STATE/scada", b'{"online": true, "timestamp": 30}', retain=True)
    recorder.wait_for(lambda ms: len([m for m in ms if "/NBIRTH/" in m.topic]) == 2)
    sink.write(plant.lines("press-01", [0], [3.0], [3000]))
    decoded = decode_all(recorder.wait_for(lambda ms: len(from_node(ms)) >= 9), sparkplug_js)
    assert [d.type for d in decoded] == ["NBIRTH", "DBIRTH", "DBIRTH", "DDATA", "NDEATH",
                                         "NBIRTH", "DBIRTH", "DBIRTH", "DDATA"]
    first, death, second = decoded[0], decoded[4], decoded[5]
    assert sp.get_value(metric(death.ours, "bdSeq")) == sp.get_value(metric(first.ours, "bdSeq"))
    assert sp.get_value(metric(second.ours, "bdSeq")) == sp.get_value(metric(first.ours, "bdSeq")) + 1
    assert sp.get_value(decoded[8].ours.metrics[0], DT.DOUBLE) == 3.0
