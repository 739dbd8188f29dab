"""drop_oldest counts exactly what a sink never receives: a row the policy deletes while it is in a
sink's batch in flight is counted for that sink only if the batch is then given up, not sent."""

from __future__ import annotations

import logging
import random
from pathlib import Path

from mos_agent.buffer import Buffer
from mos_agent.payload import compress


def _body(i: int) -> bytes:
    return "".join(f"process,tag=t{i:04d} value={n} {n}\n" for n in range(100)).encode()


def _chunk_tags(batch) -> set[str]:
    return {line.split(b",tag=")[1].split(b" ")[0].decode() for line in batch.payload.plain.splitlines()}


def _buffer(tmp_path: Path, chunks: int) -> Buffer:
    size = max(len(compress(_body(i))) for i in range(400))
    buf = Buffer(tmp_path, max_size=size * chunks, overflow="drop_oldest", logger=logging.getLogger("test.drops"),
                 row_points=100)
    buf.open()
    return buf


def test_rows_deleted_from_a_batch_in_flight_count_only_if_the_batch_is_given_up(tmp_path: Path) -> None:
    buf = _buffer(tmp_path, 4)
    try:
        buf.register_sinks(["a", "b"])
        for i in range(4):
            buf.append([_body(i)], [100])
        a = buf.cursor("a")
        batch = a.read_live(200)
        assert batch is not None and _chunk_tags(batch) == {"t0000", "t0001"}
        for i in range(4, 6):  # the cap deletes chunks 0 and 1 while a is sending them
            buf.append([_body(i)], [100])
        a.advance(batch)  # ... and a delivers them: a lost nothing, b (which had not read) lost both
        assert buf.dropped_points_by_sink == {"a": 0, "b": 200}
        assert buf.dropped_points == 200

        given_up = a.read_live(200)
        assert given_up is not None and _chunk_tags(given_up) == {"t0002", "t0003"}
        for i in range(6, 8):  # chunks 2 and 3 go while a has them in flight
            buf.append([_body(i)], [100])
        assert buf.dropped_points_by_sink == {"a": 0, "b": 400}
        a.close()  # a gives that batch up (a stop, a worker error): it never gets chunks 2 and 3
        assert buf.dropped_points_by_sink == {"a": 200, "b": 400}
        assert buf.dropped_points == 400, "a point lost by two sinks is one dropped point"
    finally:
        buf.close()


def test_rows_deleted_before_a_read_took_its_snapshot_count_for_the_reader(tmp_path: Path) -> None:
    """A read that begins before a delete but whose snapshot does not hold the deleted rows: they
    are not in its batch, so they count."""
    buf = _buffer(tmp_path, 4)
    try:
        buf.register_sinks(["a"])
        for i in range(4):
            buf.append([_body(i)], [100])
        cursor = buf.cursor("a")
        buf.flight_begin("a", cursor.live + 1)  # the read has begun: deletes are held for it …
        for i in range(4, 6):
            buf.append([_body(i)], [100])
        assert buf.dropped_points_by_sink == {"a": 0}
        batch = cursor.read_live(200)  # … but the snapshot it took no longer has chunks 0 and 1
        assert batch is not None and _chunk_tags(batch) == {"t0002", "t0003"}
        assert buf.dropped_points_by_sink == {"a": 200}
        cursor.advance(batch)
        assert buf.dropped_points_by_sink == {"a": 200} and buf.dropped_points == 200
        cursor.close()
    finally:
        buf.close()


def test_dropped_counts_equal_what_each_sink_never_received(tmp_path: Path) -> None:
    """Appends, reads, deliveries and given-up batches interleaved at random: at the end each
    sink's dropped count is exactly the appended points it never received, and the total is the
    points some sink never received."""
    rng = random.Random(1307)
    buf = _buffer(tmp_path, 6)
    sinks = ["fast", "slow", "flaky"]
    try:
        buf.register_sinks(sinks)
        cursors = {s: buf.cursor(s) for s in sinks}
        in_flight: dict[str, object] = {}
        received: dict[str, set[str]] = {s: set() for s in sinks}
        appended: set[str] = set()
        for i in range(300):
            buf.append([_body(i)], [100])
            appended.add(f"t{i:04d}")
            for sink in sinks:
                chance = {"fast": 0.9, "slow": 0.3, "flaky": 0.5}[sink]
                if rng.random() > chance:
                    continue
                batch = in_flight.pop(sink, None)
                if batch is None:
                    in_flight[sink] = cursors[sink].read_live(rng.choice([100, 200, 300]))
                    if in_flight[sink] is None:
                        del in_flight[sink]
                elif sink == "flaky" and rng.random() < 0.3:
                    cursors[sink].close()  # the batch is given up; a new cursor reads again
                    cursors[sink] = buf.cursor(sink)
                else:
                    cursors[sink].advance(batch)
                    received[sink] |= _chunk_tags(batch)
        for sink in sinks:  # everyone catches up
            batch = in_flight.pop(sink, None)
            if batch is not None:
                cursors[sink].advance(batch)
                received[sink] |= _chunk_tags(batch)
            while (batch := cursors[sink].read_live(1000)) is not None:
                cursors[sink].advance(batch)
                received[sink] |= _chunk_tags(batch)
            cursors[sink].close()
        never = {s: appended - received[s] for s in sinks}
        assert all(never.values()), "the test must make every sink miss something"
        assert buf.dropped_points_by_sink == {s: 100 * len(never[s]) for s in sinks}
        assert buf.dropped_points == 100 * len(set().union(*never.values()))
    finally:
        buf.close()
