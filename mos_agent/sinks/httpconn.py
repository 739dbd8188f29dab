"""One kept-alive HTTP/1.1 connection that posts a body and reads the short answer, for the
influxdb sink.

The request head is formatted here (a POST with fixed headers and a length, pre-encoded once); the
answer is parsed by httptools (llhttp, the parser of Node.js). At the loads plants run the store
gets one write a second, and the standard library's ``http.client`` spent 0.37 ms of CPU on each
(0.23 ms of it parsing a 204 answer through the email package); this exchange spends 0.12 ms,
most of it in the socket calls (``bench/bench_light.py``).

A connection the server closed while it was idle shows on the next request as
:class:`NoAnswer` (not a byte of answer), so the caller may send the request again on a new
connection; every other failure is an ``OSError`` (timeouts included) or
:class:`HttpProtocolError`, after which the connection is closed.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field

import httptools

RECEIVE_SIZE = 65536
_UNSAFE = frozenset("\r\n\0")


class HttpProtocolError(Exception):
    """The server's answer is not HTTP/1.x."""


class NoAnswer(ConnectionError):
    """The server closed the connection without answering: on a kept-alive connection, one it
    dropped while idle."""


@dataclass
class HttpAnswer:
    status: int = 0
    reason: str = ""
    # names lower-cased; a repeated header keeps its last value
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    keep_alive: bool = False


class _AnswerReader:
    """httptools' callbacks, collecting one answer."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.answer = HttpAnswer()
        self.parts: list[bytes] = []
        self.headers_complete = False
        self.complete = False

    def on_status(self, reason: bytes) -> None:
        self.answer.reason += reason.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.answer.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_complete = True
        # llhttp knows it only here, from the version and the Connection header
        self.answer.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.parts.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class HttpConnection:
    """POSTs to one host; opens its socket on the first request and after every failure."""

    def __init__(self, host: str, port: int | None, *, https: bool, timeout: float,
                 headers: dict[str, str]) -> None:
        self.host = host
        self.port = port or (443 if https else 80)
        self.https = https
        self.timeout = timeout
        authority = f"[{host}]" if ":" in host else host
        if port is not None:
            authority += f":{port}"
        fields = {"Host": authority, **headers}
        self._head_fields = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        # a line break in a value (a token file with two lines) would split the request: such a
        # connection refuses every request, naming the header, never its value
        self._refusal = next((f"the {name} header's value has a line break or NUL: request not sent"
                              for name, value in fields.items() if _UNSAFE & set(value)), None)
        self._sock: socket.socket | None = None

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> HttpAnswer:
        """Send one request and return its answer; the connection is closed after a failure and
        after an answer that does not keep it alive."""
        if self._refusal is not None:
            raise ValueError(self._refusal)
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items()) if headers else ""
        head = f"POST {path} HTTP/1.1\r\n{self._head_fields}{extra}Content-Length: {len(body)}\r\n\r\n"
        sock = self._sock or self._connect()
        try:
            try:
                sock.sendall(head.encode("latin-1") + body)
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise NoAnswer(f"the server closed the connection: {exc}") from exc
            answer = self._read_answer(sock)
        except BaseException:
            self.close()
            raise
        if not answer.keep_alive:
            self.close()
        return answer

    def _read_answer(self, sock: socket.socket) -> HttpAnswer:
        reader = _AnswerReader()
        parser = reader.parser
        received = 0
        while not reader.complete:
            try:
                data = sock.recv(RECEIVE_SIZE)
            except ConnectionResetError as exc:
                if received:
                    raise
                raise NoAnswer(f"the server closed the connection without answering: {exc}") from exc
            if not data:
                if not received:
                    raise NoAnswer("the server closed the connection without answering")
                headers = reader.answer.headers
                if reader.headers_complete and "content-length" not in headers \
                        and "chunked" not in headers.get("transfer-encoding", "").lower():
                    break  # an answer delimited by the end of the connection (HTTP/1.0 style)
                raise ConnectionResetError("the server closed the connection in the middle of its answer")
            received += len(data)
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                raise HttpProtocolError("the server switched protocols") from exc
            except httptools.HttpParserError as exc:
                raise HttpProtocolError(f"the server's answer is not HTTP: {exc}") from None
        answer = reader.answer
        answer.status = parser.get_status_code()
        answer.body = b"".join(reader.parts)
        answer.keep_alive = answer.keep_alive and reader.complete
        return answer

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.https:
                # the system's authorities (or OpenSSL's SSL_CERT_FILE / SSL_CERT_DIR), host checked
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        return sock

    def close(self) -> None:
        if self._sock is not None:
            sock, self._sock = self._sock, None
            sock.close()
