"""``mos-sim modbus``: a Modbus PLC simulator on a real pymodbus server.

By default it is a stamping press (``simulators/scenarios/press.yaml``): a machine-state cycle
(run / idle / fault / die change / planned maintenance: a shift's pattern compressed into ten
minutes), a 16-bit stroke counter that wraps and a scrap counter, both counting only while
running, hydraulic pressure and motor current that pulse with every stroke, oil and motor
temperatures drifting, alarm bits raised in the fault state, a die id string; its device file
carries the ``kpi:`` block for ISO 22400 KPIs. A scenario is a register map — each point with tag
name, address (``hr:0``, ``co:3``, ``hr:5.3``), type, unit, category — and a value model per point:
``constant``, ``sine``, ``ramp``, ``counter``, ``random_walk`` or ``state`` (a value per machine
state), optionally different models ``when`` the machine is in a given state, plus ``noise``.

``--print-device-file`` prints a ready device file for the agent.

Fault injection, on demand:

* API (tests use it in-process): :meth:`ModbusSimulator.drop_connections`,
  :meth:`~ModbusSimulator.refuse_connections`, :meth:`~ModbusSimulator.set_delay`,
  :meth:`~ModbusSimulator.go_silent`, :meth:`~ModbusSimulator.set_exception`,
  :meth:`~ModbusSimulator.freeze`, :meth:`~ModbusSimulator.pin`;
* CLI: ``--delay``, ``--exception hr:10=2``, ``--freeze`` at start; ``--faults FILE`` for a timed
  schedule; ``--control`` reads commands from stdin (``drop``, ``refuse 5s``, ``delay 500ms``,
  ``silent 5s``, ``exception hr:10 2``, ``exception hr:10 clear``, ``clear``, ``freeze``,
  ``unfreeze``, ``status``).

The simulator never accepts writes: a write request is answered with exception 1 (illegal
function) and counted (``stats.writes_rejected``), so tests can check the agent never writes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import re
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator
from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.transaction import TransactionManager

from drivers.modbus.config import BIT_TABLES, Address, parse_address, parse_type
from mos_agent.config.models import Duration, StrictModel, parse_duration

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
DEFAULT_SCENARIO = SCENARIO_DIR / "press.yaml"
READ_FUNCTIONS = {1: "co", 2: "di", 3: "hr", 4: "ir"}
WRITE_FUNCTIONS = frozenset({5, 6, 15, 16, 22, 23})
UNIT_TIME_OFFSET = 17.0  # seconds between units' timelines, so devices behind one gateway differ

_BE_DTYPE = {"int16": ">i2", "uint16": ">u2", "int32": ">i4", "uint32": ">u4", "float32": ">f4",
             "int64": ">i8", "uint64": ">u8", "float64": ">f8"}

Order = Literal["big", "little"]


# ---------------------------------------------------------------- scenario


class Sine(StrictModel):
    mean: float = 0.0
    amplitude: float = 1.0
    period: Duration = 60.0
    phase: float = 0.0  # fraction of a period; arrays (count > 1) add i/count


class Ramp(StrictModel):
    """``start + slope·t``, wrapping from ``high`` back to ``low`` (or the reverse) when both
    are given."""

    start: float = 0.0
    slope: float = 1.0  # per second
    low: float | None = None
    high: float | None = None


class Counter(StrictModel):
    start: float = 0.0
    rate: float = 1.0  # counts per second
    in_state: str | None = None  # count only while the machine is in this state


class RandomWalk(StrictModel):
    start: float = 0.0
    step: float = 1.0  # standard deviation of the change per second
    low: float | None = None
    high: float | None = None
    revert: float = 0.02  # pull towards start per second (keeps long runs plausible)


class ValueModel(StrictModel):
    constant: float | bool | str | None = None
    sine: Sine | None = None
    ramp: Ramp | None = None
    counter: Counter | None = None
    random_walk: RandomWalk | None = None
    state: dict[str, float] | None = None  # value per machine state; others 0
    noise: float = Field(default=0.0, ge=0.0)  # standard deviation of added gaussian noise

    @model_validator(mode="after")
    def _exactly_one(self) -> ValueModel:
        given = [k for k in ("constant", "sine", "ramp", "counter", "random_walk", "state")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a model needs exactly one of constant, sine, ramp, counter, random_walk, state"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self


class CycleStep(StrictModel):
    state: str
    duration: Duration = Field(alias="for")


class DeviceInfo(StrictModel):
    name: str = "press-01"
    asset: dict[str, str] = Field(default_factory=lambda: {"area": "stamping", "line": "line-1", "cell": "cell-2"})
    stage: str = "forming"
    poll_interval: str = "500ms"
    title: str | None = None


class PointSpec(StrictModel):
    name: str
    address: str
    type: str | None = None
    count: int = Field(default=1, ge=1, le=65536)  # an array: name_0 … name_{count-1}
    unit: str | None = None
    category: str = "process"
    kind: str | None = None
    description: str | None = None
    scale: float = 1.0  # raw register value = value / scale (the device file gets the scale)
    byte_order: Order | None = None
    word_order: Order | None = None
    stale_after: str | None = None  # copied into the device file
    model: ValueModel
    when: dict[str, ValueModel] = Field(default_factory=dict)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return str(parse_address(value))

    @property
    def location(self) -> Address:
        return parse_address(self.address)

    @property
    def value_type(self) -> str:
        loc = self.location
        if self.type:
            return parse_type(self.type)[0]
        return "bool" if loc.table in BIT_TABLES or loc.bit is not None else "uint16"

    @property
    def width(self) -> int:
        t = self.value_type
        return 1 if t == "bool" else parse_type(t)[1]

    def tag_names(self) -> list[str]:
        return [self.name] if self.count == 1 else [f"{self.name}_{i}" for i in range(self.count)]


class Scenario(StrictModel):
    name: str
    description: str = ""
    device: DeviceInfo = Field(default_factory=DeviceInfo)
    byte_order: Order = "big"
    word_order: Order = "big"
    cycle: list[CycleStep] = Field(default_factory=lambda: [CycleStep(state="run", **{"for": 3600.0})])
    tables: dict[Literal["hr", "ir", "co", "di"], int] = Field(default_factory=dict)  # sizes
    refresh: Duration = 0.05  # how often the values move (at most; computed when read)
    points: list[PointSpec]
    kpi: dict[str, Any] | None = None  # the device file's kpi: block (ISO 22400 KPIs), copied as written

    @classmethod
    def load(cls, path: Path | str) -> Scenario:
        data = yaml.safe_load(Path(path).read_text())
        return cls.model_validate(data)

    @model_validator(mode="after")
    def _fits(self) -> Scenario:
        seen: set[str] = set()
        for p in self.points:
            loc = p.location
            if p.value_type == "bool" and loc.table not in BIT_TABLES and loc.bit is None:
                raise ValueError(f"point {p.name}: bool on a register needs a bit address")
            if p.value_type != "bool" and (loc.table in BIT_TABLES or loc.bit is not None):
                raise ValueError(f"point {p.name}: {p.address} holds a bit, not {p.value_type}")
            if loc.bit is not None and p.count != 1:
                raise ValueError(f"point {p.name}: a bit address cannot have count > 1")
            for name in p.tag_names():
                if name in seen:
                    raise ValueError(f"duplicate point name {name!r}")
                seen.add(name)
        return self

    def table_size(self, table: str) -> int:
        """Addresses 0..size-1 answer; past them, illegal data address."""
        if table in self.tables:
            size = self.tables[table]
        else:
            ends = [p.location.offset + p.width * p.count for p in self.points if p.location.table == table]
            size = (max(ends) + 16) if ends else 16
        return max(16, -(-size // 16) * 16)

    def state_at(self, t: float) -> str:
        total = sum(s.duration for s in self.cycle)
        r = t % total
        for step in self.cycle:
            if r < step.duration:
                return step.state
            r -= step.duration
        return self.cycle[-1].state

    def time_in_state(self, state: str, t: float) -> float:
        """Seconds spent in ``state`` during [0, t) of the repeating cycle."""
        total = sum(s.duration for s in self.cycle)
        per_cycle = sum(s.duration for s in self.cycle if s.state == state)
        full, r = divmod(t, total)
        spent = full * per_cycle
        for step in self.cycle:
            if r <= 0:
                break
            if step.state == state:
                spent += min(step.duration, r)
            r -= step.duration
        return spent


# ---------------------------------------------------------------- values → registers


def encode_registers(values: np.ndarray, type_name: str, byte_order: str = "big",
                     word_order: str = "big") -> np.ndarray:
    """Numeric values → register values (uint16), one group of registers per value."""
    dtype = np.dtype(_BE_DTYPE[type_name])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        raw = np.clip(np.round(values), float(info.min), float(info.max))
        # float64 cannot hold 2**63-1 or 2**64-1 exactly; clip just below
        if dtype.itemsize == 8:
            raw = np.minimum(raw, np.nextafter(float(info.max), 0.0))
        arr = raw.astype(dtype)
    else:
        arr = np.asarray(values).astype(dtype)
    words = arr.view(">u2").reshape(len(arr), dtype.itemsize // 2)
    if word_order == "little":
        words = words[:, ::-1]
    regs = words.astype(np.uint16)
    if byte_order == "little":
        regs = regs.byteswap()
    return regs.reshape(-1)


def encode_string(text: str, length: int, byte_order: str = "big") -> np.ndarray:
    raw = text.encode("utf-8")[:length].ljust(length, b"\x00")
    if len(raw) % 2:
        raw += b"\x00"
    regs = np.frombuffer(raw, dtype=">u2").astype(np.uint16)
    return regs.byteswap() if byte_order == "little" else regs


class _PointState:
    """One point's run-time state within one unit."""

    def __init__(self, spec: PointSpec, scenario: Scenario, seed: int) -> None:
        self.spec = spec
        loc = spec.location
        self.table, self.offset, self.bit = loc.table, loc.offset, loc.bit
        self.type = spec.value_type
        self.width = spec.width
        self.n = spec.count
        self.byte_order = spec.byte_order or scenario.byte_order
        self.word_order = spec.word_order or scenario.word_order
        self.rng = np.random.default_rng(seed)
        self.walk: dict[int, np.ndarray] = {}  # per model (id) random-walk positions
        self.pinned: Any = None
        self.last: np.ndarray | str | None = None

    def evaluate(self, scenario: Scenario, t: float, dt: float) -> np.ndarray | str:
        if self.pinned is not None:
            return self.pinned
        state = scenario.state_at(t)
        model = self.spec.when.get(state, self.spec.model)
        return self._run(model, scenario, t, dt, state)

    def _run(self, m: ValueModel, scenario: Scenario, t: float, dt: float, state: str) -> np.ndarray | str:
        n = self.n
        idx = np.arange(n, dtype=np.float64)
        if m.constant is not None:
            if isinstance(m.constant, str):
                return m.constant
            values = np.full(n, float(m.constant))
        elif m.sine is not None:
            s = m.sine
            values = s.mean + s.amplitude * np.sin(2 * math.pi * (t / s.period + s.phase + idx / n))
        elif m.ramp is not None:
            r = m.ramp
            values = r.start + r.slope * t + idx
            if r.low is not None and r.high is not None and r.high > r.low:
                values = r.low + np.mod(values - r.low, r.high - r.low)
        elif m.counter is not None:
            c = m.counter
            elapsed = scenario.time_in_state(c.in_state, t) if c.in_state else t
            values = np.floor(c.start + c.rate * elapsed) + idx
            if self.type.startswith("uint"):
                values = np.mod(values, float(2 ** (16 * self.width)))
        elif m.random_walk is not None:
            w = m.random_walk
            pos = self.walk.get(id(m))
            if pos is None:
                pos = np.full(n, w.start)
            elif dt > 0:
                pos = pos + self.rng.normal(0.0, w.step * math.sqrt(dt), n) + (w.start - pos) * min(1.0, w.revert * dt)
                low = w.low if w.low is not None else -np.inf
                high = w.high if w.high is not None else np.inf
                pos = np.clip(pos, low, high)
            self.walk[id(m)] = pos
            values = pos
        else:
            assert m.state is not None
            values = np.full(n, float(m.state.get(state, 0.0)))
        if m.noise:
            values = values + self.rng.normal(0.0, m.noise, n)
        return values


