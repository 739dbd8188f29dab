"""``mos-sim opcua`` as operators and testers run it: a separate process with command-line fault
injection, read by the driver; and the simulator's own scenario model."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator

import pytest
import yaml
from asyncua import ua

from drivers.opcua.config import OpcUaDevice
from mos_agent.localservers import free_port
from mos_agent.taxonomy import DEFAULT_STAGES
from simulators.opcua import CncSimulator, MachineState, Phase, SimulatorConfig, make_signal, status_code
from tests.support.waiting import wait_until_async


@contextlib.asynccontextmanager
async def sim_process(*args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators.cli", "opcua", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        banner = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert banner.startswith("mos-sim opcua:"), banner + (await proc.stderr.read()).decode()
        yield proc, banner
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 15)


async def test_cli_simulator_with_users_fault_injection_and_restart(kit) -> None:
    port = free_port()
    async with sim_process("--port", str(port), "--update-rate", "20", "--user", "operator:s3cret",
                           "--bad-status", "Spindle.Load=BadSensorFailure") as (proc, banner):
        assert f"opc.tcp://127.0.0.1:{port}/" in banner and "users operator" in banner
        device = kit.device(f"opc.tcp://127.0.0.1:{port}/", [
            {"name": "spindle_load", "node": "ns=2;s=Machine.Spindle.Load", "category": "process"},
            {"name": "coolant_temperature", "node": "ns=2;s=Machine.Coolant.Temperature", "category": "process"},
        ], connection={"username": "operator", "password": "s3cret", "allow_plaintext_password": True})
        driver, rec = kit.driver(device)
        first = await driver.read_once()
        assert first.quality.tolist() == [2, 0] and first.codes[0] == ua.StatusCodes.BadSensorFailure
        await asyncio.sleep(0.3)
        second = await driver.read_once()
        # the coolant temperature drifts at 20 updates a second: a new source timestamp each read
        assert second.timestamps[1] > first.timestamps[1]

        async with kit.running(driver):
            await wait_until_async(lambda: len(rec.readings("coolant_temperature")) > 0, what="values")
            os.kill(proc.pid, signal.SIGUSR1)  # restart the server now
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
            assert line.startswith("mos-sim opcua: restarting")
            await wait_until_async(lambda: any(r.code == 1002 for r in rec.readings()), what="the gap")
            gap_at = max(r.time for r in rec.readings() if r.code == 1002)
            await wait_until_async(lambda: any(r.time > gap_at and r.quality == "good"
                                   for r in rec.readings("coolant_temperature")),
                                   timeout=30, what="values after the restart")


async def test_print_device_file_validates() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators.cli", "opcua", "--print-device-file",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    device = OpcUaDevice.model_validate(yaml.safe_load(out), context={"stages": list(DEFAULT_STAGES)})
    assert len(device.tags) == 23
    assert {t.name: t.unit for t in device.tags}["spindle_speed"] == "/min"


@pytest.mark.parametrize("argv, message", [
    (["--security", "sign,encrypt"], "--security 'encrypt'"),
    (["--user", "nobody"], "expected NAME:PASSWORD"),
    (["--bad-status", "Spindle.Load=NotACode"], "unknown StatusCode 'NotACode'"),
])
async def test_cli_mistakes_exit_2_with_one_line(argv: list[str], message: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators.cli", "opcua", *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert message in err.decode() and len(err.decode().strip().splitlines()) == 1


def test_machine_cycle_counts_parts_and_rotates_programs() -> None:
    state = MachineState(started=0.0, phases=[Phase("loading", 2.0), Phase("cutting", 8.0)],
                         programs=["A", "B"], parts_per_program=2)
    seen = []
    for t in (0.5, 3.0, 10.5, 21.0, 41.0):
        state.advance(t)
        seen.append((state.phase, state.parts, state.program))
    assert seen == [("loading", 0, "A"), ("cutting", 0, "A"), ("loading", 1, "A"), ("loading", 2, "B"),
                    ("loading", 4, "A")]
    speed = make_signal({"phase": {"cutting": 8000, "default": 0}}, {})
    state.advance(45.0)
    assert speed(state, 45.0, 0.1) == 8000
    alarm = make_signal({"timeline": {"period": "10s", "steps": [[0, False], [6, True], [8, False]]}}, {})
    assert [alarm(state, t, 0.1) for t in (1, 6.5, 9, 16.2)] == [False, True, False, True]
    assert status_code("BadSensorFailure") == ua.StatusCodes.BadSensorFailure
    assert status_code("0x40920000") == 0x40920000


async def test_scenario_nodes_have_euinformation_and_history(kit) -> None:
    sim = CncSimulator(SimulatorConfig(port=free_port(), update_rate=20, record_history=True))
    await sim.start()
    try:
        await asyncio.sleep(0.5)
        assert sim.ticks >= 3
        drift = sim.nodes["Coolant.Temperature"].history
        assert len(drift) >= 3 and len({t for t, _, _ in drift}) == len(drift)
        eu = await sim.server.get_node(f"{sim.node_id('Spindle.Speed')}.EngineeringUnits").read_value()
        assert (eu.UnitId, eu.DisplayName.Text) == (0x52504D, "/min")  # UNECE "RPM"
    finally:
        await sim.stop()
