"""Helpers for the OPC UA driver tests: the CNC simulator (a real asyncua server) on a free port in
the test's event loop, device files built through the driver's model, and a driver context whose
emit records every batch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from drivers.opcua import OpcUaDriver
from drivers.opcua.config import OpcUaDevice
from mos_agent.batch import ReadingBatch
from mos_agent.config.models import AgentSection
from mos_agent.driver_api import DriverContext
from mos_agent.localservers import free_port
from mos_agent.taxonomy import DEFAULT_STAGES, QUALITY_NAMES
from simulators.opcua import CncSimulator, SimulatorConfig
from tests.support.drivers import driver_running

# asyncua logs every plain-text password endpoint and revised timeout as a warning
logging.getLogger("asyncua").setLevel(logging.ERROR)


def agent_section(state_dir: Path) -> AgentSection:
    return AgentSection(id="gw-test", enterprise="acme", site="changwon", state_dir=state_dir)


def build_device(endpoint: str, tags: list[dict] | None = None, browse: list[dict] | None = None,
                 name: str = "cnc-01", connection: dict | None = None, **extra: Any) -> OpcUaDevice:
    data: dict[str, Any] = {
        "name": name, "driver": "opcua", "asset": {"area": "machining", "line": "line-1"}, "stage": "machining",
        "connection": {"endpoint": endpoint, "timeout": "2s", "keepalive_interval": "500ms",
                       "reconnect_max_delay": "2s", **(connection or {})},
        "tags": tags or [],
        **extra,
    }
    if browse:
        data["browse"] = browse
    return OpcUaDevice.model_validate(data, context={"stages": list(DEFAULT_STAGES)})


@dataclass(frozen=True)
class Reading:
    tag: str
    value: float | str | None
    quality: str
    code: int
    time: int


class Recorder:
    """A driver context's emit: keeps every batch, and reads them back as readings."""

    def __init__(self) -> None:
        self.batches: list[ReadingBatch] = []
        self.ctx: DriverContext | None = None

    async def emit(self, batch: ReadingBatch) -> None:
        self.batches.append(batch)

    def readings(self, tag: str | None = None) -> list[Reading]:
        assert self.ctx is not None
        out = []
        for batch in self.batches:
            out.extend(r for r in readings_of(batch, self.ctx) if tag is None or r.tag == tag)
        return out


def readings_of(batch: ReadingBatch, ctx: DriverContext) -> list[Reading]:
    out = []
    for row in range(len(batch)):
        text = (batch.texts or {}).get(row)
        value = float(batch.values[row])
        out.append(Reading(
            tag=ctx.series.specs[int(batch.series[row])].tag,
            value=text if text is not None else (None if value != value else value),
            quality=QUALITY_NAMES[int(batch.quality[row])],
            code=int(batch.codes[row]),
            time=int(batch.timestamps[row]),
        ))
    return out


def make_driver(device: OpcUaDevice, state_dir: Path) -> tuple[OpcUaDriver, Recorder]:
    recorder = Recorder()
    ctx = DriverContext(agent_section(state_dir), device, recorder.emit)
    recorder.ctx = ctx
    return OpcUaDriver(ctx), recorder


SimFactory = Callable[..., Awaitable[CncSimulator]]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim() -> AsyncIterator[CncSimulator]:
    """One simulator for a module's tests, its values changing only when a test writes them (the
    module's tests run in the module's event loop: mark them ``asyncio(loop_scope="module")``)."""
    simulator = CncSimulator(SimulatorConfig(port=free_port(), update_rate=0))
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest_asyncio.fixture
async def start_sim() -> AsyncIterator[SimFactory]:
    """Starts simulators on free ports; every one is stopped at the end, also on failure."""
    sims: list[CncSimulator] = []

    async def start(**config: Any) -> CncSimulator:
        config.setdefault("port", free_port())
        sim = CncSimulator(SimulatorConfig(**config))
        sims.append(sim)
        await sim.start()
        return sim

    try:
        yield start
    finally:
        for sim in sims:
            await sim.stop()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@dataclass
class Kit:
    """The helpers above, handed to tests as a fixture (test modules cannot import conftest)."""

    state_dir: Path
    device: Callable[..., OpcUaDevice] = build_device
    running: Callable[[OpcUaDriver], contextlib.AbstractAsyncContextManager[asyncio.Task[None]]] = driver_running

    def driver(self, device: OpcUaDevice, state_dir: Path | None = None) -> tuple[OpcUaDriver, Recorder]:
        return make_driver(device, state_dir or self.state_dir)


@pytest.fixture
def kit(state_dir: Path) -> Kit:
    return Kit(state_dir)
