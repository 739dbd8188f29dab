"""A full disk during a store outage: the disk is the buffer's cap (min_free_space kept free), the
overflow policy applies, one warning per episode, /status and /healthz say so, and everything
recovers by itself once the store is back; SIGTERM ends the agent within shutdown_timeout however
full the disk is.

Two kinds of filesystem: a real small one (a tmpfs mounted for the test; those tests skip, with
the reason, where mounting is not allowed) and, everywhere, the buffer's view of its filesystem
limited to a given size (its free-space measurement reads a size-limited filesystem of the real
files it writes) to check the policy itself."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from mos_agent import buffer as buffer_module
from mos_agent.buffer import Buffer
from mos_agent.config.models import AgentConfig
from mos_agent.localservers import free_port, wait_for_port
from mos_agent.sinks.forward import StoreAndForward
from tests.support.servers import FaultProxy, StoreReader
from tests.support.waiting import wait_until

MiB = 1 << 20
VALUES = '{__name__="process_value"}'
BIN = Path(sys.executable).parent


def _chunks(count: int, points: int = 500, start: int = 0) -> Iterator[tuple[bytes, int]]:
    """Line protocol that compresses poorly (a random text field a line), so a few megabytes of
    buffer take few points; point ``g`` has value ``g`` and its own millisecond."""
    base_ms = time.time_ns() // 1_000_000 - 3_600_000
    for c in range(start, start + count):
        lines = []
        for g in range(c * points, (c + 1) * points):
            lines.append(f'process,equipment=press-01,tag=t{g % 10} value={g},text="{secrets.token_hex(96)}" '
                         f'{(base_ms + g) * 1_000_000}\n')
        yield "".join(lines).encode(), points


# ---------------------------------------------------------------- a real small filesystem


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted for the test (needs root and a kernel that allows it here)."""
    mount = tmp_path / "small-fs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or done.returncode}); the "
                    "size-limited filesystem view tests the same policy")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _free(path: Path) -> int:
    fs = os.statvfs(path)
    return fs.f_bavail * fs.f_frsize


def _config(state: Path, url: str, **buffer: object) -> AgentConfig:
    return AgentConfig.model_validate({
        "agent": {"id": "gw", "site": "plant", "state_dir": str(state)},
        "buffer": {"max_size": "1GiB", "overflow": "drop_oldest", "min_free_space": "4MiB", **buffer},
        "sinks": [{"type": "influxdb", "url": url, "bucket": "factory", "token": "t-1234", "batch_size": 2000,
                   "flush_interval": "100ms", "max_retry_delay": "500ms"}]})


def test_a_full_disk_during_an_outage_drops_the_oldest_and_recovers(small_fs: Path, store: StoreReader,
                                                                      store_proxy: FaultProxy, caplog) -> None:
    store_proxy.cut()
    state = small_fs / "state"
    sf = StoreAndForward(_config(state, f"http://127.0.0.1:{store_proxy.port}"), state,
                         logging.getLogger("test.disk"))
    sf.start()
    appended = 0
    try:
        with caplog.at_level(logging.WARNING, logger="test.disk"):
            # three times what the filesystem holds: every append returns, none waits for space
            for body, points in _chunks(400):
                sf.append([body], [points])
                appended += points
            stats = sf.status().buffer
            assert stats.disk_full and stats.disk_full_episodes == 1
            assert stats.dropped_points > 0 and stats.points > 0
            assert _free(small_fs) >= 2 * MiB, "the headroom stays free"
            assert "min_free_space 4194304" in (stats.disk_full_reason or "")
            # the store comes back: the sink delivers what is buffered and space is reused
            store_proxy.heal()
            wait_until(lambda: sf.status().sinks[0].lag_points == 0, timeout=120, what="the sink to catch up")
            for body, points in _chunks(2, start=400):  # the next appends see the room again
                sf.append([body], [points])
                appended += points
            wait_until(lambda: sf.status().sinks[0].lag_points == 0, timeout=60, what="the last chunks")
            assert not sf.status().buffer.disk_full
        full = [r for r in caplog.records if "disk full" in r.getMessage()]
        back = [r for r in caplog.records if "disk space available again" in r.getMessage()]
        assert len(full) == 1 and len(back) == 1, [r.getMessage() for r in caplog.records]
        assert not [r for r in caplog.records if "buffer full" in r.getMessage()], "one warning per episode"
        store.flush()
        delivered = store.count(VALUES)
        status = sf.status()
        assert delivered + status.buffer.dropped_points == appended
        assert status.sinks[0].dropped_points == status.buffer.dropped_points
    finally:
        sf.stop(2.0)


