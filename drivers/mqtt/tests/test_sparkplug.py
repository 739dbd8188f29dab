"""Sparkplug B in, against a real Mosquitto: the simulator's edge node and hand-made payloads (some
encoded by Eclipse Tahu's JavaScript codec, independent of ours) through the MQTT driver."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from typing import Any

import pytest

from drivers.mqtt import MqttDriver
from drivers.mqtt.config import MqttDevice
from drivers.mqtt.decode import Rows
from drivers.mqtt.sparkplug import REBIRTH_INTERVAL, BirthFiles, SparkplugDecoder, quality_of
from mos_agent import sparkplug as sp
from mos_agent.driver_api import DeviceState, DriverContext
from mos_agent.taxonomy import ASSET_NAME, DEFAULT_STAGES, CollectorCode, asset_name_for
from simulators.sparkplug_node import SparkplugConfig, SparkplugNode
from tests.support.waiting import wait_until_async

GROUP, NODE = "plant-b", "node-7"
PATTERNS = [
    {"metric": "Temp*", "category": "environment", "unit": "Cel"},
    {"metric": "Pressure", "category": "process"},
    {"metric": "Parts*", "category": "production"},
    {"metric": "Running", "category": "equipment_state"},
    {"metric": "Mode", "category": "equipment_state"},
    {"metric": "Uptime", "category": "equipment_state", "unit": "s", "kind": "sample"},
]
T0 = 1_767_225_600_000  # ms
# Sparkplug ids and metric names as asset and tag names: the mapping of topic captures
PRESS, OVEN, NODE_EQ = asset_name_for("Press 01"), asset_name_for("Oven-2"), asset_name_for("node-7")
TEMPERATURE, PRESSURE, PARTS, RUNNING, MODE, UPTIME = (
    asset_name_for(n) for n in ("Temperature", "Pressure", "Parts/Count", "Running", "Mode", "Uptime"))
DEVICE_TAGS = (TEMPERATURE, PRESSURE, PARTS, RUNNING, MODE)


def sparkplug_device(port: int, edge_node: str = NODE, tags: list[dict] | None = None, **connection: Any) -> MqttDevice:
    return MqttDevice.model_validate({
        "name": "node-7", "driver": "mqtt", "asset": {"area": "assembly", "line": "line-2"}, "stage": "assembly",
        "connection": {"host": "127.0.0.1", "port": port, "client_id": "gw-01-sp", "qos": 1, **connection},
        "format": "sparkplug", "sparkplug": {"group_id": GROUP, "edge_node": edge_node},
        "tags": tags or PATTERNS,
    }, context={"stages": list(DEFAULT_STAGES)})


def topic(kind: str, device: str | None = None, node: str = NODE) -> str:
    return sp.topic(GROUP, kind, node, device)


@pytest.fixture
def edge_node(mosquitto):
    nodes: list[SparkplugNode] = []

    def make(**config: Any) -> SparkplugNode:
        nodes.append(SparkplugNode(SparkplugConfig(port=mosquitto.port, seed=7, **config)))
        return nodes[-1]

    yield make
    for node in nodes:
        node.stop(death=False)


def by_series(readings: list[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for r in readings:
        out.setdefault((r["asset"], r["tag"]), []).append(r)
    return out


def stats(running) -> Any:
    return running.ctx.status.sparkplug


# ---------------------------------------------------------------- the simulator's edge node


async def test_births_then_data_from_the_simulated_edge_node(mosquitto, run_driver, edge_node) -> None:
    running = run_driver(sparkplug_device(mosquitto.port))
    await running.wait_running()
    node = edge_node(devices=2).connect()
    node.publish_data(4)  # two DDATA per device, by alias only
    base = "acme/changwon/assembly/line-2"
    await wait_until_async(lambda: len(by_series(running.readings()).get((f"{base}/{OVEN}", TEMPERATURE), []))
                           >= 3, what="birth and two data values of Oven-2")
    series = by_series(running.readings())
    # equipment = device id, tag = metric name, mapped as topic captures are; Uptime is the node's
    assert set(series) == {(f"{base}/{equipment}", tag) for equipment in (PRESS, OVEN) for tag in DEVICE_TAGS} | {
        (f"{base}/{NODE_EQ}", UPTIME)}
    assert len({PRESS, OVEN, NODE_EQ}) == 3 and all(ASSET_NAME.match(name) for name in (PRESS, OVEN, *DEVICE_TAGS))
    # names the mapping changed are shown with the source's text
    assert {PRESS: "Press 01", OVEN: "Oven-2", TEMPERATURE: "Temperature"}.items() <= \
        running.ctx.status.source_names.items()
    specs = {(s.asset_path, s.tag): s for s in running.ctx.series.specs}
    assert specs[(f"{base}/{PRESS}", PRESSURE)].unit == "bar"  # from the birth's unit property
    assert specs[(f"{base}/{PRESS}", TEMPERATURE)].category == "environment"
    assert specs[(f"{base}/{PRESS}", MODE)].data_type == "string"
    counts = [r["value"] for r in series[(f"{base}/{OVEN}", PARTS)]]
    assert counts == [1.0, 2.0, 3.0]  # the birth's value, then each DDATA's
    assert all(r["quality"] == "good" for r in running.readings())
    assert series[(f"{base}/{PRESS}", MODE)][0]["value"] in ("AUTO", "SETUP")
    # source times: every reading carries the node's millisecond timestamp
    assert all(r["time"] % 1_000_000 == 0 for r in running.readings())
    st = stats(running)
    # Vibration/RMS matches no pattern: ignored and counted (its name once, each value)
    assert st.unmatched_metrics == 1 and st.unmatched_examples == ["Vibration/RMS"]
    assert st.ignored_points == 2 + 4
    assert st.births == 3 and st.metrics == 11 and st.seq_gaps == 0 and st.dropped_points == 0
    assert running.ctx.status.errors == {}


async def test_a_seq_gap_asks_for_a_rebirth_and_the_node_answers(mosquitto, run_driver, edge_node,
                                                                 mqtt_recorder, sparkplug_js, monkeypatch) -> None:
    monkeypatch.setattr("drivers.mqtt.sparkplug.REBIRTH_INTERVAL", 0.2)
    commands = mqtt_recorder(f"spBv1.0/{GROUP}/NCMD/#")
    running = run_driver(sparkplug_device(mosquitto.port))
    await running.wait_running()  # the driver asked the node for its births at once: not there yet
    await wait_until_async(lambda: len(commands.snapshot()) == 1, what="the first rebirth request")
    node = edge_node(devices=1, seq_gap_every=3).connect()
    await asyncio.sleep(0.3)  # past the rebirth interval
    sent_before = len(commands.snapshot())
    node.publish_data(3)  # the third skips a seq number
    await wait_until_async(lambda: node.stats.rebirths >= 1, what="the node's rebirth")
    await wait_until_async(lambda: stats(running).births >= 4, what="the births again")
    assert stats(running).seq_gaps == 1
    new = commands.snapshot()[sent_before:]
    assert [m.topic for m in new] == [topic("NCMD")]
    [decoded] = sparkplug_js.decode([bytes(new[0].payload)])
    assert [(m["name"], m["type"], m["value"]) for m in decoded["metrics"]] == [
        ("Node Control/Rebirth", "Boolean", True)]
    # the data after the rebirth is read by the new births' aliases
    node.publish_data(1)
    await wait_until_async(lambda: stats(running).births >= 4 and any(
        r["value"] == 5.0 for r in running.readings() if r["tag"] == PARTS), what="data after the rebirth")
    assert stats(running).dropped_points == 0


async def test_ndeath_and_ddeath_mark_the_series_not_connected(mosquitto, run_driver, edge_node) -> None:
    running = run_driver(sparkplug_device(mosquitto.port))
    await running.wait_running()
    node = edge_node(devices=2).connect()
    node.publish_data(2)
    await wait_until_async(lambda: len(running.readings()) >= 11 + 10, what="births and data")
    node.publish_device_death(0)  # Press 01 goes away
    await wait_until_async(lambda: any(r["quality"] == "bad" for r in running.readings()), what="the DDEATH")
    await asyncio.sleep(0.3)  # anything else the DDEATH would (wrongly) mark has arrived by now
    dead = [r for r in running.readings() if r["quality"] == "bad"]
    assert {r["asset"].rsplit("/", 1)[1] for r in dead} == {PRESS}
    assert len(dead) == 5 and {r["code"] for r in dead} == {CollectorCode.NOT_CONNECTED}

    node.kill()  # the broker publishes the will: NDEATH with the session's bdSeq
    await wait_until_async(lambda: len([r for r in running.readings() if r["quality"] == "bad"]) >= 5 + 6,
                           timeout=60, what="the NDEATH's bad readings")
    assert stats(running).deaths == 2
    dead = [r for r in running.readings() if r["quality"] == "bad"]
    # the node's own Uptime and Oven-2's five series; Press 01 was already dead
    assert len(dead) == 5 + 6
    assert {(r["asset"].rsplit("/", 1)[1], r["tag"]) for r in dead[5:]} == {(NODE_EQ, UPTIME)} | {
        (OVEN, tag) for tag in DEVICE_TAGS}
    assert stats(running).edge_nodes_online == 0
    assert running.ctx.status.state == DeviceState.RUNNING  # the broker connection is fine


async def test_read_waits_for_the_births_and_returns_them(mosquitto, edge_node, agent_section) -> None:
    node = edge_node(devices=1).connect()
    node.publish_data(3)
    device = sparkplug_device(mosquitto.port)
    ctx = DriverContext(agent_section, device, lambda batch: asyncio.sleep(0))
    batch = await asyncio.wait_for(MqttDriver(ctx).read_once(), 60)
    assert node.stats.rebirths == 1  # read asked the named node for its births
    rows = {ctx.series.specs[int(s)].tag: float(v) for s, v in zip(batch.series, batch.values, strict=True)}
    assert set(rows) == {UPTIME, *DEVICE_TAGS}
    assert rows[PARTS] == 4.0  # the rebirth's value: three DDATA after the first birth


async def test_read_raises_when_no_birth_comes(mosquitto, agent_section) -> None:
    device = sparkplug_device(mosquitto.port)
    ctx = DriverContext(agent_section, device, lambda batch: asyncio.sleep(0))
    with pytest.raises(TimeoutError, match="no Sparkplug birth from edge node node-7 of group plant-b"):
        await asyncio.wait_for(MqttDriver(ctx).read_once(), 60)


# ---------------------------------------------------------------- hand-made payloads


async def test_payloads_of_the_independent_codec_aliases_quality_and_nulls(mosquitto, publisher, run_driver,
                                                                            sparkplug_js, mqtt_recorder) -> None:
    commands = mqtt_recorder(f"spBv1.0/{GROUP}/NCMD/#")
    running = run_driver(sparkplug_device(mosquitto.port, edge_node="+"))
    await running.wait_running()
    nbirth, dbirth, ddata, unknown = sparkplug_js.encode([
        {"timestamp": T0, "seq": 0, "metrics": [
            {"name": "bdSeq", "type": "Int64", "value": 3, "timestamp": T0},
            {"name": "Node Control/Rebirth", "type": "Boolean", "value": False, "timestamp": T0},
            {"name": "Temp Ambient", "alias": 1, "type": "Float", "value": 21.5, "timestamp": T0}]},
        {"timestamp": T0 + 1, "seq": 1, "metrics": [
            {"name": "Temperature/Zone 1", "alias": 10, "type": "Double", "value": 180.25, "timestamp": T0 + 1,
             "properties": {"unit": {"type": "String", "value": "degC"}}},
            {"name": "Parts Good", "alias": 11, "type": "Int32", "value": 41, "timestamp": T0 + 1},
            {"name": "Secret Recipe", "alias": 12, "type": "String", "value": "x", "timestamp": T0 + 1}]},
        {"timestamp": T0 + 2, "seq": 2, "metrics": [
            {"alias": 10, "type": "Double", "value": 181.0, "timestamp": T0 + 2,
             "properties": {"Quality": {"type": "Int32", "value": 64}}},
            {"alias": 11, "type": "Int32", "value": None, "timestamp": T0 + 2},
            {"alias": 12, "type": "String", "value": "y", "timestamp": T0 + 2}]},
        {"timestamp": T0 + 3, "seq": 3, "metrics": [
            {"alias": 11, "type": "Int32", "value": 43, "timestamp": T0 + 3},
            {"alias": 99, "type": "Int32", "value": 7, "timestamp": T0 + 3}]},
    ])
    publisher.send(topic("NBIRTH", node="Line2 GW"), nbirth)
    publisher.send(topic("DBIRTH", "Oven A", node="Line2 GW"), dbirth)
    publisher.send(topic("DDATA", "Oven A", node="Line2 GW"), ddata)
    publisher.send(topic("DDATA", "Oven A", node="Line2 GW"), unknown)
    await wait_until_async(lambda: len(running.readings()) >= 6, what="six readings")
    assert stats(running).unknown_aliases == 1
    await wait_until_async(lambda: len(commands.snapshot()) >= 1, what="the rebirth request")
    assert [m.topic for m in commands.snapshot()] == [topic("NCMD", node="Line2 GW")]
    got = [(r["asset"], r["tag"], r["value"], r["quality"], r["code"], r["time"] // 1_000_000)
           for r in running.readings()]
    # "+" reads every node: the edge node is the cell; names mapped as topic captures are
    gateway, oven = asset_name_for("Line2 GW"), asset_name_for("Oven A")
    ambient, zone, good = (asset_name_for(n) for n in ("Temp Ambient", "Temperature/Zone 1", "Parts Good"))
    base = f"acme/changwon/assembly/line-2/{gateway}"
    assert got == [
        (f"{base}/{gateway}", ambient, 21.5, "good", 0, T0),
        (f"{base}/{oven}", zone, 180.25, "good", 0, T0 + 1),
        (f"{base}/{oven}", good, 41.0, "good", 0, T0 + 1),
        (f"{base}/{oven}", zone, 181.0, "uncertain", 64, T0 + 2),  # Quality 64: OPC DA uncertain
        (f"{base}/{oven}", good, None, "bad", CollectorCode.NOT_A_NUMBER, T0 + 2),  # is_null
        (f"{base}/{oven}", good, 43.0, "good", 0, T0 + 3),  # alias 99 is not stored
    ]
    specs = {s.tag: s for s in running.ctx.series.specs}
    assert specs[zone].unit == "Cel"  # the pattern's unit
    st = stats(running)
    assert st.unmatched_examples == ["Secret Recipe"] and st.ignored_points == 2
    assert st.dropped_points == 1 and st.rebirth_requests == 1


async def test_data_before_birth_is_never_stored_and_asks_for_a_rebirth(mosquitto, publisher, run_driver,
                                                                        mqtt_recorder) -> None:
    commands = mqtt_recorder(f"spBv1.0/{GROUP}/NCMD/#")
    running = run_driver(sparkplug_device(mosquitto.port, edge_node="+"))
    await running.wait_running()
    data = sp.Payload(timestamp=T0, seq=5)
    sp.add_metric(data, datatype=sp.DataType.DOUBLE, value=1.5, timestamp_ms=T0, alias=1, with_datatype=False)
    publisher.send(topic("NDATA", node="node-9"), sp.encode(data))
    publisher.send(topic("DDATA", "Press", node="node-9"), sp.encode(data))
    await wait_until_async(lambda: stats(running).data_before_birth == 2, what="both counted")
    await wait_until_async(lambda: len(commands.snapshot()) >= 1, what="the rebirth request")
    await asyncio.sleep(0.5)
    assert [m.topic for m in commands.snapshot()] == [topic("NCMD", node="node-9")]  # rate-limited: one
    assert running.readings() == [] and stats(running).dropped_points == 2


async def test_malformed_protobuf_is_a_bad_payload_and_the_flow_goes_on(mosquitto, publisher, run_driver,
                                                                        edge_node) -> None:
    running = run_driver(sparkplug_device(mosquitto.port))
    await running.wait_running()
    publisher.send(topic("NDATA"), b"\xff\xff\xff\xff not protobuf")
    await wait_until_async(lambda: running.ctx.status.errors.get("payload") == 1, what="the bad payload counted")
    assert "not a Sparkplug B payload" in running.ctx.status.last_error
    node = edge_node(devices=1).connect()
    node.publish_data(1)
    await wait_until_async(lambda: any(r["tag"] == PARTS and r["value"] == 2.0 for r in running.readings()),
                           what="data after the bad payload")
    assert running.ctx.status.state == DeviceState.RUNNING


async def test_unacknowledged_births_and_data_are_redelivered_and_named_after_a_crash(
        mosquitto, run_driver, edge_node, monkeypatch) -> None:
    monkeypatch.setattr("drivers.mqtt.driver.STOP_ACK_GRACE", 1.0)
    device = sparkplug_device(mosquitto.port)
    crashed = run_driver(device, commit=False)  # the buffer never confirms: no ack goes out
    await crashed.wait_running()
    node = edge_node(devices=1, qos=1).connect()
    node.publish_data(3)
    await wait_until_async(lambda: len(crashed.readings()) == 6 + 3 * 5, what="births and data")
    await crashed.stop()
    assert crashed.driver._unacked_batches > 0

    restarted = run_driver(device)  # same client id: the broker hands the session's messages over again
    await wait_until_async(lambda: len(restarted.readings()) >= 6 + 3 * 5, what="the redelivery")
    counts = [r["value"] for r in restarted.readings() if r["tag"] == PARTS]
    assert counts[:4] == [1.0, 2.0, 3.0, 4.0]
    assert stats(restarted).dropped_points == 0


async def test_births_kept_across_a_restart_name_the_data_the_session_held(mosquitto, run_driver,
                                                                          edge_node) -> None:
    device = sparkplug_device(mosquitto.port)
    first = run_driver(device)
    await first.wait_running()
    node = edge_node(devices=1, qos=1).connect()
    node.publish_data(1)
    await wait_until_async(lambda: len(first.readings()) == 6 + 5, what="births and one DDATA")
    await first.stop()
    node.publish_data(3)  # the agent is away: the broker keeps these for its session
    node.publish_device_death(0)

    second = run_driver(device)
    await wait_until_async(lambda: sum(r["quality"] == "bad" for r in second.readings()) == 5, what="the DDEATH")
    assert [r["value"] for r in second.readings() if r["tag"] == PARTS] == [3.0, 4.0, 5.0, None]
    assert stats(second).dropped_points == 0 and stats(second).data_before_birth == 0
    assert node.stats.rebirths == 0  # nobody had to ask
    # the device's death is kept too: a third run does not name its data without a new birth
    await second.stop()
    node.publish_data(1)
    third = run_driver(device)
    await wait_until_async(lambda: stats(third).data_before_birth == 1, what="the data of the dead device")
    assert stats(third).dropped_points == 6  # its six metrics, not stored
    await wait_until_async(lambda: node.stats.rebirths == 1, what="the rebirth it asked for")


def test_kept_births_that_do_not_parse_are_dropped(tmp_path) -> None:
    births = BirthFiles(tmp_path / "births")
    births.save_node("node 1", sp.encode(sp.Payload(timestamp=T0, seq=0)))
    births.save_device("node 1", "Press/1", sp.encode(sp.Payload(timestamp=T0, seq=1)))
    births.save_node("node-2", b"\xff\xff not protobuf")
    [(node_id, node_birth, devices)] = births.load()
    assert (node_id, node_birth.seq, [(d, p.seq) for d, p in devices]) == ("node 1", 0, [("Press/1", 1)])
    assert not (tmp_path / "births" / "node-2").exists()
    births.forget_device("node 1", "Press/1")
    assert births.load()[0][2] == []
    births.forget_node("node 1")
    assert births.load() == []


# ---------------------------------------------------------------- the decoder alone


def test_rebirth_requests_are_rate_limited_per_edge_node() -> None:
    device = sparkplug_device(1883, edge_node="+")
    now = [1000.0]
    sent: list[str] = []
    decoder = SparkplugDecoder(device, lambda *args: 0, lambda t, p: sent.append(t), clock=lambda: now[0])
    data = sp.encode(sp.Payload(timestamp=T0, seq=1))
    rows = Rows()
    for _ in range(3):
        decoder.decode(topic("NDATA", node="a"), data, 0, rows)
    decoder.decode(topic("NDATA", node="b"), data, 0, rows)
    assert sent == [topic("NCMD", node="a"), topic("NCMD", node="b")]
    now[0] += REBIRTH_INTERVAL
    decoder.decode(topic("NDATA", node="a"), data, 0, rows)
    assert sent[-1] == topic("NCMD", node="a") and len(sent) == 3
    assert decoder.stats.data_before_birth == 5 and decoder.stats.rebirth_requests == 3


@pytest.mark.parametrize(("code", "quality"), [
    (192, "good"), (216, "good"), (64, "uncertain"), (0, "bad"), (24, "bad"), (500, "bad"),
    (0x00000000 | 0x10000, "good"), (0x40000000, "uncertain"), (0x80000000, "bad"), (0x808A0000, "bad")])
def test_quality_codes(code: int, quality: str) -> None:
    assert ("good", "uncertain", "bad")[quality_of(code)] == quality


# ---------------------------------------------------------------- the simulator's command line


def test_mos_sim_mqtt_sparkplug_publishes_what_the_independent_codec_reads(mosquitto, mqtt_recorder,
                                                                           sparkplug_js) -> None:
    recorder = mqtt_recorder(f"spBv1.0/{GROUP}/#")
    sim = subprocess.Popen([sys.executable, "-m", "simulators.mqtt", "--sparkplug", "--port", str(mosquitto.port),
                            "--rate", "20", "--devices", "2", "--seq-gap-every", "5", "--duration", "30s"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        messages = recorder.wait_for(lambda ms: sum("/DDATA/" in m.topic for m in ms) >= 12, timeout=60)
    finally:
        sim.terminate()
        sim.wait(30)
    kinds = [m.topic.split("/")[2] for m in messages]
    assert kinds[:3] == ["NBIRTH", "DBIRTH", "DBIRTH"]
    decoded = sparkplug_js.decode([bytes(m.payload) for m in messages])
    nbirth, dbirth = decoded[0], decoded[1]
    assert [m["name"] for m in nbirth["metrics"]] == ["bdSeq", "Node Control/Rebirth", "Uptime"]
    births = {m["name"]: m for m in dbirth["metrics"]}
    assert births["Temperature"]["type"] == "Double" and births["Temperature"]["properties"]["unit"]["value"] == "Cel"
    aliases = {int(m["alias"]) for d in decoded[1:3] for m in d["metrics"]}
    assert len(aliases) == 12  # unique in the node
    data = [d for d, kind in zip(decoded, kinds, strict=True) if kind == "DDATA"]
    assert all("name" not in m and int(m["alias"]) in aliases for d in data for m in d["metrics"])
    seqs = [int(d["seq"]) for d in decoded]
    steps = [(b - a) % 256 for a, b in itertools.pairwise(seqs)]
    assert 2 in steps  # the seq gap every fifth data message
    # the stop is orderly: an NDEATH with the session's bdSeq
    final = recorder.wait_for(lambda ms: any("/NDEATH/" in m.topic for m in ms), timeout=30)
    [death] = sparkplug_js.decode([bytes(m.payload) for m in final if "/NDEATH/" in m.topic])
    assert death["metrics"][0]["name"] == "bdSeq"


def test_a_device_born_again_may_renumber_its_aliases_and_transient_metrics_are_not_stored() -> None:
    device = sparkplug_device(1883)
    registered: list[tuple[str, str]] = []

    def register(pattern: Any, overrides: dict[str, str], tag: str, unit: str | None, data_type: str) -> int:
        key = (overrides["equipment"], tag)
        if key not in registered:
            registered.append(key)
        return registered.index(key)

    decoder = SparkplugDecoder(device, register, lambda t, p: None)
    rows = Rows()
    DT = sp.DataType

    def send(kind: str, seq: int, metrics: list[dict[str, Any]], device_id: str | None = "Press") -> None:
        payload = sp.Payload(timestamp=T0 + seq, seq=seq)
        for m in metrics:
            metric = sp.add_metric(payload, datatype=DT.DOUBLE, timestamp_ms=T0 + seq, **m)
            metric.is_transient = m.get("name") == "Temperature/Debug"
        decoder.decode(topic(kind, device_id if kind[0] == "D" else None), sp.encode(payload), T0 * 1_000_000, rows)

    send("NBIRTH", 0, [])
    send("DBIRTH", 1, [{"name": "Temperature", "alias": 1, "value": 1.0},
                       {"name": "Pressure", "alias": 2, "value": 2.0}])
    send("DBIRTH", 2, [{"name": "Pressure", "alias": 1, "value": 3.0},  # aliases swapped
                       {"name": "Temperature", "alias": 2, "value": 4.0},
                       {"name": "Temperature/Debug", "alias": 3, "value": 9.0}])
    send("DDATA", 3, [{"alias": 1, "value": 5.0, "with_datatype": False},
                      {"alias": 2, "value": 6.0, "with_datatype": False},
                      {"alias": 3, "value": 9.5, "with_datatype": False}])
    got = [(registered[s][1], v) for s, v in zip(rows.series, rows.values, strict=True)]
    press, temperature, pressure = asset_name_for("Press"), asset_name_for("Temperature"), asset_name_for("Pressure")
    assert {equipment for equipment, _ in registered} == {press}
    assert got == [(temperature, 1.0), (pressure, 2.0), (pressure, 3.0), (temperature, 4.0), (pressure, 5.0),
                   (temperature, 6.0)]
    assert decoder.stats.ignored_points == 2  # the transient metric's birth value and its data value
    assert decoder.stats.unknown_aliases == 0 and decoder.stats.seq_gaps == 0
    assert set(rows.quality) == {0} and rows.errors == {}


def test_a_timestamp_outside_the_plausible_window_becomes_arrival_time_uncertain() -> None:
    device = sparkplug_device(1883)
    decoder = SparkplugDecoder(device, lambda *args: 0, lambda t, p: None)
    rows = Rows()
    arrival = T0 * 1_000_000
    birth = sp.Payload(timestamp=T0, seq=0)
    sp.add_metric(birth, datatype=sp.DataType.DOUBLE, value=1.0, timestamp_ms=T0, name="Uptime", alias=1)
    data = sp.Payload(timestamp=T0, seq=1)
    sp.add_metric(data, datatype=sp.DataType.DOUBLE, value=2.0, timestamp_ms=86_400_000, alias=1,
                  with_datatype=False)  # 2 January 1970: a node whose clock was never set
    decoder.decode(topic("NBIRTH"), sp.encode(birth), arrival, rows)
    decoder.decode(topic("NDATA"), sp.encode(data), arrival + 5, rows)
    assert list(zip(rows.values, rows.stamps, rows.quality, rows.codes, strict=True)) == [
        (1.0, arrival, 0, 0), (2.0, arrival + 5, 1, CollectorCode.SOURCE_TIME_REPLACED)]
    assert rows.source_rows == [0] and rows.errors["timestamp"][0] == 1
