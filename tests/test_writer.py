"""The group-commit writer between the event loop and a real on-disk buffer: a burst is one
commit, callbacks run in the event loop after it, a full hand-off holds acquisition back, a failing
disk is retried without losing a chunk, and a chunk is never committed before its driver yields."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from mos_agent.buffer import Buffer
from mos_agent.normalise import EncodedChunk
from mos_agent.writer import BufferWriter
from tests.support.samples import sample_chunks


class GatedBuffer:
    """A real buffer whose appends can be held at a gate or made to fail first (fault injection)."""

    def __init__(self, directory: Path) -> None:
        self.buffer = Buffer(directory, 1 << 30, logger=logging.getLogger("test.writer"))
        self.buffer.open()
        self.gate = threading.Event()
        self.gate.set()
        self.failures_left = 0
        self.appends: list[tuple[int, str]] = []  # (chunks, thread name)

    def append(self, bodies: Sequence[bytes], points: Sequence[int]) -> int:
        self.gate.wait()
        if self.failures_left:
            self.failures_left -= 1
            raise OSError(5, "Input/output error")
        self.appends.append((len(bodies), threading.current_thread().name))
        return self.buffer.append(bodies, points)


@pytest.fixture
def buffer(tmp_path: Path) -> Iterator[GatedBuffer]:
    gated = GatedBuffer(tmp_path / "state")
    yield gated
    gated.gate.set()
    gated.buffer.close()


def chunks(n: int, on_committed: list | None = None) -> list[EncodedChunk]:
    return [EncodedChunk(body, points, on_committed=list(on_committed or []))
            for body, points in sample_chunks(n, 10)]


def writer_for(buffer: GatedBuffer, **options: object) -> BufferWriter:
    settings: dict = {"commit_interval": 0.2, "gather": 0.02, "capacity": 512, "give_up": lambda: False}
    settings.update(options)
    return BufferWriter(buffer.append, **settings)


def test_a_burst_is_one_commit_and_its_callbacks_run_in_the_event_loop_after_it(buffer: GatedBuffer) -> None:
    async def run() -> list[tuple[int, int, bool]]:
        loop_thread = threading.current_thread()
        called: list[tuple[int, int, bool]] = []
        writer = writer_for(buffer)
        writer.start()
        committed = len(buffer.appends)

        def callback() -> None:
            called.append((len(buffer.appends), buffer.buffer.points, threading.current_thread() is loop_thread))

        for chunk in chunks(10, [callback]):
            await writer.put(chunk)
        await writer.finish()
        assert len(buffer.appends) == committed + 1 and buffer.appends[-1][0] == 10
        assert writer.committed_points == 100 and writer.queued == 0
        return called

    called = asyncio.run(run())
    assert called == [(1, 100, True)] * 10  # after the one commit, in the loop's thread


def test_a_full_hand_off_holds_the_producer_until_the_writer_takes_chunks(buffer: GatedBuffer) -> None:
    async def run() -> None:
        writer = writer_for(buffer, capacity=4)
        writer.start()
        buffer.gate.clear()  # the disk stalls
        first, *rest = chunks(9)
        await writer.put(first)
        await asyncio.sleep(0.1)  # the writer took it and is stuck in its commit
        for chunk in rest[:4]:
            await writer.put(chunk)
        assert writer.queued == 4
        fifth = asyncio.ensure_future(writer.put(rest[4]))
        await asyncio.sleep(0.2)
        assert not fifth.done(), "a put past the capacity must wait"
        buffer.gate.set()  # the disk is back
        await asyncio.wait_for(fifth, 5)
        for chunk in rest[5:]:
            await writer.put(chunk)
        await writer.finish()
        assert writer.committed_points == 90 and buffer.buffer.points == 90

    asyncio.run(run())


def test_a_failing_commit_is_retried_with_the_same_chunks(buffer: GatedBuffer,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> BufferWriter:
        writer = writer_for(buffer)
        writer.start()
        buffer.failures_left = 2
        for chunk in chunks(3):
            await writer.put(chunk)
        await writer.finish()
        return writer

    with caplog.at_level(logging.ERROR, logger="mos_agent"):
        writer = asyncio.run(run())
    assert writer.commit_failures == 2
    assert writer.committed_points == 30 and buffer.buffer.points == 30
    assert caplog.text.count("buffer commit failed (OSError: [Errno 5] Input/output error); retrying") == 2


def test_stopping_out_of_time_gives_a_failing_commit_up_and_says_how_much(buffer: GatedBuffer,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> BufferWriter:
        writer = writer_for(buffer, give_up=lambda: True)
        writer.start()
        buffer.failures_left = 1_000
        for chunk in chunks(2):
            await writer.put(chunk)
        await asyncio.wait_for(writer.finish(), 5)
        return writer

    with caplog.at_level(logging.ERROR, logger="mos_agent"):
        writer = asyncio.run(run())
    assert writer.committed_points == 0 and buffer.buffer.points == 0
    assert "at shutdown: 20 points not committed" in caplog.text


def test_a_chunk_is_committed_only_after_its_driver_yields(buffer: GatedBuffer) -> None:
    """What a driver records between its emit and its next await is recorded before the commit."""
    recorded: list[str] = []
    seen_at_commit: list[list[str]] = []
    append = buffer.append

    def watching(bodies: Sequence[bytes], points: Sequence[int]) -> int:
        seen_at_commit.append(list(recorded))
        return append(bodies, points)

    async def run() -> None:
        writer = BufferWriter(watching, commit_interval=0.2, gather=0.02, capacity=512, give_up=lambda: False)
        writer.start()
        await writer.put(chunks(1)[0])
        time.sleep(0.1)  # the driver goes on without yielding, longer than the writer's gathering
        recorded.append("stored times")
        await writer.finish()

    asyncio.run(run())
    assert seen_at_commit == [["stored times"]]
