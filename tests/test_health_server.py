"""The health server does not keep connections that never send a complete request: a client that
opens a connection and stops in the middle of its headers (or sends them a byte at a time) is
disconnected after the request timeout, and the server keeps answering others."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from mos_agent.health import HealthServer
from mos_agent.localservers import free_port
from mos_agent.status import AgentInfo, BufferStats, StatusReport


class Report:
    """A status source: the health server's view of an agent (the server itself is real)."""

    def __init__(self, report: StatusReport) -> None:
        self.report = report

    def status(self) -> StatusReport:
        return self.report

    def health(self) -> tuple[bool, list[str]]:
        reasons = self.report.problems()
        return not reasons, reasons


async def _closed_by_server(sock: socket.socket, deadline: float, trickle: bool) -> bool:
    """True once the server closes the connection (recv gives b''); sends a header byte now and
    then when ``trickle``."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    while time.monotonic() < deadline:
        if trickle:
            try:
                sock.send(b"X")
            except OSError:
                return True
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 1024), 0.3)
        except TimeoutError:
            continue
        except OSError:
            return True
        if data == b"":
            return True
    return False


async def _get(port: int, path: str, headers: str = "", method: str = "GET") -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "one byte at a time"])
async def test_a_request_that_never_finishes_its_headers_is_closed(trickle: bool) -> None:
    port = free_port()
    server = HealthServer(Report(StatusReport(agent=AgentInfo(ready=True))), f"127.0.0.1:{port}",
                          request_timeout=1.0)
    await server.start()
    try:
        sock = socket.create_connection(("127.0.0.1", port))
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            # generous: the timeout is 1 s; without one the connection stays open for an hour
            assert await _closed_by_server(sock, time.monotonic() + 30, trickle)
        finally:
            sock.close()
        assert await _get(port, "/healthz") == (200, "ok\n")
    finally:
        await server.stop()


async def test_healthz_says_why_when_the_disk_is_full() -> None:
    port = free_port()
    report = StatusReport(agent=AgentInfo(ready=True),
                          buffer=BufferStats(overflow="drop_oldest", disk_full=True,
                                             disk_full_reason="1048576 bytes free on the filesystem of /var/lib"))
    server = HealthServer(Report(report), f"127.0.0.1:{port}")
    await server.start()
    try:
        status, body = await _get(port, "/healthz")
    finally:
        await server.stop()
    assert status == 503
    assert body == ("buffer disk full (1048576 bytes free on the filesystem of /var/lib): dropping data by the "
                    "overflow policy drop_oldest\n")


async def test_with_a_token_every_data_endpoint_asks_for_it() -> None:
    port = free_port()
    token = "health-token-0123456789"
    server = HealthServer(Report(StatusReport(agent=AgentInfo(id="gw-1", ready=True))), f"127.0.0.1:{port}",
                          token=token)
    await server.start()
    try:
        for path in ("/status", "/values", "/metrics"):
            assert (await _get(port, path))[0] == 401, path
            assert (await _get(port, path, "Authorization: Bearer wrong-token-0123456\r\n"))[0] == 401, path
            assert (await _get(port, path, f"Authorization: Basic {token}\r\n"))[0] == 401, path
            assert (await _get(port, path, f"Authorization: Bearer {token}\r\n"))[0] == 200, path
        status, body = await _get(port, "/status", f"Authorization: bearer {token}\r\n")
        assert status == 200 and '"id": "gw-1"' in body
        # no data in these: they load without the token so the page can offer its sign-in
        for path in ("/healthz", "/", "/devices/press-01", "/assets/app.js", "/assets/app.css"):
            assert (await _get(port, path))[0] == 200, path
        assert (await _get(port, "/assets/secret.txt"))[0] == 404
        # read-only: GET and HEAD only
        assert (await _get(port, "/status", f"Authorization: Bearer {token}\r\n", method="POST"))[0] == 405
        assert (await _get(port, "/status", f"Authorization: Bearer {token}\r\n", method="HEAD"))[0] == 200
    finally:
        await server.stop()
