"""The on-disk store-and-forward buffer: durable rows of encoded line protocol and one cursor per
reader. Storage only — it knows nothing of sinks or networks; the readers' supervision is in
:mod:`mos_agent.sinks.forward`.

Invariants (what the rest of the agent relies on):

1. Acknowledged means durable: once :meth:`Buffer.append` returns, its rows survive ``kill -9``
   and power loss. Rows are never changed after the append.
2. Row ids only grow and are never reused (AUTOINCREMENT), so a cursor is one number.
3. A row is deleted only when every registered reader has it (at or below its live cursor and
   outside its backlog range) — or by the overflow policy, which counts each dropped point
   against every reader that never receives it (a row taken from a batch a reader is sending
   counts for it only if that batch is given up).
4. A cursor moves only forward and only through :meth:`SinkCursor.advance` (or the backlog
   bookkeeping, or :meth:`SinkCursor.advance_to` for a reader that reads rows in order from a
   position of its own and holds its cursor where it can resume — a contract sink's release
   stage), in the same transaction that deletes the rows no reader needs: a crash re-sends
   at most the batch in flight, never skips one. (On a disk too full to save it, a cursor moves
   on in memory and is saved later: after a crash meanwhile more is re-sent, never skipped.)
5. The buffered bytes stay within ``max_size`` after every append, and the append leaves
   ``min_free_space`` free on the state directory's filesystem. No call waits for disk space.
6. One process per state directory (a lock file); a second one is refused.

Layout of ``<state_dir>/buffer.sqlite`` (SQLite, WAL):

- ``chunks``: rows of encoded line protocol, gzip-compressed (see :mod:`mos_agent.payload`; rows
  written uncompressed by an earlier version are read as they are). ``id`` comes from
  AUTOINCREMENT so an id is never reused, even after the table was emptied — sink cursors rely
  on that.
- ``cursors``: per sink, ``live`` = every row id ≤ live has been delivered, except the optional
  backlog range ``[backlog_from, backlog_to]`` still being drained. A row is deleted once no sink
  needs it.
- ``dead_letters``: batches (or single lines) a sink refused as malformed.
- ``meta``: the format marker (application id and schema version). A file without it is not ours.

Durability: the appending connection runs ``synchronous=FULL``, so a chunk acknowledged by
:meth:`Buffer.append` survives ``kill -9`` (NORMAL would be enough for that) *and* power loss (which
is what FULL adds; it costs one fsync per group commit, a few a second). Sink connections run
``synchronous=NORMAL``: losing a cursor update to power loss only means a batch is sent again, and
resends are harmless (identical series+timestamp points overwrite each other in the store).

Bound: ``buffer.max_size`` counts the bytes of buffered (compressed) line protocol. When an append would pass
it, ``drop_oldest`` deletes the oldest rows (sent or not; each sink is told how many of its
unsent points went) and ``drop_newest`` refuses the new rows; either way the points are counted
and one warning is logged per episode (it ends when the buffer is below 90% of the cap again).
A point is counted as dropped for a sink only if that sink never receives it: a row deleted while
it is in the sink's batch in flight is counted only if that batch is then given up, not sent.
The file itself is somewhat larger: page overhead, the WAL (truncated to 64 MiB after
checkpoints) and dead letters (at most 10% of max_size).

The disk is a cap too. SQLite needs free space to move a cursor or delete a row (its WAL), so a
filesystem filled to the last byte could free nothing, ever. Before every append the buffer
measures the free space of the state directory's filesystem (plus the pages SQLite can reuse)
and keeps ``buffer.min_free_space`` of it free: whatever would eat into that is handled by the
overflow policy as if ``max_size`` had been reached — a "disk full" episode, logged once, shown in
the status, over when the space is back. Should the disk fill anyway (another program), the
append that hits it is retried once after a checkpoint and then refused (counted as dropped), and
a cursor that cannot be saved moves on in memory: nothing waits for space forever.

A file that is not a readable SQLite database, fails ``quick_check``, or lacks our format marker
is moved aside to ``buffer.sqlite.corrupt-<time>`` (with its -wal/-shm) and a new buffer started,
with one error logged — never a crash loop. A lock file keeps a second agent off the same
state directory (that is refused, not mistaken for corruption).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mos_agent.payload import Payload, compress, is_gzipped
from mos_agent.sqlitetx import transaction
from mos_agent.status import BufferStats, SinkLag

APP_ID = "mos-agent-buffer"
SCHEMA_VERSION = 1
BUFFER_FILE = "buffer.sqlite"
LOCK_FILE = "buffer.lock"

# An overflow episode ends when the buffer is back below this share of its cap; without the gap a
# buffer hovering at the cap would start a new episode (and a new log line) on every commit.
OVERFLOW_LOW_WATER = 0.9
# Dead letters are kept for inspection, bounded so a sink rejecting everything cannot fill the disk.
DEAD_LETTER_SHARE = 0.1
DEAD_LETTER_MIN_BYTES = 1 << 20
BUSY_TIMEOUT_S = 60.0
# Free space kept on the state directory's filesystem (buffer.min_free_space): room for SQLite's
# WAL between checkpoints (up to 1000 pages of 16 KiB) and for the transactions that free space.
DEFAULT_MIN_FREE_SPACE = 32 << 20
# Under this multiple of min_free_space the writer checkpoints the WAL after every append, so the
# WAL does not grow into the headroom between SQLite's own checkpoints (every 1000 pages).
LOW_SPACE_CHECKPOINT_FACTOR = 2
# A disk-full episode ends when this share of min_free_space is free beyond the next append.
DISK_LOW_WATER = 0.1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_ns INTEGER NOT NULL,
    points INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    sink TEXT PRIMARY KEY,
    live INTEGER NOT NULL,
    backlog_from INTEGER,
    backlog_to INTEGER
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    reason TEXT NOT NULL,
    http_status INTEGER,
    points INTEGER NOT NULL,
    body BLOB NOT NULL,
    created_ns INTEGER NOT NULL
);
"""
_TABLES = frozenset(("meta", "chunks", "cursors", "dead_letters"))


