"""Real test servers on loopback: Mosquitto and VictoriaMetrics (speaks the InfluxDB v2 write
API), each on a free port in a temp dir, plus a TCP proxy for fault injection and a helper that
reads back what reached the store. Used by the pytest fixtures, the benchmarks and the demo."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from mos_agent.driver_api import Driver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing answered on {host}:{port} within {timeout}s")


class ServerNotInstalled(RuntimeError):
    pass


def _binary(name: str, *extra_dirs: str) -> str:
    found = shutil.which(name)
    for d in extra_dirs:
        if not found and Path(d, name).exists():
            found = str(Path(d, name))
    if not found:
        raise ServerNotInstalled(f"{name} is not installed (Debian package: see README)")
    return found


@dataclass
class Process:
    proc: subprocess.Popen
    port: int
    workdir: Path
    log_path: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


ServerT = TypeVar("ServerT", bound=Process)


class Mosquitto(Process):
    @classmethod
    def start(cls, workdir: Path, port: int | None = None, extra_conf: str = "") -> Mosquitto:
        binary = _binary("mosquitto", "/usr/sbin")
        workdir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        conf = workdir / "mosquitto.conf"
        # Started as root, Mosquitto drops to the 'mosquitto' user, which cannot write the
        # persistence file nor read TLS files in a test's private temp dir: stay root there.
        stay = "user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
        conf.write_text(
            f"{stay}listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {workdir}/\nmax_queued_messages 100000\n{extra_conf}\n"
        )
        log_path = workdir / "mosquitto.log"
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log_path.open("ab"),
                                stderr=subprocess.STDOUT)
        server = cls(proc, port, workdir, log_path)
        try:
            wait_for_port(port)
        except TimeoutError:
            server.stop()
            raise
        return server


class VictoriaMetrics(Process):
    """VictoriaMetrics with de-duplication on, so resent (series, timestamp) points overwrite
    each other as they would in InfluxDB."""

    extra_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, workdir: Path, port: int | None = None, extra_args: Sequence[str] = ()) -> VictoriaMetrics:
        """``extra_args``: more command-line flags, e.g. ``-httpAuth.username=…`` or
        ``-influx.maxLineSize=…``; kept for :meth:`restart`."""
        binary = _binary("victoria-metrics")
        workdir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        log_path = workdir / "victoria-metrics.log"
        proc = subprocess.Popen(
            [binary, f"-storageDataPath={workdir / 'data'}", f"-httpListenAddr=127.0.0.1:{port}",
             "-dedup.minScrapeInterval=1ms", "-search.latencyOffset=0s", "-loggerLevel=ERROR",
             "-search.disableCache", *extra_args],
            stdout=log_path.open("ab"), stderr=subprocess.STDOUT)
        server = cls(proc, port, workdir, log_path)
        server.extra_args = tuple(extra_args)
        try:
            wait_for_port(port)
            server._wait_ready()
        except TimeoutError:
            server.stop()
            raise
        return server

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                if r.status == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError("VictoriaMetrics did not become healthy")

    def restart(self) -> None:
        """Stop and start again on the same port and data (a store outage)."""
        self.stop()
        fresh = VictoriaMetrics.start(self.workdir, self.port, self.extra_args)
        self.proc = fresh.proc


class StoreReader:
    """Reads raw samples back from VictoriaMetrics. Series name = ``<measurement>_<field>``;
    labels are the line-protocol tags."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def flush(self) -> None:
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10):
            pass

    def export(self, selector: str = '{__name__=~".+"}', start: str = "0") -> list[dict]:
        """Every raw sample matching ``selector``: one dict per series with ``metric``, ``values``,
        ``timestamps`` (ms)."""
        self.flush()
        query = urllib.parse.urlencode({"match[]": selector, "start": start})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=30) as r:
            # split on "\n" only: label values may hold U+2028 and friends, which splitlines()
            # would also cut at
            return [json.loads(line) for line in r.read().decode().split("\n") if line.strip()]

    def count(self, selector: str = '{__name__=~".+"}') -> int:
        return sum(len(s["values"]) for s in self.export(selector))

    def wait_for_count(self, expected: int, selector: str = '{__name__=~".+"}',
                       timeout: float = 30.0) -> int:
        """Poll until at least ``expected`` samples match (or time runs out); returns the count."""
        deadline = time.monotonic() + timeout
        got = 0
        while time.monotonic() < deadline:
            got = self.count(selector)
            if got >= expected:
                return got
            time.sleep(0.2)
        return got


class FaultProxy:
    """A TCP proxy on loopback that can drop all connections, refuse new ones, or delay data —
    fault injection in front of a real server."""

    def __init__(self, target_port: int, listen_port: int | None = None) -> None:
        self.target_port = target_port
        self.port = listen_port or free_port()
        self.delay = 0.0
        self.refusing = False
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(64)
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def drop_connections(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def cut(self) -> None:
        """Refuse new connections and drop the open ones (the server 'vanishes')."""
        self.refusing = True
        self.drop_connections()

    def heal(self) -> None:
        self.refusing = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._sock.close()


@contextlib.contextmanager
def running(server: ServerT) -> Iterator[ServerT]:
    """The server, stopped when the block ends however it ends."""
    try:
        yield server
    finally:
        server.stop()


DRIVER_STOP_S = 10.0


@contextlib.asynccontextmanager
async def driver_running(driver: Driver) -> AsyncIterator[asyncio.Task[None]]:
    """``driver.run()`` as a task for the block; cancelled at the end. A driver that does not end
    within 10 s of its cancellation fails the test instead of hanging the run."""
    task = asyncio.create_task(driver.run())
    try:
        yield task
    finally:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=DRIVER_STOP_S)
        if not done:
            raise AssertionError(f"{type(driver).__name__} did not stop within {DRIVER_STOP_S:g}s of its "
                                 "cancellation")
        with contextlib.suppress(asyncio.CancelledError):
            task.result()


def sample_chunks(chunks: int, points_per_chunk: int, *, series: int = 10, start_ms: int | None = None,
                  device: str = "press-01", category: str = "process") -> Iterator[tuple[bytes, int]]:
    """Real encoded line protocol from the Normaliser, as the pipeline hands it to the buffer:
    ``chunks`` bodies of ``points_per_chunk`` lines over ``series`` tags (``t0`` …) of one device.
    Point ``g`` (counting across chunks) has value ``g`` and time ``start_ms + g`` milliseconds, so
    every (series, timestamp) is distinct — the store keeps milliseconds — and each point is
    counted once in a store with de-duplication. Yields ``(body, points)``."""
    import numpy as np

    from mos_agent.batch import ReadingBatch
    from mos_agent.normalise import Normaliser
    from mos_agent.series import SeriesSpec, SeriesTable, make_asset

    if start_ms is None:
        start_ms = time.time_ns() // 1_000_000 - 3_600_000
    table = SeriesTable()
    asset = make_asset({"site": "plant", "area": "stamping", "line": "line-1", "equipment": device})
    for s in range(series):
        table.add(SeriesSpec(asset=asset, tag=f"t{s}", category=category, kind="sample", stage="forming",
                             unit="bar"))
    normaliser = Normaliser(table)
    offsets = np.arange(points_per_chunk, dtype=np.int64)
    for c in range(chunks):
        g = c * points_per_chunk + offsets
        batch = ReadingBatch.build(g % series, g.astype(np.float64), (start_ms + g) * 1_000_000)
        chunk = normaliser.process(batch)
        yield chunk.body, chunk.points
