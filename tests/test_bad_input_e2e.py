"""End to end, the agent in this process (driver → normaliser → buffer → sqlite history) against a
real Mosquitto and a real OPC UA server: bad input from one source becomes a flagged or bad-quality
row, the readings beside it are stored, and no driver restarts.

Each of these crash-looped a device before: a far-future source timestamp (OverflowError building
the int64 time column), text that is not valid Unicode (UnicodeEncodeError in the encoder), deeply
nested JSON (RecursionError counted as an internal error), a long browse path (a tag name over the
limit at every connect); and two Korean equipment names captured from topics merged into one."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mos_agent.config.loader import load_config
from mos_agent.localservers import free_port
from mos_agent.pipeline import Agent
from mos_agent.taxonomy import asset_name_for
from simulators.opcua import CncSimulator, SimulatorConfig
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.slow

EUC_KR = "온도 센서".encode("cp949")
AS_ASYNCUA_DECODES = EUC_KR.decode("utf-8", "surrogateescape")  # how a String holding those bytes arrives


@asynccontextmanager
async def agent_running(tmp_path: Path, device_yaml: str) -> AsyncIterator[Agent]:
    (tmp_path / "devices").mkdir()
    (tmp_path / "devices" / "device.yaml").write_text(device_yaml, encoding="utf-8")
    config = tmp_path / "agent.yaml"
    config.write_text(
        "agent:\n  id: gw-test\n  site: changwon\n"
        f"  state_dir: {tmp_path / 'state'}\n  health: 'off'\n"
        "devices: devices/*.yaml\n"
        "buffer: {commit_interval: 50ms}\n"
        "sinks:\n  - {type: sqlite, flush_interval: 50ms}\n")
    agent = Agent(load_config(config))
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


def stored(agent: Agent) -> list[dict[str, Any]]:
    path = agent.state_dir / "history.sqlite"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT s.equipment, s.tag, p.value, p.text, p.quality, p.quality_code, p.ts_ns "
            "FROM points p JOIN series s ON s.id = p.series_id ORDER BY p.ts_ns").fetchall()
    except sqlite3.OperationalError:  # the sink has not created its tables yet
        return []
    finally:
        conn.close()
    keys = ("equipment", "tag", "value", "text", "quality", "code", "time")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def no_restart(agent: Agent, caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if "driver stopped unexpectedly" in r.getMessage()]
    for runtime in agent.devices.values():
        assert "driver failed" not in (runtime.ctx.status.last_error or "")
        assert "internal" not in runtime.ctx.status.errors


def publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bad-input-publisher")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


MQTT_DEVICE = """\
name: env-sensors
driver: mqtt
asset: {{area: utilities}}
stage: utility
connection: {{host: 127.0.0.1, port: {port}}}
tags:
  - {{name: temperature, topic: "plant/{{equipment}}/env", json: $.t, timestamp: $.ts, category: environment}}
  - {{name: label, topic: "plant/{{equipment}}/env", json: $.label, type: string, required: false,
     category: environment}}
