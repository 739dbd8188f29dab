"""Test servers beside the product's own (:mod:`mos_agent.localservers`): VictoriaMetrics (speaks
the InfluxDB v2 write API) on a free loopback port in a temp dir, a reader of what reached it, a
TCP proxy for fault injection, and a context manager that stops a server however a block ends."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mos_agent.localservers import ServerProcess, find_binary, free_port, wait_for_port

ServerT = TypeVar("ServerT", bound=ServerProcess)
# The README's "Exactly once in the store" tells users to run VictoriaMetrics with this; the tests
# run it the same way, so a point sent again overwrites itself as it does for users.
DEDUP_FLAG = "-dedup.minScrapeInterval=1ms"


class VictoriaMetrics(ServerProcess):
    """VictoriaMetrics with de-duplication on (:data:`DEDUP_FLAG`), so resent (series, timestamp)
    points overwrite each other as they do in InfluxDB."""

    extra_args: tuple[str, ...] = ()
    dedup: bool = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, workdir: Path, port: int | None = None, extra_args: Sequence[str] = (),
              dedup: bool = True) -> VictoriaMetrics:
        """``extra_args``: more command-line flags, e.g. ``-httpAuth.username=…`` or
        ``-influx.maxLineSize=…``; kept for :meth:`restart`. ``dedup=False`` starts it as
        installed, keeping every point written (to show why the README asks for the flag)."""
        binary = find_binary("victoria-metrics")
        workdir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        log_path = workdir / "victoria-metrics.log"
        proc = subprocess.Popen(
            [binary, f"-storageDataPath={workdir / 'data'}", f"-httpListenAddr=127.0.0.1:{port}",
             *([DEDUP_FLAG] if dedup else []), "-search.latencyOffset=0s", "-loggerLevel=ERROR",
             "-search.disableCache", *extra_args],
            stdout=log_path.open("ab"), stderr=subprocess.STDOUT)
        server = cls(proc, port, workdir, log_path)
        server.extra_args = tuple(extra_args)
        server.dedup = dedup
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
        fresh = VictoriaMetrics.start(self.workdir, self.port, self.extra_args, self.dedup)
        self.proc = fresh.proc


class StoreReader:
    """Reads raw samples back from VictoriaMetrics. Series name = ``<measurement>_<field>``;
    labels are the line-protocol tags."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def flush(self) -> None:
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10):
            pass

    def export(self, selector: str = '{__name__=~".+"}', start: str = "0") -> list[dict[str, Any]]:
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