class BufferLocked(RuntimeError):
    """Another process holds the buffer of this state directory."""


class BatchKind(enum.StrEnum):
    LIVE = "live"  # rows after the live cursor: fresh data
    BACKLOG = "backlog"  # rows of the backlog range being drained beside the live data


@dataclass(slots=True)
class Batch:
    """Consecutive rows of one sink's live or backlog range, concatenated."""

    kind: BatchKind
    first_id: int
    last_id: int
    rows: int
    payload: Payload
    oldest_created_ns: int
    newest_created_ns: int = 0  # commit time of the newest row

    @property
    def points(self) -> int:
        return self.payload.points


@dataclass(slots=True)
class Pending:
    rows: int
    points: int
    oldest_created_ns: int | None
    head_id: int | None


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves, so a transaction is
    # exactly what the code says. check_same_thread=False: each connection is still used by one
    # thread at a time, guarded by its owner.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
    # Larger pages suit a table of large blobs (fewer overflow pages to write, read and free);
    # smaller ones write less per commit when data trickles in (every commit rewrites whole pages
    # into the WAL — flash wear on a gateway). 16 KiB: append ~1.2M points/s, drain-side delete
    # ~0.02 µs a point (secure_delete off, below), ~4 pages a commit. Only takes effect when the file is created.
    conn.execute("PRAGMA page_size=16384")
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"cannot switch {path} to WAL (journal_mode={mode})")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA journal_size_limit=67108864")
    # Debian's SQLite is built with SECURE_DELETE on: deleting a delivered row would overwrite its
    # pages with zeros, writing every point a second time through the WAL (deleting delivered rows
    # took 0.29 µs a point with it, 0.02 without). The buffer holds nothing the store does not.
    conn.execute("PRAGMA secure_delete=OFF")
    return conn


def _is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


def _deletable_ranges(cursors: Sequence[tuple[int, int | None, int | None]]) -> list[tuple[int, int]]:
    """Row-id ranges no sink needs any more: at or below every sink's live cursor and outside
    every backlog range still being drained."""
    if not cursors:
        return []
    ceiling = min(live for live, _, _ in cursors)
    holes = sorted((lo, hi) for _, lo, hi in cursors if lo is not None and hi is not None and lo <= hi)
    ranges: list[tuple[int, int]] = []
    start = 0
    for lo, hi in holes:
        if lo > ceiling:
            break
        if lo - 1 >= start:
            ranges.append((start, lo - 1))
        start = max(start, hi + 1)
    if start <= ceiling:
        ranges.append((start, ceiling))
    return ranges


def _pending_for(row_id: int, live: int, lo: int | None, hi: int | None) -> bool:
    return row_id > live or (lo is not None and hi is not None and lo <= row_id <= hi)


@dataclass(slots=True)
class _Freed:
    """Rows removed inside a transaction; applied to the totals once it committed."""

    rows: int = 0
    points: int = 0
    bytes: int = 0
    dropped: int = 0  # points removed or refused by the overflow policy that some sink never gets
    dropped_by_sink: dict[str, int] = field(default_factory=dict)
    # rows the overflow policy deleted while sinks had them in their batch in flight:
    # (row id, points, those sinks, whether the row already counts as dropped for another sink)
    held: list[tuple[int, int, frozenset[str], bool]] = field(default_factory=list)
    disk: bool = False  # the disk's free space, not max_size, set the cap


@dataclass(slots=True)
class _HeldRow:
    """A deleted row that sinks still have in flight: dropped for a sink only if its batch is given up."""

    points: int
    sinks: set[str]
    counted: bool  # already in dropped_points (another sink never got it)


