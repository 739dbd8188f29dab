"""The on-disk buffer: durability bookkeeping, per-sink cursors, backlog ranges, overflow policies,
and recovery from corrupt or foreign files."""

from __future__ import annotations

import gzip
import logging
import sqlite3
import time
from pathlib import Path

import pytest

from mos_agent.buffer import APP_ID, BUFFER_FILE, Buffer, BufferLocked
from mos_agent.config.models import AgentConfig
from mos_agent.payload import compress, decompress
from mos_agent.sinks import sink_names
from mos_agent.sinks.forward import StoreAndForward
from tests.support.samples import sample_chunks


def _body(tag: str, n: int, start: int = 0) -> bytes:
    return "".join(f"process,tag={tag} value={i},quality_code=0i {start + i}\n" for i in range(n)).encode()


def _stored_size(*tags: str) -> int:
    """The largest stored (compressed) size of the 100-point chunks of ``tags``; they differ by a
    byte or two, far less than the 10% that would change how many fit under a cap of a few."""
    return max(len(compress(_body(tag, 100))) for tag in tags)


@pytest.fixture
def buffer(tmp_path: Path):
    buf = Buffer(tmp_path, max_size=1 << 30, logger=logging.getLogger("test.buffer"), row_points=100)
    buf.open()
    yield buf
    buf.close()


def _rows(buf: Buffer) -> list[tuple[int, int]]:
    conn = sqlite3.connect(buf.path)
    try:
        return conn.execute("SELECT id, points FROM chunks ORDER BY id").fetchall()
    finally:
        conn.close()


def test_append_concatenates_bodies_into_rows_and_reads_them_back(buffer: Buffer) -> None:
    bodies = [_body("a", 40, 0), _body("a", 40, 40), _body("a", 40, 80), _body("a", 10, 120)]
    stored = buffer.append(bodies, [40, 40, 40, 10])
    assert stored == 130
    # row_points=100: 40+40 fit, the third body starts a new row (a body is never split)
    assert [p for _, p in _rows(buffer)] == [80, 50]
    buffer.register_sinks(["s"])
    cursor = buffer.cursor("s")
    try:
        batch = cursor.read_live(1000)
        assert batch is not None
        assert batch.points == 130 and batch.rows == 2
        assert batch.payload.plain == b"".join(bodies)
    finally:
        cursor.close()
    assert buffer.stats().points == 130


def test_rows_are_stored_compressed_and_a_batch_of_several_is_one_gzip_stream(buffer: Buffer) -> None:
    bodies = [_body("a", 100, 0), _body("b", 100, 100), _body("c", 100, 200)]
    buffer.append(bodies, [100, 100, 100])
    stored = buffer.stats().bytes
    assert stored * 5 < sum(map(len, bodies))  # line protocol compresses far better than 5×
    buffer.register_sinks(["s"])
    cursor = buffer.cursor("s")
    try:
        batch = cursor.read_live(1000)
        assert batch is not None and batch.rows == 3
        # three gzip members back to back: what the store receives, decompressed as one body
        assert len(batch.payload.gzipped) == stored
        assert gzip.decompress(batch.payload.gzipped) == b"".join(bodies)
    finally:
        cursor.close()


def test_rows_an_earlier_version_stored_uncompressed_are_still_delivered(buffer: Buffer) -> None:
    buffer.append([_body("new", 10)], [10])
    conn = sqlite3.connect(buffer.path)
    with conn:
        conn.execute("INSERT INTO chunks(created_ns, points, bytes, body) VALUES (?, ?, ?, ?)",
                     (time.time_ns(), 10, len(_body("old", 10)), _body("old", 10)))
    conn.close()
    buffer.register_sinks(["s"])
    cursor = buffer.cursor("s")
    try:
        batch = cursor.read_live(1000)
        assert batch is not None and batch.points == 20
        assert gzip.decompress(batch.payload.gzipped) == _body("new", 10) + _body("old", 10)
    finally:
        cursor.close()


def test_a_body_without_final_newline_still_makes_valid_concatenations(buffer: Buffer) -> None:
    buffer.append([b"m v=1 1", b"m v=2 2"], [1, 1])
    buffer.register_sinks(["s"])
    cursor = buffer.cursor("s")
    try:
        batch = cursor.read_live(10)
        assert batch is not None and batch.payload.plain == b"m v=1 1\nm v=2 2\n"
    finally:
        cursor.close()


