"""The OPC UA driver against the CNC simulator (a real asyncua server): subscriptions and polling
deliver every change with its source timestamp, StatusCodes become quality, arrays become
per-element series, texts and enumerations become text readings, browse output validates and
runs. One simulator serves this module; its values change only when a test writes them."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import yaml
from asyncua import ua

from drivers.opcua.browse import browse_to_yaml
from drivers.opcua.config import OpcUaDevice
from mos_agent.config.loader import load_config
from mos_agent.taxonomy import DEFAULT_STAGES
from simulators.opcua import CncSimulator
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.asyncio(loop_scope="module")


def tag(sim: CncSimulator, name: str, path: str, category: str = "process", **extra: object) -> dict:
    return {"name": name, "node": sim.node_id(path), "category": category, **extra}


async def test_subscribe_delivers_every_change_with_source_timestamps(sim, kit) -> None:
    device = kit.device(sim.endpoint, [
        tag(sim, "spindle_speed", "Spindle.Speed", unit="/min"),
        tag(sim, "program", "Production.ProgramName", "production"),
        tag(sim, "parts", "Production.PartCount", "production"),
    ], subscription={"publishing_interval": "200ms", "sampling_interval": "10ms", "queue_size": 200})
    driver, rec = kit.driver(device)
    async with kit.running(driver):
        await wait_until_async(lambda: {r.tag for r in rec.readings()} == {"spindle_speed", "program", "parts"},
                               what="the initial values")
        batches_before, started = len(rec.batches), asyncio.get_running_loop().time()
        speeds, programs = [], []
        for i in range(60):  # faster than the publishing interval: the server queues them
            speeds.append((await sim.write("Spindle.Speed", 1000 + i * 7.5), 1000 + i * 7.5))
            if i % 20 == 0:
                programs.append((await sim.write("Production.ProgramName", f"O{1000 + i}"), f"O{1000 + i}"))
            await asyncio.sleep(0.005)
        await wait_until_async(lambda: set(speeds) <= {(r.time, r.value) for r in rec.readings("spindle_speed")},
                               what="every spindle speed written")
        await wait_until_async(lambda: set(programs) <= {(r.time, r.value) for r in rec.readings("program")},
                               what="every program name written")
        cycles = (asyncio.get_running_loop().time() - started) / 0.2
    assert all(r.quality == "good" and r.code == 0 for r in rec.readings())
    # one batch per publish cycle, not one emit per value
    batches = len(rec.batches) - batches_before
    assert batches <= cycles + 1 and batches < len(speeds), f"{batches} batches in {cycles:.1f} publish cycles"
    assert driver.ctx.status.errors == {}


async def test_poll_reads_every_change_with_source_timestamps(sim, kit) -> None:
    device = kit.device(sim.endpoint, [
        tag(sim, "coolant_temperature", "Coolant.Temperature", unit="Cel"),
        tag(sim, "state", "Monitoring.MachineryItemState.CurrentState", "equipment_state"),
    ], mode="poll", poll_interval="50ms")
    driver, rec = kit.driver(device)
    written = []
    async with kit.running(driver):
        await wait_until_async(lambda: len(rec.readings("coolant_temperature")) > 0, what="a first poll")
        for i in range(6):
            written.append((await sim.write("Coolant.Temperature", 20.0 + i / 4), 20.0 + i / 4))
            await sim.write("Monitoring.MachineryItemState.CurrentState", "Executing" if i % 2 else "NotExecuting")
            await asyncio.sleep(0.25)
        await wait_until_async(lambda: set(written) <= {(r.time, r.value) for r in rec.readings("coolant_temperature")},
                               what="every coolant temperature written")
    texts = {r.value for r in rec.readings("state")}
    assert {"Executing", "NotExecuting"} <= texts
    # every batch is one poll round over both nodes
    assert all(len(b) == 2 for b in rec.batches)
    assert driver.ctx.status.state.value in ("running", "stopped")


async def test_bad_and_uncertain_status_codes_come_through_with_the_code(sim, kit) -> None:
    device = kit.device(sim.endpoint, [
        tag(sim, "spindle_load", "Spindle.Load", unit="%"),
        tag(sim, "coolant_level", "Coolant.Level", unit="%"),
    ], subscription={"publishing_interval": "100ms"})
    driver, rec = kit.driver(device)
    try:
        async with kit.running(driver):
            await wait_until_async(lambda: len(rec.readings()) >= 2, what="the initial values")
            bad_at = await sim.apply_status("Spindle.Load", "BadSensorFailure")
            uncertain_at = await sim.apply_status("Coolant.Level", "UncertainLastUsableValue")
            await wait_until_async(lambda: any(r.time == bad_at for r in rec.readings("spindle_load"))
                                   and any(r.time == uncertain_at for r in rec.readings("coolant_level")),
                                   what="the status changes")
            bad = next(r for r in rec.readings("spindle_load") if r.time == bad_at)
            uncertain = next(r for r in rec.readings("coolant_level") if r.time == uncertain_at)
            assert (bad.quality, bad.code, bad.value) == ("bad", ua.StatusCodes.BadSensorFailure, None)
            assert uncertain.quality == "uncertain"
            assert uncertain.code == ua.StatusCodes.UncertainLastUsableValue
            assert uncertain.value == sim.nodes["Coolant.Level"].value

            # the poll path (read_once) maps them the same way
            polled = {r.tag: r for r in (await _read_once(kit, device))}
            assert (polled["spindle_load"].quality, polled["spindle_load"].code) == (
                "bad", ua.StatusCodes.BadSensorFailure)
            assert polled["coolant_level"].quality == "uncertain"

            good_at = await sim.apply_status("Spindle.Load", None)
            await wait_until_async(lambda: any(r.time == good_at and r.quality == "good"
                                   for r in rec.readings("spindle_load")), what="good again")
    finally:
        await sim.apply_status("Spindle.Load", None)
        await sim.apply_status("Coolant.Level", None)


async def _read_once(kit, device: OpcUaDevice) -> list:
    driver, rec = kit.driver(device)
    batch = await driver.read_once()
    await rec.emit(batch)
    return rec.readings()


async def test_arrays_become_one_series_per_element(sim, kit) -> None:
    device = kit.device(sim.endpoint, [tag(sim, "axis_temperature", "Diagnostics.AxisTemperatures", "maintenance",
                                           unit="Cel")], subscription={"publishing_interval": "100ms"})
    readings = await _read_once(kit, device)
    expected = sim.nodes["Diagnostics.AxisTemperatures"].value
    assert [(r.tag, r.value) for r in readings] == [(f"axis_temperature[{i}]", v) for i, v in enumerate(expected)]

    driver, rec = kit.driver(device)
    async with kit.running(driver):
        await wait_until_async(lambda: len(rec.readings()) >= 3, what="the initial array")
        at = await sim.write("Diagnostics.AxisTemperatures", [40.5, 41.5, 42.5])
        await wait_until_async(lambda: any(r.time == at for r in rec.readings()), what="the new array")
    latest = {r.tag: r.value for r in rec.readings() if r.time == at}
    assert latest == {"axis_temperature[0]": 40.5, "axis_temperature[1]": 41.5, "axis_temperature[2]": 42.5}
    specs = [s for s in driver.ctx.series.specs if s.tag.startswith("axis_temperature[")]
    assert [s.unit for s in specs] == ["Cel"] * 3 and all(s.category == "maintenance" for s in specs)


async def test_texts_enumerations_and_namespace_uris(sim, kit) -> None:
    device = kit.device(sim.endpoint, [
        tag(sim, "state", "Monitoring.MachineryItemState.CurrentState", "equipment_state"),
        tag(sim, "execution_mode", "Monitoring.ExecutionMode", "equipment_state", type="enum"),
        tag(sim, "execution_mode_number", "Monitoring.ExecutionMode", "equipment_state")
        | {"node": "nsu=urn:mos-agent:simulator:cnc;s=Machine.Monitoring.ExecutionMode"},
        tag(sim, "program", "Production.ProgramName", "production"),
        tag(sim, "alarm", "Alarms.Active", "maintenance"),
    ])
    await sim.write("Monitoring.ExecutionMode", "MDI")
    got = {r.tag: r.value for r in await _read_once(kit, device)}
    assert got == {
        "state": sim.nodes["Monitoring.MachineryItemState.CurrentState"].value.Text,
        "execution_mode": "MDI",
        "execution_mode_number": 2.0,
        "program": sim.nodes["Production.ProgramName"].value,
        "alarm": 0.0,
    }


async def test_absolute_deadband_filter_on_numbers_only(sim, kit) -> None:
    await sim.write("Feed.FeedRate", 0.0)
    device = kit.device(sim.endpoint, [
        tag(sim, "feed_rate", "Feed.FeedRate", unit="mm/min"),
        tag(sim, "message", "Alarms.Message", "maintenance"),
    ], subscription={"publishing_interval": "100ms", "queue_size": 50, "deadband_type": "absolute",
                     "deadband_value": 1.0})
    driver, rec = kit.driver(device)
    async with kit.running(driver):
        await wait_until_async(lambda: len(rec.readings()) >= 2, what="the initial values")
        for value in (0.5, 2.0, 2.3, 5.0):
            await sim.write("Feed.FeedRate", value)
            await asyncio.sleep(0.02)
        await sim.write("Alarms.Message", "1042 coolant filter clogged")
        await wait_until_async(lambda: 5.0 in [r.value for r in rec.readings("feed_rate")], what="the last feed rate")
        await wait_until_async(lambda: len(rec.readings("message")) >= 2, what="the alarm text")
    # the server compares each sample with the one before: 0 → 0.5 and 2.0 → 2.3 stay under the band
    assert [r.value for r in rec.readings("feed_rate")] == [0.0, 2.0, 5.0]
    assert rec.readings("message")[-1].value == "1042 coolant filter clogged"
    assert driver.ctx.status.errors == {}


async def test_items_spread_over_subscriptions_flush_one_batch_per_cycle(sim, kit) -> None:
    paths = ["Spindle.Speed", "Spindle.Load", "Feed.FeedRate", "Coolant.Pressure", "Energy.ActivePower"]
    device = kit.device(sim.endpoint, [tag(sim, p.lower().replace(".", "_"), p) for p in paths],
                        subscription={"publishing_interval": "250ms", "max_items_per_subscription": 2,
                                      "queue_size": 20})
    service = sim.server.iserver.subscription_service
    before = len(service.subscriptions)
    driver, rec = kit.driver(device)
    async with kit.running(driver):
        await wait_until_async(lambda: len({r.tag for r in rec.readings()}) == 5, what="the initial values")
        assert len(service.subscriptions) - before == 3
        start_batches, started = len(rec.batches), asyncio.get_running_loop().time()
        written = []
        for i in range(12):
            for p in paths:
                written.append((await sim.write(p, 10.0 + i), 10.0 + i))
            await asyncio.sleep(0.05)
        await wait_until_async(lambda: set(written) <= {(r.time, r.value) for r in rec.readings()},
                               what="every value written")
        cycles = (asyncio.get_running_loop().time() - started) / 0.25
    batches = len(rec.batches) - start_batches
    assert batches <= cycles + 2, f"{batches} batches in {cycles:.1f} publish cycles"


async def test_browse_entries_take_every_variable_with_units_from_euinformation(sim, kit) -> None:
    device = kit.device(sim.endpoint, [tag(sim, "spindle_speed", "Spindle.Speed", unit="/min")],
                        browse=[{"node": sim.node_id("Axes"), "depth": 3, "category": "process", "prefix": "axes"},
                                {"node": sim.node_id("Spindle"), "category": "process"}])
    readings = await _read_once(kit, device)
    assert sorted(r.tag for r in readings) == [
        "Load", "Override", "axes.X.Position", "axes.Y.Position", "axes.Z.Position", "spindle_speed"]
    driver, _ = kit.driver(device)
    await driver.read_once()
    assert driver.ctx.status.errors == {}
    units = {s.tag: s.unit for s in driver.ctx.series.specs}
    assert units == {"spindle_speed": "/min", "axes.X.Position": "mm", "axes.Y.Position": "mm",
                     "axes.Z.Position": "mm", "Load": "%", "Override": "%"}

    # a folder the server does not have is reported, and the rest is read
    missing = kit.device(sim.endpoint, [tag(sim, "spindle_speed", "Spindle.Speed")],
                         browse=[{"node": sim.node_id("Gearbox"), "category": "process"}])
    driver, rec = kit.driver(missing)
    await rec.emit(await driver.read_once())
    assert [r.tag for r in rec.readings()] == ["spindle_speed"]
    assert driver.ctx.status.errors == {"browse": 1}
    assert driver.ctx.status.last_error == f"browse {sim.node_id('Gearbox')}: BadNodeIdUnknown"


async def test_browse_output_validates_and_runs(sim, kit) -> None:
    text = await browse_to_yaml(sim.endpoint, "i=85", 6)
    data = yaml.safe_load(text)
    device = OpcUaDevice.model_validate(data, context={"stages": list(DEFAULT_STAGES)})
    assert device.name == "machine"
    by_name = {t.name: t for t in device.tags}
    speed = by_name["Machine.Spindle.Speed"]
    assert (speed.node, speed.type, speed.unit, speed.range, speed.category) == (
        sim.node_id("Spindle.Speed"), "number", "/min", (0.0, 12000.0), "process")
    assert by_name["Machine.Energy.ActivePower"].category == "energy"
    assert by_name["Machine.Alarms.Active"].category == "maintenance"
    assert by_name["Machine.Monitoring.ExecutionMode"].type == "enum"
    assert by_name["Machine.Production.ProgramName"].type == "string"
    readings = await _read_once(kit, device)
    arrays = sum(len(n.signals) - 1 for n in sim.nodes.values() if n.array)
    assert len(readings) == len(device.tags) + arrays
    assert all(r.quality == "good" for r in readings), [r for r in readings if r.quality != "good"]


async def test_browse_command_prints_the_device_file(sim) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mos_agent.cli", "browse", sim.endpoint, "--node", sim.node_id("Coolant"),
        "--depth", "2", "--name", "cnc-07", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    data = yaml.safe_load(out)
    assert data["name"] == "cnc-07" and data["connection"]["endpoint"] == sim.endpoint
    assert [(t["name"], t["unit"]) for t in data["tags"]] == [("Temperature", "Cel"), ("Pressure", "bar"),
                                                              ("Level", "%")]


async def test_browsed_enumerations_and_namespaces_the_server_lacks(sim, kit) -> None:
    device = kit.device(sim.endpoint, [{"name": "elsewhere", "node": "nsu=urn:nowhere;s=X", "category": "process"}],
                        browse=[{"node": sim.node_id("Monitoring"), "category": "equipment_state", "prefix": "mon"}],
                        subscription={"publishing_interval": "100ms"})
    mode = sim.nodes["Monitoring.ExecutionMode"]
    expected = {
        "elsewhere": (None, "bad", ua.StatusCodes.BadNodeIdUnknown),
        "mon.ExecutionMode": (mode.enum[mode.value], "good", 0),
        "mon.MachineryItemState.CurrentState": (
            sim.nodes["Monitoring.MachineryItemState.CurrentState"].value.Text, "good", 0),
        "mon.MachineryOperationMode.CurrentState": (
            sim.nodes["Monitoring.MachineryOperationMode.CurrentState"].value.Text, "good", 0),
    }
    assert {r.tag: (r.value, r.quality, r.code) for r in await _read_once(kit, device)} == expected
    driver, rec = kit.driver(device)
    async with kit.running(driver):
        await wait_until_async(lambda: {r.tag for r in rec.readings()} == set(expected), what="every tag subscribed")
    assert {r.tag: (r.value, r.quality, r.code) for r in rec.readings()} == expected
    assert "urn:nowhere" in (driver.ctx.status.last_error or "")


async def test_browse_command_writes_a_profile_and_a_short_device_file(sim, tmp_path) -> None:
    async def browse(*extra: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "mos-agent"), "browse", sim.endpoint, "--node", sim.node_id("Coolant"),
            "--depth", "2", "--name", "cnc-07", "--profile", "cnc-coolant", "--dir", str(tmp_path), *extra,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode, out.decode(), err.decode()

    code, out, err = await browse()
    assert code == 0, err
    profile_file, device_file = tmp_path / "profiles" / "cnc-coolant.yaml", tmp_path / "devices" / "cnc-07.yaml"
    assert out.splitlines() == [f"wrote {profile_file}", f"wrote {device_file}"]
    profile, device = yaml.safe_load(profile_file.read_text()), yaml.safe_load(device_file.read_text())
    assert (profile["profile"], profile["driver"]) == ("cnc-coolant", "opcua")
    assert [(t["name"], t["unit"]) for t in profile["tags"]] == [("Temperature", "Cel"), ("Pressure", "bar"),
                                                                 ("Level", "%")]
    assert device == {"name": "cnc-07", "profile": "../profiles/cnc-coolant.yaml", "asset": {"area": "unassigned"},
                      "stage": "machining", "connection": {"endpoint": sim.endpoint}}
    # the pair is a working configuration as written
    (tmp_path / "agent.yaml").write_text("agent: {id: gw, site: s}\n")
    loaded = load_config(tmp_path / "agent.yaml")
    assert [t.name for t in loaded.devices[0].tags] == ["Temperature", "Pressure", "Level"]
    assert loaded.profiles["cnc-coolant"].devices == ("cnc-07",)
    # nothing is overwritten
    code, out, err = await browse()
    assert (code, out) == (2, "") and f"{profile_file} exists" in err
