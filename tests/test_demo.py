"""`mos-agent demo` under a pseudo-terminal: the live view shows data from all four simulators
(the Sparkplug B edge node among them) within 10 s, and Ctrl-C stops everything cleanly."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mos_agent.localservers import Mosquitto
from mos_agent.taxonomy import asset_name_for

BIN = Path(sys.executable).parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_demo_shows_live_data_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    main_fd, child_fd = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "LINES": "80", "TERM": "xterm"}
    proc = subprocess.Popen([str(BIN / "mos-agent"), "demo", "--state-dir", str(tmp_path / "demo")],
                            stdin=child_fd, stdout=child_fd, stderr=child_fd, env=env, start_new_session=True)
    os.close(child_fd)
    screen = ""

    def read_for(seconds: float) -> None:
        nonlocal screen
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main_fd], [], [], 0.2)
            if ready:
                try:
                    screen += ANSI.sub("", os.read(main_fd, 65536).decode(errors="replace"))
                except OSError:
                    return

    try:
        # the plant starts (simulators, broker), then data must show within 10 s of the view appearing
        deadline = time.monotonic() + 60
        while "mos-agent demo ·" not in screen and time.monotonic() < deadline and proc.poll() is None:
            read_for(0.5)
        assert "mos-agent demo ·" in screen, screen[-3000:]
        view_started = time.monotonic()
        wanted = ("press-01 (modbus, running)", "cnc-01 (opcua, running)", "plant-sensors (mqtt, running)",
                  "node-7 (mqtt, running)", "hydraulic_pressure", "spindle_speed", "temperature")
        while not all(w in screen for w in wanted) and time.monotonic() - view_started < 10:
            read_for(0.5)
        missing = [w for w in wanted if w not in screen]
        assert not missing, screen[-4000:]
        # a live value with its unit and good quality
        assert re.search(r"hydraulic_pressure\s*│\s*[0-9.]+\s*│\s*bar\s*│\s*good", screen), screen[-4000:]
        # the Sparkplug edge node's series, named from its births: device "Press 01", metric "Temperature"
        # with the birth's unit property
        sparkplug_reading = re.compile(rf"assembly/{asset_name_for('Press 01')}\s*│\s*{asset_name_for('Temperature')}"
                                       r"\s*│\s*[0-9.]+\s*│\s*Cel\s*│\s*good")
        while not sparkplug_reading.search(screen) and time.monotonic() - view_started < 10:
            read_for(0.5)
        assert sparkplug_reading.search(screen), screen[-4000:]
        # live OEE of the press in the running shift of the demo's two-shift calendar
        # (the calendar starts with the demo, so the OEE is the press's, not diluted by unobserved hours)
        live_oee = re.compile(r"press-01\s*│\s*day \(current\)\s*│[^│]+│\s*([0-9.]+)%\s*│\s*[0-9.]+%")
        while not any(float(oee) > 10 for oee in live_oee.findall(screen)) and time.monotonic() - view_started < 30:
            read_for(0.5)
        assert any(float(oee) > 10 for oee in live_oee.findall(screen)), screen[-4000:]

        os.killpg(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + 40
        while proc.poll() is None and time.monotonic() < deadline:
            read_for(0.5)
        assert proc.wait(5) == 0, screen[-2000:]
        assert "demo stopped:" in screen
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        os.close(main_fd)
    # the simulators were stopped with it: nothing listens on their ports any more
    for device_file in ("press-01.yaml", "plant-sensors.yaml"):
        port = yaml.safe_load((tmp_path / "demo" / "devices" / device_file).read_text())["connection"]["port"]
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, device_file
    assert (tmp_path / "demo" / "state" / "history.sqlite").exists()
    # the edge node's readings are in the local history too
    history = subprocess.run([str(BIN / "mos-agent"), "query", "-c", str(tmp_path / "demo" / "agent.yaml"),
                              asset_name_for("Press 01"), asset_name_for("Temperature"), "--json"],
                             capture_output=True, text=True, timeout=60)
    assert history.returncode == 0, history.stderr
    rows = json.loads(history.stdout)
    assert any(r["quality"] == "good" and r["unit"] == "Cel" and r["area"] == "assembly" for r in rows), rows


def _children(pid: int) -> dict[int, bytes]:
    """The processes whose parent is ``pid``, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


def _alive(pid: int, cmdline: bytes) -> bool:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes() == cmdline and \
            (Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP], ids=["SIGKILL", "SIGHUP"])
def test_the_plant_goes_with_the_demo(tmp_path: Path, sig: signal.Signals) -> None:
    output = tmp_path / "demo.out"
    with output.open("wb") as out:
        proc = subprocess.Popen([str(BIN / "mos-agent"), "demo", "--no-live", "--state-dir", str(tmp_path / "demo")],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    children: dict[int, bytes] = {}
    try:
        deadline = time.monotonic() + 90
        while "points/s committed" not in output.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, output.read_text(errors="replace")
            time.sleep(0.2)
        children = _children(proc.pid)
        # four simulators, and the broker where Mosquitto is installed (else it runs in the demo)
        assert sum(b"simulators.cli" in c for c in children.values()) == 4, children
        assert len(children) == 4 + Mosquitto.installed(), children
        os.kill(proc.pid, sig)
        proc.wait(60)
        deadline = time.monotonic() + 30
        while any(_alive(pid, cmd) for pid, cmd in children.items()) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = [cmd for pid, cmd in children.items() if _alive(pid, cmd)]
        assert not survivors, survivors
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid, cmd in children.items():  # whatever survived must not outlive the test either
            if _alive(pid, cmd):
                os.kill(pid, signal.SIGKILL)