def test_a_row_is_deleted_only_when_every_sink_has_it(buffer: Buffer) -> None:
    buffer.register_sinks(["a", "b"])
    buffer.append([_body("x", 100)], [100])
    buffer.append([_body("y", 100)], [100])
    ca, cb = buffer.cursor("a"), buffer.cursor("b")
    try:
        first = ca.read_live(100)
        assert first is not None
        ca.advance(first)
        assert len(_rows(buffer)) == 2  # b still needs both
        both = cb.read_live(1000)
        assert both is not None and both.points == 200
        cb.advance(both)
        assert len(_rows(buffer)) == 1  # a still needs the second
        second = ca.read_live(1000)
        assert second is not None
        ca.advance(second)
        assert _rows(buffer) == []
        assert buffer.stats().points == 0 and buffer.stats().bytes == 0
    finally:
        ca.close()
        cb.close()


def test_row_ids_never_repeat_after_the_table_was_emptied(tmp_path: Path) -> None:
    """Cursors compare ids: an id reused after everything was delivered would be skipped."""
    buf = Buffer(tmp_path, max_size=1 << 30)
    buf.open()
    buf.register_sinks(["s"])
    buf.append([_body("x", 5)], [5])
    cursor = buf.cursor("s")
    batch = cursor.read_live(100)
    assert batch is not None
    cursor.advance(batch)
    cursor.close()
    buf.close()
    assert _rows(buf) == []

    buf = Buffer(tmp_path, max_size=1 << 30)
    buf.open()
    buf.register_sinks(["s"])
    buf.append([_body("y", 5)], [5])
    cursor = buf.cursor("s")
    try:
        again = cursor.read_live(100)
        assert again is not None and again.first_id > batch.last_id
        assert b"tag=y" in again.payload.plain
    finally:
        cursor.close()
        buf.close()


def test_cursors_survive_reopening(tmp_path: Path) -> None:
    buf = Buffer(tmp_path, max_size=1 << 30, row_points=10)
    buf.open()
    buf.register_sinks(["s", "t"])
    buf.append([_body("a", 10), _body("b", 10), _body("c", 10)], [10, 10, 10])
    cursor = buf.cursor("s")
    batch = cursor.read_live(20)
    assert batch is not None and batch.points == 20
    cursor.advance(batch)
    cursor.close()
    buf.close()

    buf = Buffer(tmp_path, max_size=1 << 30, row_points=10)
    buf.open()
    try:
        assert buf.stats().points == 30  # sink t has received nothing
        buf.register_sinks(["s", "t"])
        cursor = buf.cursor("s")
        rest = cursor.read_live(100)
        cursor.close()
        assert rest is not None and rest.points == 10 and b"tag=c" in rest.payload.plain
        assert buf.sink_lag("t").points == 30
    finally:
        buf.close()


def test_removing_a_sink_from_the_configuration_releases_its_rows(buffer: Buffer, caplog) -> None:
    buffer.register_sinks(["keep", "gone"])
    buffer.append([_body("a", 10)], [10])
    cursor = buffer.cursor("keep")
    batch = cursor.read_live(100)
    assert batch is not None
    cursor.advance(batch)
    cursor.close()
    assert len(_rows(buffer)) == 1
    with caplog.at_level(logging.WARNING, logger="test.buffer"):
        buffer.register_sinks(["keep"])
    assert _rows(buffer) == []
    assert any("'gone' is no longer configured" in r.getMessage() and "10 buffered points" in r.getMessage()
               for r in caplog.records)


def test_backlog_range_keeps_its_rows_while_live_moves_on(buffer: Buffer) -> None:
    buffer.register_sinks(["s"])
    for i in range(5):
        buffer.append([_body(f"old{i}", 100)], [100])
    cursor = buffer.cursor("s")
    try:
        backlog = cursor.start_backlog()
        assert backlog is not None
        lo, hi = backlog
        assert hi - lo == 4
        assert cursor.pending_live().rows == 0
        buffer.append([_body("fresh", 100)], [100])
        live = cursor.read_live(100)
        assert live is not None and b"tag=fresh" in live.payload.plain
        cursor.advance(live)
        # the fresh row is delivered and gone; the backlog rows, below the live cursor, stay
        assert [p for _, p in _rows(buffer)] == [100] * 5
        assert buffer.sink_lag("s").backlog_points == 500 and buffer.sink_lag("s").live_points == 0
        drained = 0
        while (batch := cursor.read_backlog(200)) is not None:
            assert batch.kind == "backlog"
            cursor.advance(batch)
            drained += batch.points
        assert drained == 500
        assert cursor.backlog is None
        assert _rows(buffer) == []
    finally:
        cursor.close()


