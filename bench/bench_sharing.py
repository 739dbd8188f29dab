"""Release stage throughput (sharing under contract), each figure next to a reference measured in
the same run:

1. The release stage of a ``share: contracts`` sink reading real Normaliser output stored as the
   buffer stores it (gzip rows of 5,000 lines, 1,000 series): raw release, 1-minute windows, and
   10-second windows with pseudonyms — input points per second of one core, against the target of
   100,000 points/s released. Reference: decompressing and splitting the same rows into lines
   (what any reader of the buffer pays before looking at a line).
2. Its ledger: the cost of recording a release (audit + closed windows) and of a checkpoint of
   the open windows, as a share of the stage's CPU.
3. A sink without ``share`` draining a full buffer into VictoriaMetrics beside a contract sink
   (one releasing nothing, one releasing 1-minute windows of everything) vs. the same drain with
   no contract sink configured: its path has no release stage, so what differs is the CPU the
   contract sink itself takes on a shared machine.

    python bench/bench_sharing.py [--quick]     # ≤ 60 s (quick ≤ 30 s); writes bench/results/sharing.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

from mos_agent.buffer import Buffer
from mos_agent.config.models import AgentConfig
from mos_agent.payload import compress, decompress
from mos_agent.sharing.contracts import Contract
from mos_agent.sharing.ledger import Ledger
from mos_agent.sharing.pseudonyms import Pseudonymiser
from mos_agent.sharing.release import ReleaseStage
from mos_agent.sinks.forward import StoreAndForward

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # tests.support, the shared test helpers, from the checkout
from measure import cpu_seconds  # noqa: E402

from tests.support.samples import sample_chunks  # noqa: E402
from tests.support.servers import VictoriaMetrics  # noqa: E402

CHUNK = 5000
SERIES = 1000
TARGET = 100_000
NS = 1_000_000_000


def _rows(chunks: int, start_ms: int) -> list[bytes]:
    return [compress(body) for body, _ in sample_chunks(chunks, CHUNK, series=SERIES, start_ms=start_ms)]


def _contract(resolution_s: float | None, pseudonymise: bool) -> Contract:
    return Contract(id="bench", title=None, consumer="bench", sink="datacentre", valid_from_ns=0,
                    valid_to_ns=2**62, datasets=("press-*",), categories=frozenset({"process"}),
                    resolution_ns=None if resolution_s is None else int(resolution_s * NS),
                    pseudonymise=pseudonymise, path=Path("bench.yaml"))


def bench_stage(workdir: Path, rows: list[bytes], start_ms: int, resolution_s: float | None,
                pseudonymise: bool) -> dict[str, float]:
    """Input points/s of the release stage (decompression included, as the sink reads rows)."""
    ledger = Ledger(workdir / f"ledger-{resolution_s}-{pseudonymise}")
    stage = ReleaseStage("datacentre", [_contract(resolution_s, pseudonymise)], ledger,
                         Pseudonymiser(b"k" * 32) if pseudonymise else None)
    released = 0
    ledger_seconds = 0.0
    started = cpu_seconds()
    for row_id, row in enumerate(rows, start=1):
        # sample_chunks puts point g at start_ms + g ms: the row is committed after its last point
        created = (start_ms + row_id * CHUNK) * 1_000_000
        release = stage.process(row_id, row_id, decompress(row), created)
        released += release.points
        before = cpu_seconds()
        stage.commit(release)
        ledger_seconds += cpu_seconds() - before
    took = cpu_seconds() - started
    ledger.close()
    points = len(rows) * CHUNK
    return {"points_per_s": points / took, "released_points": released, "input_points": points,
            "ledger_share": ledger_seconds / took}


def bench_plain_drain(workdir: Path, url: str, chunks: int, beside: str | None) -> float:
    """Points/s of a plain sink draining ``chunks`` buffered chunks, with ``beside`` (None, "nothing"
    or "windows") a contract sink reading the same rows."""
    state = workdir / f"drain-{beside}"
    sinks = [{"type": "influxdb", "name": "plant", "url": url, "bucket": "b", "token": "bench",
              "flush_interval": "200ms"}]
    contracts = []
    if beside is not None:
        sinks.append({"type": "influxdb", "name": "datacentre", "share": "contracts", "url": url, "bucket": "b",
                      "token": "bench", "flush_interval": "200ms"})
        contract = _contract(60, False)
        contracts.append(contract if beside == "windows" else dataclasses.replace(contract, datasets=("no-such-*",)))
    buffer = Buffer(state, max_size=1 << 40, row_points=CHUNK)
    buffer.open()
    buffer.register_sinks([s["name"] for s in sinks])
    points = sum(buffer.append([body], [n]) for body, n in sample_chunks(chunks, CHUNK, series=SERIES,
                                                                          device=f"press-{beside}"))
    buffer.close()
    config = AgentConfig.model_validate({"agent": {"id": "bench", "site": "plant", "state_dir": str(state)},
                                         "sinks": sinks})
    store = StoreAndForward(config, state, logging.getLogger("bench"), contracts=contracts)
    started = time.perf_counter()
    store.start()
    while next(s for s in store.status().sinks if s.name == "plant").lag_points:
        time.sleep(0.02)
    rate = points / (time.perf_counter() - started)
    store.stop(5)
    return rate


def bench_reference(rows: list[bytes]) -> float:
    started = cpu_seconds()
    lines = 0
    for row in rows:
        lines += len(decompress(row).split(b"\n"))
    took = cpu_seconds() - started
    return len(rows) * CHUNK / took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    began = time.monotonic()
    chunks = 40 if args.quick else 200
    start_ms = 1_796_083_200_000
    rows = _rows(chunks, start_ms)
    workdir = Path(tempfile.mkdtemp(prefix="bench-sharing-", dir="/var/tmp"))
    server = None
    try:
        reference = bench_reference(rows)
        raw = bench_stage(workdir, rows, start_ms, None, False)
        minute = bench_stage(workdir, rows, start_ms, 60, False)
        pseudonymised = bench_stage(workdir, rows, start_ms, 10, True)
        server = VictoriaMetrics.start(workdir / "vm")
        drain_chunks = 60 if args.quick else 200
        drains = {beside: bench_plain_drain(workdir, server.url, drain_chunks, beside)
                  for beside in (None, "nothing", "windows")}
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    ref_name = "decompress + split the same rows"
    figures = []
    for name, result in (("release raw", raw), ("release 1m windows", minute),
                         ("release 10s windows, pseudonymised", pseudonymised)):
        figures.append({"name": name, "value": round(result["points_per_s"]), "unit": "points/s",
                        "reference": ref_name, "reference_value": round(reference),
                        "target": f"≥ {TARGET:,} points/s", "ok": result["points_per_s"] >= TARGET})
    figures.append({"name": "ledger share of the release stage's CPU (1m windows)",
                    "value": round(100 * minute["ledger_share"], 1), "unit": "%", "target": "", "ok": None})
    for beside, label in (("nothing", "beside a contract sink releasing nothing"),
                          ("windows", "beside a contract sink releasing 1m windows of it all")):
        figures.append({"name": f"sink without share: drain into VictoriaMetrics {label}",
                        "value": round(drains[beside]), "unit": "points/s",
                        "reference": "the same drain, no contract sink", "reference_value": round(drains[None]),
                        "target": "", "ok": None})
    took = time.monotonic() - began
    result = {"quick": args.quick, "seconds": round(took, 1), "figures": figures, "details": {
        "chunk_points": CHUNK, "series": SERIES, "rows": len(rows),
        "released_points": {"raw": raw["released_points"], "1m": minute["released_points"],
                            "10s_pseudonymised": pseudonymised["released_points"]}}}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "sharing.json").write_text(json.dumps(result, indent=2))

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sharing release stage benchmark ({'quick' if args.quick else 'full'}, {took:.0f}s)")
    for column in ("figure", "measured", "reference (same run)", "target", "ok"):
        table.add_column(column)
    for f in figures:
        ref = f"{f['reference_value']:,} ({f['reference']})" if f.get("reference") else ""
        ok = "" if f["ok"] is None else ("yes" if f["ok"] else "NO")
        table.add_row(f["name"], f"{f['value']:,} {f['unit']}", ref, f["target"], ok)
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
