"""Acceptance of the northbound MQTT sink against the SPEC's "Northbound MQTT: UNS and Sparkplug B"
section and its examples, sentence by sentence, on a real Mosquitto: the configuration form, the
UNS topic and JSON, retained live values and the status topic with its will, and the Sparkplug B
3.0 edge node (births, aliases, seq, bdSeq, NDEATH will after ``kill -9``, rebirth, primary host
STATE, history). Every Sparkplug message is read by Eclipse Tahu's JavaScript codec as well as
ours; DATA messages the way a host reads them, with the datatypes their aliases had in the birth.

The sink runs in a child process (``python -m tests.test_acceptance_mqtt_sink``) where the test
kills it with SIGKILL; elsewhere in the test process."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mos_agent import sparkplug as sp
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
from tests.support.mqtt import MqttRecorder, by_type, decode_all, from_node, metric
from tests.support.servers import running

REPO = Path(__file__).resolve().parents[1]
AGENT_ID, ENTERPRISE, SITE, GROUP = "gw-changwon-01", "acme", "changwon", "changwon"
T0 = 1_767_225_600_123  # 2026-01-01T00:00:00.123Z
DT = sp.DataType

# the SPEC's device example (press-01) plus a text tag, and a device with absent levels
PRESS_ASSET = make_asset({"enterprise": ENTERPRISE, "site": SITE, "area": "stamping", "line": "line-1",
                          "cell": "cell-2", "equipment": "press-01"})
BOOTH_ASSET = make_asset({"enterprise": ENTERPRISE, "site": SITE, "area": "painting", "equipment": "booth-1"})
PRESS = [SeriesSpec(PRESS_ASSET, "hydraulic_pressure", "process", "sample", "forming", "bar", "float32"),
         SeriesSpec(PRESS_ASSET, "stroke_count", "production", "sample", "forming", None, "uint32"),
         SeriesSpec(PRESS_ASSET, "running", "equipment_state", "event", "forming", None, "bool"),
         SeriesSpec(PRESS_ASSET, "recipe", "production", "event", "forming", None, "string:16")]
BOOTH = [SeriesSpec(BOOTH_ASSET, "film_thickness", "quality", "sample", "painting", "mm", "float32")]
PRESS_METRICS = {"process/hydraulic_pressure": DT.DOUBLE, "production/stroke_count": DT.INT64,
                 "equipment_state/running": DT.BOOLEAN, "production/recipe": DT.STRING}


def readings(specs: Sequence[SeriesSpec], series: Sequence[int], values: Sequence[float], times_ms: Sequence[int],
             quality: int = Quality.GOOD, codes: int = 0, texts: dict[int, str] | None = None) -> Payload:
    """What the pipeline hands a sink: the real normaliser's line protocol (source times kept)."""
    table = SeriesTable()
    for spec in specs:
        table.add(spec)
    batch = ReadingBatch.build(series, values, np.asarray(times_ms, dtype=np.int64) * 1_000_000, quality, codes,
                               texts, source_time=True)
    chunk = Normaliser(table).process(batch)
    return Payload(chunk.points, plain=chunk.body)


def press_batch(t_ms: int = T0, pressure: float = 182.4) -> Payload:
    return readings(PRESS, [0, 1, 2, 3], [pressure, 41, 1, np.nan], [t_ms] * 4, texts={3: "PVC-3"})


def new_sink(port: int, state_dir: Path, name: str, series: Sequence[SeriesSpec] = (), **options: Any) -> MqttSink:
    config = MqttSinkConfig(type="mqtt", url=f"mqtt://127.0.0.1:{port}", **options)
    agent = AgentSection(id=AGENT_ID, enterprise=ENTERPRISE, site=SITE, state_dir=state_dir)
    return MqttSink(name, config, agent=agent, state_dir=state_dir, series=series)


@pytest.fixture
def sinks() -> Iterator[list[MqttSink]]:
    made: list[MqttSink] = []
    yield made
    for sink in made:
        sink.close()


class Child:
    """A sink in its own process, publishing the press batch once, until it is killed."""

    def __init__(self, port: int, state_dir: Path, options: dict[str, Any]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.test_acceptance_mqtt_sink", str(port),
                                      str(state_dir), json.dumps(options)], cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        if child.proc.poll() is None:
            child.kill9()


# ---------------------------------------------------------------- configuration