def test_backlog_and_live_cursor_survive_reopening(tmp_path: Path) -> None:
    buf = Buffer(tmp_path, max_size=1 << 30)
    buf.open()
    buf.register_sinks(["s"])
    for i in range(3):
        buf.append([_body(f"old{i}", 10)], [10])
    cursor = buf.cursor("s")
    cursor.start_backlog()
    first = cursor.read_backlog(10)
    assert first is not None
    cursor.advance(first)
    cursor.close()
    buf.append([_body("fresh", 10)], [10])
    buf.close()

    buf = Buffer(tmp_path, max_size=1 << 30)
    buf.open()
    try:
        buf.register_sinks(["s"])
        cursor = buf.cursor("s")
        assert cursor.backlog is not None
        live = cursor.read_live(100)
        assert live is not None and b"tag=fresh" in live.payload.plain and live.points == 10
        rest = cursor.read_backlog(100)
        assert rest is not None and rest.points == 20
        assert b"tag=old1" in rest.payload.plain and b"tag=old0" not in rest.payload.plain
        cursor.close()
    finally:
        buf.close()


# ---------------------------------------------------------------- overflow


def _overflow_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "buffer full" in r.getMessage()]


def test_drop_oldest_keeps_the_newest_data_counts_per_sink_and_logs_once_per_episode(tmp_path: Path,
                                                                                       caplog) -> None:
    size = _stored_size(*(f"c{i:02d}" for i in range(25)))
    buf = Buffer(tmp_path, max_size=size * 10, overflow="drop_oldest", logger=logging.getLogger("test.ovf"),
                 row_points=100)
    buf.open()
    try:
        buf.register_sinks(["fast", "slow"])
        with caplog.at_level(logging.WARNING, logger="test.ovf"):
            for i in range(10):
                buf.append([_body(f"c{i:02d}", 100)], [100])
            fast = buf.cursor("fast")
            delivered = fast.read_live(300)  # fast has the first three chunks
            assert delivered is not None and delivered.points == 300
            fast.advance(delivered)
            assert buf.stats().dropped_points == 0
            for i in range(10, 25):
                buf.append([_body(f"c{i:02d}", 100)], [100])
            stats = buf.stats()
            assert stats.bytes <= size * 10
            assert stats.dropped_points == 1500
            assert stats.overflow_episodes == 1
            assert len(_overflow_warnings(caplog)) == 1  # once per episode, not per append or point
            # slow had none of the 15 dropped chunks; fast had 3 of them
            assert buf.dropped_points_by_sink == {"fast": 1200, "slow": 1500}
            # the newest ten chunks survive
            tags = [b.split(b",tag=")[1].split(b" ")[0].decode() for b in _bodies(buf)]
            assert tags == [f"c{i:02d}" for i in range(15, 25)]

            # both sinks catch up: the episode ends, and the next overflow is a new episode
            slow = buf.cursor("slow")
            for cursor in (fast, slow):
                while (batch := cursor.read_live(1000)) is not None:
                    cursor.advance(batch)
                cursor.close()
            assert buf.overflowing is False
            for i in range(25, 37):
                buf.append([_body(f"c{i:02d}", 100)], [100])
            assert buf.stats().overflow_episodes == 2
            assert len(_overflow_warnings(caplog)) == 2
            assert buf.stats().dropped_points == 1700
    finally:
        buf.close()


def _bodies(buf: Buffer) -> list[bytes]:
    conn = sqlite3.connect(buf.path)
    try:
        return [decompress(r[0]) for r in conn.execute("SELECT body FROM chunks ORDER BY id")]
    finally:
        conn.close()


