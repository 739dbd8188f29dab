"""The Modbus simulator: value models, register encoding, the device file it prints, fault
control (API, stdin control channel, fault schedule) and the ``mos-sim modbus`` command."""

from __future__ import annotations

import asyncio
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from drivers.modbus import ModbusDevice, ModbusDriver
from drivers.modbus.plan import plan_device
from mos_agent.config.loader import load_config
from mos_agent.config.models import AgentSection
from mos_agent.driver_api import DriverContext
from mos_agent.localservers import free_port, wait_for_port
from mos_agent.taxonomy import CollectorCode, Quality
from simulators.modbus import (
    DEFAULT_SCENARIO,
    SCENARIO_DIR,
    FaultStep,
    ModbusSimulator,
    Scenario,
    apply_fault,
    control_command,
    encode_registers,
    encode_string,
)

REPO = Path(__file__).resolve().parents[3]


async def _discard(batch: object) -> None:
    """read_once emits nothing; the context needs an emit all the same."""


async def read(device: ModbusDevice):
    return await ModbusDriver(DriverContext(AgentSection(id="t", site="s"), device, _discard)).read_once()


@pytest.mark.parametrize(("type_name", "fmt", "value"), [
    ("int16", "h", -2), ("uint16", "H", 65535), ("int32", "i", -70000), ("uint32", "I", 4_000_000_000),
    ("float32", "f", 1.5), ("float64", "d", -2.25), ("int64", "q", -(2**40)), ("uint64", "Q", 2**50),
])
@pytest.mark.parametrize(("byte_order", "word_order"), [("big", "big"), ("little", "big"), ("big", "little"),
                                                        ("little", "little")])
def test_encoding_matches_struct(type_name: str, fmt: str, value: float, byte_order: str, word_order: str) -> None:
    raw = struct.pack(">" + fmt, value)
    words = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    if word_order == "little":
        words.reverse()
    if byte_order == "little":
        words = [w[::-1] for w in words]
    expected = [int.from_bytes(w, "big") for w in words]
    got = encode_registers(np.array([float(value)]), type_name, byte_order, word_order)
    assert got.tolist() == expected


def test_integer_encoding_clips_instead_of_wrapping() -> None:
    assert encode_registers(np.array([70000.0, -5.0]), "uint16").tolist() == [65535, 0]
    assert encode_registers(np.array([40000.4]), "int16").tolist() == [32767]


def test_string_encoding() -> None:
    assert encode_string("AB", 4).tolist() == [0x4142, 0]
    assert encode_string("ABC", 3, "little").tolist() == [0x4241, 0x0043]


def test_state_cycle_and_counters_that_count_only_while_running() -> None:
    sc = Scenario.model_validate({"name": "t",
                                  "cycle": [{"state": "run", "for": "10s"}, {"state": "idle", "for": "5s"}],
                                  "points": [{"name": "x", "address": "hr:0", "model": {"constant": 1}}]})
    assert [sc.state_at(t) for t in (0, 9.9, 10, 14.9, 15, 26)] == ["run", "run", "idle", "idle", "run", "idle"]
    assert sc.time_in_state("run", 12) == 10
    assert sc.time_in_state("run", 33) == 23  # two full cycles (20 s) + 3 s
    assert sc.time_in_state("idle", 33) == 10


