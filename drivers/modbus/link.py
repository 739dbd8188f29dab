"""Connections to Modbus endpoints, shared by every device behind the same gateway or bus.

Several devices (unit ids) often sit behind one Modbus TCP gateway or on one RS-485 line. They
must share one connection: a gateway accepts few connections, and a serial line can only carry
one request at a time. :class:`LinkPool` hands out one :class:`Link` per endpoint (transport +
host + port, or serial port) and event loop; each read names its own unit id, and pymodbus
serialises the requests on the connection.

A link reconnects with exponential backoff when asked (``ensure_connected``) — never in a loop of
its own, so a device that is down costs nothing between attempts and never blocks the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu import ExceptionResponse
from pymodbus.pdu.bit_message import ReadCoilsResponse, ReadDiscreteInputsResponse
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse

from drivers.modbus.config import ModbusConnection
from drivers.modbus.inflight import fail_request_in_flight
from mos_agent.driver_api import raise_if_cancelled

log = logging.getLogger("mos_agent.modbus")

# pymodbus logs every timeout and reconnect at ERROR/WARNING, unthrottled; the driver reports the
# same events through the device status (rate-limited). Quiet it unless someone configured it.
_pymodbus_log = logging.getLogger("pymodbus")
if _pymodbus_log.level == logging.NOTSET:
    _pymodbus_log.setLevel(logging.CRITICAL)


class LinkError(Exception):
    """A read failed for a reason other than a Modbus exception response."""


class LinkTimeout(LinkError):
    pass


class LinkDown(LinkError):
    pass


class LinkGarbled(LinkError):
    """An answer that does not belong to the request (RTU has no transaction ids)."""


class ModbusExceptionResponse(LinkError):
    def __init__(self, code: int, function_code: int) -> None:
        super().__init__(f"exception code {code} ({EXCEPTION_NAMES.get(code, 'unknown')}) "
                         f"for function {function_code}")
        self.code = code


EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}

# Exception codes that concern the addresses asked for (splitting a block can isolate the culprit);
# the others concern the device or the gateway as a whole.
ADDRESS_EXCEPTIONS: frozenset[int] = frozenset({2, 3})


# pymodbus decodes a response register by register (struct.unpack and list.append for each) and
# a bit response bit by bit; that is most of its client CPU. These decode the whole block at once
# into the numpy arrays the driver's decoder works on. Registered per client.


def _register_block(data: bytes, function_code: int) -> np.ndarray:
    byte_count = data[0]
    if byte_count >= len(data) or byte_count % 2:
        raise ModbusIOException(f"byte_count {byte_count} does not fit a packet of {len(data)} bytes",
                                function_code=function_code)
    return np.frombuffer(data, dtype=">u2", count=byte_count // 2, offset=1).astype(np.uint16)


def _bit_block(data: bytes, function_code: int) -> np.ndarray:
    byte_count = data[0]
    if byte_count >= len(data):
        raise ModbusIOException(f"byte_count {byte_count} does not fit a packet of {len(data)} bytes",
                                function_code=function_code)
    packed = np.frombuffer(data, dtype=np.uint8, count=byte_count, offset=1)
    return np.unpackbits(packed, bitorder="little").view(np.bool_)


class _BlockMixin:
    """pymodbus formats every decoded PDU for a debug message even when debug is off; the stock
    text would print the whole array."""

    def __str__(self) -> str:
        values: Any = getattr(self, "registers", None)
        if values is None or not len(values):
            values = getattr(self, "bits", ())
        return f"{type(self).__name__}(dev_id={getattr(self, 'dev_id', 0)}, {len(values)} values)"


class _HoldingRegisterBlock(_BlockMixin, ReadHoldingRegistersResponse):
    def decode(self, data: bytes) -> None:
        self.registers = _register_block(data, self.function_code)  # type: ignore[assignment]


class _InputRegisterBlock(_BlockMixin, ReadInputRegistersResponse):
    def decode(self, data: bytes) -> None:
        self.registers = _register_block(data, self.function_code)  # type: ignore[assignment]


class _CoilBlock(_BlockMixin, ReadCoilsResponse):
    def decode(self, data: bytes) -> None:
        self.bits = _bit_block(data, self.function_code)  # type: ignore[assignment]


class _DiscreteInputBlock(_BlockMixin, ReadDiscreteInputsResponse):
    def decode(self, data: bytes) -> None:
        self.bits = _bit_block(data, self.function_code)  # type: ignore[assignment]


BLOCK_RESPONSES = (_HoldingRegisterBlock, _InputRegisterBlock, _CoilBlock, _DiscreteInputBlock)


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """What the first device on an endpoint sets for everyone on it."""

    timeout: float
    reconnect_delay: float
    max_reconnect_delay: float

    @classmethod
    def of(cls, conn: ModbusConnection) -> LinkSettings:
        return cls(conn.timeout, conn.reconnect_delay, conn.max_reconnect_delay)


class Link:
    """One pymodbus client to one endpoint."""

    def __init__(self, conn: ModbusConnection) -> None:
        self.endpoint = conn.endpoint
        self.description = conn.describe_endpoint()
        self.settings = LinkSettings.of(conn)
        self.rtu_framing = conn.transport != "tcp"
        self.client = _make_client(conn, self._on_connect_change)
        for response_class in BLOCK_RESPONSES:
            self.client.register(response_class)
        # No pymodbus retries (a failed read is reported, the next cycle is the retry) and no
        # pymodbus reconnect loop (backoff is ours); never let pymodbus close the connection after
        # a few timeouts on its own — a timeout is reported as such.
        self.client.set_max_no_responses(1 << 30)
        self.users = 0
        self.ever_connected = False
        self.failed_attempts = 0  # connect attempts that failed since the last good connection
        self.losses = 0  # times an established connection was lost
        self._next_attempt = 0.0
        self._delay = self.settings.reconnect_delay
        self._connect_lock = asyncio.Lock()
        self._quiet_until = 0.0
        self._was_connected = False
        self._healthy = False  # the current connection has produced an answer
        self._in_flight = 0

    @property
    def connected(self) -> bool:
        return self.client.connected

    def _on_connect_change(self, connected: bool) -> None:
        if connected:
            self._was_connected = True
            self._healthy = False
            return
        if self._was_connected:
            self._was_connected = False
            self.losses += 1
            if self._healthy:
                # a connection that worked and broke: try again at once
                self._next_attempt = 0.0
            else:
                # accepted and closed before a single good answer: back off as for a refusal
                self._back_off()
        # A request in flight would otherwise wait out its whole timeout on a closed socket.
        if self._in_flight:
            fail_request_in_flight(self.client, ConnectionException(f"connection to {self.description} lost"))

    async def ensure_connected(self) -> bool:
        """Connected, or try now if the backoff allows. Never waits for the backoff."""
        if self.client.connected:
            return True
        loop = asyncio.get_running_loop()
        async with self._connect_lock:
            if self.client.connected:
                return True
            if loop.time() < self._next_attempt:
                return False
            ok = await self.client.connect()
            raise_if_cancelled()
            if ok and self.client.connected:
                self.ever_connected = True
                self.failed_attempts = 0
                log.info("connected to %s", self.description)
                return True
            self.failed_attempts += 1
            self._back_off()
            return False

    def _back_off(self) -> None:
        self._next_attempt = asyncio.get_running_loop().time() + self._delay
        self._delay = min(self._delay * 2, self.settings.max_reconnect_delay)

    def drop(self) -> None:
        """Close the connection; the next ``ensure_connected`` reconnects."""
        self.client.close()

    async def read(self, function_code: int, start: int, count: int, unit_id: int) -> np.ndarray:
        """Registers (function 3, 4: uint16 array) or bits (1, 2: bool array, padded to whole
        bytes). Raises LinkTimeout, LinkDown, LinkGarbled or ModbusExceptionResponse."""
        if not self.client.connected:
            raise LinkDown(f"not connected to {self.description}")
        if self._quiet_until:
            await self._keep_quiet()
        client = self.client
        self._in_flight += 1
        try:
            if function_code == 3:
                response = await client.read_holding_registers(start, count=count, device_id=unit_id)
            elif function_code == 4:
                response = await client.read_input_registers(start, count=count, device_id=unit_id)
            elif function_code == 1:
                response = await client.read_coils(start, count=count, device_id=unit_id)
            else:
                response = await client.read_discrete_inputs(start, count=count, device_id=unit_id)
        except ConnectionException as exc:
            raise LinkDown(str(exc)) from None
        except ModbusIOException as exc:
            if not client.connected:
                raise LinkDown(f"connection to {self.description} lost") from None
            if "No response" in str(exc):
                self._after_timeout()
                raise LinkTimeout(f"no answer within {self.settings.timeout:g}s") from None
            # a garbled or mismatched frame: the stream can no longer be trusted
            self.drop()
            raise LinkDown(f"bad frame from {self.description}: {exc}") from None
        finally:
            self._in_flight -= 1
        raise_if_cancelled()
        if not self._healthy:
            # the device answers: the next loss reconnects at once, from the shortest delay
            self._healthy = True
            self._delay = self.settings.reconnect_delay
        if isinstance(response, ExceptionResponse) or response.isError():
            if response.function_code & 0x7F != function_code:
                self._after_timeout()
                raise LinkGarbled(f"exception answer for function {response.function_code & 0x7F}, "
                                  f"asked {function_code}")
            raise ModbusExceptionResponse(int(getattr(response, "exception_code", 0)), function_code)
        payload = response.registers if function_code in (3, 4) else response.bits
        if response.function_code != function_code or len(payload) < count:
            # RTU: an answer to an earlier request; keep quiet so the line resynchronises
            self._after_timeout()
            raise LinkGarbled(f"answer does not match the request (function {response.function_code}, "
                              f"{len(payload)} values for function {function_code}, {count} values)")
        return np.asarray(payload)  # the arrays _register_block made: no copy

    def _after_timeout(self) -> None:
        # RTU frames carry no transaction id: an answer arriving after its timeout would be taken
        # for the answer to the next request. Keep the line quiet for a while so it is dropped.
        if self.rtu_framing:
            self._quiet_until = asyncio.get_running_loop().time() + min(self.settings.timeout, 0.5)

    async def _keep_quiet(self) -> None:
        remaining = self._quiet_until - asyncio.get_running_loop().time()
        self._quiet_until = 0.0
        if remaining > 0:
            await asyncio.sleep(remaining)


def _make_client(conn: ModbusConnection, on_connect_change: Callable[[bool], None],
                 ) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
    if conn.transport == "rtu":
        assert conn.serial is not None
        s = conn.serial
        return AsyncModbusSerialClient(
            s.port, framer=FramerType.RTU, baudrate=s.baudrate, parity=s.parity, stopbits=s.stopbits,
            bytesize=s.bytesize, timeout=conn.timeout, retries=0, reconnect_delay=0, name=s.port,
            trace_connect=on_connect_change)
    return AsyncModbusTcpClient(
        str(conn.host), port=int(conn.port or 502),
        framer=FramerType.RTU if conn.transport == "rtu_over_tcp" else FramerType.SOCKET,
        timeout=conn.timeout, retries=0, reconnect_delay=0, name=conn.describe_endpoint(),
        trace_connect=on_connect_change)


class LinkPool:
    """Process-wide: one :class:`Link` per (event loop, endpoint), counted by users."""

    def __init__(self) -> None:
        self._links: dict[tuple, Link] = {}

    def acquire(self, conn: ModbusConnection, device_name: str) -> Link:
        key = (id(asyncio.get_running_loop()), conn.endpoint)
        link = self._links.get(key)
        if link is None:
            link = self._links[key] = Link(conn)
        elif LinkSettings.of(conn) != link.settings:
            log.warning("device %s shares %s with another device; that device's timeout and reconnect "
                        "settings apply", device_name, link.description)
        link.users += 1
        return link

    def release(self, link: Link) -> None:
        link.users -= 1
        if link.users <= 0:
            link.drop()
            for key, value in list(self._links.items()):
                if value is link:
                    del self._links[key]

    def links(self) -> Sequence[Link]:
        return list(self._links.values())


POOL = LinkPool()
