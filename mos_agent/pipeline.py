"""The agent at run time. Data flows one way:

    driver (drivers/<protocol>) ──ReadingBatch──▶ normaliser (normalise.py)
        ──EncodedChunk──▶ group-commit writer (writer.py, bounded hand-off) ──▶ buffer (buffer.py)
        ──▶ one sink runner per sink (sinks/runner.py, supervised by sinks/forward.py)

``emit`` waits while the writer's hand-off is full, so a slow disk slows acquisition instead of
growing memory. A batch the normaliser cannot process is split until the rows that fail are
found; those become bad-quality rows (DECODE_ERROR) and every other row is kept — one bad reading
never costs its neighbours nor restarts its driver. The writer commits everything gathered at
most every ``buffer.commit_interval`` in one transaction, then runs the batches' ``on_committed``
callbacks (MQTT acks there). ``Agent.status()`` assembles the status report
(:mod:`mos_agent.status`) that ``/status``, ``/metrics``, ``/healthz``, ``mos-agent status`` and
the demo render.

Nothing here wakes up on a timer when there is nothing to do: the writer's thread waits for a chunk, rates
are worked out when the status is asked for, and the only periodic tasks are the systemd watchdog
ping (only when systemd asks for one) and the KPI engine's tick (only when KPIs are configured).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from mos_agent import __version__
from mos_agent.batch import ReadingBatch
from mos_agent.config.loader import ConfigErrors, LoadedConfig, collector_paused, load_config, read_secret
from mos_agent.config.models import DeviceBase
from mos_agent.driver_api import DeviceState, Driver, DriverContext, build_series_table
from mos_agent.i18n import english
from mos_agent.kpi.engine import KpiEngine
from mos_agent.logs import redact_secrets, register_secrets, setup_logging
from mos_agent.normalise import EncodedChunk, Normaliser, ReportFn
from mos_agent.registry import load_driver
from mos_agent.secrets import is_secret_file_key, is_secret_key
from mos_agent.series import SeriesTable
from mos_agent.sharing.report import contract_stats
from mos_agent.sinks.base import SinkContext
from mos_agent.sinks.forward import StoreAndForward
from mos_agent.status import AgentInfo, DeviceStats, KpiEngineStats, PipelineStats, StatusReport, StoreStats
from mos_agent.systemd import SystemdNotifier
from mos_agent.taxonomy import CollectorCode
from mos_agent.text import repaired
from mos_agent.writer import BufferWriter

if TYPE_CHECKING:
    from mos_agent.health import HealthServer

log = logging.getLogger("mos_agent")


def _load_for_reload(path: Path) -> LoadedConfig:
    """A reload's problems go to the log, which stays English whatever the locale."""
    with english():
        return load_config(path)


HANDOFF_CHUNKS = 512  # bounded hand-off between normaliser and writer
# Polls of one interval are due together (drivers tick on a shared grid); their batches arrive
# within a few milliseconds of each other. The writer waits this long after the first chunk that
# finds it idle, so a burst becomes one commit (one fsync) instead of a commit and stragglers.
COMMIT_GATHER = 0.02
DRIVER_RESTART_DELAY = 5.0
DRIVER_STOP_TIMEOUT = 5.0
KPI_TICK = 1.0  # seconds between KPI engine ticks (shift ends are exact regardless)


