"""One SQLite write transaction, for every store of the agent's own (the buffer, the sharing
ledger): ``BEGIN IMMEDIATE`` takes the write lock up front, so a transaction never fails half-way
on a lock it could not upgrade; anything raised inside rolls back and propagates."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
