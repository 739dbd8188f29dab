"""`mos-sim all` runs the demo plant; the device files it writes work with `mos-agent read`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from mos_agent.localservers import Mosquitto, free_port, wait_for_port
from mos_agent.taxonomy import asset_name_for

BIN = Path(sys.executable).parent


def test_sim_all_and_read_each_device(tmp_path: Path, mosquitto: Mosquitto) -> None:
    modbus_port, opcua_port = free_port(), free_port()
    devices = tmp_path / "devices"
    sim = subprocess.Popen([str(BIN / "mos-sim"), "all", "--modbus-port", str(modbus_port), "--opcua-port",
                            str(opcua_port), "--mqtt-port", str(mosquitto.port), "--mqtt-rate", "50",
                            "--devices-dir", str(devices)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(modbus_port, timeout=60)
        wait_for_port(opcua_port, timeout=60)
        (tmp_path / "agent.yaml").write_text(
            f"agent: {{id: gw, enterprise: acme, site: changwon, state_dir: {tmp_path / 'state'}, health: 'off'}}\n"
            "devices: devices/*.yaml\n")
        assert sorted(p.name for p in devices.iterdir()) == ["cnc-01.yaml", "node-7.yaml", "plant-sensors.yaml",
                                                             "press-01.yaml"]
        # the Sparkplug edge node: `read` waits for its births, tags are the metric names mapped
        for device, expected_tag in (("press-01", "hydraulic_pressure"), ("cnc-01", "spindle_speed"),
                                     ("plant-sensors", "temperature"), ("node-7", asset_name_for("Temperature"))):
            result = subprocess.run([str(BIN / "mos-agent"), "read", "-c", str(tmp_path / "agent.yaml"), device,
                                     "--json"], capture_output=True, text=True, timeout=90)
            assert result.returncode == 0, result.stderr
            rows = json.loads(result.stdout)
            good = {r["tag"] for r in rows if r["quality"] == "good"}
            assert expected_tag in good, rows
        # the table form names units and quality
        table = subprocess.run([str(BIN / "mos-agent"), "read", "-c", str(tmp_path / "agent.yaml"), "press-01"],
                               capture_output=True, text=True, timeout=60, env={"COLUMNS": "200", "PATH": ""})
        assert table.returncode == 0 and "hydraulic_pressure" in table.stdout and "bar" in table.stdout
        unknown = subprocess.run([str(BIN / "mos-agent"), "read", "-c", str(tmp_path / "agent.yaml"), "press-99"],
                                 capture_output=True, text=True, timeout=60)
        assert unknown.returncode == 2 and "press-01" in unknown.stderr
    finally:
        sim.send_signal(signal.SIGTERM)
        assert sim.wait(30) == 0, sim.stderr.read().decode() if sim.stderr else ""
