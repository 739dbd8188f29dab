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

from mos_agent.buffer import BatchKind, SinkCursor
from mos_agent.sharing.release import Release, ReleaseStage
from mos_agent.sinks.runner import REJECT_SPLIT_BUDGET, SinkRunner
from mos_agent.status import SinkState, SinkStats

# Contracts become active or expire with the clock: while idle, their status is looked at this
# often (a plain sink sleeps until an append instead).
CONTRACT_RECHECK = 1.0


class ContractSinkRunner(SinkRunner):
    def __init__(self, *args: Any, release: ReleaseStage, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = release

    def status(self) -> SinkStats:
        stats = super().status()
        stats.late_points = self.release.late_points
        stats.open_windows = self.release.open_windows()
        return stats

    def _loop(self, cursor: SinkCursor) -> None:
        release = self.release
        release.reset()  # after a worker error the stage may be ahead of what the sink accepted
        # a backlog range left from before the sink shared under contract is read in order too
        position = release.start_row(cursor.backlog[0] - 1 if cursor.backlog is not None else cursor.live)
        while not self._past_deadline():
            self._wake.clear()
            for change in release.status_changes():
                self.log.info("%s", change)
            stopping = self._stopping.is_set()
            pending = cursor.pending_after(position)
            if pending.rows and (stopping or pending.points >= self.batch_size
                                 or self._age(pending.oldest_created_ns) >= self.flush_interval):
                # rows read before a restart are read again on their own, so the audit skips them whole
                until = release.processed_row if position < release.processed_row else None
                batch = cursor.read_after(position, self.batch_size, until)
                if batch is None:
                    continue
                # catching up (more rows wait behind this batch) is backlog to the sink, else live data
                behind = pending.head_id is not None and pending.head_id > batch.last_id
                kind = BatchKind.BACKLOG if behind else BatchKind.LIVE
                if self.state not in (SinkState.RETRYING, SinkState.AUTH_FAILED):
                    self.state = SinkState.DRAINING if behind else SinkState.SENDING
                self._release(cursor, release.process(batch.first_id, batch.last_id, batch.payload.plain,
                                                      batch.newest_created_ns), kind)
                cursor.delivered_ahead()
                position = batch.last_id
                self.sent_batches += 1
                continue
            if not pending.rows:
                closed = release.due()
                if closed is not None:
                    self._release(cursor, closed, BatchKind.LIVE)
                    continue
            if stopping:
                moved = release.commit(Release(None, None), force_checkpoint=True)
                if moved is not None:
                    cursor.advance_to(moved)
                return
            if self.state in (SinkState.SENDING, SinkState.DRAINING, SinkState.FAILED):
                self.state = SinkState.IDLE
            wait = CONTRACT_RECHECK
            if pending.rows:
                wait = min(wait, max(0.01, self.flush_interval - self._age(pending.oldest_created_ns)))
            next_close = release.next_close_ns()
            if next_close is not None:
                wait = min(wait, max(0.01, (next_close - time.time_ns()) / 1e9))
            self._wake.wait(wait)

    def _release(self, cursor: SinkCursor, release: Release, kind: BatchKind) -> None:
        if release.payload is not None:
            self._send(cursor, release.payload, kind, [REJECT_SPLIT_BUDGET])
        moved = self.release.commit(release)
        if moved is not None:
            cursor.advance_to(moved)

