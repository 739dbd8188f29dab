"""``mos-sim opcua``: a CNC machining centre as an OPC UA server (asyncua).

The address space (``ns=2;s=Machine.…``, namespace ``urn:mos-agent:simulator:cnc``) follows a YAML
scenario (``simulators/scenarios/cnc.yaml``): spindle speed and load, X/Y/Z positions, feed rate,
coolant, part counter, program name, an OPC 40001-style machine state and operation mode, an
enumeration, alarms, energy, and an array. Analog items carry ``EngineeringUnits``
(EUInformation with the UNECE code's UnitId) and ``EURange``. Values change ``update_rate`` times
a second, each tick written with one source timestamp.

Security: endpoints ``none``, ``sign`` and ``sign-encrypt`` (Basic256Sha256) in any combination;
the server certificate is generated once into ``--cert-dir`` (so a restart keeps it). Users:
``--user NAME:PASSWORD`` (then anonymous logins are refused unless ``--allow-anonymous``).

Fault injection: ``--restart-every/--restart-for`` (the server goes away and comes back with new
sessions), ``--stall-every/--stall-for`` (subscriptions stop publishing, not even keep-alives,
while reads still work), ``--bad-status PATH=CODE`` (a node reports a StatusCode such as
BadSensorFailure or UncertainLastUsableValue). ``kill -USR1`` restarts the server at once.

Programmatic use (tests, benchmarks)::

    sim = CncSimulator(SimulatorConfig(port=4840, security=("none", "sign-encrypt")))
    await sim.start(); sim.node_id("Spindle.Speed"); await sim.restart(down_for=1.0)
    sim.set_status("Spindle.Speed", "BadSensorFailure"); await sim.stall_publishing(True)
    await sim.stop()
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import math
import random
import re
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from asyncua import Server, ua
from asyncua.common.node import Node
from asyncua.common.structures104 import new_enum
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography.x509.oid import ExtendedKeyUsageOID

from mos_agent import units

log = logging.getLogger("mos-sim.opcua")

DEFAULT_SCENARIO = Path(__file__).resolve().parent / "scenarios" / "cnc.yaml"
APPLICATION_URI = "urn:mos-agent:simulator:cnc:server"  # the namespace URI is the scenario's
UNITS_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"
SECURITY_CHOICES = ("none", "sign", "sign-encrypt")
_POLICIES = {
    "none": ua.SecurityPolicyType.NoSecurity,
    "sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "sign-encrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}
_VARIANTS = {
    "Double": ua.VariantType.Double, "Float": ua.VariantType.Float, "Int16": ua.VariantType.Int16,
    "Int32": ua.VariantType.Int32, "Int64": ua.VariantType.Int64, "UInt16": ua.VariantType.UInt16,
    "UInt32": ua.VariantType.UInt32, "UInt64": ua.VariantType.UInt64, "Boolean": ua.VariantType.Boolean,
    "String": ua.VariantType.String, "LocalizedText": ua.VariantType.LocalizedText,
    "Enumeration": ua.VariantType.Int32,
}
_UNECE = {u.unece: u for u in units.UNITS.values()}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def seconds(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"bad duration {value!r} in the scenario (expected e.g. 500ms, 4s, 5m)")
    return float(m.group(1)) * {"ms": 1e-3, "s": 1.0, None: 1.0, "m": 60.0, "h": 3600.0}[m.group(2)]


def status_code(code: str | int) -> int:
    """``BadSensorFailure`` / ``0x808B0000`` / an int → the StatusCode value."""
    if isinstance(code, int):
        return code
    text = code.strip()
    if text.lower().startswith("0x"):
        return int(text, 16)
    if text.isdigit():
        return int(text)
    value = getattr(ua.StatusCodes, text, None)
    if not isinstance(value, int):
        raise ValueError(f"unknown StatusCode {code!r} (e.g. BadSensorFailure, UncertainLastUsableValue, 0x808B0000)")
    return value


# ---------------------------------------------------------------- the machine model


@dataclass
class Phase:
    name: str
    duration: float


@dataclass
class MachineState:
    """What every signal reads: where in the part cycle the machine is."""

    started: float
    phases: list[Phase]
    programs: list[str]
    parts_per_program: int
    parts: int = 0
    last_cycle_time: float = 0.0
    phase: str = ""
    _cycle_start: float = 0.0

    @property
    def cycle_length(self) -> float:
        return sum(p.duration for p in self.phases) or 1.0

    def advance(self, now: float) -> None:
        elapsed = now - self.started
        cycles = int(elapsed // self.cycle_length)
        if cycles > self.parts:
            self.last_cycle_time = self.cycle_length * (1.0 + random.uniform(-0.01, 0.01))
            self.parts = cycles
        into = elapsed - cycles * self.cycle_length
        for p in self.phases:
            if into < p.duration:
                self.phase = p.name
                return
            into -= p.duration
        self.phase = self.phases[-1].name if self.phases else ""

    @property
    def program(self) -> str:
        if not self.programs:
            return ""
        return self.programs[(self.parts // max(1, self.parts_per_program)) % len(self.programs)]


Signal = Callable[[MachineState, float, float], Any]  # (state, now since start, dt) → value


def make_signal(spec: dict[str, Any], values: dict[str, Any]) -> Signal:
    """A signal from its scenario description (see cnc.yaml for the kinds)."""
    spec = dict(spec)
    noise = float(spec.pop("noise", 0.0))
    lag = float(spec.pop("lag", 0.0))
    during = spec.pop("during", None)
    idle = spec.pop("idle", 0.0)
    scale = float(spec.pop("scale", 1.0))
    if len(spec) != 1:
        raise ValueError(f"a signal has exactly one kind, got {sorted(spec) or 'none'}")
    kind, arg = next(iter(spec.items()))
    base: Signal
    if kind == "constant":
        base = lambda s, t, d: arg  # noqa: E731
    elif kind == "phase":
        table = dict(arg)
        default = table.pop("default", 0)
        base = lambda s, t, d: table.get(s.phase, default)  # noqa: E731
    elif kind == "sine":
        mean, amp = float(arg.get("mean", 0)), float(arg.get("amplitude", 1))
        period, offset = seconds(arg.get("period", 10)), seconds(arg.get("offset", 0))
        base = lambda s, t, d: mean + amp * math.sin(2 * math.pi * (t + offset) / period)  # noqa: E731
    elif kind == "drift":
        walk = {"v": float(arg.get("start", 0))}
        step, low, high = float(arg.get("step", 0.1)), float(arg.get("min", -math.inf)), float(arg.get("max", math.inf))

        def base(s: MachineState, t: float, d: float) -> float:
            walk["v"] = min(high, max(low, walk["v"] + random.gauss(0, step) * math.sqrt(max(d, 1e-3))))
            return walk["v"]
    elif kind == "counter":
        base = lambda s, t, d: s.parts  # noqa: E731
    elif kind == "cycle_time":
        base = lambda s, t, d: round(s.last_cycle_time, 2)  # noqa: E731
    elif kind == "program":
        base = lambda s, t, d: s.program  # noqa: E731
    elif kind == "timeline":
        period = seconds(arg["period"])
        steps = sorted((seconds(at), v) for at, v in arg["steps"])

        def base(s: MachineState, t: float, d: float) -> Any:
            into = t % period
            current = steps[0][1]
            for at, v in steps:
                if into >= at:
                    current = v
            return current
    elif kind == "integrate":
        total = {"v": 0.0}
        source = str(arg)

        def base(s: MachineState, t: float, d: float) -> float:
            total["v"] += float(values.get(source) or 0.0) * d * scale
            return round(total["v"], 6)
    else:
        raise ValueError(f"unknown signal kind {kind!r}")

    if during is not None:
        gated, inner = set(during), base
        base = lambda s, t, d: inner(s, t, d) if s.phase in gated else idle  # noqa: E731
    if not noise and not lag:
        return base
    smooth: dict[str, float | None] = {"v": None}

    def shaped(s: MachineState, t: float, d: float) -> Any:
        target = base(s, t, d)
        if not isinstance(target, int | float) or isinstance(target, bool):
            return target
        current = smooth["v"]
        current = float(target) if current is None or not lag else current + (target - current) * min(1.0, d / lag)
        smooth["v"] = current
        value = current + (random.gauss(0, noise) if noise and target else 0.0)
        return round(value, 3)

    return shaped


@dataclass
class SimNode:
    path: str
    type: str
    variant: ua.VariantType
    signals: list[Signal]  # one, or one per array element
    array: bool = False
    enum: list[str] | None = None
    unit: str | None = None  # UNECE code
    eu_range: tuple[float, float] | None = None
    node_id: ua.NodeId | None = None
    value: Any = None
    status: int = 0
    history: list[tuple[int, Any, int]] = field(default_factory=list)

    def convert(self, raw: Any) -> Any:
        if self.enum is not None:
            return self.enum.index(raw) if isinstance(raw, str) else int(raw)
        if self.type == "LocalizedText":
            return ua.LocalizedText(str(raw), "en")
        if self.type == "String":
            return str(raw)
        if self.type == "Boolean":
            return bool(raw)
        if self.variant in (ua.VariantType.Double, ua.VariantType.Float):
            return float(raw)
        return int(raw)

    def compute(self, state: MachineState, t: float, d: float) -> Any:
        if self.array:
            return [self.convert(s(state, t, d)) for s in self.signals]
        return self.convert(self.signals[0](state, t, d))


# ---------------------------------------------------------------- configuration


@dataclass
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 4840
    scenario: Path | dict[str, Any] | None = DEFAULT_SCENARIO
    security: tuple[str, ...] = ("none",)
    users: dict[str, str] = field(default_factory=dict)
    allow_anonymous: bool | None = None  # default: only when no users are configured
    cert_dir: Path | None = None  # default: a temporary folder for this simulator's lifetime
    # a certificate (DER or PEM) and key served as they are, never checked or regenerated: for
    # testing how clients judge certificates (expired, issued by a CA, for another host)
    certificate: Path | None = None
    private_key: Path | None = None
    update_rate: float | None = None  # default: the scenario's (0: values change only by write())
    bulk: int = 0  # extra Double nodes Machine.Bulk.Value0000… for load tests
    bulk_rate: float | None = None  # their update rate (default: update_rate)
    record_history: bool = False  # keep every written (time, value, status) per node (tests)
    bad_status: dict[str, str | int] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/"


def load_scenario(source: Path | dict[str, Any] | None) -> dict[str, Any]:
    if source is None:
        return {"machine": "Machine", "nodes": [], "cycle": [{"phase": "idle", "duration": 60}]}
    if isinstance(source, dict):
        return source
    data = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a scenario is a mapping of keys")
    return data


class _Users(UserManager):
    def __init__(self, users: dict[str, str], allow_anonymous: bool) -> None:
        self.users = users
        self.allow_anonymous = allow_anonymous

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username is None:
            return User(role=UserRole.User) if self.allow_anonymous else None
        if username in self.users and self.users[username] == password:
            return User(role=UserRole.User, name=username)
        return None


# ---------------------------------------------------------------- the server


class CncSimulator:
    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.scenario = load_scenario(self.config.scenario)
        self.machine = str(self.scenario.get("machine", "Machine"))
        self.namespace = str(self.scenario.get("namespace", "urn:mos-agent:simulator:cnc"))
        self.update_rate = (self.config.update_rate if self.config.update_rate is not None
                            else float(self.scenario.get("update_rate", 10)))
        self.nodes: dict[str, SimNode] = {}
        self.values: dict[str, Any] = {}
        self.server: Server | None = None
        self.ns = 2
        self.ticks = 0
        self.restarts = 0
        self._task: asyncio.Task[None] | None = None
        self._bulk_task: asyncio.Task[None] | None = None
        self._paused = False
        self._stalled = False
        self._stalled_subscriptions: list[Any] = []
        self._write_lock = asyncio.Lock()
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._build_model()
        for path, code in self.config.bad_status.items():
            self.set_status(path, code)

    # ------------------------------------------------------------ model

    def _build_model(self) -> None:
        sc = self.scenario
        self.state = MachineState(
            started=time.monotonic(),
            phases=[Phase(str(p["phase"]), seconds(p["duration"])) for p in sc.get("cycle", [])],
            programs=[str(p) for p in sc.get("programs", [])],
            parts_per_program=int(sc.get("parts_per_program", 5)),
        )
        for spec in sc.get("nodes", []):
            path = str(spec["path"])
            type_name = str(spec.get("type", "Double"))
            if type_name not in _VARIANTS:
                raise ValueError(f"node {path}: unknown type {type_name!r} (one of {', '.join(_VARIANTS)})")
            if "elements" in spec:
                signals = [make_signal(e, self.values) for e in spec["elements"]]
            else:
                signals = [make_signal(spec.get("signal", {"constant": 0}), self.values)]
            unit = spec.get("unit")
            if unit is not None and unit not in _UNECE:
                raise ValueError(f"node {path}: unit {unit!r} is not a UNECE code of the unit table")
            rng = spec.get("range")
            self.nodes[path] = SimNode(
                path, type_name, _VARIANTS[type_name], signals, array="elements" in spec,
                enum=[str(e) for e in spec["enum"]] if type_name == "Enumeration" else None,
                unit=unit, eu_range=(float(rng[0]), float(rng[1])) if rng else None)
        for i in range(self.config.bulk):
            phase = random.uniform(0, 10)
            signal_ = make_signal({"sine": {"mean": 50, "amplitude": 40, "period": 10 + i % 7, "offset": phase}},
                                  self.values)
            self.nodes[f"Bulk.Value{i:04d}"] = SimNode(f"Bulk.Value{i:04d}", "Double", ua.VariantType.Double,
                                                       [signal_])
        now = 0.0
        self.state.advance(self.state.started)
        for node in self.nodes.values():
            node.value = node.compute(self.state, now, 0.0)
            self.values[node.path] = node.value

    def node_id(self, path: str) -> str:
        """The node id string of a scenario path, e.g. ``ns=2;s=Machine.Spindle.Speed``."""
        return f"ns={self.ns};s={self.machine}.{path}"

    @property
    def endpoint(self) -> str:
        return self.config.endpoint

    @property
    def certificate_path(self) -> Path | None:
        """The server certificate (DER), when a secured endpoint is on."""
        if self.config.certificate is not None:
            return Path(self.config.certificate)
        folder = self._cert_dir()
        path = folder / "server_cert.der" if folder else None
        return path if path is not None and path.exists() else None

    def _cert_dir(self) -> Path | None:
        if self.config.cert_dir is not None:
            return Path(self.config.cert_dir)
        if self._tempdir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="mos-sim-opcua-")
        return Path(self._tempdir.name)

    # ------------------------------------------------------------ server life

    async def start(self) -> None:
        self.server = await self._build_server()
        await self.server.start()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._update_loop(), name="mos-sim-opcua-update")
        log.info("serving %d nodes on %s", len(self.nodes), self.endpoint)

    async def stop(self) -> None:
        for task in (self._task, self._bulk_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._bulk_task = None
        await self._stop_server()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    async def _stop_server(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            async with self._write_lock:
                with contextlib.suppress(Exception):
                    await server.stop()

    async def restart(self, down_for: float = 1.0) -> None:
        """The server goes away (every session and subscription with it) and comes back on the
        same endpoint with the same certificate; the machine keeps running meanwhile."""
        log.info("restart: down for %.1fs", down_for)
        await self._stop_server()
        await asyncio.sleep(down_for)
        self.server = await self._build_server()
        await self.server.start()
        self.restarts += 1
        self._stalled_subscriptions = []

    async def _build_server(self) -> Server:
        cfg = self.config
        allow_anonymous = cfg.allow_anonymous if cfg.allow_anonymous is not None else not cfg.users
        server = Server(user_manager=_Users(cfg.users, allow_anonymous) if cfg.users else None)
        await server.init()
        server.set_endpoint(cfg.endpoint)
        server.set_server_name("mos-sim CNC machining centre")
        await server.set_application_uri(APPLICATION_URI)
        server.set_security_policy([_POLICIES[s] for s in cfg.security])
        tokens: list[type] = [ua.UserNameIdentityToken] if cfg.users else []
        if allow_anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        server.set_identity_tokens(tokens)
        if any(s != "none" for s in cfg.security) and cfg.certificate is not None:
            assert cfg.private_key is not None, "a served certificate needs its private_key"
            await server.load_certificate(str(cfg.certificate))
            await server.load_private_key(str(cfg.private_key))
        elif any(s != "none" for s in cfg.security):
            folder = self._cert_dir()
            assert folder is not None
            folder.mkdir(parents=True, exist_ok=True)
            key, cert = folder / "server_key.pem", folder / "server_cert.der"
            await cert_gen.setup_self_signed_certificate(
                key, cert, APPLICATION_URI, socket.gethostname(),
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                {"commonName": "mos-sim CNC machining centre", "organizationName": "mos-agent"})
            await server.load_certificate(str(cert))
            await server.load_private_key(str(key))
        self.ns = await server.register_namespace(self.namespace)
        await self._populate(server)
        self._wrap_subscriptions(server)
        return server

    async def _populate(self, server: Server) -> None:
        ns = self.ns
        root = await server.nodes.objects.add_object(ua.NodeId(self.machine, ns), ua.QualifiedName(self.machine, ns))
        folders: dict[str, Node] = {"": root}

        async def folder(path: str) -> Node:
            if path in folders:
                return folders[path]
            parent_path, _, name = path.rpartition(".")
            parent = await folder(parent_path)
            node = await parent.add_object(ua.NodeId(f"{self.machine}.{path}", ns), ua.QualifiedName(name, ns))
            folders[path] = node
            return node

        ident = self.scenario.get("identification") or {}
        if ident:
            holder = await folder("Identification")
            for key, value in ident.items():
                await holder.add_variable(ua.NodeId(f"{self.machine}.Identification.{key}", ns),
                                          ua.QualifiedName(str(key), ns), str(value), ua.VariantType.String)
        enum_types: dict[tuple[str, ...], ua.NodeId] = {}
        now = dt.datetime.now(dt.UTC)
        for node in self.nodes.values():
            parent_path, _, name = node.path.rpartition(".")
            parent = await folder(parent_path)
            data_type: ua.NodeId | None = None
            if node.enum is not None:
                key = tuple(node.enum)
                if key not in enum_types:
                    type_name = f"{name}Enumeration"
                    dtype = await new_enum(server, ns, type_name, list(node.enum))
                    await dtype.add_property(ua.NodeId(f"{self.machine}.Types.{type_name}.EnumStrings", ns),
                                             ua.QualifiedName("EnumStrings", 0),
                                             [ua.LocalizedText(e, "en") for e in node.enum])
                    enum_types[key] = dtype.nodeid
                data_type = enum_types[key]
            node.node_id = ua.NodeId(f"{self.machine}.{node.path}", ns)
            var = await parent.add_variable(node.node_id, ua.QualifiedName(name, ns),
                                            ua.Variant(node.value, node.variant), node.variant, data_type)
            if node.array:
                await var.write_value_rank(1)
                await var.write_array_dimensions([len(node.signals)])
            if node.unit is not None:
                unit = _UNECE[node.unit]
                eu = ua.EUInformation(NamespaceUri=UNITS_NAMESPACE, UnitId=unit.opcua_unit_id,
                                      DisplayName=ua.LocalizedText(unit.ucum, "en"),
                                      Description=ua.LocalizedText(unit.name, "en"))
                await var.add_property(ua.NodeId(f"{self.machine}.{node.path}.EngineeringUnits", ns),
                                       ua.QualifiedName("EngineeringUnits", 0), eu)
            if node.eu_range is not None:
                await var.add_property(ua.NodeId(f"{self.machine}.{node.path}.EURange", ns),
                                       ua.QualifiedName("EURange", 0),
                                       ua.Range(Low=node.eu_range[0], High=node.eu_range[1]))
            await server.write_attribute_value(node.node_id, self._datavalue(node, node.value, now))

    def _datavalue(self, node: SimNode, value: Any, stamp: dt.datetime) -> ua.DataValue:
        return ua.DataValue(Value=ua.Variant(value, node.variant), StatusCode=ua.StatusCode(node.status),
                            SourceTimestamp=stamp, ServerTimestamp=stamp)

    # ------------------------------------------------------------ values

    async def _update_loop(self) -> None:
        bulk = [n for n in self.nodes.values() if n.path.startswith("Bulk.")]
        machine = [n for n in self.nodes.values() if not n.path.startswith("Bulk.")]
        bulk_rate = self.config.bulk_rate if self.config.bulk_rate is not None else self.update_rate
        if bulk and bulk_rate > 0 and bulk_rate != self.update_rate:
            self._bulk_task = asyncio.create_task(self._tick_loop(bulk, bulk_rate))
            nodes = machine
        else:
            nodes = machine + bulk
        await self._tick_loop(nodes, self.update_rate)

    async def _tick_loop(self, nodes: list[SimNode], rate: float) -> None:
        if rate <= 0:
            return
        period = 1.0 / rate
        last = time.monotonic()
        next_at = last + period
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at + period, time.monotonic())
            if self._paused or self.server is None:
                continue
            now = time.monotonic()
            await self._tick(nodes, now, now - last)
            last = now

    async def _tick(self, nodes: list[SimNode], now: float, d: float) -> None:
        self.state.advance(now)
        t = now - self.state.started
        stamp = dt.datetime.now(dt.UTC)
        changed = []
        for node in nodes:
            value = node.compute(self.state, t, d)
            self.values[node.path] = value
            if value != node.value:
                node.value = value
                changed.append(node)
        await self._write_nodes(changed, stamp)
        self.ticks += 1

    async def _write_nodes(self, nodes: list[SimNode], stamp: dt.datetime) -> None:
        async with self._write_lock:
            server = self.server
            if server is None:
                return
            stamp_ns = round(stamp.timestamp() * 1e6) * 1000
            for node in nodes:
                assert node.node_id is not None
                await server.write_attribute_value(node.node_id, self._datavalue(node, node.value, stamp))
                if self.config.record_history:
                    node.history.append((stamp_ns, node.value, node.status))

    async def write(self, path: str, value: Any, source_time: dt.datetime | None = None) -> int:
        """Sets a node's value now (tests drive values this way with ``update_rate=0``); returns the
        source timestamp in ns."""
        node = self.nodes[path]
        stamp = source_time or dt.datetime.now(dt.UTC)
        node.value = node.convert(value) if not node.array else [node.convert(v) for v in value]
        self.values[path] = node.value
        await self._write_nodes([node], stamp)
        return round(stamp.timestamp() * 1e6) * 1000

    def pause(self, paused: bool = True) -> None:
        """Stops (or resumes) the scenario's value changes; write() still works."""
        self._paused = paused

    def set_status(self, path: str, code: str | int | None) -> None:
        """From the next write on, the node reports this StatusCode (None: Good again). A bad code
        makes the server send no value (Part 4, 7.7.1); an uncertain one keeps it."""
        if path not in self.nodes:
            raise ValueError(f"no node {path!r} in the scenario")
        self.nodes[path].status = 0 if code is None else status_code(code)

    async def apply_status(self, path: str, code: str | int | None) -> int:
        """set_status() and write the current value with it at once; returns its source time (ns)."""
        self.set_status(path, code)
        return await self.write(path, self.nodes[path].value)

    # ------------------------------------------------------------ publishing stall

    def _wrap_subscriptions(self, server: Server) -> None:
        service = server.iserver.subscription_service
        original = service.create_subscription

        async def create_subscription(*args: Any, **kwargs: Any) -> Any:
            result = await original(*args, **kwargs)
            if self._stalled:
                self._stall(service.subscriptions.get(result.SubscriptionId))
            return result

        service.create_subscription = create_subscription

    def _stall(self, sub: Any) -> None:
        # asyncua runs one publishing task per subscription; without it the subscription sends
        # nothing, not even keep-alives, while the session still answers reads
        if sub is None or sub._task is None:
            return
        sub._task.cancel()
        sub._task = None
        self._stalled_subscriptions.append(sub)

    async def stall_publishing(self, stalled: bool = True) -> None:
        self._stalled = stalled
        if self.server is None:
            return
        subs = list(self.server.iserver.subscription_service.subscriptions.values())
        if stalled:
            for sub in subs:
                self._stall(sub)
        else:
            stalled_subs, self._stalled_subscriptions = self._stalled_subscriptions, []
            for sub in stalled_subs:
                if sub in subs:
                    await sub.start()


