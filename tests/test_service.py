"""Running it for real: the agent as a subprocess, as systemd runs it, against the Modbus simulator
and a real VictoriaMetrics — READY/WATCHDOG on a real NOTIFY_SOCKET, SIGTERM under load, SIGHUP
reloads, /healthz /status /metrics."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mos_agent.localservers import free_port
from tests.support.servers import StoreReader, VictoriaMetrics
from tests.support.simulators import start_modbus_sim
from tests.support.waiting import wait_until

BIN = Path(sys.executable).parent


def write_agent(tmp_path: Path, store_url: str | None, health: str) -> Path:
    sinks = [{"type": "influxdb", "url": store_url, "org": "mdcg", "bucket": "factory", "token": "test-token-1234",
              "flush_interval": "200ms"}] if store_url else []
    agent = {"agent": {"id": "gw-test", "enterprise": "acme", "site": "changwon", "state_dir": str(tmp_path / "state"),
                       "health": health, "shutdown_timeout": "10s"},
             "devices": "devices/*.yaml", "sinks": sinks}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(agent))
    (tmp_path / "devices").mkdir(exist_ok=True)
    return path


def write_device(tmp_path: Path, device: dict) -> None:
    (tmp_path / "devices").mkdir(exist_ok=True)
    (tmp_path / "devices" / f"{device['name']}.yaml").write_text(yaml.safe_dump(device, sort_keys=False))


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class AgentProcess:
    def __init__(self, config: Path, log: Path, env: dict | None = None) -> None:
        self.log = log
        self.proc = subprocess.Popen([str(BIN / "mos-agent"), "run", "-c", str(config)],
                                     stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})

    def status(self, health: str) -> dict | None:
        try:
            code, body = get(f"http://{health}/status")
        except OSError:
            return None
        return json.loads(body) if code == 200 else None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(5)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def sims(tmp_path: Path) -> Iterator[list]:
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_ready_and_watchdog_on_notify_socket(tmp_path: Path, sims: list) -> None:
    sim, device = start_modbus_sim(tmp_path, "press-01")
    sims.append(sim)
    health = f"127.0.0.1:{free_port()}"
    config = write_agent(tmp_path, None, health)
    write_device(tmp_path, device)
    notify_path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(notify_path)
    listener.settimeout(1.0)
    agent = AgentProcess(config, tmp_path / "agent.log", {"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "1000000"})
    messages: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not ("READY=1" in messages and messages.count("WATCHDOG=1") >= 2):
            try:
                messages.extend(listener.recv(4096).decode().splitlines())
            except TimeoutError:
                continue
        assert "READY=1" in messages, agent.text()
        # READY only once the drivers run and the buffer is open: the status endpoint answers by then
        status = agent.status(health)
        assert status is not None and status["agent"]["ready"] is True
        assert messages.count("WATCHDOG=1") >= 2
        assert messages.index("READY=1") < messages.index("WATCHDOG=1")
        # STOPPING=1 is sent on SIGTERM (read while it stops: the queue of a datagram socket is short)
        agent.proc.send_signal(signal.SIGTERM)
        with_stop: list[str] = []
        listener.settimeout(0.2)
        deadline = time.monotonic() + 20
        while "STOPPING=1" not in with_stop and time.monotonic() < deadline:
            try:
                with_stop.extend(listener.recv(4096).decode().splitlines())
            except TimeoutError:
                continue
        assert "STOPPING=1" in with_stop
        assert agent.stop() == 0
    finally:
        agent.stop()
        listener.close()


def test_sigterm_under_load_delivers_everything_committed(tmp_path: Path, sims: list,
                                                          victoria: VictoriaMetrics) -> None:
    store = StoreReader(victoria.url)
    for n in range(3):
        sim, device = start_modbus_sim(tmp_path, f"press-{n:02d}")
        sims.append(sim)
        device["poll_interval"] = "50ms"
        write_device(tmp_path, device)
    health = f"127.0.0.1:{free_port()}"
    config = write_agent(tmp_path, victoria.url, health)
    agent = AgentProcess(config, tmp_path / "agent.log")
    try:
        wait_until(lambda: (s := agent.status(health)) and s["pipeline"]["committed_points"] > 2000, 60,
                   what=agent.text)
        assert agent.stop() == 0, agent.text()
    finally:
        agent.stop()
    log = agent.text()
    committed = int(log.rsplit("stopped: ", 1)[1].split(" points committed")[0])
    assert committed > 2000
    # every committed point is in the store, one row a point: its value or text, or (a bad reading,
    # which has neither) its quality_code; code 0 is not written

    def stored() -> int:
        return (store.count('{__name__=~".+_value|.+_text"}')
                + store.count('{__name__=~".+_quality_code",quality="bad"}'))

    wait_until(lambda: stored() >= committed, 30,
               what=lambda: f"all {committed} committed points in the store: {stored()}")
    assert stored() == committed, log[-2000:]


def test_sighup_reload_added_changed_broken(tmp_path: Path, sims: list) -> None:
    sim_a, device_a = start_modbus_sim(tmp_path, "press-01")
    sim_b, device_b = start_modbus_sim(tmp_path, "press-02")
    sims += [sim_a, sim_b]
    health = f"127.0.0.1:{free_port()}"
    config = write_agent(tmp_path, None, health)
    write_device(tmp_path, device_a)
    agent = AgentProcess(config, tmp_path / "agent.log")
    try:
        first = wait_until(lambda: (s := agent.status(health)) and s["devices"] and
                           s["devices"][0]["points_read"] > 0 and s, 30, what=agent.text)
        assert [d["name"] for d in first["devices"]] == ["press-01"], agent.text()

        # added press-02, changed press-01 (poll interval)
        write_device(tmp_path, device_b)
        device_a["poll_interval"] = "250ms"
        write_device(tmp_path, device_a)
        agent.proc.send_signal(signal.SIGHUP)
        reloaded = wait_until(lambda: (s := agent.status(health)) and len(s["devices"]) == 2 and s, 30,
                              what=agent.text)
        assert sorted(d["name"] for d in reloaded["devices"]) == ["press-01", "press-02"]
        wait_until(lambda: "reload done: 1 added, 1 changed, 0 removed" in agent.text(), 10, what=agent.text)
        committed_before = reloaded["pipeline"]["committed_points"]

        # a broken file: the running configuration stays
        (tmp_path / "devices" / "broken.yaml").write_text("name: press-03\ndriver: modbus\ntags: [\n")
        agent.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload rejected" in agent.text(), 10, what=agent.text)
        assert "broken.yaml:" in agent.text()
        after = wait_until(lambda: (s := agent.status(health)) and
                           s["pipeline"]["committed_points"] > committed_before and s, 20, what=agent.text)
        assert sorted(d["name"] for d in after["devices"]) == ["press-01", "press-02"]
        assert all(d["state"] == "running" for d in after["devices"]), after["devices"]
        assert agent.stop() == 0
    finally:
        agent.stop()


def test_sighup_reload_restarts_exactly_the_devices_of_a_changed_profile(tmp_path: Path, sims: list) -> None:
    sim, full = start_modbus_sim(tmp_path, "press-03")
    sims.append(sim)
    health = f"127.0.0.1:{free_port()}"
    config = write_agent(tmp_path, None, health)
    (tmp_path / "profiles").mkdir()
    profile = {"profile": "press-sim", "driver": "modbus", "poll_interval": "500ms", "tags": full["tags"]}
    profile_file = tmp_path / "profiles" / "press-sim.yaml"
    profile_file.write_text(yaml.safe_dump(profile, sort_keys=False))
    for name in ("press-01", "press-02"):
        write_device(tmp_path, {"name": name, "profile": "../profiles/press-sim.yaml", "asset": full["asset"],
                                "stage": full["stage"], "connection": full["connection"]})
    write_device(tmp_path, full)  # the same machine written out in full, without the profile
    agent = AgentProcess(config, tmp_path / "agent.log")
    try:
        first = wait_until(lambda: (s := agent.status(health)) and len(s["devices"]) == 3 and
                           all(d["points_read"] > 0 for d in s["devices"]) and s, 30)
        assert first, agent.text()

        profile["poll_interval"] = "250ms"
        profile_file.write_text(yaml.safe_dump(profile, sort_keys=False))
        agent.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reload done: 0 added, 2 changed, 0 removed, 1 unchanged" in agent.text(),
                          20), agent.text()
        assert "profile press-sim changed: restarting press-01, press-02" in agent.text()

        # a mistake in the profile: rejected at the profile's line, every device keeps running
        profile_file.write_text(profile_file.read_text().replace("poll_interval: 250ms", "poll_interval: fast"))
        agent.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reload rejected" in agent.text(), 20), agent.text()
        line = next(i for i, text in enumerate(profile_file.read_text().splitlines(), 1) if "fast" in text)
        assert f"{profile_file}:{line}:16: poll_interval: bad duration 'fast'" in agent.text()
        assert "(used by press-01, press-02)" in agent.text()
        committed = agent.status(health)["pipeline"]["committed_points"]
        after = wait_until(lambda: (s := agent.status(health)) and s["pipeline"]["committed_points"] > committed
                           and s, 20)
        assert sorted(d["name"] for d in after["devices"]) == ["press-01", "press-02", "press-03"]
        assert all(d["state"] == "running" for d in after["devices"]), after["devices"]
        assert agent.stop() == 0
    finally:
        agent.stop()


def test_health_status_and_metrics(tmp_path: Path, sims: list) -> None:
    sim, device = start_modbus_sim(tmp_path, "press-01")
    sims.append(sim)
    health = f"127.0.0.1:{free_port()}"
    config = write_agent(tmp_path, None, health)
    write_device(tmp_path, device)
    agent = AgentProcess(config, tmp_path / "agent.log")
    try:
        wait_until(lambda: (s := agent.status(health)) and s["pipeline"]["committed_points"] > 0, 30,
                   what=agent.text)
        code, body = get(f"http://{health}/healthz")
        assert (code, body) == (200, "ok\n")
        status = agent.status(health)
        assert set(status) >= {"agent", "devices", "pipeline", "buffer", "sinks"}
        dev = status["devices"][0]
        assert set(dev) >= {"name", "state", "last_error", "points_per_s", "last_value_time"}
        assert set(status["buffer"]) >= {"points", "bytes", "oldest_age_s", "dropped_points"}
        code, text = get(f"http://{health}/metrics")
        assert code == 200
        families = {f.name: f for f in text_string_to_metric_families(text)}
        read = families["mos_agent_points_read"]
        assert read.type == "counter"
        assert any(s.labels == {"device": "press-01", "driver": "modbus"} and s.value > 0 for s in read.samples)
        for name in ("mos_agent_buffer_points", "mos_agent_points_committed", "mos_agent_points_dropped",
                     "mos_agent_read_latency_seconds", "mos_agent_send_latency_seconds", "mos_agent_device_state"):
            assert name in families, name
        assert families["mos_agent_read_latency_seconds"].type == "histogram"

        # mos-agent status renders the same endpoint as a table and as JSON
        table = subprocess.run([str(BIN / "mos-agent"), "status", "--url", health], capture_output=True, text=True,
                               timeout=30, env={**os.environ, "COLUMNS": "200"})
        assert table.returncode == 0, table.stderr
        assert "press-01" in table.stdout and "running" in table.stdout and "buffer:" in table.stdout
        as_json = subprocess.run([str(BIN / "mos-agent"), "status", "--url", health, "--json"], capture_output=True,
                                 text=True, timeout=30)
        assert json.loads(as_json.stdout)["devices"][0]["name"] == "press-01"

        # the device vanishes: /healthz says why
        sim.kill()
        sim.wait(5)
        code, body = wait_until(lambda: (r := get(f"http://{health}/healthz"))[0] == 503 and r, 30,
                                what=agent.text)
        assert code == 503 and "press-01" in body
    finally:
        agent.stop()


def test_status_without_agent_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run([str(BIN / "mos-agent"), "status", "--url", f"127.0.0.1:{free_port()}"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "no agent answers" in result.stderr


def test_health_binds_loopback_by_default() -> None:
    from mos_agent.config.models import AgentSection

    assert AgentSection(id="gw", site="s").health.startswith("127.0.0.1:")


def test_health_off_and_bad_config_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "agent.yaml"
    bad.write_text("agent: {id: gw, site: Changwon}\n")
    result = subprocess.run([str(BIN / "mos-agent"), "run", "-c", str(bad)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert f"{bad}:1:" in result.stderr and "Traceback" not in result.stderr
