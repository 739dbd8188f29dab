"""The Sparkplug B codec: generated code matches the .proto, values round-trip through ours and
through an independent codec (Eclipse Tahu's JavaScript sparkplug-payload) both ways, topics."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mos_agent import sparkplug as sp
from mos_agent.sparkplug import generate

DT = sp.DataType


def test_committed_module_is_what_the_proto_generates(tmp_path: Path) -> None:
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools is not installed (pip install -e '.[test]')")
    for fresh in generate.generate(tmp_path):
        committed = generate.HERE / fresh.name
        assert fresh.read_text() == committed.read_text(), (
            f"{committed.name} is stale: run python -m mos_agent.sparkplug.generate")


def test_zero_seq_and_alias_are_on_the_wire() -> None:
    # proto2 keeps presence: a proto3 codec would drop these zeros and a host would see no seq
    payload = sp.Payload(timestamp=1, seq=0)
    sp.add_metric(payload, alias=0, datatype=DT.INT64, value=0, timestamp_ms=1, with_datatype=False)
    data = sp.encode(payload)
    assert b"\x18\x00" in data  # Payload.seq (field 3, varint) = 0
    decoded = sp.decode(data)
    assert decoded.HasField("seq") and decoded.seq == 0
    metric = decoded.metrics[0]
    assert metric.HasField("alias") and metric.alias == 0
    assert not metric.HasField("datatype") and not metric.HasField("name")
    assert sp.get_value(metric, DT.INT64) == 0


SCALARS: list[tuple[int, object]] = [
    (DT.INT8, -128), (DT.INT16, -300), (DT.INT32, -2_000_000_000), (DT.INT32, 7),
    (DT.INT64, -(2**62)), (DT.INT64, 2**40), (DT.UINT8, 255), (DT.UINT16, 65535),
    (DT.UINT64, 2**63 + 5), (DT.FLOAT, 1.5), (DT.DOUBLE, -0.1), (DT.BOOLEAN, True), (DT.BOOLEAN, False),
    (DT.STRING, "Ünïcode ✓"), (DT.TEXT, "text"), (DT.DATETIME, 1_700_000_000_123), (DT.DOUBLE, None),
]


def _birth_with_every_type() -> sp.Payload:
    payload = sp.Payload(timestamp=1_700_000_000_000, seq=0)
    for alias, (datatype, value) in enumerate(SCALARS):
        sp.add_metric(payload, name=f"m{alias}", alias=alias, datatype=datatype, value=value,
                      timestamp_ms=1_700_000_000_000 + alias,
                      properties={"unit": (DT.STRING, "bar"), sp.QUALITY_PROPERTY: (DT.INT32, sp.QUALITY_GOOD)})
    return payload


def test_values_round_trip_through_our_codec() -> None:
    decoded = sp.decode(sp.encode(_birth_with_every_type()))
    assert [sp.get_value(m) for m in decoded.metrics] == [v for _, v in SCALARS]
    assert decoded.metrics[16].is_null and decoded.metrics[16].WhichOneof("value") is None
    assert sp.get_properties(decoded.metrics[0].properties) == {"unit": "bar", "Quality": 192}


def test_the_independent_codec_reads_what_we_write(sparkplug_js) -> None:
    [js] = sparkplug_js.decode([sp.encode(_birth_with_every_type())])
    assert js["seq"] == "0" and js["timestamp"] == "1700000000000"
    for alias, ((datatype, value), metric) in enumerate(zip(SCALARS, js["metrics"], strict=True)):
        assert metric["name"] == f"m{alias}" and metric["alias"] == str(alias)
        assert metric["type"] == {1: "Int8", 2: "Int16", 3: "Int32", 4: "Int64", 5: "UInt8", 6: "UInt16",
                                  8: "UInt64", 9: "Float", 10: "Double", 11: "Boolean", 12: "String",
                                  13: "DateTime", 14: "Text"}[datatype]
        got = metric["value"]
        if isinstance(got, str) and datatype in (DT.INT64, DT.UINT64, DT.DATETIME):
            got = int(got)
        assert got == value, (datatype, metric)
        assert metric["properties"]["unit"] == {"type": "String", "value": "bar"}
        assert metric["properties"]["Quality"] == {"type": "Int32", "value": 192}


def test_we_read_what_the_independent_codec_writes(sparkplug_js) -> None:
    [data] = sparkplug_js.encode([{
        "timestamp": 1_700_000_000_000, "seq": 0,
        "metrics": [
            {"name": "bdSeq", "type": "Int64", "value": 3, "timestamp": 1},
            {"name": "press/hydraulic_pressure", "alias": 0, "type": "Double", "value": 12.5, "timestamp": 2,
             "properties": {"unit": {"type": "String", "value": "bar"}}},
            {"name": "neg", "alias": 1, "type": "Int32", "value": -5, "timestamp": 3},
            {"name": "flag", "alias": 2, "type": "Boolean", "value": False, "timestamp": 4},
            {"name": "s", "alias": 3, "type": "String", "value": "on", "timestamp": 5},
        ],
    }])
    payload = sp.decode(data)
    assert payload.HasField("seq") and payload.seq == 0
    assert [(m.name, sp.get_value(m)) for m in payload.metrics] == [
        ("bdSeq", 3), ("press/hydraulic_pressure", 12.5), ("neg", -5), ("flag", False), ("s", "on")]
    assert [m.alias for m in payload.metrics[1:]] == [0, 1, 2, 3]
    assert sp.get_properties(payload.metrics[1].properties) == {"unit": "bar"}


def test_a_value_the_datatype_cannot_hold_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        sp.add_metric(sp.Payload(), datatype=DT.UINT32, value=-1, timestamp_ms=0)
    with pytest.raises(sp.UnsupportedDataType):
        sp.add_metric(sp.Payload(), datatype=DT.DATASET, value=1, timestamp_ms=0)


def test_topics_format_and_parse() -> None:
    assert sp.topic("plant", sp.MessageType.NBIRTH, "gw-1") == "spBv1.0/plant/NBIRTH/gw-1"
    assert sp.topic("plant", "DDATA", "gw-1", "press-01") == "spBv1.0/plant/DDATA/gw-1/press-01"
    parsed = sp.parse_topic("spBv1.0/plant/DBIRTH/gw-1/press-01")
    assert parsed == sp.Topic("plant", sp.MessageType.DBIRTH, "gw-1", "press-01")
    assert str(parsed) == "spBv1.0/plant/DBIRTH/gw-1/press-01"
    assert parsed.message_type.is_device and not sp.MessageType.NCMD.is_device


@pytest.mark.parametrize(("text", "message"), [
    ("spAv1.0/plant/NBIRTH/gw", "not a Sparkplug B topic"),
    ("spBv1.0/plant/NBIRTH", "not a Sparkplug B topic"),
    ("spBv1.0/plant/NBORTH/gw", "unknown Sparkplug message type 'NBORTH'"),
    ("spBv1.0/plant/DDATA/gw", "needs a device id"),
    ("spBv1.0/plant/NDATA/gw/dev", "has no device id"),
    ("spBv1.0//NDATA/gw", "group id '' must not be empty"),
])
def test_bad_topics_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sp.parse_topic(text)


def test_ids_with_topic_wildcards_are_refused() -> None:
    assert sp.id_problem("line+1") is not None and sp.id_problem("gw-1") is None
    with pytest.raises(ValueError, match="must not contain '#'"):
        sp.topic("plant#", "NBIRTH", "gw")


def test_host_state_json() -> None:
    assert sp.parse_state_topic("spBv1.0/STATE/scada-1") == "scada-1"
    assert sp.parse_state_topic("spBv1.0/plant/NBIRTH/gw") is None
    assert sp.state_topic("scada-1") == "spBv1.0/STATE/scada-1"
    state = sp.parse_host_state(b'{"online": true, "timestamp": 1700000000000}')
    assert state == sp.HostState(True, 1_700_000_000_000)
    assert sp.parse_host_state(state.encode()) == state
    for bad in (b"ONLINE", b'{"online": "yes", "timestamp": 1}', b'{"online": true}', b"[]"):
        with pytest.raises(ValueError):
            sp.parse_host_state(bad)
