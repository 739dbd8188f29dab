"""The release stage of a ``share: contracts`` sink: buffer rows in, what the contracts release out.

It sits between the sink's buffer cursor and the sink. For every line of line protocol it decides,
from the line's series (equipment, category) and its timestamp (acquisition time), which of the
sink's contracts release it, then

- ``resolution: raw``: passes the line on (asset labels pseudonymised if the contract says so);
- a resolution: adds the value of a good-quality line to its window — aligned to a multiple of the
  resolution since the Unix epoch — and, once the window is closed, releases one point at the
  window's start with fields ``value`` (mean) ``min`` ``max`` ``count``.

Contracts of one sink with the same resolution and pseudonymisation form one *release form*: a
line is released once per form whatever number of its contracts cover it (each of them is
audited for it). Forms differ in their output, so a sink under a raw and a 1-minute contract gets
both.

When a window closes: readings enter the buffer in rows stamped with their commit time, in
order. A series is *reporting* while it appeared in rows committed within ``grace`` (the buffer's
commit interval plus ``LATE_ALLOWANCE``) of the newest row read — or of the clock, once every
row is read. The windows of a form ending at ``E`` close when ``E + grace`` is at or before that
time *and* every reporting series has a reading at or after ``E`` (it has moved past the window):
so fresh data closes a window ``grace`` after its end, readings buffered late but in order (a
broker's queue after an outage, a sink outage) close it when they have moved past it, and a
series that falls silent holds nothing back. A reading that arrives for a window already released
is late: counted, not released. Because closing follows the buffer's rows, a sink outage delays
windows but never cuts them short.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mos_agent.lineprotocol import parse_lines, parse_number, series_prefix, split_series
from mos_agent.payload import Payload
from mos_agent.sharing.contracts import Contract, ContractStatus
from mos_agent.sharing.ledger import AuditEntry, Ledger
from mos_agent.sharing.pseudonyms import PSEUDONYMISED_LEVELS, Pseudonymiser

LATE_ALLOWANCE = 2.0  # seconds a reading may reach the buffer after its window's end and still count
CHECKPOINT_INTERVAL = 5.0  # seconds between snapshots of the open windows
PREFIX_CACHE_SIZE = 100_000
NS = 1_000_000_000

log = logging.getLogger("mos_agent.sharing")


@dataclass(frozen=True, slots=True)
class ReleaseForm:
    """Contracts of one sink that release in the same shape."""

    key: str  # stable across restarts: the ledger's name for the form
    resolution_ns: int | None
    pseudonymise: bool
    contracts: tuple[Contract, ...]


def release_forms(contracts: Sequence[Contract]) -> list[ReleaseForm]:
    grouped: dict[tuple[int | None, bool], list[Contract]] = {}
    for contract in contracts:
        grouped.setdefault((contract.resolution_ns, contract.pseudonymise), []).append(contract)
    return [ReleaseForm(f"{'raw' if res is None else f'{res}ns'}{'-pseudonymised' if pseud else ''}", res, pseud,
                        tuple(members))
            for (res, pseud), members in grouped.items()]


@dataclass(frozen=True, slots=True)
class _Route:
    """What one form does with the lines of one series."""

    form: int  # index into the stage's forms
    resolution: int | None  # the form's
    contracts: tuple[Contract, ...]  # the form's contracts releasing this equipment and category
    out_prefix: bytes  # ``measurement,tags `` as released (pseudonymised if the form says so)
    dataset: str  # equipment name, for the audit
    good: bool  # quality=good: may enter windows
    scrub: tuple[tuple[bytes, bytes], ...]  # real name → pseudonym, for text fields


@dataclass(slots=True)
class Release:
    """What one step releases; recorded in the ledger once the sink has accepted ``payload``."""

    payload: Payload | None
    last_row: int | None  # the last buffer row read (None: windows closed by the clock)
    audit: dict[tuple[str, str], AuditEntry] = field(default_factory=dict)
    closed_before: dict[str, int] = field(default_factory=dict)

    @property
    def points(self) -> int:
        return self.payload.points if self.payload is not None else 0


def _split_line(line: bytes) -> tuple[bytes, bytes, bytes]:
    """``(prefix, fields, timestamp)`` of a line."""
    prefix, rest = split_series(line)
    fields, _, ts = rest.rpartition(b" ")
    return prefix, fields, ts


def _value(fields: bytes) -> float | None:
    """The ``value`` field as a float, or None when the line has none (text, failed read)."""
    if fields.startswith(b"value="):
        end = fields.find(b",", 6)
        raw = fields[6:] if end < 0 else fields[6:end]
    else:
        start = fields.find(b",value=")
        if start < 0:
            return None
        end = fields.find(b",", start + 7)
        raw = fields[start + 7:] if end < 0 else fields[start + 7:end]
    try:
        return float(raw)
    except ValueError:
        try:
            parsed = parse_number(raw.decode())
        except ValueError:
            return None
        return float(parsed) if isinstance(parsed, int | float) else None


class ReleaseStage:
    """One contract sink's release stage. Not thread-safe: its sink's worker thread owns it."""

    def __init__(self, sink: str, contracts: Sequence[Contract], ledger: Ledger,
                 pseudonymiser: Pseudonymiser | None, *, commit_interval: float = 0.2,
                 checkpoint_interval: float = CHECKPOINT_INTERVAL) -> None:
        self.sink = sink
        self.contracts = [c for c in contracts if c.sink == sink]
        self.forms = release_forms(self.contracts)
        if pseudonymiser is None and any(f.pseudonymise for f in self.forms):
            raise ValueError("a pseudonymising contract needs the pseudonym key")
        self.ledger = ledger
        self.pseudonymiser = pseudonymiser
        self.grace_ns = int((commit_interval + LATE_ALLOWANCE) * NS)
        self.checkpoint_interval = checkpoint_interval
        self._routes: dict[bytes, tuple[_Route, ...]] = {}
        self.released_points = 0
        self.late_points = 0
        self.last_release_ns: int | None = None
        now_ns = time.time_ns()
        self._statuses = {c.id: c.status(now_ns) for c in self.contracts}
        self._reload()

    # ------------------------------------------------------------ state

    def _reload(self) -> None:
        """State as the ledger has it: open windows of the last checkpoint, windows released since."""
        checkpoint = self.ledger.load(self.sink)
        self.checkpoint_row = checkpoint.row_id
        self.processed_row = checkpoint.processed_row
        self.read_row = checkpoint.row_id  # rows up to here are reflected in the windows
        self.watermark_ns = 0  # commit time of the newest row read
        self._last_checkpoint = time.monotonic()
        # form index → window start → series prefix → [sum, min, max, count, contract ids, dataset]
        self._open: list[dict[int, dict[bytes, list[Any]]]] = [{} for _ in self.forms]
        # form index → series prefix → [newest reading's time, commit time of the row it came in]
        self._progress: list[dict[bytes, list[int]]] = [{} for _ in self.forms]
        self._closed_before: list[int] = [checkpoint.closed_before.get(f.key, 0) for f in self.forms]
        for index, form in enumerate(self.forms):
            saved = checkpoint.open_windows.get(form.key, {})
            for start, key, total, low, high, count, ids, dataset in saved.get("windows", []):
                if start >= self._closed_before[index]:
                    self._open[index].setdefault(start, {})[key.encode()] = [total, low, high, count, set(ids),
                                                                            dataset]
            for key, newest, seen in saved.get("progress", []):
                self._progress[index][key.encode()] = [newest, seen]

    def reset(self) -> None:
        """Forget what is in memory and start again from the ledger (after a worker error)."""
        self._routes.clear()
        self._reload()

    def start_row(self, cursor_row: int) -> int:
        """The row to read after: the buffer cursor (held at the checkpoint) or the checkpoint,
        whichever is further (a crash between the two writes leaves the cursor behind)."""
        self.read_row = max(self.read_row, cursor_row)
        return self.read_row

    def status_changes(self, now_ns: int | None = None) -> list[str]:
        """What changed since the last call: contracts that became active or expired."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        changes = []
        for contract in self.contracts:
            status = contract.status(now_ns)
            if status != self._statuses[contract.id]:
                self._statuses[contract.id] = status
                what = ("is active: readings acquired from now on are released" if status == ContractStatus.ACTIVE
                        else "has expired: nothing acquired from now on is released")
                changes.append(f"contract {contract.id} for {contract.consumer} {what} to sink {self.sink}")
        return changes

    def open_windows(self) -> int:
        return sum(len(series) for windows in self._open for series in windows.values())

    # ------------------------------------------------------------ routes

    def _routes_for(self, prefix: bytes) -> tuple[_Route, ...]:
        if len(self._routes) >= PREFIX_CACHE_SIZE:
            self._routes.clear()
        try:
            measurement, tags, _, _ = next(parse_lines(prefix + b" _=0"))
        except (ValueError, UnicodeDecodeError, StopIteration):
            self._routes[prefix] = ()  # not a series of ours: nothing to release
            return ()
        equipment = tags.get("equipment", "")
        routes: list[_Route] = []
        for index, form in enumerate(self.forms):
            covering = tuple(c for c in form.contracts
                             if measurement in c.categories and c.covers_equipment(equipment))
            if not covering:
                continue
            out_tags = dict(tags)
            scrub: tuple[tuple[bytes, bytes], ...] = ()
            if form.pseudonymise:
                assert self.pseudonymiser is not None
                names = self.pseudonymiser.levels(tags)
                out_tags.update(names)
                scrub = tuple(sorted(((tags[level].encode(), names[level].encode()) for level in names),
                                     key=lambda pair: -len(pair[0])))
            out_prefix = series_prefix(measurement, out_tags.items()).encode()
            routes.append(_Route(index, form.resolution_ns, covering, out_prefix, equipment,
                                 tags.get("quality") == "good", scrub))
        found = self._routes[prefix] = tuple(routes)
        return found

    # ------------------------------------------------------------ releasing

    def process(self, first_row: int, last_row: int, body: bytes, newest_created_ns: int) -> Release:
        """Rows ``first_row..last_row`` (their decompressed lines in ``body``, the newest committed
        at ``newest_created_ns``): the raw lines they release and the windows now closed."""
        replay = last_row <= self.processed_row  # read again after a restart: already audited
        out: list[bytes] = []
        audit: dict[tuple[str, str], AuditEntry] = defaultdict(AuditEntry)
        routes_cache = self._routes
        open_windows = self._open
        progress = self._progress
        closed_before = self._closed_before
        late = 0
        for line in body.split(b"\n"):
            if not line:
                continue
            prefix, fields, ts_text = _split_line(line)
            routes = routes_cache.get(prefix)
            if routes is None:
                if not fields or line.startswith(b"#"):
                    continue
                routes = self._routes_for(prefix)
            if not routes or not fields:
                continue
            try:
                ts = int(ts_text)
            except ValueError:  # not a line of ours: nothing to release, and it must not wedge the sink
                continue
            for route in routes:
                resolution = route.resolution
                if resolution is not None:
                    if not route.good:
                        continue
                    # any reading shows the series has moved on, released or not
                    seen = progress[route.form].get(route.out_prefix)
                    if seen is None:
                        progress[route.form][route.out_prefix] = [ts, newest_created_ns]
                    else:
                        if ts > seen[0]:
                            seen[0] = ts
                        seen[1] = newest_created_ns
                contracts = route.contracts
                if len(contracts) == 1:
                    if not contracts[0].valid_from_ns <= ts <= contracts[0].valid_to_ns:
                        continue
                    covering: Sequence[Contract] = contracts
                else:
                    covering = [c for c in contracts if c.valid_from_ns <= ts <= c.valid_to_ns]
                    if not covering:
                        continue
                if resolution is None:
                    if route.scrub and b'"' in fields:
                        for real, pseudonym in route.scrub:
                            fields = fields.replace(real, pseudonym)
                    out.append(route.out_prefix + fields + b" " + ts_text)
                    if not replay:
                        for contract in covering:
                            audit[(contract.id, route.dataset)].add(1, ts, ts)
                    continue
                value = _value(fields)
                if value is None:
                    continue
                start = ts - ts % resolution
                if start < closed_before[route.form]:
                    if not replay:
                        late += 1
                    continue
                windows = open_windows[route.form].get(start)
                if windows is None:
                    windows = open_windows[route.form][start] = {}
                acc = windows.get(route.out_prefix)
                if acc is None:
                    windows[route.out_prefix] = [value, value, value, 1, {c.id for c in covering}, route.dataset]
                else:
                    acc[0] += value
                    if value < acc[1]:
                        acc[1] = value
                    if value > acc[2]:
                        acc[2] = value
                    acc[3] += 1
                    ids = acc[4]
                    for contract in covering:
                        if contract.id not in ids:
                            ids.add(contract.id)
        if late:
            self.late_points += late
        self.watermark_ns = max(self.watermark_ns, newest_created_ns)
        release = Release(None, last_row, audit)
        self._close(self.watermark_ns - self.grace_ns, out, release)
        self.read_row = max(self.read_row, last_row)
        if out:
            out.append(b"")
            release.payload = Payload(len(out) - 1, plain=b"\n".join(out))
        return release

    def due(self, now_ns: int | None = None) -> Release | None:
        """With every buffered row read: the windows the clock has closed, or None."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        limit = max(self.watermark_ns, now_ns) - self.grace_ns
        if not any(self._boundary(i, limit) > self._closed_before[i] for i in range(len(self.forms))):
            return None
        out: list[bytes] = []
        release = Release(None, None, defaultdict(AuditEntry))
        self._close(limit, out, release)
        if out:
            out.append(b"")
            release.payload = Payload(len(out) - 1, plain=b"\n".join(out))
        return release

    def next_close_ns(self) -> int | None:
        """When the clock closes the earliest open window (for the idle wait)."""
        ends = [min(windows) + form.resolution_ns + self.grace_ns
                for form, windows in zip(self.forms, self._open, strict=True)
                if windows and form.resolution_ns is not None]
        return min(ends) if ends else None

    def _boundary(self, index: int, limit: int) -> int:
        """Windows of form ``index`` starting before the returned time may close: they ended by
        ``limit`` (a commit time minus the grace) and every series reporting since has moved
        past them. Series that stopped reporting are forgotten here."""
        resolution = self.forms[index].resolution_ns
        if resolution is None:
            return 0
        progress = self._progress[index]
        windows = self._open[index]
        if not windows or min(windows) + resolution > limit:
            return self._closed_before[index]  # nothing to close, or nothing has ended yet: spare the scan
        moved_past = limit
        silent = []
        for key, (newest, seen) in progress.items():
            if seen <= limit:
                silent.append(key)
            elif newest < moved_past:
                moved_past = newest
        for key in silent:
            del progress[key]
        return moved_past - moved_past % resolution

    def _close(self, limit: int, out: list[bytes], release: Release) -> None:
        """Close every window that :meth:`_boundary` allows into ``out`` and ``release``."""
        audit = release.audit
        for index, form in enumerate(self.forms):
            resolution = form.resolution_ns
            if resolution is None:
                continue
            boundary = self._boundary(index, limit)
            if boundary <= self._closed_before[index]:
                continue
            windows = self._open[index]
            for start in sorted(s for s in windows if s < boundary):
                end = start + resolution - 1
                for key, (total, low, high, count, ids, dataset) in windows.pop(start).items():
                    out.append(b"%bvalue=%r,min=%r,max=%r,count=%di %d" % (key, total / count, low, high, count,
                                                                              start))
                    for contract_id in ids:
                        audit[(contract_id, dataset)].add(1, start, end)
            self._closed_before[index] = boundary
            release.closed_before[form.key] = boundary

    def commit(self, release: Release, *, force_checkpoint: bool = False) -> int | None:
        """Record ``release`` in the ledger once the sink accepted it; returns the buffer row the
        sink's cursor may move to when this was also a checkpoint of the open windows."""
        now = time.monotonic()
        checkpoint = None
        if force_checkpoint or not (any(self._open) or any(self._progress)) \
                or now - self._last_checkpoint >= self.checkpoint_interval:
            # every row read so far is in the windows (or released): the cursor may pass them
            checkpoint = (self.read_row, self._snapshot())
        self.ledger.record(self.sink, audit=release.audit, closed_before=release.closed_before,
                           processed_row=release.last_row, checkpoint=checkpoint)
        if release.last_row is not None:
            self.processed_row = max(self.processed_row, release.last_row)
        if release.points:
            self.released_points += release.points
            self.last_release_ns = time.time_ns()
        if checkpoint is None:
            return None
        self._last_checkpoint = now
        self.checkpoint_row = checkpoint[0]
        return checkpoint[0]

    def _snapshot(self) -> dict[str, dict[str, list[list[Any]]]]:
        return {
            form.key: {
                "windows": [[start, key.decode(), *acc[:4], sorted(acc[4]), acc[5]]
                            for start, series in windows.items() for key, acc in series.items()],
                "progress": [[key.decode(), newest, seen] for key, (newest, seen) in progress.items()],
            }
            for form, windows, progress in zip(self.forms, self._open, self._progress, strict=True)
            if windows or progress
        }

    def status(self) -> dict[str, Any]:
        return {
            "released_points": self.released_points,
            "late_points": self.late_points,
            "open_windows": self.open_windows(),
            "last_release_time": self.last_release_ns / 1e9 if self.last_release_ns else None,
        }


__all__ = ["PSEUDONYMISED_LEVELS", "Release", "ReleaseForm", "ReleaseStage", "release_forms"]