# ---------------------------------------------------------------- command line


def device_file(sim: CncSimulator, name: str = "cnc-01") -> str:
    """A device file reading every scenario node of this simulator (for quick starts)."""
    from drivers.opcua.browse import guess_category  # the sim is shipped with the driver

    lines = [
        f"# mos-sim opcua: {sim.scenario.get('description', 'CNC machining centre')}",
        f"name: {name}", "driver: opcua", "asset: {area: machining, line: line-1, cell: cell-1}",
        "stage: machining", "connection:", f"  endpoint: {sim.endpoint}", "mode: subscribe",
        "subscription: {publishing_interval: 500ms, sampling_interval: 100ms, queue_size: 10}", "tags:",
    ]
    for node in sim.nodes.values():
        unit = _UNECE[node.unit].ucum if node.unit else None
        tag = node.path.replace(".", "_").lower()
        fields = [f"name: {tag}", f'node: "{sim.node_id(node.path)}"']
        if node.enum is not None:
            fields.append("type: enum")
        if unit:
            fields.append(f"unit: {unit}" if re.match(r"^[A-Za-z]", unit) else f'unit: "{unit}"')
        fields.append(f"category: {guess_category(node.path, unit)}")
        lines.append(f"  - {{{', '.join(fields)}}}")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mos-sim opcua", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4840)
    p.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO)
    p.add_argument("--update-rate", type=float, default=None, help="value updates per second (scenario default)")
    p.add_argument("--security", default="none",
                   help=f"comma-separated endpoints to offer: {', '.join(SECURITY_CHOICES)} (default none)")
    p.add_argument("--cert-dir", type=Path, default=None,
                   help="where the server certificate is kept (generated once; default: a temp folder)")
    p.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD",
                   help="accept this user (repeatable); anonymous logins are then refused")
    p.add_argument("--allow-anonymous", action="store_true", help="accept anonymous logins even with --user")
    p.add_argument("--bulk", type=int, default=0, help="extra Double nodes Machine.Bulk.ValueNNNN for load tests")
    p.add_argument("--bulk-rate", type=float, default=None, help="update rate of the bulk nodes (per second)")
    p.add_argument("--bad-status", action="append", default=[], metavar="PATH=CODE",
                   help="the node reports this StatusCode, e.g. Spindle.Load=BadSensorFailure (repeatable)")
    p.add_argument("--restart-every", type=float, default=0.0, help="restart the server every N seconds")
    p.add_argument("--restart-for", type=float, default=3.0, help="seconds the server stays down (default 3)")
    p.add_argument("--stall-every", type=float, default=0.0, help="stall publishing every N seconds")
    p.add_argument("--stall-for", type=float, default=10.0, help="seconds a stall lasts (default 10)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after N seconds (default: run until stopped)")
    p.add_argument("--print-device-file", action="store_true", help="print a device file for this simulator")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    security = tuple(s.strip() for s in args.security.split(",") if s.strip())
    for s in security:
        if s not in SECURITY_CHOICES:
            raise ValueError(f"--security {s!r}: expected {', '.join(SECURITY_CHOICES)}")
    users = {}
    for entry in args.user:
        name, sep, password = entry.partition(":")
        if not sep or not name:
            raise ValueError(f"--user {entry!r}: expected NAME:PASSWORD")
        users[name] = password
    bad: dict[str, str | int] = {}
    for entry in args.bad_status:
        path, sep, code = entry.partition("=")
        if not sep:
            raise ValueError(f"--bad-status {entry!r}: expected PATH=CODE")
        status_code(code)
        bad[path] = code
    return SimulatorConfig(host=args.host, port=args.port, scenario=args.scenario, security=security or ("none",),
                           users=users, allow_anonymous=True if args.allow_anonymous else None,
                           cert_dir=args.cert_dir, update_rate=args.update_rate, bulk=args.bulk,
                           bulk_rate=args.bulk_rate, bad_status=bad)


