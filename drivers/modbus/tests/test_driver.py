"""The Modbus driver against the Modbus simulator (a real pymodbus server, in the test's event
loop): every type and order end to end, each fault with its documented quality and recovery,
isolation of a bad address inside a coalesced block, a shared gateway, RTU framing over TCP and
RTU over a pty pair made by socat."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import shutil
import struct
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import yaml

from drivers.modbus import ModbusDevice, ModbusDriver
from mos_agent.batch import ReadingBatch
from mos_agent.config.models import AgentSection
from mos_agent.driver_api import DeviceState, DriverContext
from mos_agent.localservers import free_port
from mos_agent.taxonomy import CollectorCode, Quality
from simulators.modbus import ModbusSimulator, Scenario, SerialOptions
from tests.support.drivers import driver_running
from tests.support.waiting import wait_until_async

AGENT = AgentSection(id="gw-test", site="plant")
GOOD, UNCERTAIN, BAD = int(Quality.GOOD), int(Quality.UNCERTAIN), int(Quality.BAD)


# ---------------------------------------------------------------- helpers


class Collector:
    """The real emit interface: batches are appended as the driver hands them over."""

    def __init__(self) -> None:
        self.batches: list[ReadingBatch] = []
        self.loop_times: list[float] = []  # event loop clock at each hand-over

    async def __call__(self, batch: ReadingBatch) -> None:
        self.batches.append(batch)
        self.loop_times.append(asyncio.get_running_loop().time())

    def rows(self, device: ModbusDevice, since: int = 0) -> list[dict[str, Any]]:
        out = []
        for batch in self.batches[since:]:
            texts = batch.texts or {}
            for row in range(len(batch)):
                out.append({
                    "tag": device.tags[int(batch.series[row])].name,
                    "value": float(batch.values[row]),
                    "text": texts.get(row),
                    "quality": int(batch.quality[row]),
                    "code": int(batch.codes[row]),
                    "ts": int(batch.timestamps[row]),
                })
        return out

    def latest(self, device: ModbusDevice, since: int = 0) -> dict[str, dict[str, Any]]:
        return {r["tag"]: r for r in self.rows(device, since)}


def scenario(points: list[dict[str, Any]], **extra: Any) -> Scenario:
    return Scenario.model_validate({"name": "test machine", "points": points, "refresh": 0.01, **extra})


def device_for(sim: ModbusSimulator, tags: list[dict[str, Any]] | None = None, poll_interval: str = "100ms",
               **connection: Any) -> ModbusDevice:
    data = yaml.safe_load(sim.device_file())
    data["poll_interval"] = poll_interval
    if tags is not None:
        data["tags"] = [{"category": "process", **t} for t in tags]
        data.pop("kpi", None)  # it names tags of the press this replaces
    data["connection"] = {**data["connection"], "timeout": "300ms", "reconnect_delay": "100ms",
                          "max_reconnect_delay": "400ms", **connection}
    return ModbusDevice.model_validate(data)


def driver_for(device: ModbusDevice) -> tuple[ModbusDriver, DriverContext, Collector]:
    collector = Collector()
    ctx = DriverContext(AGENT, device, collector)
    return ModbusDriver(ctx), ctx, collector


@contextlib.asynccontextmanager
async def running(driver: ModbusDriver) -> AsyncIterator[asyncio.Task]:
    async with driver_running(driver) as task:
        yield task
    assert driver.ctx.status.state == DeviceState.STOPPED


@pytest.fixture
async def press() -> AsyncIterator[ModbusSimulator]:
    async with ModbusSimulator(port=free_port()) as sim:
        yield sim
    assert sim.stats.writes_rejected == 0, "the agent only reads"


def float32(value: float) -> float:
    return struct.unpack(">f", struct.pack(">f", value))[0]


# ---------------------------------------------------------------- values end to end

TYPE_VALUES: dict[str, float] = {
    "int16": -12345, "uint16": 54321, "int32": -1234567890, "uint32": 3456789012,
    "int64": -(2**62) - 12345, "uint64": 2**60 + 4096, "float32": -273.15, "float64": math.pi * 1e10,
}
WIDTHS = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "int64": 4, "uint64": 4, "float32": 2, "float64": 4}
ORDERS = [("big", "big"), ("little", "big"), ("big", "little"), ("little", "little")]


async def test_every_type_and_order_end_to_end() -> None:
    points, tags = [], []
    offset = 0
    for type_name, value in TYPE_VALUES.items():
        for byte_order, word_order in ORDERS:
            name = f"{type_name}_{byte_order}_{word_order}"
            points.append({"name": name, "address": f"hr:{offset}", "type": type_name, "byte_order": byte_order,
                           "word_order": word_order, "model": {"constant": value}})
            tag = {"name": name, "address": f"hr:{offset}", "type": type_name}
            # the device's defaults are little/little: tags only say where they differ
            if byte_order != "little":
                tag["byte_order"] = byte_order
            if word_order != "little":
                tag["word_order"] = word_order
            tags.append(tag)
            offset += WIDTHS[type_name] + 1  # a hole after each value, read through
    for byte_order in ("big", "little"):
        points.append({"name": f"text_{byte_order}", "address": f"hr:{offset}", "type": "string:9",
                       "byte_order": byte_order, "model": {"constant": "PRESS-01A"}})
        tags.append({"name": f"text_{byte_order}", "address": f"hr:{offset}", "type": "string:9",
                     "byte_order": byte_order})
        offset += 5
    points += [
        {"name": "flags", "address": "ir:3", "type": "uint16", "model": {"constant": 0b1000_0000_0000_0101}},
        {"name": "coil_on", "address": "co:5", "model": {"constant": 1}},
        {"name": "coil_off", "address": "co:6", "model": {"constant": 0}},
        {"name": "input_on", "address": "di:1999", "model": {"constant": True}},
    ]
    tags += [{"name": f"flag_{b}", "address": f"ir:3.{b}"} for b in (0, 1, 2, 15)]
    tags += [{"name": "coil_on", "address": "co:5"}, {"name": "coil_off", "address": "co:6"},
             {"name": "input_on", "address": "di:1999"}]
    async with ModbusSimulator(scenario(points), port=free_port()) as sim:
        device = device_for(sim, tags, byte_order="little", word_order="little")
        driver, _, _ = driver_for(device)
        batch = await driver.read_once()
    rows = {device.tags[int(s)].name: (float(v), int(q)) for s, v, q in zip(batch.series, batch.values, batch.quality,
                                                                            strict=True)}
    texts = {device.tags[int(batch.series[r])].name: t for r, t in (batch.texts or {}).items()}
    assert batch.series.tolist() == list(range(len(tags)))  # read_once: in the device file's order
    assert all(q == GOOD for _, q in rows.values())
    for type_name, value in TYPE_VALUES.items():
        expected = float32(value) if type_name == "float32" else float(value)
        for byte_order, word_order in ORDERS:
            assert rows[f"{type_name}_{byte_order}_{word_order}"][0] == expected, (type_name, byte_order, word_order)
    assert texts == {"text_big": "PRESS-01A", "text_little": "PRESS-01A"}
    assert [rows[f"flag_{b}"][0] for b in (0, 1, 2, 15)] == [1.0, 0.0, 1.0, 1.0]
    assert (rows["coil_on"][0], rows["coil_off"][0], rows["input_on"][0]) == (1.0, 0.0, 1.0)
    # timestamps: acquisition time, nanoseconds
    assert abs(int(batch.timestamps.max()) / 1e9 - __import__("time").time()) < 30


async def test_press_values_follow_the_simulator(press: ModbusSimulator) -> None:
    device = device_for(press)
    driver, ctx, collector = driver_for(device)
    async with running(driver):
        await wait_until_async(lambda: len(collector.batches) >= 3, what="three cycles")
    latest = collector.latest(device)
    assert {r["quality"] for r in latest.values()} == {GOOD}
    assert latest["die_id"]["text"] == "DIE-4711"
    assert latest["machine_state"]["value"] == press.value("machine_state")
    # scaled integers arrive raw (the normaliser applies scale); within a refresh of the model
    assert abs(latest["oil_temperature"]["value"] * 0.1 - press.value("oil_temperature")) < 1.0
    assert ctx.status.errors == {}


# ---------------------------------------------------------------- scheduling


async def test_one_batch_per_group_and_cycle_without_drift() -> None:
    points = [{"name": "fast", "address": "hr:0", "model": {"counter": {"rate": 100}}},
              {"name": "slow", "address": "hr:50", "model": {"counter": {"rate": 100}}},
              {"name": "bit", "address": "co:0", "model": {"constant": 1}}]
    async with ModbusSimulator(scenario(points), port=free_port()) as sim:
        device = device_for(sim, [{"name": "fast", "address": "hr:0"},
                                  {"name": "bit", "address": "co:0"},
                                  {"name": "slow", "address": "hr:50", "poll_interval": "400ms"}])
        driver, _, collector = driver_for(device)
        async with running(driver):
            await wait_until_async(lambda: sum(len(b) == 1 for b in collector.batches) >= 4, what="four slow cycles")
    fast = [b for b in collector.batches if len(b) == 2]
    slow = [b for b in collector.batches if len(b) == 1]
    assert all(sorted(b.series.tolist()) == [0, 1] for b in fast)  # one batch holds the whole group
    assert all(b.series.tolist() == [2] for b in slow)
    assert len(fast) >= 8
    # ticks are k·interval on the shared grid: spacing never accumulates lateness beyond skipped ticks
    for batches, interval in ((fast, 0.1), (slow, 0.4)):
        times = [int(b.timestamps.min()) / 1e9 for b in batches]
        elapsed = times[-1] - times[0]
        ticks = round(elapsed / interval)
        assert abs(elapsed - ticks * interval) < interval / 2 + 0.05
        assert len(times) - 1 <= ticks  # never more batches than ticks


async def test_overrunning_cycles_skip_ticks_instead_of_piling_up(press: ModbusSimulator) -> None:
    press.set_delay(0.25)  # each request answered 250 ms late; 4 requests a cycle; interval 100 ms
    device = device_for(press, timeout="1s")
    driver, ctx, collector = driver_for(device)
    async with running(driver):
        await wait_until_async(lambda: len(collector.batches) >= 3, what="three slow cycles")
        started = asyncio.get_running_loop().time()
        count = len(collector.batches)
        await wait_until_async(lambda: len(collector.batches) >= count + 2, what="two more cycles")
        spent = asyncio.get_running_loop().time() - started
    st = ctx.status
    assert st.overruns >= 3
    assert st.errors.get("overrun", 0) == st.overruns
    # a cycle of ≥ 1 s at 100 ms skips ≥ 9 polls each time, and every skipped poll counts the
    # readings of the whole group
    assert st.skipped_polls >= 9 * st.overruns
    assert st.skipped_points == st.skipped_polls * len(device.tags)
    # a cycle takes ≥ 1 s: two more batches cannot come sooner than that
    assert spent >= 1.0
    assert {r["quality"] for r in collector.rows(device)} == {GOOD}


async def test_polls_of_one_interval_wake_together_whenever_their_devices_started() -> None:
    points = [{"name": "a", "address": "hr:0", "model": {"constant": 1}}]
    async with ModbusSimulator(scenario(points), port=free_port()) as sim:
        first, _, early = driver_for(device_for(sim, poll_interval="500ms"))
        second, _, late = driver_for(device_for(sim, poll_interval="500ms"))
        async with running(first):
            await wait_until_async(lambda: len(early.batches) >= 2, what="the first device polling")
            await asyncio.sleep(0.23)  # not a multiple of the interval
            async with running(second):
                await wait_until_async(lambda: len(late.batches) >= 3, what="the second device polling")
    # after its first cycle (at once), each device polls on the shared grid of 500 ms ticks: a
    # hand-over comes a read's round trip after its tick (started 230 ms apart, they would be
    # 230 ms out of step otherwise)
    for times in (early.loop_times[1:], late.loop_times[1:]):
        behind = [t - math.floor(t / 0.5) * 0.5 for t in times]
        assert all(b < 0.2 for b in behind), behind


# ---------------------------------------------------------------- faults


async def test_slow_answers_time_out_then_recover(press: ModbusSimulator) -> None:
    device = device_for(press)
    driver, ctx, collector = driver_for(device)
    async with running(driver):
        await wait_until_async(lambda: ctx.status.state == DeviceState.RUNNING, what="running")
        press.set_delay(0.6)  # over the 300 ms timeout
        mark = len(collector.batches)
        await wait_until_async(lambda: any(r["code"] == CollectorCode.TIMEOUT for r in collector.rows(device, mark)),
                               what="timeouts")
        assert ctx.status.state == DeviceState.DEGRADED
        timed_out = next(b for b in collector.batches[mark:] if (b.codes == CollectorCode.TIMEOUT).any())
        # the first request timed out; the rest of the cycle was given up: every row bad
        assert (timed_out.quality == BAD).all() and (timed_out.codes == CollectorCode.TIMEOUT).all()
        assert np.isnan(timed_out.values).all()
        press.set_delay(0.0)
        mark = len(collector.batches)
        await wait_until_async(lambda: len(collector.batches) > mark + 3 and
                               all(r["quality"] == GOOD for r in collector.rows(device, len(collector.batches) - 1)),
                               what="good values again")
        assert ctx.status.state == DeviceState.RUNNING
    assert ctx.status.errors["timeout"] >= 1
    assert press.stats.connections_opened == 1  # a timeout does not cost the connection


async def test_silent_device_times_out_and_answers_again(press: ModbusSimulator) -> None:
    device = device_for(press)
    driver, _, collector = driver_for(device)
    async with running(driver):
        await wait_until_async(lambda: len(collector.batches) >= 2, what="first cycles")
        press.go_silent(1.0)
        mark = len(collector.batches)
        await wait_until_async(lambda: any(r["code"] == CollectorCode.TIMEOUT for r in collector.rows(device, mark)),
                               what="timeouts")
        await wait_until_async(lambda: not press.silent(), what="silence to end")
        mark = len(collector.batches)
        await wait_until_async(lambda: len(collector.batches) > mark + 1 and
                               all(r["quality"] == GOOD for r in collector.rows(device, len(collector.batches) - 1)),
                               what="good values after the silence")
    assert press.stats.unanswered >= 1
    assert press.stats.connections_opened == 1


async def test_connection_dropped_between_cycles_reconnects_without_losing_a_cycle(press: ModbusSimulator) -> None:
    device = device_for(press)
    driver, ctx, collector = driver_for(device)
    async with running(driver):
        await wait_until_async(lambda: ctx.status.state == DeviceState.RUNNING, what="running")
        assert press.drop_connections() == 1
        await wait_until_async(lambda: press.stats.connections_opened == 2, what="reconnect")
        mark = len(collector.batches)
        await wait_until_async(lambda: len(collector.batches) > mark + 2, what="cycles after reconnect")
    # the connection worked before: the first attempt is immediate and no read failed
    assert all(r["quality"] == GOOD for r in collector.rows(device))
    assert ctx.status.errors.get("connection", 0) >= 1


async def test_connection_lost_during_a_read_marks_the_cycle_and_recovers(press: ModbusSimulator) -> None:
    device = device_for(press, timeout="2s")
    driver, ctx, collector = driver_for(device)
    async with running(driver):
        await wait_until_async(lambda: ctx.status.state == DeviceState.RUNNING, what="running")
        press.set_delay(0.3)  # so the drop hits a request in flight
        await asyncio.sleep(0.15)
        press.drop_connections()
        press.set_delay(0.0)
        mark = len(collector.batches)
        await wait_until_async(
            lambda: any(r["code"] == CollectorCode.CONNECTION_LOST for r in collector.rows(device, mark)),
            what="connection lost rows")
        lost = next(b for b in collector.batches[mark:] if (b.codes == CollectorCode.CONNECTION_LOST).any())
        # the request in flight and the rest of that cycle: bad, with no value
        failed = lost.codes == CollectorCode.CONNECTION_LOST
        assert (lost.quality[failed] == BAD).all() and np.isnan(lost.values[failed]).all()
        assert failed[-1], "the rest of the cycle is given up"
        mark = len(collector.batches)
        await wait_until_async(lambda: len(collector.batches) > mark + 1 and
                               all(r["quality"] == GOOD for r in collector.rows(device, len(collector.batches) - 1)),
                               what="good values after reconnect")
        assert ctx.status.state == DeviceState.RUNNING
    assert press.stats.connections_opened == 2
    assert ctx.status.errors.get("connection", 0) >= 1


async def test_refused_connections_back_off_with_one_bad_row_per_attempt(press: ModbusSimulator) -> None:
    device = device_for(press, reconnect_delay="100ms", max_reconnect_delay="400ms")
    driver, ctx, collector = driver_for(device)
    async with running(driver):
        await wait_until_async(lambda: ctx.status.state == DeviceState.RUNNING, what="running")
        press.refuse_connections(1.6)
        mark = len(collector.batches)
        await wait_until_async(lambda: ctx.status.state == DeviceState.DOWN, what="down")
        await wait_until_async(lambda: not press.refusing(), what="refusal to end")
        outage = collector.batches[mark:]
        await wait_until_async(lambda: ctx.status.state == DeviceState.RUNNING, timeout=10, what="running again")
    bad_batches = [b for b in outage if (b.quality == BAD).all()]
    # 1.6 s at 100 ms would be 16 cycles; with backoff (0.1, 0.2, 0.4, 0.4, …) a handful of attempts
    assert 2 <= len(bad_batches) <= 8, len(bad_batches)
    assert all((b.codes == CollectorCode.CONNECTION_LOST).all() for b in bad_batches)
    assert ctx.status.errors.get("connection", 0) >= 2


async def test_never_connected_device_reports_not_connected_then_comes_up() -> None:
    port = free_port()
    sim = ModbusSimulator(port=port)
    device = device_for(sim)
    driver, ctx, collector = driver_for(device)
    async with running(driver):
        await wait_until_async(lambda: len(collector.batches) >= 2, what="not-connected rows")
        assert ctx.status.state == DeviceState.DOWN
        assert all((b.codes == CollectorCode.NOT_CONNECTED).all() and (b.quality == BAD).all()
                   for b in collector.batches)
        async with sim:
            await wait_until_async(lambda: ctx.status.state == DeviceState.RUNNING, timeout=10, what="running")
            mark = len(collector.batches)
            await wait_until_async(lambda: len(collector.batches) > mark, what="a good cycle")
    assert all(r["quality"] == GOOD for r in collector.rows(device, mark))


async def test_exception_code_marks_the_tags_of_that_request(press: ModbusSimulator) -> None:
    device = device_for(press)
    driver, ctx, collector = driver_for(device)
    ir_tags = {t.name for t in device.tags if t.address.startswith("ir:")}
    async with running(driver):
        await wait_until_async(lambda: ctx.status.state == DeviceState.RUNNING, what="running")
        press.set_exception("ir:2", 4)  # server device failure: a device-level code, not split
        mark = len(collector.batches)
        await wait_until_async(lambda: len(collector.batches) > mark + 2, what="cycles with the exception")
        rows = collector.latest(device, len(collector.batches) - 1)
        assert {n for n, r in rows.items() if r["quality"] == BAD} == ir_tags
        assert {r["code"] for n, r in rows.items() if n in ir_tags} == {4}
        assert ctx.status.state == DeviceState.DEGRADED
        press.clear_exception()
        mark = len(collector.batches)
        await wait_until_async(lambda: len(collector.batches) > mark + 1 and
                               all(r["quality"] == GOOD for r in collector.rows(device, len(collector.batches) - 1)),
                               what="good values")
        assert ctx.status.state == DeviceState.RUNNING
    assert ctx.status.errors["exception"] >= 1


async def test_bad_address_in_a_coalesced_block_is_isolated(press: ModbusSimulator) -> None:
    device = device_for(press)
    driver, _, collector = driver_for(device)
    hr_tags = [t.name for t in device.tags if t.address.startswith("hr:")]
    assert len(hr_tags) > 10 and len(driver.plan.groups[0].requests) == 4
    press.set_exception("hr:13", 2)  # oil_temperature: illegal data address
    async with running(driver):
        await wait_until_async(lambda: len(collector.batches) >= 1, what="first cycle")
        first = collector.latest(device)
        # in the very first cycle every other tag of the block already has its value
        assert first["oil_temperature"]["quality"] == BAD and first["oil_temperature"]["code"] == 2
        assert all(first[n]["quality"] == GOOD for n in hr_tags if n != "oil_temperature")
        assert first["die_id"]["text"] == "DIE-4711"
        await wait_until_async(lambda: len(collector.batches) >= 3, what="more cycles")
        exceptions_before = press.stats.exceptions_sent
        requests_before = press.stats.requests
        batches_before = len(collector.batches)
        await wait_until_async(lambda: len(collector.batches) >= batches_before + 5, what="five cycles")
        cycles = len(collector.batches) - batches_before
        # the split plan is kept: per cycle one exception (the isolated tag) and a few requests
        new_exceptions = press.stats.exceptions_sent - exceptions_before
        assert cycles - 1 <= new_exceptions <= cycles + 1
        plan = [r.request for r in driver._groups[0].requests]
        isolated = [r for r in plan if [t.name for t in r.tags] == ["oil_temperature"]]
        assert len(isolated) == 1 and (isolated[0].start, isolated[0].count) == (13, 1)
        assert all(not (r.table == "hr" and r.start <= 13 < r.end) for r in plan if r not in isolated)
        assert (press.stats.requests - requests_before) / cycles <= len(plan) + 1
        latest = collector.latest(device, len(collector.batches) - 1)
        assert {n for n, r in latest.items() if r["quality"] != GOOD} == {"oil_temperature"}
        # the address comes back: the isolated tag reads good again
        press.clear_exception()
        mark = len(collector.batches)
        await wait_until_async(
            lambda: len(collector.batches) > mark + 1
            and collector.latest(device, len(collector.batches) - 1)["oil_temperature"]["quality"] == GOOD,
            what="oil temperature back")


async def test_exception_in_a_hole_between_tags_stops_reading_through_it() -> None:
    points = [{"name": "a", "address": "hr:0", "model": {"constant": 11}},
              {"name": "b", "address": "hr:4", "model": {"constant": 22}},
              {"name": "c", "address": "hr:5", "model": {"constant": 33}}]
    async with ModbusSimulator(scenario(points), port=free_port()) as sim:
        sim.set_exception("hr:2", 2)  # nobody's tag, but inside the coalesced read 0..5
        device = device_for(sim, [{"name": n, "address": p["address"]} for n, p in zip("abc", points, strict=True)])
        driver, _, collector = driver_for(device)
        async with running(driver):
            await wait_until_async(lambda: len(collector.batches) >= 4, what="cycles")
            exceptions = sim.stats.exceptions_sent
            await wait_until_async(lambda: len(collector.batches) >= 8, what="more cycles")
            assert sim.stats.exceptions_sent == exceptions  # the hole is no longer read
    assert {r["tag"]: r["value"] for r in collector.rows(device, 3)} == {"a": 11.0, "b": 22.0, "c": 33.0}
    assert all(r["quality"] == GOOD for r in collector.rows(device))
    plan = [(r.request.start, r.request.count) for r in driver._groups[0].requests]
    assert all(not s <= 2 < s + c for s, c in plan)


async def test_frozen_values_become_stale_and_recover() -> None:
    points = [{"name": "heartbeat", "address": "hr:0", "model": {"counter": {"rate": 50}}},
              {"name": "setpoint", "address": "hr:1", "model": {"constant": 7}}]
    async with ModbusSimulator(scenario(points), port=free_port()) as sim:
        device = device_for(sim, [{"name": "heartbeat", "address": "hr:0", "stale_after": "400ms"},
                                  {"name": "setpoint", "address": "hr:1"}])
        driver, ctx, collector = driver_for(device)
        async with running(driver):
            await wait_until_async(lambda: len(collector.batches) >= 3, what="cycles")
            assert all(r["quality"] == GOOD for r in collector.rows(device))
            sim.freeze()
            mark = len(collector.batches)
            await wait_until_async(lambda: any(r["code"] == CollectorCode.STALE for r in collector.rows(device, mark)),
                                   what="stale heartbeat")
            stale_rows = [r for r in collector.rows(device, mark) if r["code"] == CollectorCode.STALE]
            assert {r["tag"] for r in stale_rows} == {"heartbeat"}  # setpoint has no stale_after
            assert {r["quality"] for r in stale_rows} == {UNCERTAIN}
            assert all(not math.isnan(r["value"]) for r in stale_rows)  # the value is still reported
            sim.freeze(False)
            mark = len(collector.batches)
            await wait_until_async(lambda: len(collector.batches) > mark + 2 and
                                   collector.latest(device, len(collector.batches) - 1)["heartbeat"]["quality"] == GOOD,
                                   what="heartbeat moving again")
    assert ctx.status.errors["stale"] >= 1


# ---------------------------------------------------------------- shared gateway, framings


async def test_two_devices_behind_one_gateway_share_a_connection() -> None:
    async with ModbusSimulator(port=free_port(), unit_ids=(1, 2)) as sim:
        sim.pin("die_id", "UNIT-1", unit_id=1)
        sim.pin("die_id", "UNIT-2", unit_id=2)
        devices = []
        for unit in (1, 2, 3):  # nobody answers as unit 3 behind this gateway
            d = device_for(sim, unit_id=unit)
            devices.append(d.model_copy(update={"name": f"press-0{unit}"}))
        runs = [driver_for(d) for d in devices]
        async with running(runs[0][0]), running(runs[1][0]), running(runs[2][0]):
            await wait_until_async(lambda: all(len(c.batches) >= 3 for _, _, c in runs), what="cycles on all devices")
        assert sim.stats.connections_opened == 1 and sim.stats.peak_connections == 1
    for unit, (_, _, collector) in zip((1, 2), runs[:2], strict=True):
        latest = collector.latest(devices[unit - 1])
        assert latest["die_id"]["text"] == f"UNIT-{unit}"
        assert {r["quality"] for r in latest.values()} == {GOOD}
    gateway_says = runs[2][2].latest(devices[2])
    assert {r["code"] for r in gateway_says.values()} == {11}  # gateway target device failed to respond
    assert {r["quality"] for r in gateway_says.values()} == {BAD}


async def test_rtu_framing_over_tcp_and_late_answers() -> None:
    async with ModbusSimulator(port=free_port(), framer="rtu", unit_ids=(5,)) as sim:
        device = device_for(sim)
        assert device.connection.transport == "rtu_over_tcp" and device.connection.unit_id == 5
        driver, _, collector = driver_for(device)
        batch = await driver.read_once()
        assert (batch.quality == GOOD).all()
        assert batch.texts and "DIE-4711" in batch.texts.values()
        async with running(driver):
            await wait_until_async(lambda: len(collector.batches) >= 2, what="cycles")
            # answers later than the timeout: RTU frames carry no transaction id, so a late answer
            # must never be taken for the answer to the next request
            sim.set_delay(0.4)
            mark = len(collector.batches)
            await wait_until_async(lambda: sum((b.codes == CollectorCode.TIMEOUT).any()
                                               for b in collector.batches[mark:]) >= 3, what="timeouts")
            sim.set_delay(0.0)
            mark = len(collector.batches)
            await wait_until_async(lambda: len(collector.batches) > mark + 3 and
                                   (collector.batches[-1].quality == GOOD).all(), what="good values again")
    good = [r for r in collector.rows(device) if r["quality"] == GOOD]
    by_tag: dict[str, list[Any]] = {}
    for r in good:
        by_tag.setdefault(r["tag"], []).append(r["text"] if r["tag"] == "die_id" else r["value"])
    assert set(by_tag["die_id"]) == {"DIE-4711"}
    assert set(by_tag["machine_state"]) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert all(1.0 < v < 3.5 for v in by_tag["vibration_rms"] if v > 0.5)
    assert set(by_tag["running"]) <= {0.0, 1.0}
    assert all(0 <= v <= 65535 and v == int(v) for v in by_tag["stroke_count"])  # a 16-bit counter


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed")
async def test_rtu_over_a_serial_pty_pair() -> None:
    proc = await asyncio.create_subprocess_exec("socat", "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0",
                                                stderr=asyncio.subprocess.PIPE)
    try:
        ptys: list[str] = []
        assert proc.stderr is not None
        while len(ptys) < 2:
            line = (await asyncio.wait_for(proc.stderr.readline(), 10)).decode()
            assert line, "socat ended early"
            if m := re.search(r"PTY is (\S+)", line):
                ptys.append(m.group(1))
        # a pty pair takes no parity setting: 8N1
        async with ModbusSimulator(serial=SerialOptions(ptys[0], 19200, "N"), unit_ids=(3,)) as sim:
            data = yaml.safe_load(sim.device_file())
            data["connection"]["serial"]["port"] = ptys[1]
            data["connection"]["timeout"] = "500ms"
            data["poll_interval"] = "200ms"
            device = ModbusDevice.model_validate(data)
            assert device.connection.transport == "rtu"
            driver, ctx, collector = driver_for(device)
            async with running(driver):
                await wait_until_async(lambda: len(collector.batches) >= 3, what="cycles over the serial line")
            latest = collector.latest(device)
            assert {r["quality"] for r in latest.values()} == {GOOD}
            assert latest["die_id"]["text"] == "DIE-4711"
            assert latest["machine_state"]["value"] in (1.0, 2.0, 3.0, 4.0, 5.0)
            assert ctx.status.errors == {}
    finally:
        proc.terminate()
        await proc.wait()


async def test_read_once_fails_clearly_when_nobody_listens() -> None:
    sim = ModbusSimulator(port=free_port())  # never started
    driver, _, _ = driver_for(device_for(sim))
    with pytest.raises(ConnectionError, match=r"cannot connect to tcp://127\.0\.0\.1:\d+"):
        await driver.read_once()


async def test_expected_points_per_second_counts_each_tags_interval(press: ModbusSimulator) -> None:
    device = device_for(press, [{"name": "a", "address": "hr:0"},
                                {"name": "b", "address": "hr:1", "poll_interval": "1s"}], poll_interval="100ms")
    assert ModbusDriver.expected_points_per_second(device) == pytest.approx(11.0)
    assert ModbusDriver.publishing_interval(device) == pytest.approx(0.1)
