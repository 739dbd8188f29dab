"""End to end: Mosquitto → `mos-agent run` → buffer → VictoriaMetrics (de-duplicating, as the
README says to run it), with the agent killed (SIGKILL) while QoS 1 messages are in flight.
Messages are acknowledged to the broker only after their buffer commit, so after a restart every
message reaches the store — exactly once: with a source timestamp each is one (series, timestamp);
without one, arrival times are kept a millisecond apart and a redelivered message gets its first
arrival time back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mos_agent.localservers import Mosquitto, free_port
from tests.support.servers import FaultProxy, StoreReader, VictoriaMetrics

MESSAGES = 3000
TOPIC = "acme/changwon/stamping/line-1/press-01/counter"
SELECTOR = '{__name__="production_value",tag="count"}'


def agent_command() -> list[str]:
    script = Path(sys.executable).with_name("mos-agent")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mos_agent.cli"]


class Agent:
    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log.write_text("")
        self.proc = subprocess.Popen([*agent_command(), "run", "-c", str(self.config)],
                                     stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def wait_connected(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while "connected to" not in self.log.read_text():
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"agent did not connect:\n{self.log.read_text()}"
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return None


def publish_numbered(port: int, base_ms: int | None, published: list[int], rate: float = 1500.0) -> None:
    """QoS 1 messages 0..MESSAGES-1 at about ``rate`` per second, each with its own source time
    ``base_ms + i`` (none if ``base_ms`` is None)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="e2e-publisher")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        started = time.monotonic()
        for i in range(MESSAGES):
            payload = {"n": i} if base_ms is None else {"n": i, "ts": base_ms + i}
            info = client.publish(TOPIC, json.dumps(payload), qos=1)
            info.wait_for_publish(10)
            published.append(i)
            ahead = (i + 1) / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.slow
def test_kill_9_mid_stream_loses_and_duplicates_nothing(tmp_path: Path, mosquitto: Mosquitto,
                                                       victoria: VictoriaMetrics, store: StoreReader) -> None:
    (tmp_path / "devices").mkdir()
    health = free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(f"""\
agent: {{id: gw-e2e, enterprise: acme, site: changwon, state_dir: {tmp_path / "state"}, health: "127.0.0.1:{health}"}}
devices: devices/*.yaml
sinks:
  - {{type: influxdb, url: "{victoria.url}", org: mdcg, bucket: factory, token: dummy-token, flush_interval: 200ms}}
""")
    (tmp_path / "devices" / "press-01.yaml").write_text(f"""\
name: press-01
driver: mqtt
asset: {{area: stamping, line: line-1}}
stage: forming
connection: {{host: 127.0.0.1, port: {mosquitto.port}, qos: 1}}
tags:
  - {{name: count, topic: "{TOPIC}", json: $.n, timestamp: $.ts, category: production}}
""")
    agent = Agent(config, tmp_path / "agent.log")
    base_ms = int(time.time() * 1000) - 600_000  # distinct, recent (inside the store's retention)
    published: list[int] = []
    publisher = threading.Thread(target=publish_numbered, args=(mosquitto.port, base_ms, published), daemon=True)
    try:
        agent.start()
        agent.wait_connected()
        publisher.start()
        # kill once a good part is through, while messages keep arriving and commits are in flight
        deadline = time.monotonic() + 30
        while len(published) < MESSAGES // 3:
            assert time.monotonic() < deadline, "publisher stalled"
            time.sleep(0.01)
        killed_at = len(published)  # before the kill: all of these could have been acknowledged
        agent.kill()
        agent.start()
        agent.wait_connected()
        publisher.join(60)
        assert not publisher.is_alive() and len(published) == MESSAGES

        expected = {base_ms + i for i in range(MESSAGES)}
        deadline = time.monotonic() + 60
        seen: set[int] = set()
        while time.monotonic() < deadline:
            series = store.export(SELECTOR)
            seen = {t for s in series for t in s["timestamps"]}
            if seen >= expected:
                break
            time.sleep(0.5)
        assert seen == expected, f"{len(expected - seen)} missing, {len(seen - expected)} unexpected"
        # one sample per (series, timestamp), carrying the number published at that time
        samples = [(t, v) for s in store.export(SELECTOR) for t, v in zip(s["timestamps"], s["values"], strict=True)]
        assert len(samples) == MESSAGES
        assert all(v == t - base_ms for t, v in samples)
        assert killed_at < MESSAGES, "the kill came after the last message: nothing was in flight"
        # the restarted agent read more than what was published after the kill: messages the killed
        # one had received but not committed came back from the broker
        with urllib.request.urlopen(f"http://127.0.0.1:{health}/status", timeout=10) as response:
            read_after_restart = json.loads(response.read())["devices"][0]["points_read"]
        print(f"killed after {killed_at} published; the restarted agent read {read_after_restart} points")
        assert read_after_restart >= MESSAGES - killed_at + 20
        assert agent.stop() == 0
    finally:
        agent.stop()
        publisher.join(5)


