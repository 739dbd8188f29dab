"""Buffer and sink throughput, each figure next to a reference measured in the same run:

1. append: ``Buffer.append`` of real Normaliser output (5,000-line chunks, group commits of four
   chunks as the pipeline's 200 ms writer would make them at 100k points/s; the buffer
   compresses each row) vs. raw SQLite inserting the same blobs uncompressed with the same
   transactions and synchronous=FULL.
2. drain: a buffer full of data delivered into a real VictoriaMetrics by the sink runner vs. raw
   influxdb-client (SYNCHRONOUS write API, enable_gzip) writing the same bodies, same batch size.
3. drain beside live data: the same kind of backlog drained while a 20,000 points/s live feed is
   appended; the drain rate as a multiple of the live rate (target ≥ 10×), and the worst age of
   live data waiting in the buffer during the drain.

    python bench/bench_buffer.py [--quick]     # ≤ 60 s (quick ≤ 20 s); writes bench/results/buffer.json
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.support, the shared test helpers, from the checkout

from mos_agent.buffer import Buffer  # noqa: E402
from mos_agent.config.models import AgentConfig  # noqa: E402
from mos_agent.sinks.forward import StoreAndForward  # noqa: E402
from mos_agent.sinks.runner import BACKLOG_FACTOR  # noqa: E402
from tests.support.samples import sample_chunks  # noqa: E402
from tests.support.servers import VictoriaMetrics  # noqa: E402

CHUNK = 5000
GROUP = 4  # chunks per group commit
BATCH = 5000  # sink batch_size (backlog batches are BACKLOG_FACTOR × this)
LIVE_RATE = 20_000
SERIES = 1000


def _chunks(n: int, device: str) -> Iterator[tuple[bytes, int]]:
    return sample_chunks(n, CHUNK, series=SERIES, device=device)


def _groups(chunks: Iterable[tuple[bytes, int]], size: int) -> Iterator[list[tuple[bytes, int]]]:
    group: list[tuple[bytes, int]] = []
    for chunk in chunks:
        group.append(chunk)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def bench_append(workdir: Path, chunks: list[tuple[bytes, int]], repeats: int) -> tuple[float, float, int]:
    """The same chunks appended ``repeats`` times (SQLite does not look at the content), into the
    buffer (which compresses each row, then stores ~20× fewer bytes) and into a bare SQLite
    table as they are, alternating blocks of commits between the two so both see the same disk
    (fsync and write-back) conditions."""
    groups = list(_groups(chunks, GROUP)) * repeats
    points = sum(p for g in groups for _, p in g)

    buffer = Buffer(workdir / "append", max_size=1 << 40, row_points=BATCH)
    buffer.open()
    buffer.register_sinks(["influxdb"])
    conn = sqlite3.connect(workdir / "raw.sqlite", isolation_level=None)
    conn.execute("PRAGMA page_size=16384")  # as the buffer
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE chunks (id INTEGER PRIMARY KEY, body BLOB)")
    ours_s = raw_s = 0.0
    block = 10
    for start in range(0, len(groups), block):
        began = time.perf_counter()
        for group in groups[start:start + block]:
            buffer.append([b for b, _ in group], [p for _, p in group])
        ours_s += time.perf_counter() - began
        began = time.perf_counter()
        for group in groups[start:start + block]:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO chunks(body) VALUES (?)", [(b,) for b, _ in group])
            conn.execute("COMMIT")
        raw_s += time.perf_counter() - began
    buffer.close()
    conn.close()
    return points / ours_s, points / raw_s, points


def _config(state_dir: Path, url: str) -> AgentConfig:
    return AgentConfig.model_validate({
        "agent": {"id": "bench", "site": "plant", "state_dir": str(state_dir)},
        "sinks": [{"type": "influxdb", "url": url, "org": "mdcg", "bucket": "factory", "token": "bench",
                   "batch_size": BATCH, "flush_interval": "200ms"}],
    })


def _prefill(state_dir: Path, chunks: Iterable[tuple[bytes, int]]) -> int:
    """A buffer holding ``chunks`` for the sink, as after an outage."""
    buffer = Buffer(state_dir, max_size=1 << 40, row_points=BATCH)
    buffer.open()
    buffer.register_sinks(["influxdb"])
    points = 0
    for group in _groups(chunks, GROUP):
        points += buffer.append([b for b, _ in group], [p for _, p in group])
    buffer.close()
    return points


def bench_drain(workdir: Path, url: str, chunks: int) -> dict[str, float]:
    """The runner draining a full buffer vs. raw influxdb-client writing the same kind of bodies
    (BACKLOG_FACTOR chunks a request, as the runner sends while draining) — with enable_gzip
    (level 9), and without compression. Only the write calls of the references are timed."""
    state = workdir / "drain"
    points = _prefill(state, _chunks(chunks, "drain-01"))
    store = StoreAndForward(_config(state, url), state, logging.getLogger("bench"))
    started = time.perf_counter()
    store.start()
    while store.status().sinks[0].lag_points:
        time.sleep(0.05)
    ours = points / (time.perf_counter() - started)
    store.stop(5)

    rates = {"ours": ours}
    for label, gzip in (("raw_gzip", True), ("raw_plain", False)):
        written = 0
        spent = 0.0
        with InfluxDBClient(url=url, token="bench", org="mdcg", enable_gzip=gzip) as client:
            write_api = client.write_api(write_options=SYNCHRONOUS)
            for group in _groups(_chunks(chunks, f"{label}-01"), BACKLOG_FACTOR * BATCH // CHUNK):
                body = b"".join(b for b, _ in group)
                began = time.perf_counter()
                write_api.write(bucket="factory", org="mdcg", record=body, write_precision=WritePrecision.NS)
                spent += time.perf_counter() - began
                written += sum(p for _, p in group)
        rates[label] = written / spent
    return rates


def _warm_up(url: str) -> None:
    """A fresh VictoriaMetrics is slower for its first writes: keep that out of every figure."""
    with InfluxDBClient(url=url, token="bench", org="mdcg") as client:
        write_api = client.write_api(write_options=SYNCHRONOUS)
        for body, _ in _chunks(40, "warm-up-01"):
            write_api.write(bucket="factory", org="mdcg", record=body, write_precision=WritePrecision.NS)


def bench_drain_with_live(workdir: Path, url: str, backlog_chunks: int) -> dict:
    state = workdir / "live"
    backlog_points = _prefill(state, _chunks(backlog_chunks, "backlog-01"))
    store = StoreAndForward(_config(state, url), state, logging.getLogger("bench"))
    per_tick = LIVE_RATE // 5  # a group commit every 200 ms
    stop = threading.Event()
    live_sent = [0]

    def feed() -> None:
        next_tick = time.monotonic()
        for body, points in sample_chunks(100_000, per_tick, series=SERIES, device="live-01"):
            if stop.is_set():
                return
            store.append([body], [points])
            live_sent[0] += points
            next_tick += 0.2
            time.sleep(max(0.0, next_tick - time.monotonic()))

    started = time.perf_counter()
    store.start()
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    worst_live_age = 0.0
    drained_at = None
    while time.perf_counter() - started < 120:
        sink = store.status().sinks[0]
        if sink.backlog_points:  # before the runner sets the backlog aside, all of it counts as live
            worst_live_age = max(worst_live_age, sink.live_lag_seconds)
        if sink.backlog_points == 0 and sink.sent_points >= backlog_points:
            drained_at = time.perf_counter() - started
            break
        time.sleep(0.02)
    stop.set()
    feeder.join()
    store.stop(10)
    drain_rate = backlog_points / drained_at if drained_at else 0.0
    return {"backlog_points": backlog_points, "drain_seconds": drained_at, "drain_rate": drain_rate,
            "multiple": drain_rate / LIVE_RATE, "worst_live_age_s": worst_live_age,
            "live_points_appended": live_sent[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller data, ≤ 20 s")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="bench-buffer-", dir="/var/tmp"))
    server = None
    try:
        sizes = {"append_repeats": 3, "drain_chunks": 80, "backlog_chunks": 120} if args.quick else \
            {"append_repeats": 10, "drain_chunks": 300, "backlog_chunks": 480}
        ours_append, raw_append, appended = bench_append(workdir, list(_chunks(40, "append-01")),
                                                         sizes["append_repeats"])
        server = VictoriaMetrics.start(workdir / "vm")
        _warm_up(server.url)
        drain = bench_drain(workdir, server.url, sizes["drain_chunks"])
        # backlog: 30 s (quick) or 2 minutes of a 20k points/s feed
        live = bench_drain_with_live(workdir, server.url, sizes["backlog_chunks"])
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    figures = [
        {"name": "buffer append", "value": round(ours_append), "unit": "points/s",
         "reference": "raw SQLite, same blobs uncompressed, same transactions", "reference_value": round(raw_append),
         "target": "≥ 500,000 points/s", "ok": ours_append >= 500_000},
        {"name": "drain into VictoriaMetrics", "value": round(drain["ours"]), "unit": "points/s",
         "reference": "raw influxdb-client SYNCHRONOUS, enable_gzip, same bodies",
         "reference_value": round(drain["raw_gzip"]), "target": "", "ok": None},
        {"name": "drain into VictoriaMetrics", "value": round(drain["ours"]), "unit": "points/s",
         "reference": "raw influxdb-client SYNCHRONOUS, no gzip, same bodies",
         "reference_value": round(drain["raw_plain"]), "target": "", "ok": None},
        {"name": "drain beside a 20k points/s live feed", "value": round(live["drain_rate"]), "unit": "points/s",
         "reference": "live rate", "reference_value": LIVE_RATE,
         "target": "≥ 10× live rate", "ok": live["multiple"] >= 10},
        {"name": "drain as a multiple of the live rate", "value": round(live["multiple"], 1), "unit": "×",
         "target": "≥ 10×", "ok": live["multiple"] >= 10},
        {"name": "oldest live data waiting during the drain", "value": round(live["worst_live_age_s"], 2),
         "unit": "s", "target": "", "ok": None},
    ]
    took = time.monotonic() - began
    result = {"quick": args.quick, "seconds": round(took, 1), "figures": figures, "details": {
        "chunk_points": CHUNK, "group_commit_chunks": GROUP, "batch_size": BATCH, "appended_points": appended,
        "sizes": sizes,
        "backlog_batch_points": BATCH * BACKLOG_FACTOR, "drain_with_live": live}}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "buffer.json").write_text(json.dumps(result, indent=2))

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"buffer and sink benchmark ({'quick' if args.quick else 'full'}, {took:.0f}s)")
    for column in ("figure", "measured", "reference (same run)", "target", "ok"):
        table.add_column(column)
    for f in figures:
        ref = f"{f['reference_value']:,} ({f['reference']})" if f.get("reference") else ""
        value = f"{f['value']:,} {f['unit']}"
        ok = "" if f["ok"] is None else ("yes" if f["ok"] else "NO")
        table.add_row(f["name"], value, ref, f["target"], ok)
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
