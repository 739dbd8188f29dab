"""The Modbus driver: polls the planned requests of each poll group on a drift-free schedule and
emits one :class:`ReadingBatch` per group and cycle.

Failures become bad-quality rows, never silence (the README's table lists the codes):

* timeout → ``TIMEOUT`` for the tags of that request, and the rest of the cycle is given up (the
  device is not answering; trying the other requests would only multiply the wait);
* connection lost → ``CONNECTION_LOST`` for the remaining tags; while the device is down its tags
  get one bad row per failed reconnect attempt (``NOT_CONNECTED`` if it never answered), attempts
  backing off exponentially;
* Modbus exception → the exception code for the tags of that request. When a coalesced block
  answers "illegal data address" (2) or "illegal data value" (3), the block is split in halves
  until the offending tags are isolated; the other tags get their values in the same cycle and
  the split plan is kept, so later cycles do not fail the whole block again.

What each failure of the link means is one table, ``_FAILURES``; a Modbus exception (the device's
answer) is handled apart because it may start the isolation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import numpy as np

from drivers.modbus.config import ModbusDevice
from drivers.modbus.decode import BlockDecoder
from drivers.modbus.link import (
    ADDRESS_EXCEPTIONS,
    EXCEPTION_NAMES,
    POOL,
    Link,
    LinkDown,
    LinkError,
    LinkGarbled,
    LinkTimeout,
    ModbusExceptionResponse,
)
from drivers.modbus.plan import Limits, PollGroup, Request, coalesce, format_interval, plan_device, split_request
from mos_agent.batch import ReadingBatch
from mos_agent.config.models import DeviceBase
from mos_agent.driver_api import DeviceState, Driver, DriverContext, tick_grid
from mos_agent.taxonomy import CollectorCode, Quality

log = logging.getLogger("mos_agent.modbus")

_BAD = np.uint8(Quality.BAD)


@dataclass(slots=True)
class _RequestRun:
    request: Request
    decoder: BlockDecoder
    rows: slice  # this request's rows in the group's batch
    isolated: bool = False  # a block whose every tag failed on its own: do not split it again


class _GroupRun:
    """A poll group at run time: its requests (which isolation may change) and row layout."""

    def __init__(self, group: PollGroup) -> None:
        self.interval = group.interval
        self.label = format_interval(group.interval)
        self.degraded = False
        self.outage_marker: tuple[int, int] | None = None
        self.requests: list[_RequestRun] = []
        self.series = np.zeros(0, dtype=np.int32)
        self.row_of: dict[int, int] = {}
        self.layout([(r, False) for r in group.requests])

    def layout(self, requests: list[tuple[Request, bool]]) -> None:
        """Rows follow request order so every request fills one contiguous slice."""
        runs: list[_RequestRun] = []
        series: list[int] = []
        for request, isolated in requests:
            first = len(series)
            series.extend(t.index for t in request.tags)
            runs.append(_RequestRun(request, BlockDecoder(request), slice(first, len(series)), isolated))
        self.requests = runs
        self.series = np.array(series, dtype=np.int32)  # a new array: emitted batches keep theirs
        self.row_of = {index: row for row, index in enumerate(series)}

    def replace(self, old: _RequestRun, new: list[tuple[Request, bool]]) -> None:
        current = [(r.request, r.isolated) for r in self.requests]
        i = next(k for k, r in enumerate(self.requests) if r is old)
        self.layout([*current[:i], *new, *current[i + 1:]])


@dataclass(slots=True)
class _Rows:
    """The columns of the batch being filled during one cycle."""

    values: np.ndarray
    timestamps: np.ndarray
    quality: np.ndarray
    codes: np.ndarray
    texts: dict[int, str] | None = None

    @classmethod
    def empty(cls, n: int) -> _Rows:
        return cls(np.empty(n, dtype=np.float64), np.empty(n, dtype=np.int64), np.zeros(n, dtype=np.uint8),
                   np.zeros(n, dtype=np.int64))

    def fail(self, rows: slice | np.ndarray, code: int, ts: int) -> None:
        self.values[rows] = np.nan
        self.quality[rows] = _BAD
        self.codes[rows] = code
        self.timestamps[rows] = ts

    def add_texts(self, rows: slice | np.ndarray, texts: dict[int, str]) -> None:
        if self.texts is None:
            self.texts = {}
        if isinstance(rows, slice):
            base = rows.start
            self.texts.update({base + pos: text for pos, text in texts.items()})
        else:
            self.texts.update({int(rows[pos]): text for pos, text in texts.items()})


class ModbusDriver(Driver):
    device_model = ModbusDevice
    standard = "Modbus Application Protocol Specification V1.1b3"
    standard_uri = "https://modbus.org/docs/Modbus_Application_Protocol_V1_1b3.pdf"

    def __init__(self, ctx: DriverContext) -> None:
        super().__init__(ctx)
        device = ctx.device
        assert isinstance(device, ModbusDevice)
        self.plan = plan_device(device)
        self.limits: Limits = self.plan.limits
        self.unit_id = device.connection.unit_id
        self._groups: list[_GroupRun] = []
        self._losses_seen = 0
        # staleness, by tag index: limit in ns (0: not watched), last value and when it last changed
        n = len(device.tags)
        self._stale_ns = np.array([int((t.stale_after or 0) * 1e9) for t in device.tags], dtype=np.int64)
        self._watch_stale = bool(self._stale_ns.any())
        self._last_value = np.full(n, np.nan)
        self._last_change = np.zeros(n, dtype=np.int64)

    # ------------------------------------------------------------------ interface

    async def run(self) -> None:
        device: ModbusDevice = self.device
        link = POOL.acquire(device.connection, device.name)
        self._groups = [_GroupRun(g) for g in self.plan.groups]
        self._losses_seen = link.losses
        self.ctx.set_state(DeviceState.CONNECTING)
        try:
            await asyncio.gather(*(self._poll(link, group) for group in self._groups))
        finally:
            POOL.release(link)
            self.ctx.set_state(DeviceState.STOPPED)

    async def read_once(self) -> ReadingBatch:
        device: ModbusDevice = self.device
        link = POOL.acquire(device.connection, device.name)
        try:
            if not await link.ensure_connected():
                raise ConnectionError(f"cannot connect to {link.description} (refused, or no answer within "
                                      f"{device.connection.timeout:g}s)")
            groups = [_GroupRun(g) for g in self.plan.groups]
            batch = ReadingBatch.concat([await self._read_group(link, g) for g in groups])
        finally:
            POOL.release(link)
        return _in_configured_order(batch)

    @classmethod
    def expected_points_per_second(cls, device: DeviceBase) -> float:
        assert isinstance(device, ModbusDevice)
        return sum(1.0 / device.tag_interval(tag) for tag in device.tags)

    @classmethod
    def publishing_interval(cls, device: DeviceBase) -> float | None:
        assert isinstance(device, ModbusDevice)
        return min(device.tag_interval(tag) for tag in device.tags)

    # ------------------------------------------------------------------ scheduling

    async def _poll(self, link: Link, group: _GroupRun) -> None:
        """The first cycle starts at once, the next ones on the shared grid of ticks (tick k due at
        k·interval, see :func:`tick_grid`), from the first tick at least an interval later. A cycle
        that runs past its successor's tick skips the ticks it missed (counted as one overrun, the
        skipped polls and their points counted too) instead of firing them back to back."""
        loop = asyncio.get_running_loop()
        interval = group.interval
        tick = tick_grid(loop.time(), interval) + 1
        while True:
            cycle_start = loop.time()
            try:
                await self._cycle(link, group)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a driver bug must not stop the device: report and go on
                log.exception("device %s: poll cycle failed", self.device.name)
                self.ctx.report_error("driver", f"poll cycle failed: {exc!r}")
            now = loop.time()
            tick += 1
            due = tick * interval
            if now > due:
                missed = tick_grid(now, interval) + 1 - tick
                tick += missed
                self.ctx.count_overrun(missed, missed * len(group.series))
                self.ctx.report_error(
                    "overrun", f"poll group {group.label}: cycle took {(now - cycle_start) * 1000:.0f}ms and "
                               f"started {(cycle_start - (due - interval)) * 1000:.0f}ms late; skipped {missed} "
                               f"tick{'s' if missed != 1 else ''}")
                due = tick * interval
            await asyncio.sleep(due - now)

    async def _cycle(self, link: Link, group: _GroupRun) -> None:
        if link.losses != self._losses_seen:
            # lost between cycles: no read failed, but the status says so
            self._losses_seen = link.losses
            self.ctx.report_error("connection", f"connection to {link.description} lost")
        if not link.connected and not await link.ensure_connected():
            await self._outage(link, group)
            self._update_state(link)
            return
        batch = await self._read_group(link, group)
        if not link.connected:
            group.outage_marker = (link.losses, link.failed_attempts)
        await self.ctx.emit(batch)
        self._update_state(link)

    async def _outage(self, link: Link, group: _GroupRun) -> None:
        """One bad row per tag for each failed reconnect attempt (not one per tick: an outage of
        hours would otherwise flood the store)."""
        marker = (link.losses, link.failed_attempts)
        if marker == group.outage_marker:
            return
        group.outage_marker = marker
        code = CollectorCode.CONNECTION_LOST if link.ever_connected else CollectorCode.NOT_CONNECTED
        attempts = link.failed_attempts
        if attempts:
            self.ctx.report_error("connection", f"cannot connect to {link.description} "
                                                f"({attempts} attempt{'s' if attempts > 1 else ''})")
        await self.ctx.emit(ReadingBatch.failed(group.series, int(code)))

    def _update_state(self, link: Link) -> None:
        if not link.connected:
            state = DeviceState.DOWN
            error = f"not connected to {link.description}"
        elif any(g.degraded for g in self._groups):
            state, error = DeviceState.DEGRADED, None
        else:
            state, error = DeviceState.RUNNING, None
        if state != self.ctx.status.state:
            self.ctx.set_state(state, error)

    # ------------------------------------------------------------------ reading

    async def _read_group(self, link: Link, group: _GroupRun) -> ReadingBatch:
        out = _Rows.empty(len(group.series))
        series = group.series
        failed = 0
        give_up: int = 0  # collector code for the rest of the cycle after a timeout or lost connection
        replacements: list[tuple[_RequestRun, list[tuple[Request, bool]]]] = []
        for run in group.requests:
            if give_up:
                out.fail(run.rows, give_up, time.time_ns())
                failed += 1
                continue
            try:
                payload = await self._read(link, run.request)
            except ModbusExceptionResponse as exc:
                failed += 1
                if exc.code in ADDRESS_EXCEPTIONS and not run.isolated and len(run.request.tags) > 1:
                    give_up = await self._isolate_run(link, group, run, exc.code, out, replacements)
                else:
                    out.fail(run.rows, exc.code, time.time_ns())
                    self.ctx.report_error("exception", f"{run.request.describe()}: {exc}")
            except _LINK_FAILURES as exc:
                failed += 1
                failure = _failure_of(exc)
                out.fail(run.rows, failure.code, time.time_ns())
                self.ctx.report_error(failure.kind, failure.describe(run.request, exc))
                if failure.ends_cycle:
                    give_up = failure.code
            else:
                self._decode_into(out, run.rows, run.decoder, payload)
        group.degraded = failed > 0 and bool((out.quality == _BAD).any())
        if self._watch_stale:
            self._flag_stale(series, out)
        batch = ReadingBatch(series=series, values=out.values, timestamps=out.timestamps, quality=out.quality,
                             codes=out.codes, texts=out.texts)
        for old, new in replacements:
            group.replace(old, new)
        return batch

    async def _isolate_run(self, link: Link, group: _GroupRun, run: _RequestRun, code: int, out: _Rows,
                           replacements: list[tuple[_RequestRun, list[tuple[Request, bool]]]]) -> int:
        """Isolate the addresses of ``run`` that answered exception ``code``; its new requests go to
        ``replacements``. Returns the collector code that ends the cycle if the link failed
        meanwhile (every row of ``run`` then has it), else 0."""
        try:
            new_plan = await self._isolate(link, group, run.request, code, out)
        except _LINK_FAILURES as exc:
            give_up = _failure_of(exc).code
            out.fail(run.rows, give_up, time.time_ns())
            return give_up
        replacements.append((run, new_plan))
        return 0

    def _flag_stale(self, series: np.ndarray, out: _Rows) -> None:
        """A frozen PLC keeps answering with its last values; tags with ``stale_after`` whose value
        has not moved for that long become uncertain with code STALE."""
        limit = self._stale_ns[series]
        good = (out.quality == Quality.GOOD) & (limit > 0)
        if not good.any():
            return
        values, ts = out.values, out.timestamps
        last_change = self._last_change[series]
        moved = good & ((values != self._last_value[series]) | (last_change == 0))
        self._last_value[series[moved]] = values[moved]
        self._last_change[series[moved]] = ts[moved]
        stale = good & ~moved & (ts - last_change > limit)
        if stale.any():
            out.quality[stale] = Quality.UNCERTAIN
            out.codes[stale] = CollectorCode.STALE
            names = ", ".join(self.device.tags[i].name for i in series[stale][:5].tolist())
            self.ctx.report_error("stale", f"values not changing: {names}")

    async def _read(self, link: Link, request: Request) -> np.ndarray:
        started = time.perf_counter()
        payload = await link.read(request.function_code, request.start, request.count, self.unit_id)
        self.ctx.observe_read(time.perf_counter() - started)
        return payload

    def _decode_into(self, out: _Rows, rows: slice | np.ndarray, decoder: BlockDecoder,
                     payload: np.ndarray) -> None:
        ts = time.time_ns()
        if decoder.is_bits:
            out.values[rows] = decoder.decode_bits(payload[:decoder.count])
        else:
            values, texts = decoder.decode_registers(payload)
            out.values[rows] = values
            if texts:
                out.add_texts(rows, texts)
        out.timestamps[rows] = ts

    async def _isolate(self, link: Link, group: _GroupRun, request: Request, code: int,
                       out: _Rows) -> list[tuple[Request, bool]]:
        """Split a block that answered an address exception until the offending tags stand
        alone; fill ``out`` for every tag; return the block's new requests."""
        leaves = await self._split_read(link, request, code)
        good: list[Request] = []
        bad: list[tuple[Request, int]] = []
        for leaf, result in leaves:
            rows = np.array([group.row_of[t.index] for t in leaf.tags], dtype=np.intp)
            if isinstance(result, int):
                out.fail(rows, result, time.time_ns())
                bad.append((leaf, result))
            else:
                self._decode_into(out, rows, BlockDecoder(leaf), result)
                good.append(leaf)
        if not good:
            # every tag fails on its own as well: one failing request beats many
            self.ctx.report_error("exception", f"{request.describe()}: exception code {code} "
                                               f"({EXCEPTION_NAMES.get(code, 'unknown')}) for every tag")
            return [(request, True)]
        # Good tags may be merged again, but only across registers that were read successfully.
        holes = _uncovered(request, good)
        merged = coalesce((t for leaf in good for t in leaf.tags), self.limits,
                          [(request.table, s, e) for s, e in holes])
        names = ", ".join(f"{t.name} ({c})" for leaf, c in bad for t in leaf.tags)
        self.ctx.report_error("exception", f"{request.describe()} failed; isolated {names}; "
                                           f"the other tags are read without them from now on")
        return [*((r, False) for r in merged), *((leaf, True) for leaf, _ in bad)]

    async def _split_read(self, link: Link, request: Request,
                          code: int) -> list[tuple[Request, np.ndarray | int]]:
        halves = split_request(request)
        if halves is None:
            return [(request, code)]
        results: list[tuple[Request, np.ndarray | int]] = []
        for half in halves:
            try:
                payload = await self._read(link, half)
            except ModbusExceptionResponse as exc:
                if exc.code in ADDRESS_EXCEPTIONS:
                    results.extend(await self._split_read(link, half, exc.code))
                else:
                    results.append((half, exc.code))
            else:
                results.append((half, payload))
        return results


