"""The one piece of pymodbus's private state the driver uses (drivers/modbus/inflight.py): these
tests fail loudly when a pymodbus release moves it, instead of reads silently waiting out their
timeout after a connection loss."""

from __future__ import annotations

import asyncio

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException

from drivers.modbus.inflight import fail_request_in_flight
from mos_agent.localservers import free_port
from simulators.modbus import ModbusSimulator
from tests.support.waiting import wait_until_async

UPGRADE = "pymodbus moved client.ctx.response_future: drivers/modbus/inflight.py needs another way"


async def test_pymodbus_keeps_the_response_future_where_the_adapter_looks() -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=free_port())
    assert isinstance(getattr(client.ctx, "response_future", None), asyncio.Future), UPGRADE
    client.close()


async def test_failing_the_request_in_flight_ends_the_read_at_once() -> None:
    async with ModbusSimulator(port=free_port()) as sim:
        # a timeout far beyond the test's own deadline: only the adapter can end the read in time
        client = AsyncModbusTcpClient(sim.host, port=sim.port, timeout=120, retries=0)
        try:
            assert await client.connect()
            assert not (await client.read_holding_registers(0, count=1, device_id=1)).isError()
            sim.go_silent(120)
            read = asyncio.ensure_future(client.read_holding_registers(0, count=1, device_id=1))
            await wait_until_async(lambda: sim.stats.unanswered >= 1, what="the request to reach the silent simulator")
            assert fail_request_in_flight(client, ConnectionException("connection lost")), UPGRADE
            with pytest.raises(ConnectionException, match="connection lost"):
                await asyncio.wait_for(read, 30)
            assert not fail_request_in_flight(client, ConnectionException("again"))  # nothing waits now
        finally:
            client.close()
