"""The sharing ledger, ``<state_dir>/sharing.sqlite``: what each contract released, and the state
that makes a release survive ``kill -9``.

Tables:

- ``releases``: the audit. One row per contract, dataset (equipment) and hour of release: points
  released, the acquisition period they cover (``first_ns``..``last_ns``; a window covers its
  whole length) and when the last of them left. ``mos-agent sharing`` reads it.
- ``released_windows``: per contract sink and release form (resolution, pseudonymised or not),
  ``closed_before_ns``: every window starting before it has been released. Written in the same
  transaction as the audit, right after the sink accepted the windows, so a restart never
  releases a window twice.
- ``checkpoints``: per contract sink, the open windows' accumulators as of buffer row
  ``row_id`` (JSON), and ``processed_row``, the last row whose release the sink accepted. The
  sink's buffer cursor is held at the checkpoint row, so after a crash the rows since are read
  again: open windows are rebuilt from the checkpoint plus those rows, windows already released
  are skipped, raw points are sent again (identical points, which overwrite themselves).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mos_agent.sqlitetx import transaction

LEDGER_FILE = "sharing.sqlite"
HOUR_NS = 3600 * 1_000_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    contract TEXT NOT NULL,
    dataset TEXT NOT NULL,
    hour_ns INTEGER NOT NULL,
    points INTEGER NOT NULL,
    first_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL,
    last_release_ns INTEGER NOT NULL,
    PRIMARY KEY (contract, dataset, hour_ns)
);
CREATE TABLE IF NOT EXISTS released_windows (
    sink TEXT NOT NULL,
    form TEXT NOT NULL,
    closed_before_ns INTEGER NOT NULL,
    PRIMARY KEY (sink, form)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    sink TEXT PRIMARY KEY,
    row_id INTEGER NOT NULL,
    processed_row INTEGER NOT NULL,
    open_windows TEXT NOT NULL
);
"""


@dataclass(slots=True)
class AuditEntry:
    points: int = 0
    first_ns: int = 2**63 - 1
    last_ns: int = -(2**63)

    def add(self, points: int, first_ns: int, last_ns: int) -> None:
        self.points += points
        if first_ns < self.first_ns:
            self.first_ns = first_ns
        if last_ns > self.last_ns:
            self.last_ns = last_ns


@dataclass(slots=True)
class Checkpoint:
    row_id: int = 0
    processed_row: int = 0
    open_windows: dict[str, Any] = field(default_factory=dict)  # form → serialised accumulators
    closed_before: dict[str, int] = field(default_factory=dict)  # form → closed_before_ns


@dataclass(frozen=True, slots=True)
class ContractTotals:
    contract: str
    points: int
    first_ns: int | None
    last_ns: int | None
    last_release_ns: int | None
    datasets: dict[str, int]  # dataset → points


def connect_ledger(state_dir: Path) -> sqlite3.Connection:
    path = Path(state_dir) / LEDGER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL, like the sink cursors: with WAL a commit survives kill -9; a power cut may lose the
    # last commits, whose windows are then released again, identically (the store keeps one), and
    # recorded then — one fsync per release would wear a gateway's flash for nothing more.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(_SCHEMA)
    return conn


class Ledger:
    """One connection, shared by the contract sinks' workers (a lock keeps them apart)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LEDGER_FILE
        self._conn = connect_ledger(state_dir)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._conn.close()

    def load(self, sink: str) -> Checkpoint:
        with self._lock:
            checkpoint = Checkpoint()
            row = self._conn.execute("SELECT row_id, processed_row, open_windows FROM checkpoints WHERE sink = ?",
                                     (sink,)).fetchone()
            if row is not None:
                checkpoint.row_id, checkpoint.processed_row = row[0], row[1]
                checkpoint.open_windows = json.loads(row[2])
            checkpoint.closed_before = dict(self._conn.execute(
                "SELECT form, closed_before_ns FROM released_windows WHERE sink = ?", (sink,)).fetchall())
            return checkpoint

    def record(self, sink: str, *, audit: dict[tuple[str, str], AuditEntry], closed_before: dict[str, int],
               processed_row: int | None, checkpoint: tuple[int, dict[str, Any]] | None,
               now_ns: int | None = None) -> None:
        """After the sink accepted a release: its audit, the windows now closed, the last row it
        covered and, when due, a checkpoint of the open windows — in one transaction."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        hour = now_ns - now_ns % HOUR_NS
        with self._lock, transaction(self._conn):
            self._conn.executemany(
                "INSERT INTO releases(contract, dataset, hour_ns, points, first_ns, last_ns, last_release_ns) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (contract, dataset, hour_ns) DO UPDATE SET "
                "points = points + excluded.points, first_ns = min(first_ns, excluded.first_ns), "
                "last_ns = max(last_ns, excluded.last_ns), last_release_ns = excluded.last_release_ns",
                [(contract, dataset, hour, e.points, e.first_ns, e.last_ns, now_ns)
                 for (contract, dataset), e in audit.items() if e.points])
            self._conn.executemany(
                "INSERT INTO released_windows(sink, form, closed_before_ns) VALUES (?, ?, ?) "
                "ON CONFLICT (sink, form) DO UPDATE SET closed_before_ns = max(closed_before_ns, "
                "excluded.closed_before_ns)", [(sink, form, ns) for form, ns in closed_before.items()])
            if checkpoint is not None:
                row_id, open_windows = checkpoint
                self._conn.execute(
                    "INSERT INTO checkpoints(sink, row_id, processed_row, open_windows) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (sink) DO UPDATE SET row_id = excluded.row_id, "
                    "processed_row = max(processed_row, excluded.processed_row), "
                    "open_windows = excluded.open_windows",
                    (sink, row_id, processed_row if processed_row is not None else row_id,
                     json.dumps(open_windows, separators=(",", ":"))))
            elif processed_row is not None:
                self._conn.execute(
                    "INSERT INTO checkpoints(sink, row_id, processed_row, open_windows) VALUES (?, 0, ?, '{}') "
                    "ON CONFLICT (sink) DO UPDATE SET processed_row = max(processed_row, excluded.processed_row)",
                    (sink, processed_row))


def contract_totals(state_dir: Path, contracts: Iterable[str]) -> dict[str, ContractTotals]:
    """What each contract has released so far (from the audit; read-only, beside a running agent)."""
    wanted = list(contracts)
    empty = {c: ContractTotals(c, 0, None, None, None, {}) for c in wanted}
    path = Path(state_dir) / LEDGER_FILE
    if not path.exists():
        return empty
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute(
            "SELECT contract, dataset, sum(points), min(first_ns), max(last_ns), max(last_release_ns) "
            "FROM releases GROUP BY contract, dataset").fetchall()
    except sqlite3.OperationalError:  # a ledger from before the audit table existed: nothing released
        rows = []
    finally:
        conn.close()
    totals = dict(empty)
    for contract, dataset, points, first, last, released in rows:
        if contract not in totals:
            continue
        t = totals[contract]
        totals[contract] = ContractTotals(
            contract, t.points + points,
            first if t.first_ns is None else min(t.first_ns, first),
            last if t.last_ns is None else max(t.last_ns, last),
            released if t.last_release_ns is None else max(t.last_release_ns, released),
            {**t.datasets, dataset: points})
    return totals