def test_drop_newest_keeps_what_is_buffered_and_refuses_the_rest(tmp_path: Path, caplog) -> None:
    size = _stored_size(*(f"c{i}" for i in range(8)), "d0", "d1")
    buf = Buffer(tmp_path, max_size=size * 5, overflow="drop_newest", logger=logging.getLogger("test.ovf2"),
                 row_points=100)
    buf.open()
    try:
        buf.register_sinks(["s"])
        with caplog.at_level(logging.WARNING, logger="test.ovf2"):
            stored = [buf.append([_body(f"c{i}", 100)], [100]) for i in range(8)]
            assert stored == [100] * 5 + [0] * 3
            assert buf.stats().overflow_episodes == 1
            assert len(_overflow_warnings(caplog)) == 1  # three refusals, one episode, one line
            # the sink takes one chunk: the buffer is under its cap again (episode over); a group
            # commit of two chunks then keeps what fits and refuses the rest (a new episode)
            cursor = buf.cursor("s")
            batch = cursor.read_live(100)
            assert batch is not None
            cursor.advance(batch)
            cursor.close()
            assert buf.overflowing is False
            assert buf.append([_body("d0", 100), _body("d1", 100)], [100, 100]) == 100
        tags = [b.split(b",tag=")[1].split(b" ")[0].decode() for b in _bodies(buf)]
        assert tags == ["c1", "c2", "c3", "c4", "d0"]
        stats = buf.stats()
        assert stats.dropped_points == 400
        assert buf.dropped_points_by_sink == {"s": 400}
        assert stats.overflow_episodes == 2
        assert len(_overflow_warnings(caplog)) == 2
    finally:
        buf.close()


def test_drop_oldest_with_one_commit_larger_than_the_cap_keeps_its_newest_part(tmp_path: Path) -> None:
    size = _stored_size("o0", *(f"c{i}" for i in range(5)))
    buf = Buffer(tmp_path, max_size=size * 3, overflow="drop_oldest", row_points=100)
    buf.open()
    try:
        buf.register_sinks(["s"])
        buf.append([_body("o0", 100)], [100])
        assert buf.append([_body(f"c{i}", 100) for i in range(5)], [100] * 5) == 300
        tags = [b.split(b",tag=")[1].split(b" ")[0].decode() for b in _bodies(buf)]
        assert tags == ["c2", "c3", "c4"]
        assert buf.stats().dropped_points == 300
    finally:
        buf.close()


# ---------------------------------------------------------------- corrupt and foreign files


def _config(state_dir: Path, **buffer: object) -> AgentConfig:
    return AgentConfig.model_validate({"agent": {"id": "t", "site": "s", "state_dir": str(state_dir)},
                                       "buffer": buffer})


def _moved_aside(state_dir: Path) -> list[Path]:
    return sorted(p for p in state_dir.iterdir() if ".corrupt-" in p.name)


def _append_and_count(state_dir: Path, caplog) -> StoreAndForward:
    store = StoreAndForward(_config(state_dir), state_dir, logging.getLogger("test.corrupt"))
    with caplog.at_level(logging.WARNING, logger="test.corrupt"):
        store.start()
    body, points = next(sample_chunks(1, 50))
    store.append([body], [points])
    assert store.status().buffer.points == 50
    return store


def test_garbage_file_is_moved_aside_and_a_new_buffer_works(tmp_path: Path, caplog) -> None:
    garbage = b"this is not a database at all " * 1000
    (tmp_path / BUFFER_FILE).write_bytes(garbage)
    (tmp_path / f"{BUFFER_FILE}-wal").write_bytes(b"stale wal")
    store = _append_and_count(tmp_path, caplog)
    try:
        aside = _moved_aside(tmp_path)
        assert [p.name.split(".corrupt-")[0] for p in aside] == [BUFFER_FILE, BUFFER_FILE]
        assert any(p.read_bytes() == garbage for p in aside)
        assert any(p.name.endswith("-wal") for p in aside)
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert "moved it aside" in errors[0] and ".corrupt-" in errors[0] and "new, empty buffer" in errors[0]
    finally:
        store.stop(1)


def test_foreign_sqlite_database_is_moved_aside_untouched(tmp_path: Path, caplog) -> None:
    path = tmp_path / BUFFER_FILE
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
    conn.execute("INSERT INTO invoices(amount) VALUES (42.0)")
    conn.commit()
    conn.close()
    store = _append_and_count(tmp_path, caplog)
    try:
        (aside,) = _moved_aside(tmp_path)
        foreign = sqlite3.connect(aside)
        assert foreign.execute("SELECT amount FROM invoices").fetchall() == [(42.0,)]
        # left as it was: not switched to WAL by us
        assert foreign.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        foreign.close()
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "not a mos-agent buffer" in errors[0] and "invoices" in errors[0]
    finally:
        store.stop(1)


