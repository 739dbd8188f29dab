"""Acceptance of Sparkplug B in (issue "Sparkplug B in: read other edge nodes through the MQTT
driver") with the issue's own device file, on a real Mosquitto, every payload encoded by Eclipse
Tahu's JavaScript codec (independent of ours): births teach names, aliases, datatypes and units;
data by alias with source time and quality; NDEATH/DDEATH mark the series bad with "not
connected"; an unknown alias, a seq gap and data before birth ask for a rebirth (NCMD
``Node Control/Rebirth`` = true) and store nothing they cannot name; malformed protobuf is counted
and the flow goes on; metrics matching no pattern are ignored and counted."""

from __future__ import annotations

from typing import Any

import yaml

from drivers.mqtt.config import MqttDevice
from mos_agent import sparkplug as sp
from mos_agent.taxonomy import DEFAULT_STAGES, CollectorCode, asset_name_for
from tests.support.waiting import wait_until_async

ISSUE_DEVICE = """\
name: node-7
driver: mqtt
asset: {area: assembly, line: line-2}
stage: assembly
connection: {host: 10.0.0.9, port: 1883, client_id: gw-01-sp, qos: 1}
format: sparkplug
sparkplug: {group_id: plant-b, edge_node: node-7}   # edge_node may be "+" for every node
tags:                                   # metric name patterns (globs) -> taxonomy
  - {metric: "Temp*", category: environment, unit: Cel}
  - {metric: "Parts*", category: production}
"""
T0 = 1_767_225_600_000  # ms
BASE = "acme/changwon/assembly/line-2"
NOT_CONNECTED = int(CollectorCode.NOT_CONNECTED)


def issue_device(port: int, edge_node: str = "node-7") -> MqttDevice:
    data = yaml.safe_load(ISSUE_DEVICE.replace("10.0.0.9", "127.0.0.1").replace("port: 1883", f"port: {port}"))
    data["sparkplug"]["edge_node"] = edge_node
    return MqttDevice.model_validate(data, context={"stages": list(DEFAULT_STAGES)})