class Buffer:
    """The SQLite buffer of one state directory. :meth:`append` is thread-safe; each sink reads
    through its own :class:`SinkCursor` (own connection, WAL lets it read beside the writer)."""

    def __init__(self, directory: Path, max_size: int, overflow: str = "drop_oldest",
                 logger: logging.Logger | None = None, row_points: int = 5000,
                 min_free_space: int = DEFAULT_MIN_FREE_SPACE) -> None:
        if overflow not in ("drop_oldest", "drop_newest"):
            raise ValueError(f"overflow must be drop_oldest or drop_newest, not {overflow!r}")
        self.directory = Path(directory)
        self.path = self.directory / BUFFER_FILE
        self.max_size = int(max_size)
        self.overflow = overflow
        self.log = logger or logging.getLogger("mos_agent.buffer")
        self.row_points = max(1, int(row_points))
        self.min_free_space = max(0, int(min_free_space))
        self.dead_letter_cap = max(DEAD_LETTER_MIN_BYTES, int(self.max_size * DEAD_LETTER_SHARE))
        self._conn: sqlite3.Connection | None = None
        self._status_conn: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()
        self._status_lock = threading.Lock()
        self._totals_lock = threading.RLock()
        self._lock_fd: int | None = None
        self._listeners: list[Callable[[int], None]] = []
        self.rows = 0
        self.points = 0
        self.bytes = 0
        self.dropped_points = 0
        self.dropped_points_by_sink: dict[str, int] = {}
        self.overflow_episodes = 0
        self.overflowing = False
        self._episode_dropped = 0
        self.moved_aside: list[Path] = []
        self._page_size = 4096
        # Drop accounting against the sinks' batches in flight. Held with every transaction that
        # moves a cursor or deletes by policy, so cursors, batches in flight and counts agree.
        self._drop_lock = threading.Lock()
        self._in_flight: dict[str, tuple[int, int | None]] = {}  # sink -> ids of its batch (None: still reading)
        self._held: dict[int, _HeldRow] = {}
        self.disk_free = 0  # bytes free on the state directory's filesystem, at the last append
        self.disk_total = 0  # that filesystem's size
        self.disk_full = False
        self.disk_full_episodes = 0
        self.disk_full_reason: str | None = None
        self._disk_episode_dropped = 0
        self._episode_by_disk = False

    # ------------------------------------------------------------ open / close

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            self._conn = self._open_checked()
            self._page_size = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
            self._status_conn = _connect(self.path, "NORMAL")
            self._load_totals()
        except BaseException:
            self.close()
            raise

    def _take_lock(self) -> None:
        """One process per buffer: two agents appending to and deleting from the same file would
        each believe they own the cursors."""
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BufferLocked(f"another mos-agent process is using the buffer in {self.directory} "
                               f"({LOCK_FILE} is locked)") from None
        self._lock_fd = fd

    def _open_checked(self) -> sqlite3.Connection:
        """Open the file; one that is corrupt or not ours is moved aside and a new one started, so
        a bad file costs its contents once instead of a crash loop."""
        problem = self._inspect()
        if problem not in (None, "new"):
            aside = self._move_aside()
            self.log.error("buffer %s is %s; moved it aside to %s and started a new, empty buffer "
                           "(what the old file held is not sent)", self.path, problem, aside)
            problem = "new"
        conn = _connect(self.path, "FULL")
        if problem == "new":
            with transaction(conn):
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                                 [("app", APP_ID), ("schema_version", str(SCHEMA_VERSION))])
        return conn

    def _inspect(self) -> str | None:
        """``None`` if the file is a mos-agent buffer of our version, ``"new"`` if there is nothing
        in it yet, otherwise what is wrong with it. Only reads: a foreign file is left as it was."""
        if not self.path.exists():
            return "new"
        with self.path.open("rb") as f:
            header = f.read(16)
        if header and header != b"SQLite format 3\x00":
            # Decided before SQLite opens it: SQLite would discard the -wal of a file it cannot read,
            # and the files are moved aside as they were found.
            return "not a SQLite database (bad file header)"
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            tables.discard("sqlite_sequence")
            if not tables:
                return "new"
            if "meta" not in tables:
                return "not a mos-agent buffer (no format marker; tables: " + ", ".join(sorted(tables)) + ")"
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("app") != APP_ID:
                return f"not a mos-agent buffer (format marker app={meta.get('app')!r})"
            if meta.get("schema_version") != str(SCHEMA_VERSION):
                return (f"a buffer of format version {meta.get('schema_version')}, but this mos-agent "
                        f"reads version {SCHEMA_VERSION}")
            if _TABLES - tables:
                return "incomplete (missing tables: " + ", ".join(sorted(_TABLES - tables)) + ")"
            result = [r[0] for r in conn.execute("PRAGMA quick_check")]
            if result != ["ok"]:
                return "corrupt (quick_check: " + "; ".join(result[:3]) + ")"
            return None
        except sqlite3.DatabaseError as exc:
            if _is_busy(exc):
                raise
            return f"not a readable SQLite database ({exc})"
        finally:
            conn.close()

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.path.with_name(f"{BUFFER_FILE}.corrupt-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{BUFFER_FILE}.corrupt-{stamp}-{n}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                src.rename(f"{target}{suffix}")
        self.moved_aside.append(target)
        return target

    def _load_totals(self) -> None:
        assert self._conn is not None
        rows, points, size = self._conn.execute(
            "SELECT count(*), coalesce(sum(points), 0), coalesce(sum(bytes), 0) FROM chunks").fetchone()
        with self._totals_lock:
            self.rows, self.points, self.bytes = rows, points, size

    def close(self) -> None:
        for attr in ("_conn", "_status_conn"):
            conn = getattr(self, attr)
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
                setattr(self, attr, None)
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------ sinks

    def register_sinks(self, names: Iterable[str]) -> None:
        """Give each sink a cursor (a new sink starts at the oldest buffered row, so it receives
        everything still buffered) and drop the cursors of sinks no longer configured."""
        assert self._conn is not None
        wanted = list(names)
        with self._write_lock:
            with transaction(self._conn):
                existing = {r[0]: (r[1], r[2], r[3]) for r in
                            self._conn.execute("SELECT sink, live, backlog_from, backlog_to FROM cursors")}
                for name in wanted:
                    if name not in existing:
                        self._conn.execute("INSERT INTO cursors(sink, live) VALUES (?, 0)", (name,))
                for name, (live, lo, hi) in existing.items():
                    if name in wanted:
                        continue
                    owed = self._conn.execute(
                        "SELECT coalesce(sum(points), 0) FROM chunks WHERE id > ? OR id BETWEEN ? AND ?",
                        (live, lo if lo is not None else 1, hi if hi is not None else 0)).fetchone()[0]
                    self._conn.execute("DELETE FROM cursors WHERE sink = ?", (name,))
                    self.log.warning("sink %r is no longer configured: its cursor is removed and the %d "
                                     "buffered points it had not received are no longer kept for it", name, owed)
                freed = self.cleanup_in(self._conn)
            self.apply(freed)
        for name in wanted:
            self.dropped_points_by_sink.setdefault(name, 0)

    def cursor(self, sink: str) -> SinkCursor:
        """A reader for one sink with its own connection; use it from one thread."""
        return SinkCursor(self, sink)

    def add_listener(self, listener: Callable[[int], None]) -> None:
        """``listener(points)`` is called (on the appending thread; it must not block) after every
        append that stored rows, with the number of points stored."""
        self._listeners.append(listener)

    def cleanup_in(self, conn: sqlite3.Connection) -> _Freed:
        """Delete the rows every sink has; call inside a write transaction, then :meth:`apply`."""
        cursors = conn.execute("SELECT live, backlog_from, backlog_to FROM cursors").fetchall()
        freed = _Freed()
        for lo, hi in _deletable_ranges(cursors):
            for points, size in conn.execute(
                    "DELETE FROM chunks WHERE id BETWEEN ? AND ? RETURNING points, bytes", (lo, hi)).fetchall():
                freed.rows += 1
                freed.points += points
                freed.bytes += size
        return freed

    def apply(self, freed: _Freed) -> None:
        """Bring the totals up to date after a committed transaction that removed rows."""
        with self._totals_lock:
            self.rows -= freed.rows
            self.points -= freed.points
            self.bytes -= freed.bytes
            for row_id, points, sinks, counted in freed.held:
                self._held[row_id] = _HeldRow(points, set(sinks), counted)
            if freed.dropped:
                self._count_dropped(freed.dropped, freed.dropped_by_sink)
                if freed.disk:
                    self._disk_episode_dropped += freed.dropped
                if not self.overflowing:
                    self.overflowing = True
                    self.overflow_episodes += 1
                    self._episode_by_disk = freed.disk
                    if not freed.disk:  # a disk-full episode has its own warning
                        what = "oldest buffered data" if self.overflow == "drop_oldest" else "newest data"
                        self.log.warning("buffer full (max_size %d bytes): dropping the %s until the sinks catch "
                                         "up (overflow: %s; counted in dropped_points, logged once per episode)",
                                         self.max_size, what, self.overflow)
            elif self.overflowing and not self.disk_full and self.bytes < self.max_size * OVERFLOW_LOW_WATER:
                self.overflowing = False
                if not self._episode_by_disk:  # the disk-full episode said its own goodbye
                    self.log.warning("buffer below its cap again: %d points were dropped in that overflow "
                                     "episode", self._episode_dropped)
                self._episode_dropped = 0

    def _count_dropped(self, points: int, by_sink: dict[str, int]) -> None:
        with self._totals_lock:
            self.dropped_points += points
            self._episode_dropped += points
            for sink, n in by_sink.items():
                self.dropped_points_by_sink[sink] = self.dropped_points_by_sink.get(sink, 0) + n

    # ------------------------------------------------------------ batches in flight

    def _flying(self, sink: str, row_id: int) -> bool:
        span = self._in_flight.get(sink)
        return span is not None and span[0] <= row_id and (span[1] is None or row_id <= span[1])

    def _release_held(self, sink: str, keep: Callable[[int], bool], delivered: bool) -> None:
        """The sink is done with the held rows for which ``keep`` is false: delivered, or lost
        (then counted as dropped for it). Call with ``_drop_lock`` held."""
        lost_points = 0
        newly_dropped = 0
        with self._totals_lock:
            for row_id in [r for r, held in self._held.items() if sink in held.sinks and not keep(r)]:
                held = self._held[row_id]
                held.sinks.discard(sink)
                if not delivered:
                    lost_points += held.points
                    if not held.counted:
                        held.counted = True
                        newly_dropped += held.points
                if not held.sinks:
                    del self._held[row_id]
            if lost_points:
                self.dropped_points_by_sink[sink] = self.dropped_points_by_sink.get(sink, 0) + lost_points
            if newly_dropped:
                self._count_dropped(newly_dropped, {})

    def flight_begin(self, sink: str, first_id: int) -> None:
        """``sink`` starts reading a batch from ``first_id``: rows deleted from here on may be in it."""
        with self._drop_lock:
            self._in_flight[sink] = (first_id, None)

    def flight_settle(self, sink: str, first_id: int | None, last_id: int | None) -> None:
        """The batch ``sink`` read holds the rows ``first_id..last_id`` (None: nothing was read);
        rows deleted meanwhile outside that range never reach it."""
        with self._drop_lock:
            if first_id is None or last_id is None:
                self._in_flight.pop(sink, None)
                self._release_held(sink, lambda _: False, delivered=False)
                return
            self._in_flight[sink] = (first_id, last_id)
            self._release_held(sink, lambda r: first_id <= r <= last_id, delivered=False)

    def flight_end(self, sink: str, delivered: bool) -> None:
        """``sink``'s batch in flight was delivered, or given up (its deleted rows then count as
        dropped for it). Call with ``_drop_lock`` held."""
        self._in_flight.pop(sink, None)
        self._release_held(sink, lambda _: False, delivered=delivered)

    # ------------------------------------------------------------ append

    def _rows_from(self, bodies: Sequence[bytes], points: Sequence[int], now_ns: int) -> list[tuple]:
        """Concatenate consecutive bodies into rows of about ``row_points`` points (a body is never
        split), so a row is roughly one sink batch, each compressed."""
        rows: list[tuple] = []
        parts: list[bytes] = []
        row_points = 0
        for body, n in zip(bodies, points, strict=True):
            if not body or n <= 0:
                continue
            if not body.endswith(b"\n"):
                body += b"\n"
            if parts and row_points + n > self.row_points:
                joined = compress(b"".join(parts))
                rows.append((now_ns, row_points, len(joined), joined))
                parts, row_points = [], 0
            parts.append(body)
            row_points += n
        if parts:
            joined = compress(b"".join(parts))
            rows.append((now_ns, row_points, len(joined), joined))
        return rows

    def append(self, bodies: Sequence[bytes], points: Sequence[int]) -> int:
        """Store the chunks in one transaction and return once it is committed (durable). Returns
        the number of points stored (fewer than given only when the overflow policy dropped some
        of them, for max_size or for the disk). Never waits for disk space: a disk that fills
        beyond the headroom refuses this append (counted as dropped) and the next one tries again."""
        if len(bodies) != len(points):
            raise ValueError(f"{len(bodies)} bodies but {len(points)} point counts")
        rows = self._rows_from(bodies, points, time.time_ns())
        if not rows:
            return 0
        with self._write_lock, self._drop_lock:
            conn = self._conn
            if conn is None:
                raise RuntimeError("buffer is not open")
            try:
                stored, freed = self._append_in(conn, rows)
            except (sqlite3.OperationalError, OSError) as exc:
                if not _is_disk_full(exc):
                    raise
                # the disk filled beyond the headroom (another program?): free the WAL, measure
                # again and try once more; then give this append up rather than wait
                self._disk_full_seen(f"SQLite could not write: {exc}")
                self.checkpoint(conn)
                try:
                    stored, freed = self._append_in(conn, rows)
                except (sqlite3.OperationalError, OSError) as again:
                    if not _is_disk_full(again):
                        raise
                    stored, freed = [], self._refused(conn, rows, disk=True)
            with self._totals_lock:
                self.rows += len(stored)
                self.points += sum(r[1] for r in stored)
                self.bytes += sum(r[2] for r in stored)
                self.apply(freed)
            if self.disk_free < self.min_free_space * LOW_SPACE_CHECKPOINT_FACTOR:
                self.checkpoint(conn)
        stored_points = sum(r[1] for r in stored)
        if stored:
            for listener in self._listeners:
                listener(stored_points)
        return stored_points

    def _append_in(self, conn: sqlite3.Connection, rows: list[tuple]) -> tuple[list[tuple], _Freed]:
        incoming = sum(r[2] for r in rows)
        with transaction(conn):
            room = self._disk_room(conn)
            with self._totals_lock:
                stored_bytes = self.bytes
            if room < incoming:
                self._disk_episode(room, incoming)
            cap = self.max_size
            disk = stored_bytes + room < cap
            if disk:
                cap = max(0, stored_bytes + room)
            rows, freed = self._make_room_in(conn, rows, cap)
            freed.disk = disk
            if rows:
                conn.executemany("INSERT INTO chunks(created_ns, points, bytes, body) VALUES (?, ?, ?, ?)", rows)
        if room >= incoming:  # only an append that went through can end a disk-full episode
            self._disk_episode(room, incoming)
        return rows, freed

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        """Copy the WAL into the database without waiting for readers, so the WAL is reused from
        its start instead of growing (what frees disk space for SQLite's next transactions)."""
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    # ------------------------------------------------------------ disk space

    def _disk_room(self, conn: sqlite3.Connection) -> int:
        """Bytes the buffer may still grow by: what the filesystem has free plus the pages SQLite
        can reuse, less the headroom."""
        fs = os.statvfs(self.directory)
        self.disk_free = fs.f_bavail * fs.f_frsize
        self.disk_total = fs.f_blocks * fs.f_frsize
        room = self.disk_free - self.min_free_space
        if room >= self.max_size:
            return room  # more than the whole cap free: SQLite's reusable pages change nothing
        return room + int(conn.execute("PRAGMA freelist_count").fetchone()[0]) * self._page_size

    def _disk_episode(self, room: int, incoming: int) -> None:
        """Starts or ends a disk-full episode (one log line each) from the room measured for an
        append of ``incoming`` bytes (the writer and the status both look)."""
        with self._totals_lock:
            if room < incoming:
                self._disk_full_seen(f"{self.disk_free} bytes free on the filesystem of {self.directory}, "
                                     f"min_free_space {self.min_free_space}")
            elif self.disk_full and room >= incoming + self.min_free_space * DISK_LOW_WATER:
                self.disk_full = False
                self.disk_full_reason = None
                self.log.warning("buffer: disk space available again (%d bytes free); %d points were dropped in "
                                 "that disk-full episode", self.disk_free, self._disk_episode_dropped)
                self._disk_episode_dropped = 0

    def _disk_full_seen(self, why: str) -> None:
        with self._totals_lock:
            self.disk_full_reason = why
            if self.disk_full:
                return
            self.disk_full = True
            self.disk_full_episodes += 1
        policy = "the oldest buffered data" if self.overflow == "drop_oldest" else "new data"
        self.log.warning("buffer: disk full (%s): treating it as the buffer's cap, dropping %s (overflow: %s) "
                         "until the sinks catch up or space is freed; counted in dropped_points, logged once "
                         "per episode", why, policy, self.overflow)

    def _refused(self, conn: sqlite3.Connection, rows: list[tuple], disk: bool = False) -> _Freed:
        """Rows that are not stored: lost for every sink."""
        freed = _Freed(disk=disk)
        sinks = [r[0] for r in conn.execute("SELECT sink FROM cursors")]
        for row in rows:
            freed.dropped += row[1]
            for sink in sinks:
                freed.dropped_by_sink[sink] = freed.dropped_by_sink.get(sink, 0) + row[1]
        return freed

    def _make_room_in(self, conn: sqlite3.Connection, rows: list[tuple], cap: int) -> tuple[list[tuple], _Freed]:
        """Apply the overflow policy so the stored bytes stay within ``cap``: the rows to insert,
        and what was removed or refused. A deleted row counts as dropped for the sinks that had
        not received it — except those that have it in their batch in flight: it is held for
        them, and counts only if they give that batch up."""
        freed = _Freed()
        incoming = sum(r[2] for r in rows)
        with self._totals_lock:
            stored = self.bytes
        if stored + incoming <= cap:
            return rows, freed
        sinks = conn.execute("SELECT sink, live, backlog_from, backlog_to FROM cursors").fetchall()
        by_sink = freed.dropped_by_sink

        def lost_for_all(points: int) -> None:
            freed.dropped += points
            for sink, *_ in sinks:
                by_sink[sink] = by_sink.get(sink, 0) + points

        if self.overflow == "drop_newest":
            room = cap - stored
            kept = 0
            while kept < len(rows) and rows[kept][2] <= room:
                room -= rows[kept][2]
                kept += 1
            for refused in rows[kept:]:
                lost_for_all(refused[1])
            return rows[:kept], freed
        # drop_oldest: the newest cap bytes survive, the incoming rows being the newest.
        while rows and incoming > cap:
            first = rows.pop(0)
            incoming -= first[2]
            lost_for_all(first[1])
        need = stored + incoming - cap
        if need <= 0:
            return rows, freed
        last_id = None
        gathered = 0
        scan = conn.execute("SELECT id, bytes FROM chunks ORDER BY id")
        try:
            for row_id, size in scan:
                last_id = row_id
                gathered += size
                if gathered >= need:
                    break
        finally:
            scan.close()
        if last_id is None:
            return rows, freed
        for row_id, points, size in conn.execute(
                "DELETE FROM chunks WHERE id <= ? RETURNING id, points, bytes", (last_id,)).fetchall():
            freed.rows += 1
            freed.points += points
            freed.bytes += size
            owed = [sink for sink, live, lo, hi in sinks if _pending_for(row_id, live, lo, hi)]
            flying = frozenset(sink for sink in owed if self._flying(sink, row_id))
            losers = [sink for sink in owed if sink not in flying]
            if losers or not sinks:  # with no sink at all the data was for nobody: dropped
                freed.dropped += points
            for sink in losers:
                by_sink[sink] = by_sink.get(sink, 0) + points
            if flying:
                freed.held.append((row_id, points, flying, bool(losers)))
        return rows, freed

    # ------------------------------------------------------------ dead letters and status

    def dead_letters(self, sink: str | None = None) -> list[dict[str, Any]]:
        columns = ("id", "sink", "reason", "http_status", "points", "body", "created_ns")
        sql = f"SELECT {', '.join(columns)} FROM dead_letters"
        args: tuple = ()
        if sink is not None:
            sql += " WHERE sink = ?"
            args = (sink,)
        with self._status_lock:
            conn = self._status_conn
            if conn is None:
                raise RuntimeError("buffer is not open")
            return [dict(zip(columns, r, strict=True)) for r in conn.execute(sql + " ORDER BY id", args)]

    def sink_lag(self, sink: str) -> SinkLag:
        """What ``sink`` has not received yet, overall and split into its live and backlog ranges."""
        lag = SinkLag()
        with self._status_lock:
            conn = self._status_conn
            if conn is None:
                return lag
            row = conn.execute("SELECT live, backlog_from, backlog_to FROM cursors WHERE sink = ?",
                               (sink,)).fetchone()
            if row is None:
                return lag
            live, lo, hi = row
            lag.live_points, lag.live_oldest_ns = conn.execute(
                "SELECT coalesce(sum(points), 0), min(created_ns) FROM chunks WHERE id > ?", (live,)).fetchone()
            backlog_oldest = None
            if lo is not None and hi is not None and lo <= hi:
                lag.backlog_points, backlog_oldest = conn.execute(
                    "SELECT coalesce(sum(points), 0), min(created_ns) FROM chunks WHERE id BETWEEN ? AND ?",
                    (lo, hi)).fetchone()
        lag.points = lag.live_points + lag.backlog_points
        oldest = [t for t in (lag.live_oldest_ns, backlog_oldest) if t is not None]
        lag.oldest_ns = min(oldest) if oldest else None
        return lag

    def stats(self) -> BufferStats:
        oldest = None
        dead = (0, 0)
        with self._status_lock:
            if self._status_conn is not None:
                row = self._status_conn.execute("SELECT created_ns FROM chunks ORDER BY id LIMIT 1").fetchone()
                oldest = row[0] if row else None
                dead = self._status_conn.execute(
                    "SELECT count(*), coalesce(sum(points), 0) FROM dead_letters").fetchone()
                if self.disk_full:  # space freed while no data flows ends the episode too
                    with contextlib.suppress(OSError, sqlite3.Error):
                        self._disk_episode(self._disk_room(self._status_conn), 0)
        with self._totals_lock:
            rows, points, size = self.rows, self.points, self.bytes
        return BufferStats(
            path=str(self.path),
            points=points,
            bytes=size,
            rows=rows,
            max_size=self.max_size,
            overflow=self.overflow,
            oldest_age_s=round(max(0.0, (time.time_ns() - oldest) / 1e9), 3) if oldest else None,
            dropped_points=self.dropped_points,
            overflow_episodes=self.overflow_episodes,
            overflowing=self.overflowing,
            dead_letter_rows=dead[0],
            dead_letter_points=dead[1],
            moved_aside=[str(p) for p in self.moved_aside],
            disk_free_bytes=self.disk_free,
            disk_total_bytes=self.disk_total,
            min_free_space=self.min_free_space,
            disk_full=self.disk_full,
            disk_full_episodes=self.disk_full_episodes,
            disk_full_reason=self.disk_full_reason,
        )


class SinkCursor:
    """One sink's view of the buffer: what it still has to send, in a live range (rows after
    ``live``) and an optional backlog range being drained beside it."""

    def __init__(self, buffer: Buffer, sink: str) -> None:
        self.buffer = buffer
        self.sink = sink
        self.conn = _connect(buffer.path, "NORMAL")
        row = self.conn.execute("SELECT live, backlog_from, backlog_to FROM cursors WHERE sink = ?",
                                (sink,)).fetchone()
        if row is None:
            raise KeyError(f"sink {sink!r} has no cursor; call register_sinks first")
        self.live: int = row[0]
        self.backlog: tuple[int, int] | None = (row[1], row[2]) if row[1] is not None and row[2] is not None \
            and row[1] <= row[2] else None

    def close(self) -> None:
        """The sink is done with this cursor: a batch still in flight is given up (whatever of it
        the overflow policy deleted meanwhile now counts as dropped for this sink)."""
        with self.buffer._drop_lock:
            self.buffer.flight_end(self.sink, delivered=False)
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    def pending_live(self) -> Pending:
        return self.pending_after(self.live)

    def pending_after(self, row: int) -> Pending:
        rows, points, oldest, head = self.conn.execute(
            "SELECT count(*), coalesce(sum(points), 0), min(created_ns), max(id) FROM chunks WHERE id > ?",
            (row,)).fetchone()
        return Pending(rows, points, oldest, head)

    def _read(self, kind: BatchKind, lo: int, hi: int | None, max_points: int) -> Batch | None:
        sql = "SELECT id, points, created_ns, body FROM chunks WHERE id >= ?"
        args: tuple = (lo,)
        if hi is not None:
            sql += " AND id <= ?"
            args = (lo, hi)
        parts: list[bytes] = []
        first = last = oldest = newest = 0
        points = 0
        self.buffer.flight_begin(self.sink, lo)
        rows = self.conn.execute(sql + " ORDER BY id", args)
        try:
            for row_id, n, created, body in rows:
                if parts and points + n > max_points:
                    break
                if not parts:
                    first, oldest = row_id, created
                parts.append(body if is_gzipped(body) else compress(body))
                last = row_id
                points += n
                oldest, newest = min(oldest, created), max(newest, created)
                if points >= max_points:
                    break
        finally:
            # ends the read snapshot now, so it does not hold back WAL checkpoints
            rows.close()
            self.buffer.flight_settle(self.sink, first if parts else None, last if parts else None)
        if not parts:
            return None
        return Batch(kind, first, last, len(parts), Payload(points, gzipped=b"".join(parts)), oldest, newest)

    def read_live(self, max_points: int) -> Batch | None:
        """The next rows after the live cursor: up to ``max_points`` points, at least one row."""
        return self._read(BatchKind.LIVE, self.live + 1, None, max_points)

    def read_after(self, row: int, max_points: int, until: int | None = None) -> Batch | None:
        """The rows after ``row`` (up to ``until``, if given), for a reader ahead of its cursor."""
        return self._read(BatchKind.LIVE, row + 1, until, max_points)

    def delivered_ahead(self) -> None:
        """The batch just read was delivered, though the cursor stays behind it (a reader that
        holds its cursor, see :meth:`advance_to`): rows deleted from it meanwhile were not lost."""
        with self.buffer._drop_lock:
            self.buffer.flight_end(self.sink, delivered=True)

    def advance_to(self, row: int) -> None:
        """Record every row up to ``row`` as delivered (a backlog range is consumed as far as it
        goes), for a reader that reads in row order; never moves the cursor back."""
        live, backlog = max(self.live, row), self.backlog
        if backlog is not None and row >= backlog[0]:
            backlog = (row + 1, backlog[1]) if row < backlog[1] else None
        if (live, backlog) != (self.live, self.backlog):
            self._persist(live, backlog)

    def read_backlog(self, max_points: int) -> Batch | None:
        """The next rows of the backlog range; ``None`` (and the range cleared) when it is done."""
        if self.backlog is None:
            return None
        lo, hi = self.backlog
        batch = self._read(BatchKind.BACKLOG, lo, hi, max_points)
        if batch is None:
            self._persist(self.live, None)
        return batch

    def start_backlog(self) -> tuple[int, int] | None:
        """Fix what is pending now as the backlog and move the live cursor to the head, so rows
        appended from now on are sent as live data beside the drain."""
        if self.backlog is not None:
            return None
        head = self.conn.execute("SELECT max(id) FROM chunks").fetchone()[0]
        if head is None or head <= self.live:
            return None
        backlog = (self.live + 1, head)
        self._persist(head, backlog)
        return backlog

    def advance(self, batch: Batch) -> None:
        """Record ``batch`` as delivered and delete the rows no sink needs any more, in one
        transaction: a crash re-sends at most the batch in flight."""
        if batch.kind is BatchKind.LIVE:
            self._persist(max(self.live, batch.last_id), self.backlog, delivered=True)
        else:
            assert self.backlog is not None
            lo, hi = self.backlog
            lo = max(lo, batch.last_id + 1)
            self._persist(self.live, (lo, hi) if lo <= hi else None, delivered=True)

    def _persist(self, live: int, backlog: tuple[int, int] | None, delivered: bool = False) -> None:
        """Save the cursor (and delete what no sink needs). On a full disk, after one checkpoint
        to make room, the cursor moves on in memory and is saved by a later call: the sink goes on
        with the next batch instead of sending this one forever (after a crash meanwhile, the
        batches since the last saved position are sent again, which is harmless)."""
        buffer = self.buffer
        with buffer._drop_lock:
            freed = None
            for attempt in range(2):
                try:
                    freed = self._save(live, backlog)
                    break
                except (sqlite3.OperationalError, OSError) as exc:
                    if not _is_disk_full(exc):
                        raise
                    buffer._disk_full_seen(f"cannot save the cursor of sink {self.sink}: {exc}")
                    if attempt == 0:
                        buffer.checkpoint(self.conn)
            self.live, self.backlog = live, backlog
            if freed is not None:
                buffer.apply(freed)
            if delivered:
                buffer.flight_end(self.sink, delivered=True)

    def _save(self, live: int, backlog: tuple[int, int] | None) -> _Freed:
        lo, hi = backlog if backlog is not None else (None, None)
        with transaction(self.conn):
            self.conn.execute("UPDATE cursors SET live = ?, backlog_from = ?, backlog_to = ? WHERE sink = ?",
                              (live, lo, hi, self.sink))
            return self.buffer.cleanup_in(self.conn)

    def dead_letter(self, reason: str, http_status: int | None, points: int, body: bytes) -> None:
        buffer = self.buffer
        with transaction(self.conn):
            self.conn.execute(
                "INSERT INTO dead_letters(sink, reason, http_status, points, body, created_ns) "
                "VALUES (?, ?, ?, ?, ?, ?)", (self.sink, reason[:2000], http_status, points, body, time.time_ns()))
            total = self.conn.execute("SELECT coalesce(sum(length(body)), 0) FROM dead_letters").fetchone()[0]
            if total > buffer.dead_letter_cap:
                # oldest dead letters go first; the newest one just written is always kept
                excess = total - buffer.dead_letter_cap
                freed = 0
                cut = None
                for row_id, size in self.conn.execute(
                        "SELECT id, length(body) FROM dead_letters ORDER BY id").fetchall():
                    if freed >= excess:
                        break
                    cut = row_id
                    freed += size
                newest = self.conn.execute("SELECT max(id) FROM dead_letters").fetchone()[0]
                if cut is not None:
                    self.conn.execute("DELETE FROM dead_letters WHERE id <= ? AND id < ?", (cut, newest))