def test_other_format_marker_is_moved_aside(tmp_path: Path, caplog) -> None:
    buf = Buffer(tmp_path, max_size=1 << 20)
    buf.open()
    buf.close()
    conn = sqlite3.connect(tmp_path / BUFFER_FILE)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    store = _append_and_count(tmp_path, caplog)
    try:
        assert len(_moved_aside(tmp_path)) == 1
        assert any("format version 99" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    finally:
        store.stop(1)


def test_damaged_pages_are_detected_and_moved_aside(tmp_path: Path, caplog) -> None:
    buf = Buffer(tmp_path, max_size=1 << 30)
    buf.open()
    buf.register_sinks(["s"])
    for body, points in sample_chunks(20, 2000):
        buf.append([body], [points])
    buf.close()
    conn = sqlite3.connect(tmp_path / BUFFER_FILE)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    raw = bytearray((tmp_path / BUFFER_FILE).read_bytes())
    # overwrite b-tree pages in the middle of the file, keeping the header valid
    for page in range(2, len(raw) // page_size, 3):
        raw[page * page_size: page * page_size + 64] = b"\xff" * 64
    (tmp_path / BUFFER_FILE).write_bytes(bytes(raw))
    store = _append_and_count(tmp_path, caplog)
    try:
        assert len(_moved_aside(tmp_path)) == 1
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "moved it aside" in errors[0]
    finally:
        store.stop(1)


def test_a_good_buffer_is_not_moved_and_keeps_its_data(tmp_path: Path, caplog) -> None:
    buf = Buffer(tmp_path, max_size=1 << 30)
    buf.open()
    buf.append([_body("a", 10)], [10])
    buf.close()
    store = _append_and_count_existing(tmp_path, caplog, expected=60)
    try:
        assert _moved_aside(tmp_path) == []
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert sqlite3.connect(tmp_path / BUFFER_FILE).execute("SELECT value FROM meta WHERE key='app'"
                                                               ).fetchone()[0] == APP_ID
    finally:
        store.stop(1)


def _append_and_count_existing(state_dir: Path, caplog, expected: int) -> StoreAndForward:
    store = StoreAndForward(_config(state_dir), state_dir, logging.getLogger("test.corrupt"))
    with caplog.at_level(logging.WARNING, logger="test.corrupt"):
        store.start()
    body, points = next(sample_chunks(1, 50))
    store.append([body], [points])
    assert store.status().buffer.points == expected
    return store


def test_a_second_process_on_the_same_state_dir_is_refused_not_treated_as_corrupt(tmp_path: Path) -> None:
    first = Buffer(tmp_path, max_size=1 << 20)
    first.open()
    try:
        second = Buffer(tmp_path, max_size=1 << 20)
        with pytest.raises(BufferLocked, match="another mos-agent process"):
            second.open()
        assert _moved_aside(tmp_path) == []
    finally:
        first.close()


def test_no_sinks_still_buffers_and_warns(tmp_path: Path, caplog) -> None:
    store = StoreAndForward(_config(tmp_path), tmp_path, logging.getLogger("test.nosinks"))
    with caplog.at_level(logging.WARNING, logger="test.nosinks"):
        store.start()
    try:
        assert any("no sinks configured" in r.getMessage() for r in caplog.records)
        for body, points in sample_chunks(3, 100):
            store.append([body], [points])
        status = store.status()
        assert status.buffer.points == 300 and status.sinks == []
    finally:
        store.stop(1)


def test_sink_names_are_unique() -> None:
    config = AgentConfig.model_validate({
        "agent": {"id": "t", "site": "s"},
        "sinks": [{"type": "influxdb", "url": "http://a", "bucket": "b"},
                  {"type": "influxdb", "url": "http://b", "bucket": "b"},
                  {"type": "sqlite"},
                  {"type": "influxdb", "url": "http://c", "bucket": "b", "name": "cloud"},
                  {"type": "influxdb", "url": "http://d", "bucket": "b", "name": "influxdb"}]})
    assert sink_names(config.sinks) == ["influxdb", "influxdb-2", "sqlite", "cloud", "influxdb-3"]


def test_dead_letters_are_bounded(tmp_path: Path) -> None:
    buf = Buffer(tmp_path, max_size=1 << 20)  # dead-letter cap: 1 MiB
    buf.open()
    try:
        buf.register_sinks(["s"])
        cursor = buf.cursor("s")
        blob = b"x" * (300 * 1024)
        for i in range(6):
            cursor.dead_letter(f"bad {i}", 400, 1, blob)
        cursor.close()
        letters = buf.dead_letters("s")
        assert sum(len(d["body"]) for d in letters) <= buf.dead_letter_cap
        assert letters[-1]["reason"] == "bad 5"  # the newest are kept
        assert [d["reason"] for d in letters] == [f"bad {i}" for i in range(6 - len(letters), 6)]
    finally:
        buf.close()