def node_birth(seq: int = 0, bd_seq: int = 4, metrics: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    return {"timestamp": T0, "seq": seq, "metrics": [
        {"name": "bdSeq", "type": "Int64", "value": bd_seq, "timestamp": T0},
        {"name": "Node Control/Rebirth", "type": "Boolean", "value": False, "timestamp": T0}, *metrics]}


def topic(kind: str, node: str = "node-7", device: str | None = None) -> str:
    return sp.topic("plant-b", kind, node, device)


async def test_the_issue_device_births_data_quality_deaths_and_bad_payloads(mosquitto, publisher, run_driver,
                                                                           sparkplug_js) -> None:
    running = run_driver(issue_device(mosquitto.port))
    await running.wait_running()
    payloads = sparkplug_js.encode([
        node_birth(metrics=({"name": "Temp Cabinet", "alias": 1, "type": "Float", "value": 30.5, "timestamp": T0},)),
        {"timestamp": T0 + 1, "seq": 1, "metrics": [
            {"name": "Temperature/Oil", "alias": 10, "type": "Double", "value": 40.25, "timestamp": T0 + 1,
             "properties": {"unit": {"type": "String", "value": "degC"}}},
            {"name": "Parts Made", "alias": 11, "type": "Int64", "value": 100, "timestamp": T0 + 1},
            {"name": "Speed", "alias": 12, "type": "Double", "value": 3.0, "timestamp": T0 + 1}]},
        {"timestamp": T0 + 2, "seq": 2, "metrics": [  # DDATA by alias, as a node sends it
            {"alias": 10, "type": "Double", "value": 41.5, "timestamp": T0 + 2},
            {"alias": 11, "type": "Int64", "value": 101, "timestamp": T0 + 2},
            {"alias": 12, "type": "Double", "value": 3.5, "timestamp": T0 + 2}]},
        {"timestamp": T0 + 3, "seq": 3, "metrics": [  # OPC UA StatusCodes in the Quality property
            {"alias": 10, "type": "Double", "value": 42.0, "timestamp": T0 + 3,
             "properties": {"Quality": {"type": "UInt32", "value": 0x40920000}}},
            {"alias": 11, "type": "Int64", "value": None, "timestamp": T0 + 3}]},
        {"timestamp": T0 + 4, "seq": 4, "metrics": [  # the specification's Int32 Quality, a Bad code
            {"alias": 10, "type": "Double", "value": 43.0, "timestamp": T0 + 4,
             "properties": {"Quality": {"type": "Int32", "value": 0x808A0000 - (1 << 32)}}}]},
        {"timestamp": T0 + 5, "seq": 5, "metrics": []},  # DDEATH
        {"timestamp": T0 + 6, "metrics": [{"name": "bdSeq", "type": "Int64", "value": 4, "timestamp": T0 + 6}]},
    ])
    nbirth, dbirth, ddata, uncertain, bad, ddeath, ndeath = payloads
    publisher.send(topic("NBIRTH"), nbirth)
    publisher.send(topic("DBIRTH", device="Station 4"), dbirth)
    publisher.send(topic("DDATA", device="Station 4"), b"\x0a\xff\xff garbage, not protobuf")
    publisher.send(topic("DDATA", device="Station 4"), ddata)
    publisher.send(topic("DDATA", device="Station 4"), uncertain)
    publisher.send(topic("DDATA", device="Station 4"), bad)
    await wait_until_async(lambda: len(running.readings()) >= 8, what="births and data")
    publisher.send(topic("DDEATH", device="Station 4"), ddeath)
    await wait_until_async(lambda: len(running.readings()) >= 10, what="the DDEATH")
    publisher.send(topic("NDEATH"), ndeath)
    await wait_until_async(lambda: len(running.readings()) >= 11, what="the NDEATH")

    station, node = asset_name_for("Station 4"), "node-7"
    oil, cabinet, parts = (asset_name_for(n) for n in ("Temperature/Oil", "Temp Cabinet", "Parts Made"))
    got = [(r["asset"], r["tag"], r["value"], r["quality"], r["code"], r["time"] // 1_000_000)
           for r in running.readings()]
    assert got[:10] == [
        (f"{BASE}/{node}", cabinet, 30.5, "good", 0, T0),  # node metric: the edge node is the equipment
        (f"{BASE}/{station}", oil, 40.25, "good", 0, T0 + 1),  # equipment = device id
        (f"{BASE}/{station}", parts, 100.0, "good", 0, T0 + 1),
        (f"{BASE}/{station}", oil, 41.5, "good", 0, T0 + 2),
        (f"{BASE}/{station}", parts, 101.0, "good", 0, T0 + 2),
        (f"{BASE}/{station}", oil, 42.0, "uncertain", 0x40920000, T0 + 3),
        (f"{BASE}/{station}", parts, None, "bad", CollectorCode.NOT_A_NUMBER, T0 + 3),  # is_null
        (f"{BASE}/{station}", oil, 43.0, "bad", 0x808A0000, T0 + 4),
        (f"{BASE}/{station}", oil, None, "bad", NOT_CONNECTED, T0 + 5),  # DDEATH
        (f"{BASE}/{station}", parts, None, "bad", NOT_CONNECTED, T0 + 5),
    ]
    assert got[10:] == [(f"{BASE}/{node}", cabinet, None, "bad", NOT_CONNECTED, got[10][5])]  # NDEATH: arrival
    specs = {spec.tag: spec for spec in running.ctx.series.specs}
    assert (specs[oil].category, specs[oil].unit) == ("environment", "Cel")  # the pattern's unit
    assert (specs[parts].category, specs[parts].unit) == ("production", None)
    status = running.ctx.status
    assert status.errors.get("payload") == 1 and status.state.value == "running"
    st = status.sparkplug
    assert st.unmatched_metrics == 1 and st.unmatched_examples == ["Speed"] and st.ignored_points == 2
    assert st.births == 2 and st.deaths == 2 and st.edge_nodes_online == 0
    assert st.rebirth_requests == 1  # the one on connecting: the named node's births were not known yet


async def test_unknown_alias_seq_gap_and_data_before_birth_ask_for_a_rebirth(mosquitto, publisher, run_driver,
                                                                           mqtt_recorder, sparkplug_js) -> None:
    commands = mqtt_recorder("spBv1.0/plant-b/NCMD/#")
    running = run_driver(issue_device(mosquitto.port, edge_node="+"))
    await running.wait_running()
    temp = {"name": "Temp", "alias": 1, "type": "Double", "value": 20.0, "timestamp": T0}

    def data(seq: int, alias: int, value: float) -> dict[str, Any]:
        return {"timestamp": T0 + seq, "seq": seq, "metrics": [
            {"alias": alias, "type": "Double", "value": value, "timestamp": T0 + seq}]}

    birth, unknown, in_order, gap, early = sparkplug_js.encode([
        node_birth(metrics=(temp,)), data(1, 9, 1.0), data(1, 1, 21.0), data(3, 1, 22.0), data(7, 1, 9.0)])
    publisher.send(topic("NBIRTH", node="node-a"), birth)
    publisher.send(topic("NDATA", node="node-a"), unknown)  # alias 9: no birth named it
    publisher.send(topic("NBIRTH", node="node-b"), birth)
    publisher.send(topic("NDATA", node="node-b"), in_order)
    publisher.send(topic("NDATA", node="node-b"), gap)  # seq 2 is missing
    publisher.send(topic("NDATA", node="node-c"), early)  # no birth yet
    await wait_until_async(lambda: len(commands.snapshot()) >= 3 and len(running.readings()) >= 4,
                           what="three rebirth requests and the readings that could be named")
    received = commands.snapshot()
    assert sorted(m.topic for m in received) == [topic("NCMD", node=n) for n in ("node-a", "node-b", "node-c")]
    assert all(m.qos == 0 and not m.retain for m in received)
    for decoded in sparkplug_js.decode([bytes(m.payload) for m in received]):
        assert [(m["name"], m["type"], m["value"]) for m in decoded["metrics"]] == [
            ("Node Control/Rebirth", "Boolean", True)]
    st = running.ctx.status.sparkplug
    assert (st.unknown_aliases, st.seq_gaps, st.data_before_birth, st.rebirth_requests) == (1, 1, 1, 3)
    # only what could be named is stored: the births and node-b's data (the message after the gap
    # still names its metric by alias); nothing of node-c, nothing for alias 9
    got = sorted((r["asset"].split("/")[-1], r["value"]) for r in running.readings())
    assert got == [("node-a", 20.0), ("node-b", 20.0), ("node-b", 21.0), ("node-b", 22.0)]
    assert st.dropped_points == 2