def wait_published(published: list[int], count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while len(published) < count:
        assert time.monotonic() < deadline, "publisher stalled"
        time.sleep(0.01)


@pytest.mark.slow
def test_readings_without_a_source_time_are_stored_exactly_once_through_kills_and_an_outage(
        tmp_path: Path, mosquitto: Mosquitto, victoria: VictoriaMetrics, store: StoreReader,
        store_proxy: FaultProxy) -> None:
    """No time field: each reading's time is its arrival time. Three SIGKILLs mid-stream — the
    broker hands the unacknowledged backlog over again in one burst each time — and the store
    unreachable across two of them; before the second, the broker connection breaks, so the
    acknowledgements of what is committed meanwhile never arrive and those messages come again.
    Every message is then in the store exactly once: as many samples as messages, each number
    once."""
    (tmp_path / "devices").mkdir()
    broker_proxy = FaultProxy(mosquitto.port)
    config = tmp_path / "agent.yaml"
    config.write_text(f"""\
agent: {{id: gw-e2e, enterprise: acme, site: changwon, state_dir: {tmp_path / "state"}, health: "off"}}
devices: devices/*.yaml
sinks:
  - {{type: influxdb, url: "http://127.0.0.1:{store_proxy.port}", org: mdcg, bucket: factory, token: dummy-token,
     flush_interval: 200ms, max_retry_delay: 1s, precision: ms}}
""")
    (tmp_path / "devices" / "press-01.yaml").write_text(f"""\
name: press-01
driver: mqtt
asset: {{area: stamping, line: line-1}}
stage: forming
connection: {{host: 127.0.0.1, port: {broker_proxy.port}, qos: 1}}
tags:
  - {{name: count, topic: "{TOPIC}", json: $.n, category: production}}
""")
    agent = Agent(config, tmp_path / "agent.log")
    published: list[int] = []
    publisher = threading.Thread(target=publish_numbered, args=(mosquitto.port, None, published, 300.0),
                                 daemon=True)
    logs: list[str] = []
    try:
        agent.start()
        agent.wait_connected()
        publisher.start()
        for kill in range(3):
            wait_published(published, (kill + 1) * MESSAGES // 5)
            if kill == 0:
                store_proxy.cut()  # the store goes away: what follows is only in the buffer
            if kill == 1:
                broker_proxy.cut()  # what was read is committed, its acknowledgements are lost
                time.sleep(1.0)
            agent.kill()
            broker_proxy.heal()
            logs.append(agent.log.read_text())
            agent.start()
            agent.wait_connected()
        store_proxy.heal()
        publisher.join(60)
        assert not publisher.is_alive() and len(published) == MESSAGES

        deadline = time.monotonic() + 90
        values: list[float] = []
        while time.monotonic() < deadline:
            values = [v for s in store.export(SELECTOR) for v in s["values"]]
            if len(set(values)) >= MESSAGES:
                break
            time.sleep(0.5)
        missing = set(range(MESSAGES)) - {int(v) for v in values}
        assert not missing, f"{len(missing)} readings missing, e.g. {sorted(missing)[:5]}"
        doubled = len(values) - len(set(values))
        assert len(values) == MESSAGES, f"{doubled} readings stored twice"
        assert agent.stop() == 0
        # the path under test was taken: messages read before a kill came again and kept their time
        logs.append(agent.log.read_text())
        assert any("kept their first arrival time" in log for log in logs)
    finally:
        agent.stop()
        publisher.join(5)
        broker_proxy.close()