async def test_models_move_and_stay_in_bounds() -> None:
    points = [
        {"name": "walk", "address": "hr:0", "type": "float32", "model": {"random_walk": {"start": 50, "step": 40,
                                                                                           "low": 40, "high": 60}}},
        {"name": "saw", "address": "hr:2", "type": "float32", "model": {"ramp": {"start": 0, "slope": 1000,
                                                                                  "low": 0, "high": 10}}},
        {"name": "arr", "address": "hr:10", "count": 4, "model": {"counter": {"rate": 0}}},
        {"name": "state", "address": "hr:4", "model": {"state": {"run": 7}}},
        {"name": "when", "address": "hr:5", "model": {"constant": 1}, "when": {"run": {"constant": 2}}},
    ]
    async with ModbusSimulator(Scenario.model_validate({"name": "t", "refresh": 0.001, "points": points}),
                               port=free_port()) as sim:
        walk = set()
        for _ in range(30):
            await asyncio.sleep(0.003)
            walk.add(round(sim.value("walk"), 6))
            assert 40 <= sim.value("walk") <= 60
            assert 0 <= sim.value("saw") < 10
        assert len(walk) > 10
        assert sim.value("arr") == [0.0, 1.0, 2.0, 3.0]  # arrays: element i is offset by i
        assert (sim.value("state"), sim.value("when")) == (7.0, 2.0)  # default cycle: always run


def test_scenario_mistakes_are_refused() -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        Scenario.model_validate({"name": "t", "points": [{"name": "x", "address": "hr:0", "model": {}}]})
    with pytest.raises(ValueError, match="bit address"):
        Scenario.model_validate({"name": "t", "points": [{"name": "x", "address": "hr:0", "type": "bool",
                                                          "model": {"constant": 1}}]})
    with pytest.raises(ValueError, match="duplicate point name 'x_1'"):
        Scenario.model_validate({"name": "t", "points": [
            {"name": "x", "address": "hr:0", "count": 2, "model": {"constant": 1}},
            {"name": "x_1", "address": "hr:5", "model": {"constant": 1}}]})


@pytest.mark.parametrize("scenario", sorted(p.name for p in SCENARIO_DIR.glob("*.yaml")
                                           if yaml.safe_load(p.read_text()).get("points") and
                                           all("address" in q for q in yaml.safe_load(p.read_text())["points"])))
