"""One worker thread per sink: read batches from the buffer, send them, advance the cursor.

Live data and backlog travel side by side. When a sink falls more than ``BACKLOG_TRIGGER`` batches
behind (after an outage), what is pending becomes its backlog range and the live cursor jumps to
the head; from then on the runner alternates: the live data that is due (a full batch, or older
than flush_interval; fresh data, low latency), then one backlog batch (``BACKLOG_FACTOR`` ×
batch_size, high throughput), until the backlog is drained.
Only one backlog range exists at a time: if the sink falls behind again while draining, the
new lag is sent as live batches and becomes the next backlog once the current one is done.

Outcomes of a write:
- success: the cursor advances (persisted in the same transaction that deletes rows no sink needs).
- :class:`SinkRetryable`: the same batch again after exponential backoff with full jitter, capped at
  ``max_retry_delay``; a server's Retry-After is honoured.
- :class:`SinkTooLarge`: split in halves at line boundaries, each half sent (recursively); a single
  line still too large goes to the dead-letter table.
- :class:`SinkRejected`: the batch is bisected the same way to isolate the lines the sink refuses,
  so one bad line does not cost its good neighbours; refused pieces go to the dead-letter table.
  Bisection is bounded (``REJECT_SPLIT_BUDGET`` splits per batch); past it the remaining refused
  pieces are dead-lettered whole.
- :class:`SinkAuthError`: state ``auth_failed``, an error logged (at most every
  ``AUTH_LOG_INTERVAL``), data stays buffered, retried every ``AUTH_RETRY_INTERVAL``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from mos_agent.buffer import Batch, BatchKind, Buffer, Pending, SinkCursor
from mos_agent.payload import Payload
from mos_agent.sinks.base import Sink, SinkAuthError, SinkRejected, SinkRetryable, SinkTooLarge
from mos_agent.status import SinkState, SinkStats

BACKLOG_TRIGGER = 2  # batches behind before the pending data becomes a backlog
BACKLOG_FACTOR = 10  # backlog batches are this many times batch_size
# Between two backlog batches, due live data is sent first — all of it, up to this many batches,
# so fresh data waits at most about one backlog batch while the backlog still gets at least half
# of the sink's capacity.
LIVE_BATCHES_PER_BACKLOG_BATCH = BACKLOG_FACTOR
RETRY_BASE_DELAY = 0.5
RETRY_AFTER_CAP = 3600.0
AUTH_RETRY_INTERVAL = 30.0
AUTH_LOG_INTERVAL = 300.0
RETRY_LOG_INTERVAL = 60.0
REJECT_SPLIT_BUDGET = 64
WORKER_RESTART_DELAY = 5.0


class _Aborted(Exception):
    """Stop was requested and its deadline passed while a batch was still unsent."""


class SinkRunner:
    def __init__(self, sink: Sink, buffer: Buffer, *, batch_size: int, flush_interval: float,
                 max_retry_delay: float = 60.0, logger: logging.Logger | None = None,
                 on_send: Callable[[str, float], None] | None = None,
                 backlog_factor: int = BACKLOG_FACTOR) -> None:
        self.sink = sink
        self.name = sink.name
        self.buffer = buffer
        self.batch_size = batch_size
        self.backlog_batch_size = batch_size * backlog_factor
        self.flush_interval = flush_interval
        self.max_retry_delay = max_retry_delay
        self.log = logger or logging.getLogger("mos_agent.sinks")
        self.on_send = on_send
        self.state: SinkState = SinkState.IDLE
        self.sent_points = 0
        self.sent_batches = 0  # buffer batches fully handled
        self.sent_requests = 0  # successful writes (a split batch takes several)
        self.retried = 0
        self.dead_lettered_points = 0
        self.dead_lettered_batches = 0
        self.last_error: str | None = None
        self.last_error_time: float | None = None
        self.last_success_time: float | None = None
        self.backlogs_started = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._aborted = threading.Event()
        self._deadline = float("inf")
        self._thread = threading.Thread(target=self._run, name=f"sink:{self.name}", daemon=True)
        self._failing_since: float | None = None
        self._last_failure_log = 0.0
        self._last_auth_log = -AUTH_LOG_INTERVAL
        self._attempts = 0
        # Points appended so far (counted on the writer's thread) and, while the worker waits only
        # for its pending rows to age, how many more it takes to fill a batch: appends short of
        # that do not wake it (no thread switch and no buffer query a commit at light load).
        self._appended = 0
        self._wake_after: tuple[int, int] | None = None  # (appended when it went to wait, points to fill)
        buffer.add_listener(self._on_append)

    # ------------------------------------------------------------ control

    def start(self) -> None:
        self._thread.start()

    def request_stop(self, deadline: float) -> None:
        """Flush what is pending now and keep sending until nothing is left or ``deadline``
        (``time.monotonic()``) passes, then end."""
        self._deadline = deadline
        self._stopping.set()
        self._wake.set()

    def abort(self) -> None:
        self._aborted.set()
        self._stopping.set()
        self._wake.set()

    def _on_append(self, points: int) -> None:
        self._appended += points
        waiting = self._wake_after
        if waiting is None or self._appended - waiting[0] >= waiting[1]:
            self._wake.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def status(self) -> SinkStats:
        """The runner's own counters; the lag comes from the buffer (see StoreAndForward.status)."""
        stats = SinkStats(name=self.name, type=self.sink.type, state=self.state, sent_points=self.sent_points,
                          sent_batches=self.sent_batches, sent_requests=self.sent_requests,
                          sent_bytes=self.sink.sent_bytes, retried=self.retried,
                          dead_lettered_points=self.dead_lettered_points, last_error=self.last_error,
                          last_error_time=self.last_error_time, last_success_time=self.last_success_time)
        self.sink.fill_status(stats)
        return stats

    # ------------------------------------------------------------ main loop

    def _past_deadline(self) -> bool:
        return self._aborted.is_set() or (self._stopping.is_set() and time.monotonic() >= self._deadline)

    def _run(self) -> None:
        cursor: SinkCursor | None = None
        try:
            while not self._past_deadline():
                try:
                    if cursor is None:
                        cursor = self.buffer.cursor(self.name)
                    self._loop(cursor)
                    return
                except _Aborted:
                    return
                except Exception as exc:
                    # The buffer failed under us (I/O error, a lock held too long) or a bug: say so,
                    # reopen and go on after a pause; the data stays in the buffer meanwhile.
                    self.state = SinkState.FAILED
                    self.last_error = self.sink.redact(f"sink worker error: {type(exc).__name__}: {exc}")[:500]
                    self.last_error_time = time.time()
                    self.log.exception("sink %s: worker error; retrying in %.0fs, undelivered data stays "
                                       "buffered", self.name, WORKER_RESTART_DELAY)
                    if cursor is not None:
                        cursor.close()
                        cursor = None
                    self._sleep(WORKER_RESTART_DELAY)
        finally:
            self.state = SinkState.STOPPED
            if cursor is not None:
                cursor.close()
            try:
                self.sink.close()
            except Exception as exc:
                self.log.warning("sink %s: close failed: %s", self.name, exc)

    def _loop(self, cursor: SinkCursor) -> None:
        live_in_a_row = 0
        # What was pending after the last query, and the append count read before it: while no
        # append came since, the rows after the live cursor are those (less what this loop sent),
        # so a wake-up at flush time and the return to sleep after a send need no query.
        known: tuple[int, Pending] | None = None
        while not self._past_deadline():
            self._wake.clear()
            self._wake_after = None
            stopping = self._stopping.is_set()
            # read before the query: an append in between is counted twice (an early wake, one
            # query more), never not at all
            appended = self._appended
            if known is not None and known[0] == appended:
                pending = known[1]
            else:
                pending = cursor.pending_live()
                known = (appended, pending)
            if (cursor.backlog is None and pending.rows > 1
                    and pending.points > BACKLOG_TRIGGER * self.batch_size):
                known = None
                backlog = cursor.start_backlog()
                if backlog is not None:
                    self.backlogs_started += 1
                    self.log.info("sink %s: %d points behind; draining them in batches of up to %d while "
                                  "new data keeps flowing", self.name, pending.points, self.backlog_batch_size)
                continue
            live_due = pending.rows > 0 and (
                stopping or pending.points >= self.batch_size
                or self._age(pending.oldest_created_ns) >= self.flush_interval)
            if cursor.backlog is not None and (not live_due or live_in_a_row >= LIVE_BATCHES_PER_BACKLOG_BATCH):
                known = None
                batch = cursor.read_backlog(self.backlog_batch_size)
                live_in_a_row = 0
                if batch is not None:
                    if self.state not in (SinkState.RETRYING, SinkState.AUTH_FAILED):
                        self.state = SinkState.DRAINING
                    self._deliver(cursor, batch)
                elif cursor.backlog is None:
                    self.log.info("sink %s: backlog drained", self.name)
                continue
            if live_due:
                batch = cursor.read_live(self.batch_size)
                live_in_a_row += 1
                known = None
                if batch is not None:
                    if self.state not in (SinkState.RETRYING, SinkState.AUTH_FAILED):
                        self.state = SinkState.DRAINING if cursor.backlog is not None else SinkState.SENDING
                    self._deliver(cursor, batch)
                    if pending.head_id is not None and batch.last_id >= pending.head_id:
                        known = (appended, Pending(0, 0, None, pending.head_id))
                continue
            if stopping:
                return  # nothing pending
            if self.state in (SinkState.SENDING, SinkState.DRAINING, SinkState.FAILED):
                self.state = SinkState.IDLE
            # Nothing due: sleep until the pending rows are (flush_interval after the oldest was
            # committed), or with nothing pending until the buffer signals an append or a stop
            # is asked for — no polling of an empty buffer.
            wait = None
            if pending.rows:
                wait = max(0.01, self.flush_interval - self._age(pending.oldest_created_ns))
                self._wake_after = (appended, self.batch_size - pending.points)
            self._wake.wait(wait)

    @staticmethod
    def _age(created_ns: int | None) -> float:
        return (time.time_ns() - created_ns) / 1e9 if created_ns else 0.0

    # ------------------------------------------------------------ delivery

    def _deliver(self, cursor: SinkCursor, batch: Batch) -> None:
        """Send a batch (splitting and dead-lettering as needed), then advance the cursor. Raises
        :class:`_Aborted` if stopping ran out of time; the batch then stays buffered."""
        budget = [REJECT_SPLIT_BUDGET]
        self._send(cursor, batch.payload, batch.kind, budget)
        cursor.advance(batch)
        self.sent_batches += 1
        if cursor.backlog is None and batch.kind is BatchKind.BACKLOG:
            self.log.info("sink %s: backlog drained", self.name)

    def _send(self, cursor: SinkCursor, payload: Payload, kind: BatchKind, budget: list[int]) -> None:
        try:
            self._write_with_retry(payload, kind)
        except SinkTooLarge as exc:
            halves = _split(payload)
            if halves is None:
                self._dead_letter(cursor, f"too large for the sink even as a single line: {exc}", 413, payload)
                return
            for half in halves:
                self._send(cursor, half, kind, budget)
        except SinkRejected as exc:
            halves = _split(payload) if budget[0] > 0 else None
            if halves is None:
                self._dead_letter(cursor, str(exc), exc.status, payload)
                return
            budget[0] -= 1
            for half in halves:
                self._send(cursor, half, kind, budget)

    def _dead_letter(self, cursor: SinkCursor, reason: str, status: int | None, payload: Payload) -> None:
        reason = self.sink.redact(reason)
        points = payload.points
        cursor.dead_letter(reason, status, points, payload.plain)
        self.dead_lettered_points += points
        self.dead_lettered_batches += 1
        self.last_error = f"rejected {points} points: {reason}"[:500]
        self.last_error_time = time.time()
        self.log.error("sink %s: %d points rejected (HTTP %s: %s); moved to the dead-letter table, "
                       "delivery continues", self.name, points, status if status is not None else "-",
                       reason[:300])

    def _write_with_retry(self, payload: Payload, kind: BatchKind) -> None:
        """Write until the sink accepts (returns), refuses the data (raises SinkTooLarge or
        SinkRejected), or stopping runs out of time (raises _Aborted)."""
        while True:
            if self._past_deadline():
                raise _Aborted()
            started = time.monotonic()
            try:
                self.sink.write(payload, kind)
            except (SinkTooLarge, SinkRejected):
                raise
            except SinkAuthError as exc:
                self._on_auth_failure(exc)
                self._sleep(AUTH_RETRY_INTERVAL)
                continue
            except SinkRetryable as exc:
                delay = self._on_retryable(self.sink.redact(str(exc)), exc.retry_after)
                self._sleep(delay)
                continue
            except Exception as exc:
                # An unexpected error from a sink is treated as transient: keeping the data and
                # retrying is safe, dropping it is not.
                delay = self._on_retryable(self.sink.redact(f"{type(exc).__name__}: {exc}"), None)
                self._sleep(delay)
                continue
            self._on_success(payload.points, time.monotonic() - started)
            return

    def _sleep(self, seconds: float) -> None:
        """Wait between attempts; a stop request shortens the wait to the stop deadline."""
        end = time.monotonic() + seconds
        while not self._aborted.is_set():
            if self._stopping.is_set():
                remaining = min(end, self._deadline) - time.monotonic()
                if remaining > 0:
                    self._aborted.wait(remaining)
                return
            remaining = end - time.monotonic()
            if remaining <= 0:
                return
            self._stopping.wait(remaining)

    def _on_success(self, points: int, seconds: float) -> None:
        if self._failing_since is not None:
            down = time.monotonic() - self._failing_since
            self.log.info("sink %s: delivering again after %.0fs and %d failed attempts", self.name, down,
                          self._attempts)
        self._failing_since = None
        self._attempts = 0
        if self.state in (SinkState.RETRYING, SinkState.AUTH_FAILED, SinkState.FAILED):
            self.state = SinkState.SENDING
        self.sent_points += points
        self.sent_requests += 1
        self.last_success_time = time.time()
        if self.on_send is not None:
            self.on_send(self.name, seconds)

    def _on_retryable(self, message: str, retry_after: float | None) -> float:
        now = time.monotonic()
        self._attempts += 1
        self.retried += 1
        self.state = SinkState.RETRYING
        self.last_error = message[:500]
        self.last_error_time = time.time()
        ceiling = min(self.max_retry_delay, RETRY_BASE_DELAY * 2 ** min(self._attempts - 1, 30))
        delay = random.uniform(0, ceiling)  # full jitter: many agents do not retry in lock-step
        if retry_after is not None:
            delay = max(delay, min(retry_after, RETRY_AFTER_CAP))
        if self._failing_since is None:
            self._failing_since = now
            self._last_failure_log = now
            self.log.warning("sink %s: write failed (%s); data stays buffered, retrying with backoff",
                             self.name, message[:300])
        elif now - self._last_failure_log >= RETRY_LOG_INTERVAL:
            self._last_failure_log = now
            self.log.warning("sink %s: still failing after %d attempts over %.0fs (%s); data stays buffered",
                             self.name, self._attempts, now - self._failing_since, message[:300])
        return delay

    def _on_auth_failure(self, exc: SinkAuthError) -> None:
        now = time.monotonic()
        self._attempts += 1
        self.retried += 1
        if self._failing_since is None:
            self._failing_since = now
        self.state = SinkState.AUTH_FAILED
        message = self.sink.redact(str(exc))
        self.last_error = message[:500]
        self.last_error_time = time.time()
        if now - self._last_auth_log >= AUTH_LOG_INTERVAL:
            self._last_auth_log = now
            self.log.error("sink %s: the store refuses our credentials (HTTP %s: %s); nothing is sent "
                           "until the token is fixed, data stays buffered, retrying every %.0fs",
                           self.name, exc.status, message[:300], AUTH_RETRY_INTERVAL)


def _count_lines(body: bytes) -> int:
    n = body.count(b"\n")
    return n + (0 if body.endswith(b"\n") else 1) if body else 0


def _split(payload: Payload) -> tuple[Payload, Payload] | None:
    """Two halves at the line boundary nearest the middle, or ``None`` for a single line."""
    body = payload.plain
    trimmed = body[:-1] if body.endswith(b"\n") else body
    middle = len(trimmed) // 2
    cut = trimmed.rfind(b"\n", 0, middle)
    if cut < 0:
        cut = trimmed.find(b"\n", middle)
    if cut < 0:
        return None
    first, second = body[: cut + 1], body[cut + 1:]
    return Payload(_count_lines(first), plain=first), Payload(_count_lines(second), plain=second)
