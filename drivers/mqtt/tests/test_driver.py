"""The MQTT driver against a real Mosquitto: topics and payloads to readings, manual acks on a
persistent session, TLS, credentials, reconnects and the one-shot read."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from pathlib import Path

from drivers.mqtt import MqttDriver
from mos_agent.driver_api import DriverContext
from mos_agent.localservers import Mosquitto
from mos_agent.taxonomy import CollectorCode
from tests.support.waiting import wait_until_async

ENV_TOPIC = "acme/changwon/{area}/{line}/{equipment}/environment"
ENV_TAGS = [
    {"name": "temperature", "topic": ENV_TOPIC, "json": "$.temperature", "timestamp": "$.ts", "unit": "Cel",
     "category": "environment"},
    {"name": "humidity", "topic": ENV_TOPIC, "json": "$.humidity", "timestamp": "$.ts", "unit": "%",
     "category": "environment"},
]
COUNTER_TAGS = [{"name": "count", "topic": "acme/changwon/line-1/counter", "json": "$.n", "timestamp": "$.ts",
                 "category": "production"}]


def _ms(i: int) -> int:
    return 1_700_000_000_000 + i


async def test_captures_and_json_paths_give_series_and_values(mosquitto, publisher, run_driver, make_device) -> None:
    device = make_device(mosquitto.port, [
        *ENV_TAGS,
        {"name": "spindle_load", "topic": "acme/changwon/machining/{line}/+/status", "json": "$.axes[0].load",
         "unit": "%", "category": "process"},
        {"name": "program", "topic": "acme/changwon/machining/{line}/+/status", "json": "$['program name']",
         "type": "string", "category": "production"},
    ])
    running = run_driver(device)
    await running.wait_running()
    publisher.send("acme/changwon/stamping/line-1/env-01/environment",
                   {"ts": _ms(1), "temperature": 21.5, "humidity": 40.25})
    publisher.send("acme/changwon/welding/line-2/env-02/environment", {"ts": _ms(2), "temperature": 23.0,
                                                                       "humidity": 38})
    publisher.send("acme/changwon/machining/line-3/cnc-07/status",
                   {"axes": [{"load": 55.5}, {"load": 1}], "program name": "O1234"})
    await wait_until_async(lambda: len(running.readings()) >= 6, what="6 readings")
    got = {(r["tag"], r["asset"]): (r["value"], r["quality"]) for r in running.readings()}
    assert got == {
        ("temperature", "acme/changwon/stamping/line-1/env-01"): (21.5, "good"),
        ("humidity", "acme/changwon/stamping/line-1/env-01"): (40.25, "good"),
        ("temperature", "acme/changwon/welding/line-2/env-02"): (23.0, "good"),
        ("humidity", "acme/changwon/welding/line-2/env-02"): (38.0, "good"),
        # {line} captured: the device's own cell is dropped, its area kept, equipment = device name
        ("spindle_load", "acme/changwon/utilities/line-3/env-sensors"): (55.5, "good"),
        ("program", "acme/changwon/utilities/line-3/env-sensors"): ("O1234", "good"),
    }
    times = {r["time"] for r in running.readings() if r["tag"] == "temperature"}
    assert times == {_ms(1) * 1_000_000, _ms(2) * 1_000_000}
    assert running.ctx.status.errors == {}


async def test_arrays_of_samples_and_timestamp_formats(mosquitto, publisher, run_driver, make_device) -> None:
    device = make_device(mosquitto.port, [
        {"name": "rms", "topic": "acme/changwon/machining/line-2/spindle-1/vibration", "json": "$.rms",
         "timestamp": "$.t", "unit": "mm/s", "category": "maintenance"},
    ])
    running = run_driver(device)
    await running.wait_running()
    topic = "acme/changwon/machining/line-2/spindle-1/vibration"
    publisher.send(topic, [{"t": 1_700_000_000, "rms": 1.0},                   # seconds
                           {"t": 1_700_000_000_500, "rms": 2.0},               # milliseconds
                           {"t": 1_700_000_000_750_000_001, "rms": 3.0}])     # nanoseconds
    publisher.send(topic, {"t": "2023-11-14T22:13:21.25Z", "rms": 4.0})        # ISO 8601, UTC
    publisher.send(topic, {"t": "2023-11-15T07:13:22+09:00", "rms": 5.0})      # ISO 8601 with offset
    await wait_until_async(lambda: len(running.readings()) >= 5, what="5 readings")
    assert [(r["value"], r["time"]) for r in running.readings()] == [
        (1.0, 1_700_000_000_000_000_000),
        (2.0, 1_700_000_000_500_000_000),
        (3.0, 1_700_000_000_750_000_001),
        (4.0, 1_700_000_001_250_000_000),
        (5.0, 1_700_000_002_000_000_000),
    ]


async def test_malformed_messages_are_counted_acknowledged_and_do_not_stop_the_flow(mosquitto, publisher,
                                                                                    run_driver, make_device) -> None:
    device = make_device(mosquitto.port, ENV_TAGS, max_payload="1KiB")
    running = run_driver(device)
    await running.wait_running()
    topic = "acme/changwon/stamping/line-1/env-01/environment"
    publisher.send(topic, {"ts": _ms(1), "temperature": 20.0, "humidity": 30})
    publisher.send(topic, b"\x00\x01 not json")
    publisher.send(topic, {"ts": _ms(2), "temperature": "warm", "humidity": 31})
    publisher.send(topic, {"ts": _ms(3), "temperature": 21.0, "humidity": 32, "pad": "x" * 2000})
    publisher.send(topic, {"ts": _ms(4), "temperature": 22.0, "humidity": 33})
    await wait_until_async(lambda: any(r["time"] == _ms(4) * 1_000_000 for r in running.readings()),
                           what="the message after the malformed ones")
    good = [(r["tag"], r["value"]) for r in running.readings() if r["quality"] == "good"]
    assert good == [("temperature", 20.0), ("humidity", 30.0), ("humidity", 31.0),
                    ("temperature", 22.0), ("humidity", 33.0)]
    bad = [r for r in running.readings() if r["quality"] == "bad"]
    assert len(bad) == 5 and {r["code"] for r in bad} == {CollectorCode.PAYLOAD_ERROR}
    # not JSON (2 tags) + wrong type (1) + oversized (2 tags)
    assert running.ctx.status.errors == {"payload": 5}

    # every one was acknowledged: a new connection with the same session gets none of them again
    await running.stop()
    again = run_driver(device)
    await again.wait_running()
    publisher.send(topic, {"ts": _ms(5), "temperature": 23.0, "humidity": 34})
    await wait_until_async(lambda: len(again.readings()) >= 2, what="the sentinel")
    assert [r["time"] for r in again.readings()] == [_ms(5) * 1_000_000] * 2


async def test_messages_not_committed_are_redelivered_to_the_same_client_id(mosquitto, publisher, run_driver,
                                                                            make_device, monkeypatch) -> None:
    monkeypatch.setattr("drivers.mqtt.driver.STOP_ACK_GRACE", 1.0)  # nothing will be committed: don't wait 5 s
    device = make_device(mosquitto.port, COUNTER_TAGS)
    crashed = run_driver(device, commit=False)  # the buffer never confirms: no ack goes out
    await crashed.wait_running()
    for i in range(5):
        publisher.send("acme/changwon/line-1/counter", {"n": i, "ts": _ms(i)})
    await wait_until_async(lambda: len(crashed.readings()) == 5, what="5 readings")
    await crashed.stop()
    assert crashed.driver._unacked_batches > 0

    restarted = run_driver(device)
    await wait_until_async(lambda: len(restarted.readings()) >= 5, what="the redelivery")
    assert sorted(r["value"] for r in restarted.readings()) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert sorted(r["time"] for r in restarted.readings()) == [_ms(i) * 1_000_000 for i in range(5)]


async def test_committed_messages_are_not_redelivered_and_offline_ones_are_queued(mosquitto, publisher,
                                                                                  run_driver, make_device) -> None:
    device = make_device(mosquitto.port, COUNTER_TAGS)
    first = run_driver(device)
    await first.wait_running()
    for i in range(5):
        publisher.send("acme/changwon/line-1/counter", {"n": i, "ts": _ms(i)})
    await wait_until_async(lambda: len(first.readings()) == 5, what="5 readings")
    await first.stop()
    assert first.driver._unacked_batches == 0

    # published while the agent is away: the persistent session keeps them
    for i in range(5, 8):
        publisher.send("acme/changwon/line-1/counter", {"n": i, "ts": _ms(i)})
    second = run_driver(device)
    await wait_until_async(lambda: len(second.readings()) >= 3, what="the queued messages")
    await second.wait_running()
    publisher.send("acme/changwon/line-1/counter", {"n": 99, "ts": _ms(99)})
    await wait_until_async(lambda: any(r["value"] == 99.0 for r in second.readings()), what="the sentinel")
    assert [r["value"] for r in second.readings()] == [5.0, 6.0, 7.0, 99.0]


async def test_a_stopping_driver_acknowledges_what_was_committed_after_it_was_cancelled(
        mosquitto, publisher, run_driver, make_device) -> None:
    """The agent commits the last batches after the drivers stop: their acks must still go out."""
    device = make_device(mosquitto.port, COUNTER_TAGS)
    held: list = []

    running = run_driver(device, commit=False)
    await running.wait_running()
    for i in range(3):
        publisher.send("acme/changwon/line-1/counter", {"n": i, "ts": _ms(i)})
    await wait_until_async(lambda: len(running.readings()) == 3, what="3 readings")
    held = [cb for batch in running.batches for cb in batch.on_committed]
    running.task.cancel()
    await asyncio.gather(running.task, return_exceptions=True)
    for callback in held:  # the buffer commit, after the driver task has ended
        callback()
    await running.stop()

    again = run_driver(device)
    await again.wait_running()
    publisher.send("acme/changwon/line-1/counter", {"n": 42, "ts": _ms(42)})
    await wait_until_async(lambda: len(again.readings()) >= 1, what="the sentinel")
    assert [r["value"] for r in again.readings()] == [42.0]


async def test_tls_with_a_test_ca_and_client_certificate(tmp_path: Path, tls_files, run_driver, make_device,
                                                         publisher_for) -> None:
    server = Mosquitto.start(tmp_path / "tls-broker", extra_conf=(
        f"cafile {tls_files.ca}\ncertfile {tls_files.server_cert}\nkeyfile {tls_files.server_key}\n"
        "require_certificate true\n"))
    try:
        publisher = publisher_for(server.port, ca_certs=str(tls_files.ca), certfile=str(tls_files.client_cert),
                                  keyfile=str(tls_files.client_key))
        tls = {"ca": str(tls_files.ca), "certificate": str(tls_files.client_cert),
               "private_key": str(tls_files.client_key)}
        running = run_driver(make_device(server.port, COUNTER_TAGS, tls=tls))
        await running.wait_running()
        publisher.send("acme/changwon/line-1/counter", {"n": 7, "ts": _ms(7)})
        await wait_until_async(lambda: len(running.readings()) == 1, what="a reading over TLS")
        assert running.readings()[0]["value"] == 7.0

        # a broker certificate from another CA is refused, and the state says why
        wrong = run_driver(make_device(server.port, COUNTER_TAGS, name="wrong-ca",
                                       tls={**tls, "ca": str(tls_files.other_ca)}))
        await wait_until_async(lambda: wrong.ctx.status.state.value == "down", what="state down")
        assert "CERTIFICATE_VERIFY_FAILED" in wrong.ctx.status.last_error
        await wrong.stop()

        # insecure_skip_verify (tests only) accepts it anyway
        insecure = run_driver(make_device(server.port, COUNTER_TAGS, name="insecure",
                                          tls={**tls, "ca": str(tls_files.other_ca), "insecure_skip_verify": True}))
        await insecure.wait_running()
        publisher.send("acme/changwon/line-1/counter", {"n": 8, "ts": _ms(8)})
        await wait_until_async(lambda: len(insecure.readings()) == 1, what="a reading without verification")
    finally:
        server.stop()


async def test_username_and_password_file(tmp_path: Path, run_driver, caplog, make_device,
                                          publisher_for) -> None:
    secret = "s3cret-Pa55word"
    passwords = tmp_path / "mosquitto.passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "agent", secret], check=True,
                   capture_output=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), "publisher", "pub-pass"], check=True,
                   capture_output=True)
    server = Mosquitto.start(tmp_path / "auth-broker",
                             extra_conf=f"allow_anonymous false\npassword_file {passwords}\n")
    caplog.set_level(logging.DEBUG)
    try:
        publisher = publisher_for(server.port, username="publisher", password="pub-pass")

        good_file = tmp_path / "agent.password"
        good_file.write_text(secret + "\n")
        running = run_driver(make_device(server.port, COUNTER_TAGS, username="agent", password_file=str(good_file)))
        await running.wait_running()
        publisher.send("acme/changwon/line-1/counter", {"n": 3, "ts": _ms(3)})
        await wait_until_async(lambda: len(running.readings()) == 1, what="a reading")

        bad_file = tmp_path / "wrong.password"
        bad_file.write_text("not-the-password")
        refused = run_driver(make_device(server.port, COUNTER_TAGS, name="refused", username="agent",
                                         password_file=str(bad_file)))
        await wait_until_async(lambda: refused.ctx.status.state.value == "down", what="state down")
        assert "refused" in refused.ctx.status.last_error
        assert "authori" in refused.ctx.status.last_error.lower()
        await refused.stop()
        assert secret not in caplog.text and "not-the-password" not in caplog.text
        assert secret not in repr(running.device)
    finally:
        server.stop()


async def test_reconnects_and_resubscribes_after_a_broker_restart(tmp_path: Path, run_driver, make_device,
                                                                  publisher_for) -> None:
    workdir = tmp_path / "restarting-broker"
    server = Mosquitto.start(workdir)
    port = server.port
    try:
        running = run_driver(make_device(port, COUNTER_TAGS))
        await running.wait_running()
        server.stop()
        await wait_until_async(lambda: running.ctx.status.state.value == "down", what="state down")
        server = Mosquitto.start(workdir, port)
        await running.wait_running(timeout=40)
        publisher = publisher_for(port)
        publisher.send("acme/changwon/line-1/counter", {"n": 1, "ts": _ms(1)})
        await wait_until_async(lambda: len(running.readings()) == 1, what="a reading after the restart")
    finally:
        server.stop()


async def test_series_from_captures_are_bounded(mosquitto, publisher, run_driver, make_device) -> None:
    device = make_device(mosquitto.port, ENV_TAGS[:1], max_series=3)  # 1 configured + 2 captured
    running = run_driver(device)
    await running.wait_running()
    for equipment in ("env-01", "env-02", "env-03"):
        publisher.send(f"acme/changwon/stamping/line-1/{equipment}/environment", {"ts": _ms(1), "temperature": 1})
    await wait_until_async(lambda: running.ctx.status.errors.get("series_limit") == 1, what="the limit")
    assert {r["asset"].rsplit("/", 1)[1] for r in running.readings()} == {"env-01", "env-02"}
    assert len(running.ctx.series) == 3
    # series that exist keep flowing at the limit, even when their topic is looked up afresh
    running.driver._decoder._targets.clear()
    publisher.send("acme/changwon/stamping/line-1/env-02/environment", {"ts": _ms(2), "temperature": 2})
    await wait_until_async(lambda: len(running.readings()) == 3, what="a reading of an existing series")
    assert running.readings()[-1]["value"] == 2.0 and running.ctx.status.errors == {"series_limit": 1}


async def test_read_once_uses_its_own_clean_session(mosquitto, publisher, run_driver, make_device,
                                                     agent_section) -> None:
    device = make_device(mosquitto.port, [
        *COUNTER_TAGS,
        {"name": "mode", "topic": "acme/changwon/line-1/mode", "type": "string", "category": "equipment_state"},
        {"name": "never_sent", "topic": "acme/changwon/line-1/silent", "category": "process"},
    ])
    # the agent's persistent session exists and is offline, with a message waiting for it
    agent = run_driver(device)
    await agent.wait_running()
    await agent.stop()
    publisher.send("acme/changwon/line-1/counter", {"n": 5, "ts": _ms(5)})
    publisher.send("acme/changwon/line-1/mode", "automatic", retain=True)

    ctx = DriverContext(agent_section, device, lambda batch: asyncio.sleep(0))
    reader = asyncio.create_task(MqttDriver(ctx).read_once())
    await asyncio.sleep(1.0)
    publisher.send("acme/changwon/line-1/counter", {"n": 6, "ts": _ms(6)})
    batch = await asyncio.wait_for(reader, 30)
    rows = {ctx.series.specs[int(s)].tag: (float(v), int(q), int(c), (batch.texts or {}).get(i))
            for i, (s, v, q, c) in enumerate(zip(batch.series, batch.values, batch.quality, batch.codes,
                                                 strict=True))}
    assert rows["count"][:3] == (6.0, 0, 0)
    assert rows["mode"][3] == "automatic"  # a retained message counts as a reading
    assert rows["never_sent"][1:3] == (2, CollectorCode.TIMEOUT)

    # the agent's session still holds the message published while it was away
    back = run_driver(device)
    await wait_until_async(lambda: any(r["value"] == 5.0 for r in back.readings()), what="the queued message")


async def test_read_once_raises_when_the_broker_is_unreachable(make_device, agent_section) -> None:
    from mos_agent.localservers import free_port

    device = make_device(free_port(), COUNTER_TAGS, connect_timeout="2s")
    ctx = DriverContext(agent_section, device, lambda batch: asyncio.sleep(0))
    started = time.monotonic()
    try:
        await MqttDriver(ctx).read_once()
    except ConnectionError as exc:
        assert "cannot connect" in str(exc)
    else:
        raise AssertionError("read_once returned without a broker")
    assert time.monotonic() - started < 30


def test_expected_points_per_second_uses_poll_interval_or_expected_rate(make_device) -> None:
    device = make_device(1883, [
        {**ENV_TAGS[0], "expected_rate": 12.5},
        ENV_TAGS[1],
    ])
    assert MqttDriver.expected_points_per_second(device) == 12.5 + 1.0


async def test_mqtt_3_1_1_persistent_session_and_manual_acks(mosquitto, publisher, run_driver, make_device,
                                                             monkeypatch) -> None:
    monkeypatch.setattr("drivers.mqtt.driver.STOP_ACK_GRACE", 1.0)
    device = make_device(mosquitto.port, COUNTER_TAGS, protocol="3.1.1")
    first = run_driver(device, commit=False)
    await first.wait_running()
    publisher.send("acme/changwon/line-1/counter", {"n": 1, "ts": _ms(1)})
    await wait_until_async(lambda: len(first.readings()) == 1, what="a reading")
    await first.stop()

    second = run_driver(device)  # same client id, clean_session false: the unacked message comes back
    await wait_until_async(lambda: len(second.readings()) >= 1, what="the redelivery")
    await second.wait_running()
    publisher.send("acme/changwon/line-1/counter", {"n": 2, "ts": _ms(2)})
    await wait_until_async(lambda: len(second.readings()) >= 2, what="the next message")
    await second.stop()

    third = run_driver(device)
    await third.wait_running()
    publisher.send("acme/changwon/line-1/counter", {"n": 3, "ts": _ms(3)})
    await wait_until_async(lambda: len(third.readings()) >= 1, what="the sentinel")
    assert [r["value"] for r in first.readings() + second.readings() + third.readings()] == [1.0, 1.0, 2.0, 3.0]