SPEC_SINKS = """\
agent: {id: gw-changwon-01, enterprise: acme, site: changwon, state_dir: STATE, health: "off"}
devices: devices/*.yaml
sinks:
  - type: mqtt
    name: uns
    url: mqtt://127.0.0.1:1883
    format: uns
    prefix: factory
    client_id: gw-changwon-01-uns
    username: gateway
    password_file: mqtt.password
    qos: 1
  - type: mqtt
    name: scada
    url: mqtts://broker.plant.local:8883
    format: sparkplug
    group_id: changwon
    client_id: gw-changwon-01-spb
    username: gateway
    password_file: mqtt.password
    tls: {ca_file: ca.pem, cert_file: client.pem, key_file: client.key}
    qos: 1
"""


def _validate(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "devices").mkdir(exist_ok=True)
    (tmp_path / "devices" / "press-01.yaml").write_text(yaml.safe_dump({
        "name": "press-01", "driver": "modbus", "asset": {"area": "stamping", "line": "line-1", "cell": "cell-2"},
        "stage": "forming", "connection": {"host": "127.0.0.1", "port": 502},
        "tags": [{"name": "hydraulic_pressure", "address": "hr:0", "type": "float32", "unit": "bar",
                  "category": "process"}]}))
    for name in ("mqtt.password", "ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("x\n")
    (tmp_path / "agent.yaml").write_text(text.replace("STATE", str(tmp_path / "state")))
    return subprocess.run([str(Path(sys.executable).parent / "mos-agent"), "validate", "-c",
                           str(tmp_path / "agent.yaml")], capture_output=True, text=True, timeout=120, check=False)


def _line(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_the_spec_configuration_validates_and_mistakes_are_located(tmp_path: Path) -> None:
    ok = _validate(tmp_path, SPEC_SINKS)
    assert ok.returncode == 0, ok.stderr
    assert "mqtt://127.0.0.1:1883" in ok.stdout and "mqtts://broker.plant.local:8883" in ok.stdout
    text = (SPEC_SINKS.replace("format: uns", "format: unss").replace("group_id: changwon", "grup_id: changwon")
            .replace("url: mqtt://127.0.0.1:1883", "url: http://127.0.0.1:1883")
            .replace("url: mqtts://broker.plant.local:8883", "url: mqtt://broker.plant.local:1883"))
    bad = _validate(tmp_path, text)
    assert bad.returncode == 2
    errors = bad.stderr.splitlines()
    where = str(tmp_path / "agent.yaml")
    assert f"{where}:{_line(text, 'http://')}:10: sinks[0].url: url must be mqtt://HOST[:PORT] or " \
           f"mqtts://HOST[:PORT], got 'http://127.0.0.1:1883'" in errors, errors
    assert any(e.startswith(f"{where}:{_line(text, 'unss')}:13: sinks[0].format:") and "did you mean 'uns'?" in e
               for e in errors), errors
    assert any(e.startswith(f"{where}:{_line(text, 'grup_id')}:5: sinks[1]: unknown key 'grup_id'")
               and "did you mean 'group_id'?" in e for e in errors), errors
    # TLS files with a plain mqtt:// url would not be used and the password would travel in clear
    assert any(e.startswith(f"{where}:{_line(text, 'tls:')}:10: sinks[1].tls:") and "mqtts://" in e
               for e in errors), errors


def _pki(directory: Path) -> dict[str, Path]:
    """A throw-away CA, a broker certificate for 127.0.0.1 and a client certificate, by openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: no test certificates")
    files = {name: directory / name for name in ("ca.key", "ca.pem", "san.cnf")}
    files["san.cnf"].write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(files["ca.key"]), "-out",
        str(files["ca.pem"]), "-days", "2", "-subj", "/CN=acceptance CA")
    for who in ("broker", "client"):
        key, csr, pem = (directory / f"{who}.{ext}" for ext in ("key", "csr", "pem"))
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={who}")
        run("x509", "-req", "-in", str(csr), "-CA", str(files["ca.pem"]), "-CAkey", str(files["ca.key"]),
            "-CAcreateserial", "-out", str(pem), "-days", "2", "-extfile", str(files["san.cnf"]))
        files[f"{who}.key"], files[f"{who}.pem"] = key, pem
    return files


def test_mqtts_with_a_client_certificate_and_a_password_file(tmp_path: Path, sinks) -> None:
    pki = _pki(tmp_path)
    tls_port = free_port()
    (tmp_path / "passwords").write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(tmp_path / "passwords"), "gateway", "s3cret-pw"], check=True,
                   capture_output=True, timeout=60)
    (tmp_path / "mqtt.password").write_text("s3cret-pw\n")
    # a client presenting a user name must give its password (the test's anonymous recorder needs none)
    conf = (f"password_file {tmp_path / 'passwords'}\nlistener {tls_port} 127.0.0.1\ncafile {pki['ca.pem']}\n"
            f"certfile {pki['broker.pem']}\nkeyfile {pki['broker.key']}\nrequire_certificate true\n")
    with running(Mosquitto.start(tmp_path / "broker", extra_conf=conf)) as broker:
        recorder = MqttRecorder(broker.port, "factory/#")  # the plain listener, for the test
        try:
            agent = AgentSection(id=AGENT_ID, enterprise=ENTERPRISE, site=SITE, state_dir=tmp_path / "state")
            config = MqttSinkConfig(type="mqtt", url=f"mqtts://127.0.0.1:{tls_port}", format="uns", prefix="factory",
                                    client_id="gw-uns", username="gateway",
                                    password_file=tmp_path / "mqtt.password",
                                    tls={"ca_file": pki["ca.pem"], "cert_file": pki["client.pem"],
                                         "key_file": pki["client.key"]})
            sinks.append(sink := MqttSink("uns", config, agent=agent, state_dir=tmp_path / "state"))
            sink.write(press_batch())
            got = recorder.wait_for(lambda ms: any(m.topic.endswith("/process/hydraulic_pressure") for m in ms))
            assert any(json.loads(m.payload).get("value") == 182.4 for m in got)
            assert sink.status().connected and "s3cret-pw" not in repr(sink.status())
        finally:
            recorder.close()


# ---------------------------------------------------------------- uns


def test_uns_topics_json_retained_live_values_and_unretained_backlog(mosquitto, mqtt_recorder, sinks,
                                                                    tmp_path: Path) -> None:
    watcher = mqtt_recorder("factory/#")
    sinks.append(sink := new_sink(mosquitto.port, tmp_path / "state", "uns", format="uns", prefix="factory"))
    sink.write(press_batch())
    sink.write(readings(PRESS, [0], [np.nan], [T0 + 1], quality=Quality.BAD, codes=1001))
    sink.write(readings(BOOTH, [0], [35.5], [T0 + 2]))
    sink.write(readings(PRESS, [0], [150.0], [T0 - 60_000]), kind=BatchKind.BACKLOG)  # older, after an outage
    sink.write(readings(BOOTH, [0], [30.0], [T0 - 60_000]), kind=BatchKind.BACKLOG)
    got = watcher.wait_for(lambda ms: len([m for m in ms if "/_agent/" not in m.topic]) >= 8)
    data = [m for m in got if "/_agent/" not in m.topic]
    press = "factory/acme/changwon/stamping/line-1/cell-2/press-01"
    booth = "factory/acme/changwon/painting/booth-1"  # no line, no cell: skipped
    assert [m.topic for m in data] == [
        f"{press}/process/hydraulic_pressure", f"{press}/production/stroke_count", f"{press}/equipment_state/running",
        f"{press}/production/recipe", f"{press}/process/hydraulic_pressure", f"{booth}/quality/film_thickness",
        f"{press}/process/hydraulic_pressure", f"{booth}/quality/film_thickness"]
    assert all(m.qos == 1 for m in data)
    bodies = [json.loads(m.payload) for m in data]
    keys = ["value", "unit", "quality", "quality_code", "kind", "stage", "timestamp", "timestamp_ms"]
    assert bodies[0] == {"value": 182.4, "unit": "bar", "quality": "good", "quality_code": 0, "kind": "sample",
                         "stage": "forming", "timestamp": "2026-01-01T00:00:00.123Z", "timestamp_ms": T0}
    assert all(list(b) == keys for i, b in enumerate(bodies) if i != 3)
    assert list(bodies[3]) == ["text", *keys[1:]] and bodies[3]["text"] == "PVC-3"
    assert (bodies[1]["value"], bodies[2]["value"]) == (41, 1)
    assert bodies[4]["value"] is None and (bodies[4]["quality"], bodies[4]["quality_code"]) == ("bad", 1001)
    for body in bodies:  # RFC 3339, the same instant as timestamp_ms
        assert datetime.fromisoformat(body["timestamp"]).timestamp() * 1000 == pytest.approx(body["timestamp_ms"])
    # a new subscriber gets every topic's newest live value, retained; replayed backlog was not retained
    newcomer = mqtt_recorder("factory/+/+/+/+/+/+/process/#")
    [retained] = newcomer.wait_for(lambda ms: len(ms) >= 1)
    assert retained.retain and json.loads(retained.payload)["timestamp_ms"] == T0 + 1
    [booth_retained] = mqtt_recorder(f"{booth}/#").wait_for(lambda ms: len(ms) >= 1)
    assert booth_retained.retain and json.loads(booth_retained.payload)["value"] == 35.5


def test_uns_status_topic_is_retained_online_with_an_offline_will(mosquitto, mqtt_recorder, children,
                                                                  tmp_path: Path) -> None:
    status = f"factory/{ENTERPRISE}/{SITE}/_agent/{AGENT_ID}/status"
    watcher = mqtt_recorder(status)
    children.append(child := Child(mosquitto.port, tmp_path / "state", {"format": "uns", "prefix": "factory"}))
    watcher.wait_for(lambda ms: len(ms) >= 1)
    [online] = mqtt_recorder(status).wait_for(lambda ms: len(ms) >= 1)
    assert online.retain and json.loads(online.payload) == {"online": True}
    child.kill9()
    watcher.wait_for(lambda ms: json.loads(ms[-1].payload) == {"online": False})
    [offline] = mqtt_recorder(status).wait_for(lambda ms: len(ms) >= 1)
    assert offline.retain and json.loads(offline.payload) == {"online": False}


# ---------------------------------------------------------------- sparkplug


def _births_and_data(messages: Sequence[Any], sparkplug_js: Any) -> tuple[list[Any], dict[int, str], list[dict]]:
    """Decoded messages, the aliases the births named, and every DDATA as the independent codec
    reads it with the birth's datatypes."""
    decoded = decode_all(messages, sparkplug_js)
    names: dict[int, str] = {}
    types: dict[int, int] = {}
    for birth in by_type(decoded, "DBIRTH"):
        names.update({m.alias: m.name for m in birth.ours.metrics})
        types.update({m.alias: m.datatype for m in birth.ours.metrics})
    data = by_type(decoded, "DDATA")
    typed = sparkplug_js.decode_data([bytes(d.ours.SerializeToString()) for d in data], types) if data else []
    return decoded, names, typed


def test_sparkplug_edge_node_births_data_will_and_bdseq(mosquitto, mqtt_recorder, children, sparkplug_js,
                                                        tmp_path: Path) -> None:
    recorder = mqtt_recorder("spBv1.0/#")
    options = {"format": "sparkplug", "group_id": GROUP}
    children.append(child := Child(mosquitto.port, tmp_path / "state", options))
    messages = recorder.wait_for(lambda ms: any("/DDATA/" in m.topic for m in ms))
    decoded, names, typed = _births_and_data(messages, sparkplug_js)
    assert [(str(d.topic), d.seq) for d in decoded] == [
        (f"spBv1.0/{GROUP}/NBIRTH/{AGENT_ID}", 0), (f"spBv1.0/{GROUP}/DBIRTH/{AGENT_ID}/press-01", 1),
        (f"spBv1.0/{GROUP}/DBIRTH/{AGENT_ID}/booth-1", 2), (f"spBv1.0/{GROUP}/DDATA/{AGENT_ID}/press-01", 3)]
    nbirth, press_birth, booth_birth, _ = decoded
    # NBIRTH: bdSeq and Node Control/Rebirth (false)
    node_metrics = {m["name"]: (m["type"], m["value"]) for m in nbirth.js["metrics"]}
    assert node_metrics == {"bdSeq": ("Int64", "0"), "Node Control/Rebirth": ("Boolean", False)}
    # one DBIRTH per device with every metric: {category}/{tag}, alias, datatype, unit and quality
    assert {m["name"]: m["type"] for m in press_birth.js["metrics"]} == {
        n: DT(t).name.title() for n, t in PRESS_METRICS.items()}
    assert [m["name"] for m in booth_birth.js["metrics"]] == ["quality/film_thickness"]
    births = [*press_birth.js["metrics"], *booth_birth.js["metrics"]]
    assert len({m["alias"] for m in births}) == len(births) == 5  # unique in the edge node
    for m in births:
        properties = m["properties"]
        assert properties["quality"] == {"type": "String", "value": "good"}, m
    units = {m["name"]: m["properties"].get("unit") for m in births}
    assert units["process/hydraulic_pressure"] == {"type": "String", "value": "bar"}
    assert units["quality/film_thickness"] == {"type": "String", "value": "mm"}
    assert units["production/stroke_count"] is None
    assert all(d.qos == 0 and not d.retain for d in decoded[:3])
    # DDATA by alias only, values as the birth's datatypes say
    [ddata] = typed
    assert all("name" not in m for m in ddata["metrics"])
    assert {names[int(m["alias"])]: (m["value"], int(m["timestamp"])) for m in ddata["metrics"]} == {
        "process/hydraulic_pressure": (182.4, T0), "production/stroke_count": ("41", T0),
        "equipment_state/running": (True, T0), "production/recipe": ("PVC-3", T0)}
    assert not any(m.get("isHistorical") for m in ddata["metrics"])

    # kill -9: the broker publishes the will, NDEATH (QoS 1, not retained, no seq) with the NBIRTH's bdSeq
    child.kill9()
    messages = recorder.wait_for(lambda ms: any("/NDEATH/" in m.topic for m in ms))
    [ndeath] = by_type(decode_all(messages, sparkplug_js), "NDEATH")
    assert str(ndeath.topic) == f"spBv1.0/{GROUP}/NDEATH/{AGENT_ID}"
    assert ndeath.qos == 1 and not ndeath.retain and ndeath.seq is None
    assert [(m["name"], m["type"], m["value"]) for m in ndeath.js["metrics"]] == [("bdSeq", "Int64", "0")]
    # bdSeq is kept in state_dir: the next session counts on from it
    children.append(Child(mosquitto.port, tmp_path / "state", options))
    messages = recorder.wait_for(lambda ms: len([m for m in ms if "/NBIRTH/" in m.topic]) == 2)
    second = by_type(decode_all(messages, sparkplug_js), "NBIRTH")[1]
    assert second.seq == 0 and sp.get_value(metric(second.ours, "bdSeq")) == 1
    assert any(p.name.endswith(".json") and '"bdSeq": 1' in p.read_text() for p in (tmp_path / "state").iterdir())


def test_sparkplug_rebirth_seq_wrap_history_and_primary_host(mosquitto, mqtt_recorder, sinks, sparkplug_js,
                                                             tmp_path: Path) -> None:
    recorder = mqtt_recorder("spBv1.0/#")
    sinks.append(sink := new_sink(mosquitto.port, tmp_path / "state", "scada", [*PRESS, *BOOTH],
                                  format="sparkplug", group_id=GROUP, primary_host_id="scada-host"))
    # nothing before the primary host says it is online (Sparkplug 3.0 JSON STATE)
    with pytest.raises(SinkRetryable, match="primary host"):
        sink.write(press_batch())
    assert from_node(recorder.snapshot()) == []
    recorder.publish("spBv1.0/STATE/scada-host", json.dumps({"online": True, "timestamp": 1}).encode(),
                     retain=True)
    recorder.wait_for(lambda ms: len(from_node(ms)) >= 3)
    for i in range(254):  # 3 births + 254 DDATA: seq runs to 255 and wraps to 0
        sink.write(readings(BOOTH, [0], [float(i)], [T0 + i]))
    sink.write(readings(BOOTH, [0], [1.0], [T0 - 5000]), kind=BatchKind.BACKLOG)
    # a host asks for a rebirth (NCMD encoded by the independent codec)
    [command] = sparkplug_js.encode([{"timestamp": 1, "metrics": [
        {"name": "Node Control/Rebirth", "type": "Boolean", "value": True}]}])
    recorder.publish(f"spBv1.0/{GROUP}/NCMD/{AGENT_ID}", command, qos=0)
    messages = recorder.wait_for(lambda ms: len(from_node(ms)) >= 3 + 255 + 3)
    decoded, _, typed = _births_and_data(messages, sparkplug_js)
    assert [d.seq for d in decoded[:258]] == [n % 256 for n in range(258)]
    assert [m["value"] for d in typed[:254] for m in d["metrics"]] == list(range(254))
    [history] = typed[254]["metrics"]
    assert history["isHistorical"] is True and int(history["timestamp"]) == T0 - 5000
    rebirth = decoded[258:261]
    assert [(d.type, d.seq) for d in rebirth] == [("NBIRTH", 0), ("DBIRTH", 1), ("DBIRTH", 2)]
    assert sp.get_value(metric(rebirth[0].ours, "bdSeq")) == sp.get_value(metric(decoded[0].ours, "bdSeq"))
    # the rebirth reports the newest live value, not the replayed one
    [thickness] = rebirth[2].js["metrics"]
    assert thickness["value"] == 253.0 and int(thickness["timestamp"]) == T0 + 253


def _child(argv: list[str]) -> None:
    port, state_dir, options = int(argv[0]), Path(argv[1]), json.loads(argv[2])
    sink = new_sink(port, state_dir, options.get("format", "sink"), [*PRESS, *BOOTH], **options)
    sink.write(press_batch())
    print("published", flush=True)
    time.sleep(3600)


if __name__ == "__main__":
    _child(sys.argv[1:])