def test_printed_device_file_validates_for_every_scenario(scenario: str) -> None:
    out = subprocess.run([sys.executable, "-m", "simulators.cli", "modbus", "--scenario", str(SCENARIO_DIR / scenario),
                          "--print-device-file", "--port", "1502", "--unit-id", "7"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    device = ModbusDevice.model_validate(yaml.safe_load(out))
    assert (device.connection.port, device.connection.unit_id) == (1502, 7)
    sc = Scenario.load(SCENARIO_DIR / scenario)
    assert len(device.tags) == sum(p.count for p in sc.points)
    assert plan_device(device).request_count >= 1


def test_several_machines_print_a_profile_and_a_short_device_file_each(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "simulators.cli", "modbus", "--print-device-file", "--port", "1502",
               "--count", "2", "--unit-id", "1,2"]
    refused = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 2 and "--devices-dir" in refused.stderr
    subprocess.run([*command, "--devices-dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, check=True)
    assert sorted(p.name for p in (tmp_path / "devices").iterdir()) == [f"press-0{i}.yaml" for i in range(1, 5)]
    assert [p.name for p in (tmp_path / "profiles").iterdir()] == ["stamping-press.yaml"]
    (tmp_path / "agent.yaml").write_text("agent: {id: gw, site: changwon}\n")
    loaded = load_config(tmp_path / "agent.yaml")
    assert [(d.name, d.connection.port, d.connection.unit_id) for d in loaded.devices] == [
        ("press-01", 1502, 1), ("press-02", 1502, 2), ("press-03", 1503, 1), ("press-04", 1503, 2)]
    assert loaded.profiles["stamping-press"].devices == ("press-01", "press-02", "press-03", "press-04")
    scenario = Scenario.load(DEFAULT_SCENARIO)
    assert all(len(d.tags) == sum(p.count for p in scenario.points) for d in loaded.devices)
    # a short device file: the tags are only in the profile
    assert "tags" not in yaml.safe_load((tmp_path / "devices" / "press-04.yaml").read_text())


def test_printed_device_file_for_serial_and_rtu_over_tcp() -> None:
    rtu = subprocess.run([sys.executable, "-m", "simulators.cli", "modbus", "--print-device-file", "--rtu",
                          "/dev/ttyUSB3", "--parity", "N"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    conn = ModbusDevice.model_validate(yaml.safe_load(rtu)).connection
    assert conn.transport == "rtu" and conn.serial is not None
    assert (conn.serial.port, conn.serial.parity) == ("/dev/ttyUSB3", "N")
    gateway = subprocess.run([sys.executable, "-m", "simulators.cli", "modbus", "--print-device-file",
                              "--rtu-over-tcp"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert ModbusDevice.model_validate(yaml.safe_load(gateway)).connection.transport == "rtu_over_tcp"


async def test_control_commands_and_fault_schedule_steps() -> None:
    async with ModbusSimulator(port=free_port()) as sim:
        device = ModbusDevice.model_validate(yaml.safe_load(sim.device_file()))
        assert control_command(sim, "exception hr:8 3").startswith("ok")
        batch = await read(device)
        pressure = [device.tags[int(s)].name for s in batch.series].index("hydraulic_pressure")
        assert (batch.quality[pressure], batch.codes[pressure]) == (Quality.BAD, 3)
        assert control_command(sim, "exception hr:8 clear").startswith("ok")
        assert (await read(device)).quality.max() == Quality.GOOD
        assert control_command(sim, "delay 1500ms") == "ok: delay 1500ms"
        assert (await read(device)).codes.tolist() == [CollectorCode.TIMEOUT] * len(device.tags)
        assert control_command(sim, "clear") == "ok: all faults cleared"
        assert control_command(sim, "freeze") == "ok: freeze" and sim.frozen
        assert control_command(sim, "bogus").startswith("error: unknown command")
        assert control_command(sim, "delay").startswith("error")
        assert '"requests"' in control_command(sim, "status")
        loop = asyncio.get_running_loop()
        step = FaultStep.model_validate({"at": "1s", "exception": {"address": "co:0", "code": 4}, "for": "100ms"})
        assert apply_fault(sim, step, loop) == "exception 4 for co:0 for 0.1s"
        await asyncio.sleep(0.3)  # lifted by then
        assert (await read(device)).quality.max() == Quality.GOOD
        with pytest.raises(ValueError, match="exactly one of"):
            FaultStep.model_validate({"at": "1s", "drop": True, "silent": "2s"})


def test_command_line_with_control_channel_and_schedule(tmp_path: Path) -> None:
    port = free_port()
    schedule = tmp_path / "faults.yaml"
    schedule.write_text("- {at: 0s, exception: {address: 'di:1', code: 2}}\n")
    proc = subprocess.Popen([sys.executable, "-m", "simulators.cli", "modbus", "--port", str(port), "--control",
                             "--faults", str(schedule), "--exception", "ir:0=6"], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port)
        device_text = subprocess.run([sys.executable, "-m", "simulators.cli", "modbus", "--print-device-file",
                                      "--port", str(port)], cwd=REPO, capture_output=True, text=True,
                                     check=True).stdout
        device = ModbusDevice.model_validate(yaml.safe_load(device_text))
        batch = asyncio.run(read(device))
        codes = {device.tags[int(s)].name: int(c) for s, c in zip(batch.series, batch.codes, strict=True)}
        assert codes["vibration_rms"] == 6 and codes["alarm_overpressure"] == 2 and codes["machine_state"] == 0
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("clear\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "ok: all faults cleared"
        batch = asyncio.run(read(device))
        assert batch.quality.max() == Quality.GOOD
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode in (0, -15)


def test_bad_scenario_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\npoints: [{name: a, address: 'hq:0', model: {constant: 1}}]\n")
    result = subprocess.run([sys.executable, "-m", "simulators.cli", "modbus", "--scenario", str(bad),
                             "--print-device-file"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown table 'hq'" in result.stderr
    assert DEFAULT_SCENARIO.exists()