def _fill(mount: Path) -> Path:
    """Another program takes every free byte."""
    filler = mount / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for size in (MiB, 64 * 1024, 4096, 1):  # down to the last byte
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"x" * size)
    finally:
        os.close(fd)
    return filler


def test_a_disk_filled_behind_the_buffers_back_refuses_appends_and_keeps_cursors_moving(
        small_fs: Path, monkeypatch, caplog) -> None:
    """The free space measured before an append is gone when SQLite writes (another program took
    it): the append is refused and counted, a delivered batch still moves its cursor, nothing
    raises or waits, and both work again once space is freed."""
    buf = Buffer(small_fs / "state", max_size=1 << 30, logger=logging.getLogger("test.behind"), row_points=500,
                 min_free_space=MiB)
    buf.open()
    try:
        buf.register_sinks(["s"])
        chunks = list(_chunks(12))
        for body, points in chunks[:6]:
            assert buf.append([body], [points]) == points
        buf.checkpoint(buf._conn)  # the WAL copied into the database: the next writes need new space
        buf._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cursor = buf.cursor("s")
        batch = cursor.read_live(1000)
        assert batch is not None
        filler = _fill(small_fs)
        assert _free(small_fs) < 64 * 1024
        # what the buffer measured a moment ago: plenty
        real = os.statvfs
        monkeypatch.setattr(buffer_module.os, "statvfs",
                            lambda path: SimpleNamespace(f_bavail=(64 * MiB) // 4096, f_blocks=(64 * MiB) // 4096,
                                                         f_frsize=4096)
                            if Path(path) == buf.directory else real(path))
        with caplog.at_level(logging.WARNING, logger="test.behind"):
            body, points = chunks[6]
            assert buf.append([body], [points]) == 0
            assert buf.disk_full and buf.dropped_points == points
            assert buf.dropped_points_by_sink == {"s": points}
            cursor.advance(batch)  # delivered: the sink goes on, the position kept in memory
            assert cursor.live == batch.last_id
            assert "cannot save the cursor of sink s" in (buf.disk_full_reason or "")
            assert sum("disk full" in r.getMessage() for r in caplog.records) == 1
            filler.unlink()
            monkeypatch.setattr(buffer_module.os, "statvfs", real)
            body, points = chunks[7]
            assert buf.append([body], [points]) == points
            following = cursor.read_live(1000)
            assert following is not None and following.first_id == batch.last_id + 1
            cursor.advance(following)
            assert not buf.disk_full
        saved = buf.cursor("s")  # the position reached the database once there was room
        assert saved.live == following.last_id
        saved.close()
        cursor.close()
    finally:
        buf.close()