@dataclass(frozen=True, slots=True)
class _Failure:
    """What a failed request means for its rows and for the device status."""

    code: int  # collector code of the request's rows
    kind: str  # error kind counted in the device status
    ends_cycle: bool  # the rest of the cycle is not attempted: the link is gone or not answering
    names_request: bool  # the message says which request failed (a lost connection is the link's)

    def describe(self, request: Request, exc: Exception) -> str:
        return f"{request.describe()}: {exc}" if self.names_request else str(exc)


_FAILURES: dict[type[LinkError], _Failure] = {
    LinkTimeout: _Failure(CollectorCode.TIMEOUT, "timeout", ends_cycle=True, names_request=True),
    LinkDown: _Failure(CollectorCode.CONNECTION_LOST, "connection", ends_cycle=True, names_request=False),
    LinkGarbled: _Failure(CollectorCode.DECODE_ERROR, "decode", ends_cycle=False, names_request=True),
}
# Failures of the link itself (a Modbus exception response is the device's answer, handled apart).
_LINK_FAILURES: tuple[type[LinkError], ...] = tuple(_FAILURES)


def _failure_of(exc: LinkError) -> _Failure:
    return next(failure for kind, failure in _FAILURES.items() if isinstance(exc, kind))


def _in_configured_order(batch: ReadingBatch) -> ReadingBatch:
    """Rows sorted by tag index (``read`` prints them in the order of the device file)."""
    order = np.argsort(batch.series, kind="stable")
    texts = None
    if batch.texts:
        new_row = np.empty(len(order), dtype=np.intp)
        new_row[order] = np.arange(len(order))
        texts = {int(new_row[row]): text for row, text in batch.texts.items()}
    return ReadingBatch(series=batch.series[order], values=batch.values[order], timestamps=batch.timestamps[order],
                        quality=batch.quality[order], codes=batch.codes[order], texts=texts)


def _uncovered(request: Request, good: list[Request]) -> list[tuple[int, int]]:
    """Ranges of ``request`` that no successful request read."""
    spans = sorted((r.start, r.end) for r in good)
    holes: list[tuple[int, int]] = []
    cursor = request.start
    for start, end in spans:
        if start > cursor:
            holes.append((cursor, start))
        cursor = max(cursor, end)
    if cursor < request.end:
        holes.append((cursor, request.end))
    return holes
