"""How the store's HTTP answers map to what the runner does with a batch, and what the sink puts on
the wire — against a real HTTP server on loopback that answers as scripted (the end-to-end paths run
against VictoriaMetrics in test_sink_influx)."""

from __future__ import annotations

import email.utils
import gzip
import http.server
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mos_agent.config.models import InfluxSinkConfig
from mos_agent.payload import Payload, compress
from mos_agent.sinks.base import SinkAuthError, SinkRejected, SinkRetryable, SinkTooLarge
from mos_agent.sinks.influxdb import InfluxSink, _retry_after
from tests.support.tls import server_certificates

TOKEN = "tok-abcdef-123456"
LINES = b"m,tag=a value=1.0 1\nm,tag=b value=2.0 2\n"


@dataclass
class Answer:
    status: int = 204
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    hang_up: bool = False  # close the connection without answering


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class ScriptedStore(http.server.ThreadingHTTPServer):
    """Answers each POST with the next scripted :class:`Answer` (204 once the script is used up)
    and records what it received."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[Answer] = []
        self.received: list[Received] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as stores answer
    server: ScriptedStore

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append(Received(self.path, dict(self.headers), body))
        answer = self.server.script.pop(0) if self.server.script else Answer()
        if answer.hang_up:
            self.close_connection = True
            return
        data = answer.body.encode()
        self.send_response(answer.status, "Reason")
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def serving(server: ScriptedStore) -> Iterator[ScriptedStore]:
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def store() -> Iterator[ScriptedStore]:
    yield from serving(ScriptedStore())


@pytest.fixture
def tls_store(tmp_path: Path) -> Iterator[tuple[ScriptedStore, Path]]:
    """The scripted store behind HTTPS, with the CA that signed its certificate."""
    files = server_certificates(tmp_path / "tls")
    server = ScriptedStore()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files["server.pem"], files["server.key"])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    for running in serving(server):
        yield running, files["ca.pem"]


def make_sink(url: str, **options: object) -> InfluxSink:
    config = InfluxSinkConfig(type="influxdb", url=url, org="mdcg", bucket="factory", token=TOKEN,
                              timeout=2.0, **options)  # type: ignore[arg-type]
    return InfluxSink("influxdb", config)


@pytest.fixture
def sink(store: ScriptedStore) -> Iterator[InfluxSink]:
    s = make_sink(store.url)
    yield s
    s.close()


@pytest.mark.parametrize(("status", "kind"), [
    (400, SinkRejected), (422, SinkRejected), (409, SinkRejected),
    (401, SinkAuthError), (403, SinkAuthError),
    (413, SinkTooLarge),
    (404, SinkRetryable), (408, SinkRetryable), (429, SinkRetryable),
    (500, SinkRetryable), (502, SinkRetryable), (503, SinkRetryable),
    (301, SinkRetryable),
])
def test_status_mapping(store: ScriptedStore, sink: InfluxSink, status: int, kind: type) -> None:
    store.script = [Answer(status, f'{{"message":"token {TOKEN} is not valid"}}')]
    with pytest.raises(kind) as caught:
        sink.write(Payload(2, plain=LINES))
    assert str(status) in str(caught.value)
    assert "is not valid" in str(caught.value)  # the store's own words are kept…
    assert TOKEN not in str(caught.value)  # …without the token


def test_the_write_request_carries_the_bucket_the_token_and_the_stored_gzip_members(
        store: ScriptedStore, sink: InfluxSink) -> None:
    first, second = b"m value=1.0 1\n", b"m value=2.0 2\n"
    sink.write(Payload(2, gzipped=compress(first) + compress(second)))
    request = store.received[-1]
    assert request.path == "/api/v2/write?org=mdcg&bucket=factory&precision=ns"
    assert request.headers["Authorization"] == f"Token {TOKEN}"
    assert request.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(request.body) == first + second
    assert sink.sent_bytes == len(request.body)


def test_without_gzip_the_lines_are_posted_plain_under_a_path_prefix(store: ScriptedStore) -> None:
    sink = make_sink(store.url + "/influx/", gzip=False)
    try:
        sink.write(Payload(2, plain=LINES))
    finally:
        sink.close()
    request = store.received[-1]
    assert request.path.startswith("/influx/api/v2/write?")
    assert "Content-Encoding" not in request.headers
    assert request.body == LINES


def test_one_connection_carries_every_write_and_a_dropped_one_is_replaced_at_once(
        store: ScriptedStore, sink: InfluxSink) -> None:
    for _ in range(3):
        sink.write(Payload(2, plain=LINES))
    assert sink._connection.is_open
    # the store closes the kept-alive connection (an idle timeout): the next write goes through
    # on a new connection instead of failing and waiting for a retry
    store.script = [Answer(hang_up=True)]
    sink.write(Payload(2, plain=LINES))
    assert len(store.received) == 5  # the lost request and its repetition
    assert store.received[-1].body == store.received[-2].body


def test_a_store_that_hangs_up_on_a_new_connection_is_retried_later(store: ScriptedStore,
                                                                    sink: InfluxSink) -> None:
    store.script = [Answer(hang_up=True)]
    with pytest.raises(SinkRetryable, match="NoAnswer: the server closed the connection without answering"):
        sink.write(Payload(2, plain=LINES))
    sink.write(Payload(2, plain=LINES))  # and the next attempt finds it answering
    assert len(store.received) == 2


def test_retry_after_in_seconds_and_as_a_date(store: ScriptedStore, sink: InfluxSink) -> None:
    store.script = [Answer(429, headers={"Retry-After": "7"})]
    with pytest.raises(SinkRetryable) as caught:
        sink.write(Payload(2, plain=LINES))
    assert caught.value.retry_after == 7.0
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    store.script = [Answer(503, headers={"Retry-After": when})]
    with pytest.raises(SinkRetryable) as caught:
        sink.write(Payload(2, plain=LINES))
    assert 100 < (caught.value.retry_after or 0) <= 121
    assert _retry_after({"Retry-After": "soon"}) is None
    assert _retry_after(None) is None


def test_a_body_over_max_request_size_is_too_large_before_sending(store: ScriptedStore) -> None:
    sink = make_sink(store.url, gzip=False, max_request_size=30)
    try:
        with pytest.raises(SinkTooLarge):
            sink.write(Payload(2, plain=LINES))
        assert store.received == []
    finally:
        sink.close()
    sink = make_sink("http://127.0.0.1:9", gzip=False)  # nothing listens there
    try:
        with pytest.raises(SinkRetryable, match=r"127\.0\.0\.1:9"):
            sink.write(Payload(1, plain=b"m v=1 1\n"))
    finally:
        sink.close()


def test_https_is_verified_against_the_systems_certificate_authorities(
        tls_store: tuple[ScriptedStore, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    store, ca = tls_store
    url = store.url.replace("http://", "https://")
    sink = make_sink(url)
    try:
        # a store whose certificate no trusted authority signed is not written to
        with pytest.raises(SinkRetryable, match="CERTIFICATE_VERIFY_FAILED"):
            sink.write(Payload(2, plain=LINES))
        assert store.received == []
    finally:
        sink.close()
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # OpenSSL's own way to name the trusted authorities
    sink = make_sink(url)
    try:
        sink.write(Payload(2, plain=LINES))
    finally:
        sink.close()
    assert gzip.decompress(store.received[-1].body) == LINES