def _agent_files(root: Path, state: Path, health: str, store_url: str, device: dict) -> Path:
    (root / "devices").mkdir(parents=True, exist_ok=True)
    (root / "devices" / f"{device['name']}.yaml").write_text(yaml.safe_dump(device, sort_keys=False))
    agent = {"agent": {"id": "gw", "site": "plant", "state_dir": str(state), "health": health,
                       "shutdown_timeout": "3s"},
             "devices": "devices/*.yaml",
             "buffer": {"min_free_space": "4MiB"},
             "sinks": [{"type": "influxdb", "url": store_url, "bucket": "factory", "token": "t-1234",
                        "max_retry_delay": "500ms"}]}
    path = root / "agent.yaml"
    path.write_text(yaml.safe_dump(agent))
    return path


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.slow
def test_the_agent_reports_a_full_disk_and_stops_on_sigterm(small_fs: Path, tmp_path: Path) -> None:
    """The agent as systemd runs it, its state directory on a filesystem another program has filled
    beyond the headroom, the store down: /healthz is 503 with the reason, /status says disk_full,
    and SIGTERM ends it within shutdown_timeout."""
    sim_port = free_port()
    sim = subprocess.Popen([sys.executable, "-m", "simulators.cli", "modbus", "--port", str(sim_port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    agent = None
    try:
        device = yaml.safe_load(subprocess.run(
            [sys.executable, "-m", "simulators.cli", "modbus", "--port", str(sim_port), "--print-device-file",
             "--name", "press-01"], capture_output=True, text=True, check=True).stdout)
        wait_for_port(sim_port)
        state = small_fs / "state"
        state.mkdir()
        # another program fills the disk: 1 MiB left, below the 4 MiB the buffer keeps free
        filler = small_fs / "filler"
        with filler.open("wb") as f:
            while _free(small_fs) > 2 * MiB:
                f.write(os.urandom(MiB))
            f.write(os.urandom(_free(small_fs) - MiB))
        health = f"127.0.0.1:{free_port()}"
        config = _agent_files(tmp_path / "conf", state, health, f"http://127.0.0.1:{free_port()}", device)
        log = tmp_path / "agent.log"
        agent = subprocess.Popen([str(BIN / "mos-agent"), "run", "-c", str(config)], stdout=log.open("wb"),
                                 stderr=subprocess.STDOUT)

        def status() -> dict | None:
            with contextlib.suppress(OSError, ValueError):
                code, body = _get(f"http://{health}/status")
                return json.loads(body) if code == 200 else None
            return None

        wait_until(lambda: (status() or {}).get("buffer", {}).get("disk_full") is True, timeout=60,
                   what="the agent to report the full disk")
        report = status()
        assert report is not None and report["buffer"]["dropped_points"] > 0
        code, body = _get(f"http://{health}/healthz")
        assert code == 503 and "buffer disk full (" in body and "dropping data by the overflow policy" in body
        shown = subprocess.run([str(BIN / "mos-agent"), "status", "--url", health], capture_output=True, text=True,
                               timeout=60, env={**os.environ, "COLUMNS": "200"})
        assert "buffer disk full (" in shown.stdout, shown.stdout + shown.stderr
        started = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(60) == 0, log.read_text()[-3000:]
        stopped_in = time.monotonic() - started
        text = log.read_text()
        assert text.count("disk full") == 1, text[-3000:]
        # shutdown_timeout is 3 s; the sink's stop adds at most 3 s more for a write in the network
        assert stopped_in < 3 + 3 + 10, f"took {stopped_in:.1f}s"
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
        sim.terminate()
        sim.wait(10)


# ---------------------------------------------------------------- the policy, on a size-limited view


@pytest.fixture
def filesystem_of(monkeypatch) -> object:
    """Limits what the buffer sees of its filesystem: ``limit(directory, size)`` makes its free
    space ``size`` less what the files in ``directory`` occupy (a filesystem holding only them)."""
    sizes: dict[str, int] = {}
    real = os.statvfs

    def statvfs(path: os.PathLike[str] | str) -> object:
        size = sizes.get(str(path))
        if size is None:
            return real(path)
        used = sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())
        return SimpleNamespace(f_bavail=max(0, size - used) // 4096, f_blocks=size // 4096, f_frsize=4096)

    monkeypatch.setattr(buffer_module.os, "statvfs", statvfs)
    return SimpleNamespace(limit=lambda directory, size: sizes.__setitem__(str(directory), size))


@pytest.mark.parametrize("overflow", ["drop_oldest", "drop_newest"])
def test_the_disk_is_a_cap_applied_by_the_overflow_policy(tmp_path: Path, filesystem_of, overflow: str,
                                                          caplog) -> None:
    filesystem_of.limit(tmp_path, 12 * MiB)
    buf = Buffer(tmp_path, max_size=1 << 30, overflow=overflow, logger=logging.getLogger("test.view"),
                 row_points=500, min_free_space=4 * MiB)
    buf.open()
    try:
        buf.register_sinks(["s"])
        appended = 0
        with caplog.at_level(logging.WARNING, logger="test.view"):
            for body, points in _chunks(200):
                buf.append([body], [points])
                appended += points
            assert buf.disk_full and buf.disk_full_episodes == 1
            files = sum(f.stat().st_size for f in tmp_path.iterdir() if f.is_file())
            assert files <= 12 * MiB - 3 * MiB, "the headroom stays free (allowing for one commit)"
            assert buf.dropped_points > 0 and buf.points + buf.dropped_points == appended
            kept = [line for b in _stored_bodies(buf) for line in b.splitlines()]
            first_value = int(kept[0].split(b" value=")[1].split(b",")[0])
            if overflow == "drop_oldest":
                assert int(kept[-1].split(b" value=")[1].split(b",")[0]) == appended - 1, "the newest kept"
            else:
                assert first_value == 0, "the oldest kept"
            # the sink catches up: rows go, SQLite reuses their pages, the episode ends by itself
            # (seen by the status even before data flows again)
            cursor = buf.cursor("s")
            while (batch := cursor.read_live(5000)) is not None:
                cursor.advance(batch)
            cursor.close()
            assert buf.disk_full
            assert not buf.stats().disk_full
            for body, points in _chunks(1, start=200):
                assert buf.append([body], [points]) == points
            assert not buf.disk_full
        assert sum("disk full" in r.getMessage() for r in caplog.records) == 1
        assert sum("disk space available again" in r.getMessage() for r in caplog.records) == 1
        assert buf.dropped_points_by_sink == {"s": buf.dropped_points}
    finally:
        buf.close()


def _stored_bodies(buf: Buffer) -> list[bytes]:
    import sqlite3

    from mos_agent.payload import decompress

    conn = sqlite3.connect(buf.path)
    try:
        return [decompress(r[0]) for r in conn.execute("SELECT body FROM chunks ORDER BY id")]
    finally:
        conn.close()