"""


async def test_mqtt_bad_timestamps_text_nesting_and_names(tmp_path: Path, mosquitto,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    now_s = int(time.time())
    async with agent_running(tmp_path, MQTT_DEVICE.format(port=mosquitto.port)) as agent:
        runtime = agent.devices["env-sensors"]
        await wait_until_async(lambda: runtime.ctx.status.state.value == "running", what="the broker connection")
        before = time.time_ns()
        publish(mosquitto.port, [
            ("plant/sensor-a/env", json.dumps({"t": 1.0, "ts": now_s - 10}).encode()),
            ("plant/sensor-b/env", json.dumps({"t": 2.0, "ts": "9999-12-31T00:00:00Z"}).encode()),
            ("plant/sensor-c/env", json.dumps({"t": 3.0, "ts": 10_000_000_000}).encode()),
            ("plant/온도계1/env", json.dumps({"t": 21.5, "ts": now_s - 9, "label": "ok"}).encode()),
            ("plant/습도계1/env", json.dumps({"t": 45.0, "ts": now_s - 8, "label": "\ud800 broken"}).encode()),
            ("plant/sensor-d/env", b"[" * 5000 + b"]" * 5000),
            ("plant/sensor-e/env", json.dumps({"t": 5.0, "ts": now_s - 7}).encode()),
        ])
        await wait_until_async(lambda: len(stored(agent)) >= 10, what="every reading in the history")
        after = time.time_ns()
        rows = stored(agent)
        no_restart(agent, caplog)
        errors = dict(runtime.ctx.status.errors)
        status = next(d for d in agent.status().devices if d.name == "env-sensors")

    by_key = {(r["equipment"], r["tag"]): r for r in rows}
    assert len(rows) == 10, rows
    assert by_key["sensor-a", "temperature"] == {**by_key["sensor-a", "temperature"], "value": 1.0,
                                                 "quality": "good", "time": (now_s - 10) * 10**9}
    assert by_key["sensor-e", "temperature"]["quality"] == "good"
    for equipment, value in (("sensor-b", 2.0), ("sensor-c", 3.0)):
        reading = by_key[equipment, "temperature"]
        assert (reading["value"], reading["quality"], reading["code"]) == (value, "uncertain", 1009)
        assert before <= reading["time"] <= after  # arrival time stands in
    # two Korean names with the same ASCII part stay two pieces of equipment
    thermo, hygro = asset_name_for("온도계1"), asset_name_for("습도계1")
    assert thermo != hygro
    assert status.source_names == {thermo: "온도계1", hygro: "습도계1"}  # the originals, for people
    assert by_key[thermo, "temperature"]["value"] == 21.5 and by_key[hygro, "temperature"]["value"] == 45.0
    assert by_key[thermo, "label"]["text"] == "ok"
    assert (by_key[hygro, "label"]["text"], by_key[hygro, "label"]["quality"], by_key[hygro, "label"]["code"]) \
        == ("\ufffd broken", "uncertain", 1006)
    # 5,000 levels of nesting: a counted bad payload (both tags of the topic), not an internal error
    assert by_key["sensor-d", "temperature"]["quality"] == "bad" and by_key["sensor-d", "temperature"]["code"] == 1007
    assert by_key["sensor-d", "label"]["code"] == 1007
    assert errors.get("payload") == 2 and errors.get("timestamp") == 2 and errors.get("text") == 1


LONG_FOLDERS = ["ProductionLineOneAssemblyCellNorthSideHydraulicUnitSection" + str(i) for i in range(4)]
OPCUA_SCENARIO = {
    "machine": "Machine",
    "nodes": [
        {"path": "Spindle.Speed", "type": "Double", "signal": {"constant": 0}},
        {"path": "Coolant.Temperature", "type": "Double", "signal": {"constant": 0}},
        {"path": "Labels.Legacy", "type": "String", "signal": {"constant": "-"}},
        {"path": "Labels.Undeclared", "type": "String", "signal": {"constant": "-"}},
        {"path": "Deep." + ".".join(LONG_FOLDERS) + ".Temperature", "type": "Double", "signal": {"constant": 7.5}},
    ],
}
OPCUA_DEVICE = """\
name: press-07
driver: opcua
asset: {{area: stamping}}
stage: forming
connection: {{endpoint: "{endpoint}", timeout: 2s, keepalive_interval: 500ms, reconnect_max_delay: 2s}}
mode: subscribe
subscription: {{publishing_interval: 100ms}}
tags:
  - {{name: speed, node: "{ns};s=Machine.Spindle.Speed", category: process}}
  - {{name: coolant, node: "{ns};s=Machine.Coolant.Temperature", category: process}}
  - {{name: legacy_label, node: "{ns};s=Machine.Labels.Legacy", type: string, encoding: cp949, category: production}}
  - {{name: undeclared_label, node: "{ns};s=Machine.Labels.Undeclared", type: string, category: production}}
browse:
  - {{node: "{ns};s=Machine.Deep", depth: 6, category: process, prefix: deep}}
"""


async def test_opcua_far_future_time_legacy_text_and_long_browse_path(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    sim = CncSimulator(SimulatorConfig(port=free_port(), update_rate=0, scenario=OPCUA_SCENARIO))
    await sim.start()
    try:
        device = OPCUA_DEVICE.format(endpoint=sim.endpoint, ns="ns=2")
        async with agent_running(tmp_path, device) as agent:
            runtime = agent.devices["press-07"]
            await wait_until_async(lambda: runtime.ctx.status.state.value == "running", what="the OPC UA session")
            await wait_until_async(lambda: any(r["tag"].startswith("deep.") for r in stored(agent)),
                                   what="the browsed variable")
            before = time.time_ns()
            await sim.write("Spindle.Speed", 1234.0, source_time=dt.datetime(2300, 1, 1, tzinfo=dt.UTC))
            coolant_time = await sim.write("Coolant.Temperature", 21.0)
            legacy_time = await sim.write("Labels.Legacy", AS_ASYNCUA_DECODES)
            await sim.write("Labels.Undeclared", AS_ASYNCUA_DECODES)
            written = {"speed", "coolant", "legacy_label", "undeclared_label"}
            await wait_until_async(lambda: written <= {r["tag"] for r in stored(agent)
                                                       if r["value"] != 0 or r["text"] not in (None, "-")},
                                   what="the written values")
            after = time.time_ns()
            rows = stored(agent)
            no_restart(agent, caplog)
    finally:
        await sim.stop()

    latest = {r["tag"]: r for r in rows}  # ordered by time: the newest per tag wins
    speed = latest["speed"]
    assert (speed["value"], speed["quality"], speed["code"]) == (1234.0, "uncertain", 1009)
    assert before <= speed["time"] <= after
    assert (latest["coolant"]["value"], latest["coolant"]["quality"], latest["coolant"]["time"]) \
        == (21.0, "good", coolant_time)
    assert (latest["legacy_label"]["text"], latest["legacy_label"]["quality"], latest["legacy_label"]["time"]) \
        == ("온도 센서", "good", legacy_time)
    assert latest["undeclared_label"]["text"] == "\ufffdµ\ufffd \ufffd\ufffd\ufffd\ufffd"
    assert (latest["undeclared_label"]["quality"], latest["undeclared_label"]["code"]) == ("uncertain", 1006)
    deep = [r for r in rows if r["tag"].startswith("deep.")]
    assert deep and len(deep[0]["tag"]) == 200 and deep[0]["tag"].endswith(".Temperature")
    assert deep[0]["value"] == 7.5
