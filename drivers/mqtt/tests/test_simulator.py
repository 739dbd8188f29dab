"""`mos-sim mqtt` against the MQTT driver on a real Mosquitto: the device file it prints reads
everything it publishes — every well-formed reading arrives, every malformed one is a counted
bad reading — and its scenario and command line work."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import yaml

from drivers.mqtt.config import MqttDevice
from mos_agent.config.loader import load_device_file
from mos_agent.taxonomy import DEFAULT_STAGES
from simulators.mqtt import MqttSimulator, SimulatorConfig, load_scenario, main
from tests.support.waiting import wait_until_async

REPO = Path(__file__).resolve().parents[3]


async def test_driver_reads_everything_the_simulator_publishes(mosquitto, run_driver) -> None:
    sim = MqttSimulator(SimulatorConfig(port=mosquitto.port, devices=4, rate=150, malformed_ratio=0.15,
                                        burst_every=0.25, burst_size=5, seed=11, client_id="sim-test"))
    device = MqttDevice.model_validate(yaml.safe_load(sim.device_file()), context={"stages": list(DEFAULT_STAGES)})
    running = run_driver(device)
    await running.wait_running()
    sim.start()
    try:
        await wait_until_async(lambda: sim.stats.messages >= 300, timeout=30, what="300 messages")
    finally:
        sim.stop()
    stats = sim.stats
    assert stats.bursts >= 1 and sum(stats.malformed.values()) >= 1

    def good() -> int:
        return sum(r["quality"] == "good" for r in running.readings())

    await wait_until_async(lambda: good() >= stats.points, timeout=30, what=f"{stats.points} good readings")
    readings = running.readings()
    assert good() == stats.points
    assert sum(r["quality"] == "bad" for r in readings) == stats.bad_points
    assert running.ctx.status.errors.get("payload", 0) == stats.bad_points
    assets = {r["asset"] for r in readings}
    assert assets == {f"acme/changwon/{eq.area}/{eq.line}/{eq.name}" for eq in sim.equipment}
    tags = {(r["asset"].rsplit("/", 1)[1], r["tag"]) for r in readings if r["quality"] == "good"}
    assert ("env-01", "pm25") in tags and ("meter-01", "energy") in tags


def test_printed_device_file_validates_with_the_loader(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "simulators.cli", "mqtt", "--print-device-file", "--devices", "6",
                          "--rate", "30", "--port", "18830"], capture_output=True, text=True, check=True, cwd=REPO)
    path = tmp_path / "plant-sensors.yaml"
    path.write_text(out.stdout)
    device = load_device_file(path, list(DEFAULT_STAGES))
    assert isinstance(device, MqttDevice)
    assert device.connection.port == 18830
    assert [t.name for t in device.tags] == ["temperature", "humidity", "pm25", "power", "energy"]
    assert device.poll_interval == 0.2  # each of the 6 devices publishes every 6/30 s


def test_scenario_file_and_option_errors(capsys) -> None:
    scenario = load_scenario(REPO / "simulators" / "scenarios" / "sensors.yaml")
    assert len(scenario["equipment"]) == 8 and scenario["burst_every"] == 30.0
    assert {eq.kind for eq in scenario["equipment"]} == {"environment", "energy"}
    assert main(["--malformed-ratio", "2", "--print-device-file"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err


def test_embedded_broker_outage_and_publisher_disconnect_on_demand() -> None:
    sim = MqttSimulator(SimulatorConfig(port=0, embedded_broker=True, devices=2, rate=50, outage_for=0.5,
                                        client_id="sim-outage"))
    sim.start()
    try:
        assert sim.broker is not None

        def acknowledged_grows(timeout: float = 20.0) -> bool:
            start = sim.stats.acknowledged
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if sim.stats.acknowledged > start + 10:
                    return True
                time.sleep(0.05)
            return False

        assert acknowledged_grows()
        sim.trigger_fault()  # like kill -USR1: the embedded broker goes away for outage_for
        deadline = time.monotonic() + 20
        while sim.stats.outages < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sim.stats.outages == 1
        assert acknowledged_grows(), "publishing did not resume after the outage"
        sim.disconnect_publisher(0.2)
        assert sim.stats.disconnects == 1 and acknowledged_grows()
    finally:
        sim.stop()
    assert sim.broker is None