async def serve(sim: CncSimulator, args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    restart_now = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, restart_now.set)
    await sim.start()
    cfg = sim.config
    who = f"users {', '.join(cfg.users)}" if cfg.users else "anonymous"
    print(f"mos-sim opcua: {sim.scenario.get('description', 'CNC machining centre')} on {sim.endpoint} "
          f"({len(sim.nodes)} nodes, security {','.join(cfg.security)}, {who}"
          + (f", certificate {sim.certificate_path}" if sim.certificate_path else "") + ")", flush=True)

    async def faults() -> None:
        started = time.monotonic()
        next_restart = started + args.restart_every if args.restart_every > 0 else math.inf
        next_stall = started + args.stall_every if args.stall_every > 0 else math.inf
        while True:
            wait = min(next_restart, next_stall) - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(restart_now.wait(), timeout=max(0.0, min(wait, 3600)))
            now = time.monotonic()
            if restart_now.is_set() or now >= next_restart:
                restart_now.clear()
                print(f"mos-sim opcua: restarting (down {args.restart_for:g}s)", flush=True)
                await sim.restart(args.restart_for)
                next_restart = time.monotonic() + args.restart_every if args.restart_every > 0 else math.inf
            if now >= next_stall:
                print(f"mos-sim opcua: publishing stalled for {args.stall_for:g}s", flush=True)
                await sim.stall_publishing(True)
                await asyncio.sleep(args.stall_for)
                await sim.stall_publishing(False)
                next_stall = time.monotonic() + args.stall_every

    fault_task = asyncio.create_task(faults())
    try:
        if args.duration > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.duration)
        else:
            await stop.wait()
    finally:
        fault_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fault_task
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # asyncua warns about every plain-text password endpoint and revised timeout; not news here
        logging.getLogger("asyncua").setLevel(logging.ERROR)
    try:
        sim = CncSimulator(config_from_args(args))
    except (ValueError, OSError, KeyError, yaml.YAMLError) as exc:
        print(f"mos-sim opcua: {exc}", file=sys.stderr)
        return 2
    if args.print_device_file:
        print(device_file(sim), end="")
        return 0
    try:
        asyncio.run(serve(sim, args))
    except OSError as exc:
        print(f"mos-sim opcua: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