def normalise_isolating(normaliser: Normaliser, batch: ReadingBatch, report: ReportFn) -> EncodedChunk:
    """``normaliser.process(batch)``; if that fails, the batch is halved until the failing rows are
    alone, and each of them is stored as a bad-quality row with code DECODE_ERROR (or, if even
    that fails — a series the table does not know — left out and counted). The good path pays
    nothing: the search starts only after a failure."""
    try:
        return normaliser.process(batch)
    except Exception as exc:
        first = exc
    bodies: list[bytes] = []
    points = 0
    isolated = 0
    lost = 0

    def take(rows: np.ndarray) -> None:
        nonlocal points, isolated, lost
        part = batch.select(rows)
        try:
            chunk = normaliser.process(part, deadband=False)
        except Exception:
            if len(rows) > 1:
                half = len(rows) // 2
                take(rows[:half])
                take(rows[half:])
                return
            failed = ReadingBatch.failed(part.series, CollectorCode.DECODE_ERROR, int(part.timestamps[0]))
            failed.source_time = part.source_time
            try:
                chunk = normaliser.process(failed, deadband=False)
                isolated += 1
            except Exception:
                lost += 1
                return
            part = failed
        # the normaliser may have moved acquisition times; the driver reads them from its batch
        batch.timestamps[rows] = part.timestamps
        bodies.append(chunk.body)
        points += chunk.points

    take(np.arange(len(batch)))
    problem = repaired(f"{type(first).__name__}: {first}"[:200])  # it may quote the unencodable text
    if isolated:
        report("normalise", f"{isolated} reading(s) could not be normalised ({problem}); stored as bad quality "
                            f"(code {int(CollectorCode.DECODE_ERROR)})", isolated)
    if lost:
        report("normalise", f"{lost} reading(s) could not be normalised nor stored as bad quality ({problem}); "
                            "left out", lost)
    return EncodedChunk(b"".join(bodies), points, int(batch.timestamps.max()), list(batch.on_committed))


