"""The group-commit writer: one thread that takes the normaliser's encoded chunks from the event
loop and appends them to the buffer, many chunks a transaction.

The event loop hands a chunk over with :meth:`BufferWriter.put`: a put into a thread-safe queue,
nothing more, unless the queue holds ``capacity`` chunks — then ``put`` waits, so a slow disk slows
acquisition instead of growing memory. The writer thread waits for the first chunk, then gathers
for ``gather`` seconds (the polls of one tick arrive within milliseconds of each other: one commit,
one fsync, for all of them), but never commits more often than every ``commit_interval``; that
interval also bounds how long a chunk waits (the durability promise). After the commit it counts
the points and runs the chunks' ``on_committed`` callbacks in the event loop, where they were made
(MQTT acknowledgements, KPI state saves). At light load this is the whole hand-off: the event loop
is not woken for a commit with no callbacks, and no executor future, timer or queue task is made
per commit (an asyncio queue, a writer task and ``run_in_executor`` cost the event loop ~0.5 ms of
CPU a second at 1,000 points/s; ``bench/bench_light.py``).

A chunk is handed to the thread only after the emitting driver next yields to the event loop (a
callback the loop runs next), so what a driver records right after its ``emit`` — before its next
``await`` — is recorded before the chunk can be committed (:meth:`DriverContext.emit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from mos_agent.normalise import EncodedChunk

log = logging.getLogger("mos_agent")

Append = Callable[[Sequence[bytes], Sequence[int]], int]
COMMIT_RETRY_DELAY = 1.0
_FINISH = None


class BufferWriter:
    def __init__(self, append: Append, *, commit_interval: float, gather: float, capacity: int,
                 give_up: Callable[[], bool]) -> None:
        """``append(bodies, points)`` stores chunks durably (the buffer's append, on this thread);
        ``give_up()`` says, after a failed commit, that stopping has run out of time."""
        self.append = append
        self.commit_interval = commit_interval
        self.gather = min(gather, commit_interval)
        self.capacity = capacity
        self.give_up = give_up
        self.committed_points = 0
        self.commit_failures = 0
        self.on_commit: list[Callable[[int], None]] = []  # called on the writer thread: must not block
        self._queue: queue.SimpleQueue[EncodedChunk | None] = queue.SimpleQueue()
        # each counter is written by one thread only, so their difference needs no lock
        self._handed = 0  # event loop
        self._taken = 0  # writer thread
        self._room_wanted = False
        self._room: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="buffer-writer", daemon=True)

    @property
    def queued(self) -> int:
        """Chunks handed over and not yet taken for a commit."""
        return self._handed - self._taken

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._room = asyncio.Event()
        self._thread.start()

    async def put(self, chunk: EncodedChunk) -> None:
        """Hand ``chunk`` to the writer; waits while ``capacity`` chunks are queued."""
        assert self._loop is not None and self._room is not None
        while self._handed - self._taken >= self.capacity:
            self._room.clear()
            self._room_wanted = True
            if self._handed - self._taken < self.capacity:  # taken meanwhile, before the flag was seen
                break
            await self._room.wait()
        self._handed += 1
        self._loop.call_soon(self._queue.put, chunk)

    async def finish(self) -> None:
        """Commit what is queued, then end the thread."""
        if self._loop is None:
            return  # never started
        self._loop.call_soon(self._queue.put, _FINISH)
        await asyncio.to_thread(self._thread.join)

    # ------------------------------------------------------------ writer thread

    def _run(self) -> None:
        last_commit = 0.0
        finishing = False
        while not finishing:
            first = self._queue.get()
            chunks: list[EncodedChunk] = []
            if first is _FINISH:
                finishing = True
            else:
                chunks.append(first)
                # at most commit_interval after the previous commit, and never before the rest of a
                # burst is in (both bounded by commit_interval: the durability promise)
                wait = max(last_commit + self.commit_interval - time.monotonic(), self.gather)
                if self.queued < self.capacity:
                    time.sleep(wait)
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _FINISH:
                    finishing = True
                else:
                    chunks.append(item)
            self._taken += len(chunks)
            if self._room_wanted:
                assert self._room is not None
                self._room_wanted = False
                self._call_in_loop(self._room.set)
            if chunks:
                last_commit = time.monotonic()
                self._commit(chunks)

    def _commit(self, chunks: list[EncodedChunk]) -> None:
        bodies = [c.body for c in chunks if c.points]
        points = [c.points for c in chunks if c.points]
        while bodies:
            try:
                self.append(bodies, points)
                break
            except Exception as exc:  # an I/O error: keep the data in memory and retry
                self.commit_failures += 1
                if self.give_up():
                    # stopping must end: what was not committed is not acknowledged either (MQTT
                    # brokers send it again; polled readings of these last moments are lost)
                    log.error("buffer commit failed (%s: %s) at shutdown: %d points not committed",
                              type(exc).__name__, exc, sum(points))
                    return
                log.error("buffer commit failed (%s: %s); retrying in %.0fs, acquisition waits",
                          type(exc).__name__, exc, COMMIT_RETRY_DELAY)
                time.sleep(COMMIT_RETRY_DELAY)
        total = sum(points)
        self.committed_points += total
        for hook in self.on_commit:
            try:
                hook(total)
            except Exception:  # a metrics hook must not end the writer
                log.exception("commit hook failed")
        callbacks = [callback for chunk in chunks for callback in chunk.on_committed]
        if callbacks:
            self._call_in_loop(_run_callbacks, callbacks)

    def _call_in_loop(self, callback: Callable[..., None], *args: object) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # a closed loop: nothing waits for it any more
            self._loop.call_soon_threadsafe(callback, *args)


def _run_callbacks(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("commit callback failed")
