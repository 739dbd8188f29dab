"""The worker of a ``share: contracts`` sink: the sink runner's delivery (retries, splitting,
dead letters) with the release stage between the buffer cursor and the sink.

It reads the buffer in row order (no separate backlog range: windows close as the rows are read,
so an outage delays them and never cuts them short) from its own read position, which runs ahead
of the persisted cursor: the cursor is held at the release stage's last checkpoint, so after a
crash the rows since are read again (see :mod:`mos_agent.sharing.ledger`).
"""

from __future__ import annotations

import time
from typing import Any

from mos_agent.buffer import Batch, Pending, SinkCursor
from mos_agent.payload import Payload, decompress, is_gzipped
from mos_agent.sharing.release import Release, ReleaseStage
from mos_agent.sinks.runner import IDLE_POLL, REJECT_SPLIT_BUDGET, SinkRunner


def pending_after(cursor: SinkCursor, row: int) -> Pending:
    rows, points, oldest, head = cursor.conn.execute(
        "SELECT count(*), coalesce(sum(points), 0), min(created_ns), max(id) FROM chunks WHERE id > ?",
        (row,)).fetchone()
    return Pending(rows, points, oldest, head)


def read_after(cursor: SinkCursor, row: int, max_points: int, until: int | None) -> tuple[Batch, int] | None:
    """Rows after ``row`` (up to ``until`` if given): at least one, up to ``max_points`` points,
    decompressed; with the newest row's commit time."""
    sql = "SELECT id, points, created_ns, body FROM chunks WHERE id > ?"
    args: tuple = (row,)
    if until is not None:
        sql += " AND id <= ?"
        args = (row, until)
    parts: list[bytes] = []
    first = last = oldest = newest = points = 0
    rows = cursor.conn.execute(sql + " ORDER BY id", args)
    try:
        for row_id, n, created, body in rows:
            if parts and points + n > max_points:
                break
            if not parts:
                first, oldest = row_id, created
            parts.append(decompress(body) if is_gzipped(body) else body)
            last = row_id
            points += n
            oldest, newest = min(oldest, created), max(newest, created)
            if points >= max_points:
                break
    finally:
        rows.close()
    if not parts:
        return None
    return Batch("live", first, last, len(parts), Payload(points, plain=b"".join(parts)), oldest), newest


def hold_cursor_at(cursor: SinkCursor, row: int) -> None:
    """Persist the sink's cursor at ``row``, without a backlog range (rows up to it may be
    deleted once no sink needs them)."""
    if row != cursor.live or cursor.backlog is not None:
        cursor._persist(row, None)


class ContractSinkRunner(SinkRunner):
    def __init__(self, *args: Any, release: ReleaseStage, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = release

    def status(self) -> dict[str, Any]:
        return {**super().status(), "sharing": self.release.status()}

    def _loop(self, cursor: SinkCursor) -> None:
        release = self.release
        release.reset()  # after a worker error the stage may be ahead of what the sink accepted
        if cursor.backlog is not None:
            # a range left from before the sink shared under contract: read it in order
            hold_cursor_at(cursor, cursor.backlog[0] - 1)
        position = release.start_row(cursor.live)
        while not self._past_deadline():
            self._wake.clear()
            stopping = self._stopping.is_set()
            pending = pending_after(cursor, position)
            if pending.rows and (stopping or pending.points >= self.batch_size
                                 or self._age(pending.oldest_created_ns) >= self.flush_interval):
                # rows read before a restart are read again on their own, so the audit skips them whole
                until = release.processed_row if position < release.processed_row else None
                read = read_after(cursor, position, self.batch_size, until)
                if read is None:
                    continue
                batch, newest_created_ns = read
                if self.state not in ("retrying", "auth_failed"):
                    self.state = "sending"
                self._release(cursor, release.process(batch.first_id, batch.last_id, batch.payload.plain,
                                                      newest_created_ns))
                position = batch.last_id
                self.sent_batches += 1
                continue
            if not pending.rows:
                closed = release.due()
                if closed is not None:
                    self._release(cursor, closed)
                    continue
            if stopping:
                moved = release.commit(Release(None, None), force_checkpoint=True)
                if moved is not None:
                    hold_cursor_at(cursor, moved)
                return
            if self.state in ("sending", "draining", "failed"):
                self.state = "idle"
            wait = IDLE_POLL
            if pending.rows:
                wait = min(wait, max(0.01, self.flush_interval - self._age(pending.oldest_created_ns)))
            next_close = release.next_close_ns()
            if next_close is not None:
                wait = min(wait, max(0.01, (next_close - time.time_ns()) / 1e9))
            self._wake.wait(wait)

    def _release(self, cursor: SinkCursor, release: Release) -> None:
        if release.payload is not None:
            self._send(cursor, release.payload, [REJECT_SPLIT_BUDGET])
        moved = self.release.commit(release)
        if moved is not None:
            hold_cursor_at(cursor, moved)


def build_release_stage(sink: str, contracts: Any, ledger: Any, state_dir: Any, commit_interval: float) -> ReleaseStage:
    from mos_agent.sharing.pseudonyms import Pseudonymiser, load_or_create_key

    mine = [c for c in contracts if c.sink == sink]
    pseudonymiser = Pseudonymiser(load_or_create_key(state_dir)) if any(c.pseudonymise for c in mine) else None
    return ReleaseStage(sink, mine, ledger, pseudonymiser, commit_interval=commit_interval)