class RateMeter:
    """Points per second of a counter, sampled when someone asks (no timer): over the last
    ``window`` seconds when asked often enough, else since the previous question (at first, since
    the meter was made)."""

    def __init__(self, window: float = 10.0, now: float | None = None) -> None:
        self.window = window
        self.samples: deque[tuple[float, int]] = deque([(time.monotonic() if now is None else now, 0)])

    def rate(self, total: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        samples = self.samples
        samples.append((now, total))
        # keep the newest sample at least a window old, so the rate covers a whole window
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.popleft()
        (t0, c0) = samples[0]
        return (total - c0) / (now - t0) if now > t0 else 0.0


@dataclass
class DeviceRuntime:
    config: DeviceBase
    driver_cls: type[Driver]
    ctx: DriverContext
    normaliser: Normaliser
    driver: Driver
    task: asyncio.Task | None = None
    rate: RateMeter = field(default_factory=RateMeter)
    last_value_time_ns: int = 0


def collect_secrets(loaded: LoadedConfig) -> set[str]:
    """Every secret the configuration names, so the log redactor can hide it wherever it shows."""
    secrets: set[str] = set()

    def visit(model: Any) -> None:
        data = model.__dict__ if hasattr(model, "__dict__") else {}
        for key, value in data.items():
            if is_secret_key(key) and isinstance(value, str):
                secrets.add(value)
            elif is_secret_file_key(key) and value:
                with contextlib.suppress(OSError):
                    secret = read_secret(None, Path(value))
                    if secret:
                        secrets.add(secret)
            elif isinstance(value, BaseModel):
                visit(value)

    visit(loaded.agent.agent)  # the health port's token
    for sink in loaded.agent.sinks:
        visit(sink)
    for device in loaded.devices:
        visit(device.connection)
    return secrets


class Agent:
    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        self.config = loaded.agent
        self.state_dir = Path(self.config.agent.state_dir)
        self.devices: dict[str, DeviceRuntime] = {}
        self.store: StoreAndForward | None = None
        self.started_at = time.time()
        self.ready = False
        self.stopping = False
        self._stop_deadline = float("inf")
        self.commit_rate = RateMeter()
        self.notifier = SystemdNotifier()
        self.health_server: HealthServer | None = None
        self.writer = BufferWriter(self._append, commit_interval=self.config.buffer.commit_interval,
                                   gather=COMMIT_GATHER, capacity=HANDOFF_CHUNKS, give_up=self._out_of_time)
        self._watchdog_task: asyncio.Task | None = None
        self.kpi: KpiEngine | None = None
        self._kpi_task: asyncio.Task | None = None
        # the buffer's start and stop, and the KPI state's saves (after their records' commit)
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="buffer-io")
        self._stop_event: asyncio.Event | None = None

    # ------------------------------------------------------------ life cycle

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        register_secrets(collect_secrets(self.loaded))
        self._stop_event = asyncio.Event()
        # each device's series table is built once: the sinks are told its configured series, the
        # driver gets the table itself (100,000 tags cost a second a build)
        with collector_paused():  # series tables live as long as their device
            tables = {device.name: build_series_table(self.config.agent, device)
                      for device in self.loaded.devices if device.enabled}
        self.store = StoreAndForward(self.config, self.state_dir, logging.getLogger("mos_agent.buffer"),
                                     self._sink_context(tables), contracts=self.loaded.contracts)
        await asyncio.get_running_loop().run_in_executor(self._io, self.store.start)
        self.writer.start()
        if self.config.agent.health != "off":
            from mos_agent.health import HealthServer  # aiohttp and prometheus only when serving

            token_file = self.config.agent.health_token_file
            self.health_server = HealthServer(self, self.config.agent.health, values_source=self,
                                              token=read_secret(None, token_file) if token_file else None)
            self.writer.on_commit.append(self.health_server.observe_commit)
            self.store.send_observers.append(self.health_server.observe_send)
            await self.health_server.start()
        self._start_kpi(self.loaded.devices)
        with collector_paused():  # request plans live as long as their device
            for device in self.loaded.devices:
                if device.enabled:
                    self._start_device(device, tables[device.name])
        watchdog = self.notifier.watchdog_interval()
        if watchdog:
            self._watchdog_task = asyncio.create_task(self._watchdog(watchdog), name="watchdog")
        self.ready = True
        self.notifier.notify("READY=1", f"STATUS=running {len(self.devices)} devices")
        log.info("mos-agent %s ready: %d devices, %d series, %d sinks", __version__, len(self.devices),
                 sum(len(d.ctx.series) for d in self.devices.values()), len(self.config.sinks))

    async def run_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        await self.start()
        assert self._stop_event is not None
        await self._stop_event.wait()
        await self.stop()

    def request_stop(self) -> None:
        if self._stop_event is not None and not self._stop_event.is_set():
            log.info("stopping: polling stops, everything acquired is committed")
            self.notifier.notify("STOPPING=1")
            self._stop_event.set()

    async def stop(self) -> None:
        """Stop polling, commit everything acquired, give the sinks a bounded time, close."""
        if self.stopping:
            return
        self.stopping = True
        loop = asyncio.get_running_loop()
        # one deadline for the whole stop: the last commits, then the sinks, whatever the disk does
        self._stop_deadline = time.monotonic() + self.config.agent.shutdown_timeout
        await asyncio.gather(*(self._stop_device(name) for name in list(self.devices)))
        if self._kpi_task is not None:
            self._kpi_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._kpi_task
            await self._kpi_tick(save=True)  # the state as of now, saved once it is committed
        if self.store is not None:
            await self.writer.finish()  # commits what is queued
        if self._watchdog_task:
            self._watchdog_task.cancel()
        if self.health_server is not None:
            await self.health_server.stop()
        if self.store is not None:
            timeout = max(0.0, self._stop_deadline - time.monotonic())
            await loop.run_in_executor(self._io, self.store.stop, timeout)
        self._io.shutdown(wait=True)
        log.info("stopped: %d points committed this run", self.writer.committed_points)

    def _sink_context(self, tables: dict[str, SeriesTable]) -> SinkContext:
        """The configured series of every enabled device (a Sparkplug sink announces them in its
        births; ``tables`` are the devices' series tables before any series is found at run time)
        and the devices' states, read from the sink's thread."""
        series = [spec for table in tables.values() for spec in table.specs]
        return SinkContext(self.config.agent, series, self.device_states)

    def device_states(self) -> dict[str, str]:
        """Device name → state; safe to call from another thread (a reload may change the device
        set meanwhile: then it is read again)."""
        for _ in range(3):
            try:
                return {name: rt.ctx.status.state.value for name, rt in list(self.devices.items())}
            except RuntimeError:
                continue
        return {}

    # ------------------------------------------------------------ devices

    def _start_device(self, device: DeviceBase, series: SeriesTable | None = None) -> DeviceRuntime:
        """``series``: the device's series table when already built (else it is built here)."""
        driver_cls = load_driver(device.driver)

        runtime_holder: list[DeviceRuntime] = []

        async def emit(batch: ReadingBatch) -> None:
            await self._emit(runtime_holder[0], batch)

        ctx = DriverContext(self.config.agent, device, emit, series,
                            time_resolution_ns=self.config.time_resolution_ns())
        normaliser = Normaliser(ctx.series, ctx.time_resolution_ns, ctx.report_error)
        runtime = DeviceRuntime(device, driver_cls, ctx, normaliser, driver_cls(ctx))
        runtime_holder.append(runtime)
        if self.kpi is not None and (feed := self.kpi.attach(device, ctx.series)) is not None:
            runtime.normaliser.observer = feed.observe
        if self.health_server is not None:
            ctx.read_latency_hook = self.health_server.read_observer(device.name)
        runtime.task = asyncio.create_task(self._supervise(runtime), name=f"device:{device.name}")
        self.devices[device.name] = runtime
        return runtime

    async def _supervise(self, runtime: DeviceRuntime) -> None:
        """A driver handles its own device faults; if it crashes anyway (a bug), the other devices
        keep flowing and this one is restarted after a pause."""
        name = runtime.config.name
        while True:
            try:
                await runtime.driver.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                runtime.ctx.set_state(DeviceState.DOWN, f"driver failed: {type(exc).__name__}: {exc}")
                log.exception("device %s: driver stopped unexpectedly; restarting in %.0fs", name,
                              DRIVER_RESTART_DELAY)
                await asyncio.sleep(DRIVER_RESTART_DELAY)
                runtime.driver = runtime.driver_cls(runtime.ctx)

    async def _stop_device(self, name: str) -> None:
        runtime = self.devices.pop(name, None)
        if runtime is None or runtime.task is None:
            return
        runtime.task.cancel()
        # A driver that ignores cancellation must not hold up shutdown or a reload.
        done, _ = await asyncio.wait({runtime.task}, timeout=DRIVER_STOP_TIMEOUT)
        if not done:
            log.warning("device %s: driver did not stop within %.0fs; abandoned", name, DRIVER_STOP_TIMEOUT)
        elif not runtime.task.cancelled() and runtime.task.exception() is not None:
            log.warning("device %s: driver failed while stopping: %s", name, runtime.task.exception())
        runtime.ctx.set_state(DeviceState.STOPPED)

    async def _emit(self, runtime: DeviceRuntime, batch: ReadingBatch) -> None:
        chunk = normalise_isolating(runtime.normaliser, batch, runtime.ctx.report_error)
        if len(batch):  # the normaliser's newest time of the batch (its stored times)
            runtime.last_value_time_ns = max(runtime.last_value_time_ns, chunk.newest_ns)
        if chunk.points or chunk.on_committed:
            # the last await: the writer commits the chunk only after the driver next yields, which
            # DriverContext.emit promises (MQTT records a batch's stored times in between)
            await self.writer.put(chunk)

    # ------------------------------------------------------------ KPIs

    def _start_kpi(self, devices: list[DeviceBase]) -> None:
        """The KPI engine once a device has a ``kpi:`` block (at start or after a reload), and
        forgetting devices that no longer have one."""
        with_kpi = [d.name for d in devices if d.enabled and d.kpi is not None]
        if self.kpi is not None:
            self.kpi.retain(with_kpi)
            return
        if not with_kpi:
            return
        if not self.config.shifts:
            log.warning("devices %s have a kpi: block, but the agent file has no shifts: nothing is planned, "
                        "so no KPI is computed", ", ".join(with_kpi))
        self.kpi = KpiEngine(self.config, self.state_dir, time.time_ns())
        self._kpi_task = asyncio.create_task(self._kpi_loop(), name="kpi")

    async def _kpi_loop(self) -> None:
        while True:
            await asyncio.sleep(KPI_TICK - time.time() % KPI_TICK)
            try:
                await self._kpi_tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in the engine must not stop acquisition
                log.exception("KPI computation failed; retrying at the next tick")

    async def _kpi_tick(self, save: bool = False) -> None:
        """Hand the engine's records to the writer like readings; its state is saved only once they
        are committed, so a kill -9 never leaves a saved state ahead of the buffer."""
        if self.kpi is None or self.store is None:
            return
        now = time.time_ns()
        out = self.kpi.tick(now, save=save)
        if out is None:
            return
        engine, state, io = self.kpi, out.state, self._io

        def save_state() -> None:
            try:
                engine.save(state)
            except OSError as exc:
                log.error("cannot save the KPI state in %s: %s", engine.state_path, exc)

        def committed() -> None:  # in the event loop: the file is written on the buffer's I/O thread
            io.submit(save_state)

        await self.writer.put(EncodedChunk(out.body, out.points, now, on_committed=[committed]))

    # ------------------------------------------------------------ buffer writer

    def _append(self, bodies: Sequence[bytes], points: Sequence[int]) -> int:
        assert self.store is not None
        return self.store.append(bodies, points)

    def _out_of_time(self) -> bool:
        """A failed commit is given up only when stopping has used its time."""
        return self.stopping and time.monotonic() >= self._stop_deadline

    # ------------------------------------------------------------ reload

    async def reload(self) -> bool:
        """Re-read device files and their profiles: start added, restart changed (also through a
        changed profile), stop removed devices; buffer and sinks keep running, except contract sinks
        whose sharing contracts changed, which restart with the new ones. A configuration that does
        not validate leaves everything as it was."""
        log.info("reload: re-reading %s", self.loaded.path)
        self.notifier.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            loaded = await asyncio.get_running_loop().run_in_executor(None, _load_for_reload, self.loaded.path)
        except ConfigErrors as exc:
            for problem in exc.problems:
                log.error("reload rejected, keeping the running configuration: %s", problem)
            self.notifier.notify("READY=1")
            return False
        except Exception as exc:
            log.error("reload rejected, keeping the running configuration: %s", exc)
            self.notifier.notify("READY=1")
            return False
        new = {d.name: d for d in loaded.devices if d.enabled}
        old = {name: rt.config for name, rt in self.devices.items()}
        removed = [n for n in old if n not in new]
        changed = [n for n in old if n in new and new[n].model_dump() != old[n].model_dump()]
        added = [n for n in new if n not in old]
        # a changed profile changes the devices built on it; the comparison above finds exactly them
        for profile in loaded.profiles.values():
            before = self.loaded.profiles.get(profile.name)
            if before is not None and before.digest != profile.digest:
                restarted = [n for n in changed if n in profile.devices]
                log.info("reload: profile %s changed: %s", profile.name,
                         f"restarting {', '.join(restarted)}" if restarted else "no device of it changed")
        for name in removed + changed:
            await self._stop_device(name)
        self._start_kpi(loaded.devices)
        for name in changed + added:
            self._start_device(new[name])
        if self.store is not None and loaded.contracts != self.loaded.contracts:
            restarted = await asyncio.get_running_loop().run_in_executor(None, self.store.replace_contracts,
                                                                         loaded.contracts)
            log.info("reload: sharing contracts re-read; sinks restarted with their new contracts: %s",
                     ", ".join(restarted) or "none")
        self.loaded = LoadedConfig(**{**self.loaded.__dict__, "devices": loaded.devices,
                                      "device_files": loaded.device_files, "contracts": loaded.contracts,
                                      "profiles": loaded.profiles})
        register_secrets(collect_secrets(self.loaded))
        log.info("reload done: %d added, %d changed, %d removed, %d unchanged", len(added), len(changed),
                 len(removed), len(new) - len(added) - len(changed))
        self.notifier.notify("READY=1", f"STATUS=running {len(self.devices)} devices")
        return True

    # ------------------------------------------------------------ housekeeping and status

    async def _watchdog(self, interval: float) -> None:
        """Pings systemd at half its watchdog interval (its own advice), from the event loop
        itself: a wedged loop stops the pings and systemd restarts us. Only when systemd asks for
        it; nothing else of the agent's wakes on a timer but the KPI engine's tick, when KPIs
        are configured."""
        while True:
            self.notifier.notify("WATCHDOG=1")
            await asyncio.sleep(interval / 2)

    def status(self) -> StatusReport:
        store = self.store.status() if self.store is not None else StoreStats()
        return StatusReport(
            agent=AgentInfo(id=self.config.agent.id, site=self.config.agent.site, version=__version__,
                            pid=os.getpid(), uptime_s=round(time.time() - self.started_at, 1), ready=self.ready),
            devices=[self._device_stats(name, rt) for name, rt in sorted(self.devices.items())],
            pipeline=PipelineStats(committed_points=self.writer.committed_points,
                                   points_per_s=round(self.commit_rate.rate(self.writer.committed_points), 1),
                                   handoff_queue=self.writer.queued, commit_failures=self.writer.commit_failures),
            buffer=store.buffer,
            sinks=store.sinks,
            contracts=contract_stats(self.loaded.contracts, self.loaded.devices, self.state_dir)
            if self.loaded.contracts else [],
            kpi=self.kpi.status() if self.kpi is not None else [],
            kpi_engine=self.kpi.engine_stats() if self.kpi is not None else KpiEngineStats(),
            time=time.time(),
        )

    def _device_stats(self, name: str, rt: DeviceRuntime) -> DeviceStats:
        st = rt.ctx.status
        counts = rt.normaliser.counts
        asset = rt.config.asset
        return DeviceStats(
            name=name,
            driver=rt.config.driver,
            asset="/".join(p for p in (self.config.agent.site, asset.area, asset.line, asset.cell, name) if p),
            state=st.state,
            last_error=redact_secrets(st.last_error),
            last_error_time=st.last_error_time,
            errors=dict(st.errors),
            overruns=st.overruns,
            skipped_polls=st.skipped_polls,
            skipped_points=st.skipped_points,
            source_names=dict(st.source_names),
            series=len(rt.ctx.series),
            points_read=counts.read,
            points_kept=counts.kept,
            points_bad=counts.bad,
            points_per_s=round(rt.rate.rate(counts.read), 1),
            last_value_time=rt.last_value_time_ns / 1e9 if rt.last_value_time_ns else None,
            sparkplug=copy.deepcopy(st.sparkplug),
        )

    def series_tables(self) -> dict[str, SeriesTable]:
        """Each running device's series table, for the status page's latest values."""
        return {name: rt.ctx.series for name, rt in self.devices.items()}

    def health(self) -> tuple[bool, list[str]]:
        """Healthy unless not ready, a device is down, or a sink is failing to deliver."""
        reasons = self.status().problems()
        return (not reasons, reasons)


def run_agent(config_path: Path) -> int:
    """``mos-agent run``: load the configuration, run until stopped."""
    with collector_paused():
        loaded = load_config(config_path)
        # The configuration lives as long as the process: the collector need not walk it again
        # (with 100,000 tags that is millions of objects on every full collection). Frozen before
        # the collector is back on, or its first pass walks everything just loaded.
        gc.freeze()
    setup_logging(loaded.agent.agent.log_level)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(Agent(loaded).run_until_stopped())
    return 0


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's event loop (libuv) where it is installed: the same reads cost the agent's event
    loop 0.3–0.5 ms less CPU a second at 1,000 points/s, a tenth of it (``bench/bench_light.py``,
    one world, alternating runs). asyncio's own elsewhere (uvloop has no Windows build)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop
