"""Failing the request in flight when the connection drops — the only place the Modbus driver
touches pymodbus's private state.

pymodbus (3.16) notices a lost connection but leaves the request that was waiting for an answer to
wait out its whole timeout on the closed socket; it has no public call to end that wait. The
waiting request's future is ``client.ctx.response_future`` (the transaction manager's), and
completing it with an exception ends the read at once. drivers/modbus/tests/test_inflight.py
fails if a pymodbus release moves it; where it is missing, a read in flight waits for its timeout
as pymodbus would have it.
"""

from __future__ import annotations

import asyncio

from pymodbus.client.base import ModbusBaseClient


def fail_request_in_flight(client: ModbusBaseClient, exc: Exception) -> bool:
    """End the read ``client`` is waiting on with ``exc``; False if none was waiting."""
    future = getattr(client.ctx, "response_future", None)
    if not isinstance(future, asyncio.Future) or future.done():
        return False
    future.set_exception(exc)
    return True