@dataclass
class SimStats:
    connections_opened: int = 0
    peak_connections: int = 0  # most client connections open at the same time
    requests: int = 0
    by_function: dict[int, int] = field(default_factory=dict)
    exceptions_sent: int = 0
    unanswered: int = 0
    writes_rejected: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Unit:
    """One unit id: its register image (what pymodbus serves) and its points' state."""

    def __init__(self, sim: ModbusSimulator, unit_id: int, index: int) -> None:
        self.sim = sim
        self.unit_id = unit_id
        sc = sim.scenario
        self.time_offset = index * UNIT_TIME_OFFSET
        self.points = [_PointState(p, sc, seed=unit_id * 1000 + i) for i, p in enumerate(sc.points)]
        self.by_name = {p.spec.name: p for p in self.points}
        self.regs = {t: np.zeros(sc.table_size(t), dtype=np.uint16) for t in ("hr", "ir")}
        self.bits = {t: np.zeros(sc.table_size(t), dtype=np.bool_) for t in ("co", "di")}
        self.packed = {t: np.zeros(sc.table_size(t) // 16, dtype=np.uint16) for t in ("co", "di")}
        self.last_refresh: float | None = None
        self.refresh(time.monotonic())

    def sim_device(self) -> SimDevice:
        sc = self.sim.scenario

        def bits(table: str) -> list[SimData]:
            return [SimData(0, values=[False] * sc.table_size(table), datatype=DataType.BITS)]

        def registers(table: str) -> list[SimData]:
            return [SimData(0, count=sc.table_size(table), values=0, datatype=DataType.REGISTERS)]

        return SimDevice(self.unit_id, simdata=(bits("co"), bits("di"), registers("hr"), registers("ir")),
                         action=self._serve)

    def refresh(self, now: float) -> None:
        sim = self.sim
        if self.last_refresh is not None and (sim.frozen or now - self.last_refresh < sim.scenario.refresh):
            return
        dt = 0.0 if self.last_refresh is None else now - self.last_refresh
        self.last_refresh = now
        t = now - sim.started + self.time_offset
        for p in self.points:
            value = p.evaluate(sim.scenario, t, dt)
            self._store(p, value)
        for table in ("co", "di"):
            self.packed[table] = np.packbits(self.bits[table], bitorder="little").view("<u2").astype(np.uint16)

    def _store(self, p: _PointState, value: np.ndarray | str | float | bool) -> None:
        if p.type.startswith("string:"):
            text = value if isinstance(value, str) else str(value)
            p.last = text
            length = int(p.type.split(":")[1])
            regs = encode_string(text, length, p.byte_order)
            self.regs[p.table][p.offset:p.offset + len(regs)] = regs
            return
        values = np.broadcast_to(np.asarray(value, dtype=np.float64), (p.n,))
        p.last = values
        if p.table in BIT_TABLES:
            self.bits[p.table][p.offset:p.offset + p.n] = values != 0
        elif p.bit is not None:
            mask = np.uint16(1 << p.bit)
            reg = self.regs[p.table]
            reg[p.offset] = (reg[p.offset] | mask) if values[0] != 0 else (reg[p.offset] & ~mask)
        else:
            raw = values / p.spec.scale if p.spec.scale != 1.0 else values
            regs = encode_registers(raw, p.type, p.byte_order, p.word_order)
            self.regs[p.table][p.offset:p.offset + len(regs)] = regs

    async def _serve(self, function_code: int, start_address: int, address: int, count: int,
                     registers: list[int], set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        """pymodbus' per-request hook: bring the requested slice of its register list up to date."""
        table = READ_FUNCTIONS.get(function_code)
        if table is None or set_values is not None:
            return None
        self.refresh(time.monotonic())
        if table in BIT_TABLES:
            first = address // 16 - start_address
            registers[first:first + count] = self.packed[table][first:first + count].tolist()
        else:
            first = address - start_address
            registers[first:first + count] = self.regs[table][first:first + count].tolist()
        return None


# ---------------------------------------------------------------- server with fault injection


class _Handler(ServerRequestHandler):
    """pymodbus' per-connection handler, answering through the simulator's faults. Each request
    is answered by its own task holding its own PDU (the stock handler reads ``last_pdu`` again
    after awaiting the datastore, which breaks once answers are delayed)."""

    def callback_connected(self) -> None:
        super().callback_connected()
        sim: ModbusSimulator = self.server.simulator
        sim.stats.connections_opened += 1
        sim.stats.peak_connections = max(sim.stats.peak_connections, sim.active_connections)
        if sim.refusing():
            self.loop.call_soon(self.close)

    def callback_data(self, data: bytes, addr: tuple | None = None) -> int:
        try:
            used_len = TransactionManager.callback_data(self, data, addr)
        except ModbusIOException as exc:
            response = ExceptionResponse(0 if exc.fcode is None else exc.fcode,
                                         exception_code=ExcCodes.ILLEGAL_FUNCTION, device_id=exc.dev_id,
                                         transaction=exc.transaction_id)
            self.server_send(response, addr)
            return len(data)
        if self.last_pdu:
            sim: ModbusSimulator = self.server.simulator
            sim._spawn(sim.answer(self, self.last_pdu, self.last_addr))
        return used_len


class _TcpServer(ModbusTcpServer):
    def __init__(self, simulator: ModbusSimulator, *args: Any, **kwargs: Any) -> None:
        self.simulator = simulator
        super().__init__(*args, **kwargs)

    def callback_new_connection(self) -> _Handler:
        return _Handler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class _SerialServer(ModbusSerialServer):
    def __init__(self, simulator: ModbusSimulator, *args: Any, **kwargs: Any) -> None:
        self.simulator = simulator
        super().__init__(*args, **kwargs)

    def callback_new_connection(self) -> _Handler:
        return _Handler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


@dataclass
class SerialOptions:
    port: str
    baudrate: int = 19200
    parity: str = "E"
    stopbits: int = 1
    bytesize: int = 8


class ModbusSimulator:
    """A simulated PLC on a pymodbus server (TCP, RTU framing over TCP, or RTU on a serial port).

    ``async with ModbusSimulator(scenario, port=5020) as sim: ...`` or ``await sim.start()`` /
    ``await sim.stop()``; everything runs in the caller's event loop.
    """

    def __init__(self, scenario: Scenario | Path | str | None = None, *, host: str = "127.0.0.1",
                 port: int = 5020, unit_ids: Iterable[int] = (1,), framer: str = "socket",
                 serial: SerialOptions | None = None) -> None:
        if scenario is None:
            scenario = DEFAULT_SCENARIO
        self.scenario = scenario if isinstance(scenario, Scenario) else Scenario.load(scenario)
        self.host, self.port = host, port
        self.unit_ids = tuple(unit_ids)
        if not self.unit_ids:
            raise ValueError("at least one unit id")
        self.framer = FramerType.RTU if (framer == "rtu" or serial is not None) else FramerType.SOCKET
        self.serial = serial
        self.started = time.monotonic()
        self.stats = SimStats()
        self.tasks: set[asyncio.Task] = set()
        # faults
        self.frozen = False
        self.delay = 0.0
        self._silent_until = 0.0
        self._refuse_until = 0.0
        self._exceptions: dict[tuple[int | None, str, int], int] = {}
        self.units: dict[int, _Unit] = {}
        self._server: ModbusTcpServer | ModbusSerialServer | None = None

    # ---------------------------------------------------------- lifecycle

    async def start(self) -> ModbusSimulator:
        self.started = time.monotonic()
        self.units = {u: _Unit(self, u, i) for i, u in enumerate(self.unit_ids)}
        devices = [unit.sim_device() for unit in self.units.values()]
        if self.serial is not None:
            s = self.serial
            self._server = _SerialServer(self, devices, framer=FramerType.RTU, port=s.port, baudrate=s.baudrate,
                                         parity=s.parity, stopbits=s.stopbits, bytesize=s.bytesize)
        else:
            self._server = _TcpServer(self, devices, framer=self.framer, address=(self.host, self.port))
        await self._server.serve_forever(background=True)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
        for task in list(self.tasks):
            task.cancel()
        self.tasks.clear()

    async def __aenter__(self) -> ModbusSimulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def active_connections(self) -> int:
        return len(self._server.active_connections) if self._server is not None else 0

    @property
    def endpoint(self) -> str:
        return f"rtu:{self.serial.port}" if self.serial else f"{self.host}:{self.port}"

    # ---------------------------------------------------------- faults

    def drop_connections(self) -> int:
        """Close every client connection now (TCP); returns how many were closed."""
        if self._server is None or self.serial is not None:
            return 0
        handlers = list(self._server.active_connections.values())
        for handler in handlers:
            handler.close()
        return len(handlers)

    def refuse_connections(self, seconds: float) -> None:
        """Drop every connection and stop listening for ``seconds``: connecting is refused (TCP)."""
        self._refuse_until = time.monotonic() + seconds
        self.drop_connections()
        server = self._server
        if server is None or self.serial is not None or server.transport is None:
            return
        server.transport.close()
        server.transport = None  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        loop.call_later(seconds, self._spawn, self._listen_again())

    async def _listen_again(self) -> None:
        if self._server is not None and self._server.transport is None and not await self._server.listen():
            raise RuntimeError(f"cannot listen on {self.endpoint} again")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def refusing(self) -> bool:
        return time.monotonic() < self._refuse_until

    def set_delay(self, seconds: float) -> None:
        """Answer every request ``seconds`` late (0: on time)."""
        self.delay = max(0.0, seconds)

    def go_silent(self, seconds: float) -> None:
        """Answer nothing for ``seconds`` (requests are read and ignored, connections stay up)."""
        self._silent_until = time.monotonic() + seconds

    def silent(self) -> bool:
        return time.monotonic() < self._silent_until

    def set_exception(self, address: str, code: int, unit_id: int | None = None) -> None:
        """Answer exception ``code`` to every read touching ``address`` (e.g. ``"hr:10"``)."""
        if not 1 <= code <= 255:
            raise ValueError("an exception code is 1..255")
        loc = parse_address(address)
        self._exceptions[(unit_id, loc.table, loc.offset)] = code

    def clear_exception(self, address: str | None = None, unit_id: int | None = None) -> None:
        if address is None:
            self._exceptions.clear()
            return
        loc = parse_address(address)
        self._exceptions.pop((unit_id, loc.table, loc.offset), None)

    def freeze(self, frozen: bool = True) -> None:
        """Stop (or restart) the values changing; the device keeps answering."""
        self.frozen = frozen

    def pin(self, name: str, value: float | bool | str | None, unit_id: int | None = None) -> None:
        """Hold a point at ``value`` (None: back to its model); takes effect at once."""
        for unit in self._target_units(unit_id):
            point = unit.by_name[name]
            point.pinned = value
            unit._store(point, value if value is not None else point.evaluate(
                self.scenario, time.monotonic() - self.started + unit.time_offset, 0.0))
            for table in ("co", "di"):
                unit.packed[table] = np.packbits(unit.bits[table], bitorder="little").view("<u2").astype(np.uint16)

    def value(self, name: str, unit_id: int | None = None) -> Any:
        """The modelled value of a point now, in engineering units (what the agent reports after
        applying the tag's scale): a float, a list for arrays, or a string."""
        unit = self._target_units(unit_id)[0]
        unit.refresh(time.monotonic())
        last = unit.by_name[name].last
        if isinstance(last, np.ndarray):
            return float(last[0]) if len(last) == 1 else last.tolist()
        return last

    def _target_units(self, unit_id: int | None) -> list[_Unit]:
        if not self.units:
            raise RuntimeError("the simulator is not started")
        return [self.units[unit_id]] if unit_id is not None else list(self.units.values())

    def _exception_for(self, unit_id: int, function_code: int, address: int, count: int) -> int:
        if not self._exceptions:
            return 0
        table = READ_FUNCTIONS[function_code]
        for (unit, t, offset), code in self._exceptions.items():
            if t == table and (unit is None or unit == unit_id) and address <= offset < address + count:
                return code
        return 0

    # ---------------------------------------------------------- answering

    async def answer(self, handler: _Handler, pdu: Any, addr: tuple | None) -> None:
        stats = self.stats
        if self.silent():
            stats.unanswered += 1
            return
        if self.delay:
            await asyncio.sleep(self.delay)
            if handler.transport is None:
                return
            if self.silent():
                stats.unanswered += 1
                return
        fc = pdu.function_code
        unit_id = pdu.dev_id
        stats.requests += 1
        stats.by_function[fc] = stats.by_function.get(fc, 0) + 1
        if unit_id not in self.units:
            if unit_id == 0 and self.framer == FramerType.SOCKET:
                unit_id = self.unit_ids[0]  # Modbus TCP: unit 0 addresses the device itself
            elif self.framer == FramerType.RTU:
                stats.unanswered += 1
                return  # nobody at that address on the bus
            else:
                response = ExceptionResponse(fc, ExcCodes.GATEWAY_NO_RESPONSE)
                stats.exceptions_sent += 1
                self._send(handler, response, pdu, addr)
                return
        if fc in WRITE_FUNCTIONS:
            stats.writes_rejected += 1
            stats.exceptions_sent += 1
            self._send(handler, ExceptionResponse(fc, ExcCodes.ILLEGAL_FUNCTION), pdu, addr)
            return
        if fc in READ_FUNCTIONS and (code := self._exception_for(unit_id, fc, pdu.address, pdu.count)):
            stats.exceptions_sent += 1
            self._send(handler, ExceptionResponse(fc, code), pdu, addr)
            return
        try:
            response = await pdu.datastore_update(handler.server.context, unit_id)
        except Exception:  # what the stock handler does: a datastore failure is a device failure
            response = ExceptionResponse(fc, ExcCodes.DEVICE_FAILURE)
        if isinstance(response, ExceptionResponse):
            stats.exceptions_sent += 1
        self._send(handler, response, pdu, addr)

    @staticmethod
    def _send(handler: _Handler, response: Any, pdu: Any, addr: tuple | None) -> None:
        if handler.transport is None:
            return
        response.transaction_id = pdu.transaction_id
        response.dev_id = pdu.dev_id
        handler.server_send(response, addr)

    # ---------------------------------------------------------- device file

    def device_file(self, name: str | None = None, unit_id: int | None = None, transport: str | None = None) -> str:
        """A device file for the agent that reads every point of this simulator."""
        return device_file_text(self.scenario, name=name, host=self.host, port=self.port,
                                unit_id=unit_id if unit_id is not None else self.unit_ids[0],
                                transport=transport or ("rtu" if self.serial else
                                                        "rtu_over_tcp" if self.framer == FramerType.RTU else "tcp"),
                                serial=self.serial)


_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")
_YAML_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"})


def _flow(data: Any) -> str:
    """A YAML flow mapping (``{a: 1, b: "hr:0"}``) for plain data; quick enough for 10,000 tags."""
    if isinstance(data, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in data.items()) + "}"
    if isinstance(data, list):
        return "[" + ", ".join(_flow(v) for v in data) + "]"
    if isinstance(data, bool):
        return "true" if data else "false"
    if isinstance(data, int | float):
        return repr(data)
    text = str(data)
    if _PLAIN.match(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def device_file_text(scenario: Scenario, *, name: str | None = None, host: str = "127.0.0.1", port: int = 5020,
                     unit_id: int = 1, transport: str = "tcp", serial: SerialOptions | None = None) -> str:
    info = scenario.device
    lines = [
        f"# Device file for the simulated {scenario.name} (mos-sim modbus, scenario {scenario.name!r}).",
        f"name: {name or info.name}",
        "driver: modbus",
        *_placement_lines(scenario),
        f"poll_interval: {info.poll_interval}",
        f"connection: {_flow(_connection(host, port, unit_id, transport, serial))}",
        *_tag_lines(scenario),
        *_kpi_lines(scenario),
    ]
    return "\n".join(lines) + "\n"


def profile_name(scenario: Scenario) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", scenario.name.lower()).strip("-") or "modbus-machine"


def machine_files(scenario: Scenario, *, name: str | None = None, host: str = "127.0.0.1", ports: Sequence[int],
                  unit_ids: Sequence[int], transport: str = "tcp", serial: SerialOptions | None = None
                  ) -> dict[str, str]:
    """Several identical machines: a profile with the tags and one short device file each, as
    ``{"profiles/<model>.yaml": text, "devices/<name>.yaml": text, ...}``."""
    profile = profile_name(scenario)
    files = {f"profiles/{profile}.yaml": "\n".join([
        f"# Profile of the simulated {scenario.name} (mos-sim modbus, scenario {scenario.name!r}): what every",
        "# machine of this model has. Each device file names it and adds its own place and connection.",
        f"profile: {profile}",
        "driver: modbus",
        f"poll_interval: {scenario.device.poll_interval}",
        *_tag_lines(scenario),
        *_kpi_lines(scenario),
    ]) + "\n"}
    machines = [(port, unit_id) for port in ports for unit_id in unit_ids]
    for index, (port, unit_id) in enumerate(machines):
        device = _numbered(name or scenario.device.name, index)
        files[f"devices/{device}.yaml"] = "\n".join([
            f"# Machine {index + 1} of {len(machines)} simulated (mos-sim modbus, {scenario.name}): its tags are in "
            f"profile {profile}.",
            f"name: {device}",
            f"profile: ../profiles/{profile}.yaml",
            *_placement_lines(scenario),
            f"connection: {_flow(_connection(host, port, unit_id, transport, serial))}",
        ]) + "\n"
    return files


def _numbered(name: str, index: int) -> str:
    """``press-01`` → ``press-01``, ``press-02``, …; a name without a number gets ``-01``, ``-02``, …"""
    found = re.match(r"^(.*?)(\d+)$", name)
    if found is None:
        return f"{name}-{index + 1:02d}"
    digits = found.group(2)
    return f"{found.group(1)}{int(digits) + index:0{len(digits)}d}"


def _placement_lines(scenario: Scenario) -> list[str]:
    info = scenario.device
    lines = [f"asset: {_flow(info.asset)}", f"stage: {info.stage}"]
    if info.title:
        lines.append(f"title: {_flow({'en': info.title})}")
    return lines


def _connection(host: str, port: int, unit_id: int, transport: str, serial: SerialOptions | None) -> dict[str, Any]:
    if transport == "rtu":
        assert serial is not None
        return {"transport": "rtu", "serial": {
            "port": serial.port, "baudrate": serial.baudrate, "parity": serial.parity,
            "stopbits": serial.stopbits, "bytesize": serial.bytesize}, "unit_id": unit_id, "timeout": "1s"}
    connection: dict[str, Any] = {"host": host, "port": port, "unit_id": unit_id, "timeout": "1s"}
    return connection if transport == "tcp" else {"transport": transport, **connection}


def _kpi_lines(scenario: Scenario) -> list[str]:
    return [f"kpi: {_flow(scenario.kpi)}"] if scenario.kpi else []


def _tag_lines(scenario: Scenario) -> list[str]:
    lines = ["tags:"]
    # scenario-wide orders other than big/big apply to the whole device
    if scenario.byte_order != "big" or scenario.word_order != "big":
        lines.insert(0, f"# registers are {scenario.byte_order}-endian bytes, {scenario.word_order}-endian words")
    for p in scenario.points:
        loc = p.location
        for i, tag_name in enumerate(p.tag_names()):
            offset = loc.offset + i * p.width
            address = f"{loc.table}:{offset}" + (f".{loc.bit}" if loc.bit is not None else "")
            tag: dict[str, Any] = {"name": tag_name, "address": address}
            if p.type:
                tag["type"] = p.value_type
            for key in ("byte_order", "word_order"):
                if getattr(p, key) and getattr(p, key) != getattr(scenario, key):
                    tag[key] = getattr(p, key)
            if p.scale != 1.0:
                tag["scale"] = p.scale
            if p.unit:
                tag["unit"] = p.unit
            tag["category"] = p.category
            if p.kind:
                tag["kind"] = p.kind
            if p.stale_after:
                tag["stale_after"] = p.stale_after
            if p.description:
                tag["description"] = p.description
            lines.append(f"  - {_flow(tag)}")
    return lines


# ---------------------------------------------------------------- fault schedule and control


def _at_time(value: Any) -> float:
    """Like a duration, but 0 (at start) is allowed."""
    if value in (0, "0") or (isinstance(value, str) and value.strip() in ("0s", "0ms")):
        return 0.0
    return parse_duration(value)


class FaultStep(StrictModel):
    """One entry of a ``--faults`` schedule."""

    at: Annotated[float, BeforeValidator(_at_time)]  # seconds after start
    drop: bool | None = None
    refuse: Duration | None = None
    delay: str | None = None  # "500ms"; with "for" it is lifted afterwards
    silent: Duration | None = None
    freeze: Duration | None = None
    exception: dict[str, Any] | None = None  # {address: "hr:10", code: 2, unit_id: 1}
    duration: Duration | None = Field(default=None, alias="for")

    @model_validator(mode="after")
    def _one(self) -> FaultStep:
        kinds = ("drop", "refuse", "delay", "silent", "freeze", "exception")
        given = [k for k in kinds if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("each fault step needs exactly one of drop, refuse, delay, silent, freeze, exception")
        return self


def _duration_or_zero(text: str) -> float:
    return 0.0 if text.strip() in ("0", "0ms", "0s", "off") else parse_duration(text)


def apply_fault(sim: ModbusSimulator, step: FaultStep, loop: asyncio.AbstractEventLoop) -> str:
    if step.drop:
        return f"dropped {sim.drop_connections()} connection(s)"
    if step.refuse is not None:
        sim.refuse_connections(step.refuse)
        return f"refusing connections for {step.refuse:g}s"
    if step.silent is not None:
        sim.go_silent(step.silent)
        return f"silent for {step.silent:g}s"
    if step.freeze is not None:
        sim.freeze(True)
        loop.call_later(step.freeze, sim.freeze, False)
        return f"values frozen for {step.freeze:g}s"
    if step.delay is not None:
        sim.set_delay(_duration_or_zero(step.delay))
        if step.duration:
            loop.call_later(step.duration, sim.set_delay, 0.0)
        return f"answering {sim.delay * 1000:.0f}ms late" + (f" for {step.duration:g}s" if step.duration else "")
    assert step.exception is not None
    address = str(step.exception["address"])
    code = int(step.exception.get("code", 2))
    unit = step.exception.get("unit_id")
    sim.set_exception(address, code, unit)
    if step.duration:
        loop.call_later(step.duration, sim.clear_exception, address, unit)
    return f"exception {code} for {address}" + (f" for {step.duration:g}s" if step.duration else "")


def _apply_everywhere(sims: list[ModbusSimulator], step: FaultStep, loop: asyncio.AbstractEventLoop) -> None:
    for sim in sims:
        _log(apply_fault(sim, step, loop))


def control_command(sim: ModbusSimulator, line: str) -> str:
    """One line of the stdin control channel → a one-line answer."""
    words = line.split()
    if not words:
        return ""
    cmd, args = words[0].lower(), words[1:]
    try:
        if cmd == "drop":
            return f"ok: dropped {sim.drop_connections()} connection(s)"
        if cmd == "refuse":
            sim.refuse_connections(parse_duration(args[0]))
            return "ok: refusing connections"
        if cmd == "delay":
            sim.set_delay(_duration_or_zero(args[0]))
            return f"ok: delay {sim.delay * 1000:.0f}ms"
        if cmd == "silent":
            sim.go_silent(parse_duration(args[0]))
            return "ok: silent"
        if cmd == "exception":
            if args[1].lower() == "clear":
                sim.clear_exception(args[0])
                return f"ok: {args[0]} answers again"
            sim.set_exception(args[0], int(args[1]))
            return f"ok: exception {args[1]} for {args[0]}"
        if cmd == "clear":
            sim.clear_exception()
            sim.set_delay(0.0)
            sim.freeze(False)
            sim._silent_until = sim._refuse_until = 0.0
            return "ok: all faults cleared"
        if cmd in ("freeze", "unfreeze"):
            sim.freeze(cmd == "freeze")
            return f"ok: {cmd}"
        if cmd == "status":
            return json.dumps({**sim.stats.as_dict(), "active_connections": sim.active_connections})
    except (IndexError, ValueError) as exc:
        return f"error: {exc or 'missing argument'}"
    return ("error: unknown command (drop | refuse 5s | delay 500ms | silent 5s | exception hr:10 2 | "
            "exception hr:10 clear | clear | freeze | unfreeze | status)")


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mos-sim modbus", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default=str(DEFAULT_SCENARIO), help="scenario YAML (default: the stamping press)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5020, help="TCP port (default 5020)")
    p.add_argument("--count", type=int, default=1,
                   help="serve this many identical devices on consecutive ports from --port")
    p.add_argument("--unit-id", default="1", help="unit id(s) served, e.g. 1 or 1,2,3 (devices behind a gateway)")
    p.add_argument("--rtu", metavar="DEVICE", help="serve Modbus RTU on this serial device instead of TCP")
    p.add_argument("--rtu-over-tcp", action="store_true", help="RTU framing on the TCP port (a serial gateway)")
    p.add_argument("--baudrate", type=int, default=19200)
    p.add_argument("--parity", choices=("N", "E", "O"), default="E")
    p.add_argument("--stopbits", type=int, choices=(1, 2), default=1)
    p.add_argument("--print-device-file", action="store_true", help="print a device file for the agent and exit")
    p.add_argument("--name", help="device name in the printed device file")
    p.add_argument("--devices-dir", type=Path, metavar="DIR",
                   help="with --print-device-file: write the files into DIR instead; several machines "
                        "(--count, --unit-id) get a profile in DIR/profiles and a short file each in DIR/devices")
    p.add_argument("--delay", default="0", help="answer every request this late, e.g. 300ms")
    p.add_argument("--exception", action="append", default=[], metavar="ADDRESS=CODE",
                   help="answer exception CODE for reads touching ADDRESS, e.g. hr:10=2 (repeatable)")
    p.add_argument("--freeze", action="store_true", help="start with frozen values")
    p.add_argument("--faults", metavar="FILE", help="YAML list of timed faults: {at: 10s, drop: true} …")
    p.add_argument("--control", action="store_true", help="read fault commands from stdin, one a line")
    p.add_argument("--duration", help="stop after this long (default: run until interrupted)")
    return p


def _unit_ids(text: str) -> tuple[int, ...]:
    ids: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            ids.extend(range(int(a), int(b) + 1))
        elif part.strip():
            ids.append(int(part))
    if not ids or any(not 0 <= u <= 247 for u in ids):
        raise ValueError(f"unit ids are 0..247, got {text!r}")
    return tuple(ids)


def _log(message: str) -> None:
    print(f"mos-sim modbus: {message}", file=sys.stderr, flush=True)


async def _serve(args: argparse.Namespace, scenario: Scenario, units: tuple[int, ...],
                 faults: list[FaultStep]) -> None:
    serial = SerialOptions(args.rtu, args.baudrate, args.parity, args.stopbits) if args.rtu else None
    count = 1 if serial else max(1, args.count)
    sims = [ModbusSimulator(scenario, host=args.host, port=args.port + i, unit_ids=units,
                            framer="rtu" if args.rtu_over_tcp else "socket", serial=serial) for i in range(count)]
    loop = asyncio.get_running_loop()
    try:
        for sim in sims:
            await sim.start()
            sim.set_delay(_duration_or_zero(args.delay))
            sim.freeze(args.freeze)
            for spec in args.exception:
                address, _, code = spec.partition("=")
                sim.set_exception(address, int(code or 2))
        where = sims[0].endpoint if count == 1 else f"{args.host}:{args.port}..{args.port + count - 1}"
        _log(f"serving {scenario.name!r} ({sum(p.count for p in scenario.points)} points) on {where}, "
             f"unit id{'s' if len(units) > 1 else ''} {','.join(map(str, units))}")
        for step in faults:
            loop.call_later(step.at, _apply_everywhere, sims, step, loop)
        if args.control:
            _start_control_channel(sims, loop)
        deadline = parse_duration(args.duration) if args.duration else math.inf
        stop = asyncio.Event()
        with contextlib.suppress(NotImplementedError):
            import signal

            loop.add_signal_handler(signal.SIGTERM, stop.set)
            loop.add_signal_handler(signal.SIGINT, stop.set)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), None if deadline == math.inf else deadline)
    finally:
        for sim in sims:
            await sim.stop()


def _start_control_channel(sims: list[ModbusSimulator], loop: asyncio.AbstractEventLoop) -> None:
    """Read commands from stdin on a daemon thread (a blocked read must not keep the process
    alive at exit) and run them in the event loop."""

    def run(line: str) -> None:
        answer = ""
        for sim in sims:
            answer = control_command(sim, line)
        if answer:
            print(answer, flush=True)

    def reader() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(run, line)

    threading.Thread(target=reader, name="control", daemon=True).start()


def _print_device_files(args: argparse.Namespace, scenario: Scenario, units: tuple[int, ...]) -> int:
    serial = SerialOptions(args.rtu, args.baudrate, args.parity, args.stopbits) if args.rtu else None
    transport = "rtu" if serial else "rtu_over_tcp" if args.rtu_over_tcp else "tcp"
    ports = [args.port] if serial else [args.port + i for i in range(max(1, args.count))]
    if len(ports) * len(units) == 1:
        text = device_file_text(scenario, name=args.name, host=args.host, port=args.port, unit_id=units[0],
                                transport=transport, serial=serial)
        files = {f"devices/{yaml.safe_load(text)['name']}.yaml": text}
    else:
        files = machine_files(scenario, name=args.name, host=args.host, ports=ports, unit_ids=units,
                              transport=transport, serial=serial)
    if args.devices_dir is None:
        if len(files) > 1:
            print("mos-sim modbus: several machines share a profile: give --devices-dir DIR to write the "
                  "profile and their device files", file=sys.stderr)
            return 2
        print(next(iter(files.values())), end="")
        return 0
    for relative, text in files.items():
        path = args.devices_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    _log(f"wrote {len(files)} files into {args.devices_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        scenario = Scenario.load(args.scenario)
        units = _unit_ids(args.unit_id)
        faults: list[FaultStep] = []
        if args.faults:
            raw = yaml.safe_load(Path(args.faults).read_text()) or []
            faults = [FaultStep.model_validate(item) for item in raw]
        for spec in args.exception:
            parse_address(spec.partition("=")[0])
    except (OSError, ValueError, ValidationError, yaml.YAMLError) as exc:
        print(f"mos-sim modbus: {exc}", file=sys.stderr)
        return 2
    if args.print_device_file:
        return _print_device_files(args, scenario, units)
    try:
        asyncio.run(_serve(args, scenario, units, faults))
    except KeyboardInterrupt:
        pass
    except (OSError, RuntimeError) as exc:
        print(f"mos-sim modbus: cannot serve: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
