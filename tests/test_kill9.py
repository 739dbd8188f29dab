"""``kill -9`` mid-stream: every chunk whose ``append`` returned reaches the store after a restart,
once.

A child process appends numbered chunks (sinks running, so cursors advance and rows are deleted
while it dies) and prints each chunk number after ``append`` returned; the test SIGKILLs it, starts
a fresh StoreAndForward on the same state directory and checks the store holds every
acknowledged point, each once: what was sent before the kill and is sent again after it overwrites
itself in the store (VictoriaMetrics de-duplicating, as the README says to run it)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mos_agent.config.models import AgentConfig
from mos_agent.sinks.forward import StoreAndForward
from tests.support.servers import FaultProxy, StoreReader, VictoriaMetrics

REPO = Path(__file__).resolve().parent.parent
HELPER = "tests.helpers.kill9_writer"  # run as a module from the checkout, beside tests.support
PER_CHUNK = 2000
SERIES = 10


def _run_and_kill(state_dir: Path, url: str, start_ms: int, acks_before_kill: int) -> list[int]:
    """Start the writer, SIGKILL it once it has acknowledged ``acks_before_kill`` chunks; return
    every chunk number it acknowledged."""
    proc = subprocess.Popen([sys.executable, "-m", HELPER, str(state_dir), url, str(start_ms), str(PER_CHUNK),
                             "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    acked: list[int] = []
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        for line in proc.stdout:
            acked.append(int(line))
            if len(acked) >= acks_before_kill:
                proc.send_signal(signal.SIGKILL)
                break
        # acknowledgements already written to the pipe before the kill landed count too
        rest, _ = proc.communicate(timeout=30)
        acked.extend(int(x) for x in rest.split() if x.isdigit())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    return acked


def _check_all_arrived(reader: StoreReader, acked: list[int], timeout: float = 60.0) -> None:
    expected = {float(c * PER_CHUNK + i) for c in acked for i in range(PER_CHUNK)}
    deadline = time.monotonic() + timeout
    missing: set[float] = expected
    while time.monotonic() < deadline:
        values = [v for s in reader.export('{__name__="process_value"}') for v in s["values"]]
        missing = expected - set(values)
        if not missing:
            assert len(values) == len(set(values)), f"{len(values) - len(set(values))} points stored twice"
            return
        time.sleep(0.3)
    raise AssertionError(f"{len(missing)} acknowledged points never arrived (e.g. {sorted(missing)[:5]})")


def _restart(state_dir: Path, url: str) -> StoreAndForward:
    config = AgentConfig.model_validate({
        "agent": {"id": "kill9", "site": "plant", "state_dir": str(state_dir)},
        "sinks": [{"type": "influxdb", "url": url, "bucket": "factory", "org": "mdcg", "token": "t",
                   "flush_interval": "50ms"}],
    })
    store = StoreAndForward(config, state_dir, logging.getLogger("test.kill9"))
    store.start()
    return store


def test_kill9_while_sending_loses_no_acknowledged_point(tmp_path: Path, victoria: VictoriaMetrics,
                                                         store: StoreReader) -> None:
    state_dir = tmp_path / "state"
    start_ms = time.time_ns() // 1_000_000 - 3_600_000
    acked = _run_and_kill(state_dir, victoria.url, start_ms, acks_before_kill=60)
    assert len(acked) >= 60 and acked == list(range(len(acked)))
    fresh = _restart(state_dir, victoria.url)
    try:
        _check_all_arrived(store, acked)
    finally:
        fresh.stop(5)


def test_kill9_during_an_outage_loses_no_acknowledged_point(tmp_path: Path, victoria: VictoriaMetrics,
                                                            store: StoreReader, store_proxy: FaultProxy) -> None:
    """The store is unreachable while the writer dies: everything acknowledged is only on disk."""
    state_dir = tmp_path / "state"
    start_ms = time.time_ns() // 1_000_000 - 3_600_000
    store_proxy.cut()
    acked = _run_and_kill(state_dir, f"http://127.0.0.1:{store_proxy.port}", start_ms, acks_before_kill=40)
    assert store.count('{__name__="process_value"}') == 0
    store_proxy.heal()
    fresh = _restart(state_dir, f"http://127.0.0.1:{store_proxy.port}")
    try:
        _check_all_arrived(store, acked)
        assert fresh.status().buffer.moved_aside == []
    finally:
        fresh.stop(5)
