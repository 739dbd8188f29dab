"""The influxdb sink's HTTP/1.1 connection against a real TCP server on loopback that answers with
scripted bytes: the answer framings a store may use, and the failures that must close the
connection (the status mapping on top of it is in test_influx_status_mapping)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from mos_agent.sinks.httpconn import HttpConnection, HttpProtocolError, NoAnswer

NO_CONTENT = b"HTTP/1.1 204 No Content\r\nX-Influxdb-Version: v2\r\n\r\n"


@dataclass
class Reply:
    data: bytes = NO_CONTENT
    close: bool = False  # hang up after sending ``data``


@dataclass
class RawStore:
    """Answers each request with the next scripted :class:`Reply` (a 204 once the script is used
    up) and records the requests and how many connections carried them."""

    listener: socket.socket
    script: list[Reply] = field(default_factory=list)
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)  # (head, body)
    connections: int = 0

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            pending = b""
            while True:
                while b"\r\n\r\n" not in pending:
                    data = conn.recv(65536)
                    if not data:
                        return
                    pending += data
                head, pending = pending.split(b"\r\n\r\n", 1)
                length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                while len(pending) < length:
                    pending += conn.recv(65536)
                self.requests.append((head, pending[:length]))
                pending = pending[length:]
                reply = self.script.pop(0) if self.script else Reply()
                conn.sendall(reply.data)
                if reply.close:
                    return


@pytest.fixture
def store() -> Iterator[RawStore]:
    listener = socket.create_server(("127.0.0.1", 0))
    server = RawStore(listener)
    threading.Thread(target=server.serve, daemon=True).start()
    yield server
    listener.close()


@pytest.fixture
def connection(store: RawStore) -> Iterator[HttpConnection]:
    conn = HttpConnection("127.0.0.1", store.port, https=False, timeout=2.0,
                          headers={"Authorization": "Token t", "Content-Type": "text/plain"})
    yield conn
    conn.close()


def test_a_request_carries_host_fixed_and_extra_headers_and_its_length(store: RawStore,
                                                                      connection: HttpConnection) -> None:
    answer = connection.post("/api/v2/write?bucket=b", b"m v=1 1\n", {"Content-Encoding": "gzip"})
    assert (answer.status, answer.reason, answer.body) == (204, "No Content", b"")
    assert answer.headers == {"x-influxdb-version": "v2"}  # names lower-cased
    head, body = store.requests[0]
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /api/v2/write?bucket=b HTTP/1.1"
    assert set(lines[1:]) == {f"Host: 127.0.0.1:{store.port}".encode(), b"Authorization: Token t",
                              b"Content-Type: text/plain", b"Content-Encoding: gzip", b"Content-Length: 8"}
    assert body == b"m v=1 1\n"


def test_answers_of_every_framing_are_read_whole_and_keep_the_connection(store: RawStore,
                                                                         connection: HttpConnection) -> None:
    store.script = [
        Reply(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 14\r\n\r\n{\"code\":\"bad\"}"),
        Reply(b"HTTP/1.1 422 Unprocessable\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        Reply(NO_CONTENT),
    ]
    first = connection.post("/w", b"x")
    second = connection.post("/w", b"y")
    third = connection.post("/w", b"z")
    assert (first.status, first.body) == (400, b'{"code":"bad"}')
    assert (second.status, second.body) == (422, b"hello world")
    assert third.status == 204
    assert store.connections == 1 and connection.is_open


def test_an_answer_ended_by_closing_the_connection_is_read_to_the_end(store: RawStore,
                                                                      connection: HttpConnection) -> None:
    store.script = [Reply(b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 5\r\n\r\nback soon", close=True)]
    answer = connection.post("/w", b"x")
    assert (answer.status, answer.headers["retry-after"], answer.body) == (503, "5", b"back soon")
    assert not connection.is_open
    assert connection.post("/w", b"y").status == 204  # on a new connection
    assert store.connections == 2


def test_connection_close_in_the_answer_closes_ours(store: RawStore, connection: HttpConnection) -> None:
    store.script = [Reply(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")]
    assert connection.post("/w", b"x").status == 204
    assert not connection.is_open


def test_a_hang_up_without_a_byte_of_answer_is_no_answer(store: RawStore, connection: HttpConnection) -> None:
    store.script = [Reply(b"", close=True)]
    with pytest.raises(NoAnswer):
        connection.post("/w", b"x")
    assert not connection.is_open


def test_a_hang_up_in_the_middle_of_an_answer_is_a_network_error(store: RawStore,
                                                                 connection: HttpConnection) -> None:
    store.script = [Reply(b"HTTP/1.1 500 Internal\r\nContent-Length: 100\r\n\r\npartial", close=True)]
    with pytest.raises(ConnectionResetError, match="middle of its answer"):
        connection.post("/w", b"x")
    assert not connection.is_open


def test_an_answer_that_is_not_http_is_a_protocol_error(store: RawStore, connection: HttpConnection) -> None:
    store.script = [Reply(b"SSH-2.0-OpenSSH_9.2\r\n")]
    with pytest.raises(HttpProtocolError, match="not HTTP"):
        connection.post("/w", b"x")
    assert not connection.is_open


def test_a_server_that_never_answers_times_out(store: RawStore) -> None:
    store.script = [Reply(b"")]  # reads the request, says nothing, keeps the connection
    conn = HttpConnection("127.0.0.1", store.port, https=False, timeout=0.3, headers={})
    with pytest.raises(TimeoutError):
        conn.post("/w", b"x")
    assert not conn.is_open


def test_an_ipv6_host_is_bracketed_in_the_host_header() -> None:
    listener = socket.create_server(("::1", 0), family=socket.AF_INET6) if socket.has_ipv6 else None
    if listener is None:
        pytest.skip("no IPv6 on this machine")
    server = RawStore(listener)
    port = server.port
    threading.Thread(target=server.serve, daemon=True).start()
    conn = HttpConnection("::1", port, https=False, timeout=2.0, headers={})
    try:
        assert conn.post("/w", b"x").status == 204
    finally:
        conn.close()
        listener.close()
    assert f"Host: [::1]:{port}".encode() in server.requests[0][0].split(b"\r\n")
