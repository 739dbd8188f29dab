"""InfluxDB v2 write API sink (InfluxDB 2.x/3.x and any store speaking it, e.g. VictoriaMetrics).

The buffer's pre-encoded line protocol is posted to ``/api/v2/write`` as it is, over one kept-alive
HTTP(S) connection of the standard library's ``http.client``. A write is one request and one
answer; the runner owns batching, retries and dead-lettering. (influxdb-client's generated write
service costs 0.88 ms of CPU a write, urllib3 alone 0.52 ms, ``http.client`` 0.31 ms: at the
loads plants run, one write a second, that difference was a tenth of the agent's CPU.) HTTP
outcomes map to the runner's exceptions:

=====================================  ==========================================================
network error, timeout, 408, 429, 5xx  :class:`SinkRetryable` (Retry-After honoured)
413                                     :class:`SinkTooLarge` (the runner splits the batch)
401, 403                                :class:`SinkAuthError` (data kept, retried slowly)
404                                     :class:`SinkRetryable`: a missing bucket or org is a
                                        configuration problem, not a bad batch — dead-lettering
                                        every batch until someone notices would lose everything
other 4xx                               :class:`SinkRejected` (bisected, bad lines dead-lettered)
=====================================  ==========================================================

The token is never put in a message: every message built here passes through :meth:`redact`.
"""

from __future__ import annotations

import email.utils
import http.client
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from mos_agent import __version__
from mos_agent.buffer import BatchKind
from mos_agent.config.loader import read_secret
from mos_agent.config.models import InfluxSinkConfig
from mos_agent.lineprotocol import with_quality_codes
from mos_agent.payload import Payload
from mos_agent.secrets import redact, secret_forms
from mos_agent.sinks.base import Sink, SinkAuthError, SinkRejected, SinkRetryable, SinkTooLarge

_RETRYABLE_4XX = frozenset((404, 408, 425, 429))
# A kept-alive connection the store closed while idle fails on its next request before any
# answer; that request is sent again at once on a new connection, as browsers and urllib3 do.
_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
Headers = http.client.HTTPMessage | Mapping[str, str]


def resolve_token(token: str | None, token_file: Path | None) -> str | None:
    """The token from the configuration (``token``, already ``${VAR}``-expanded by the loader) or
    read from ``token_file`` the way the loader reads every secret."""
    if token:
        return token
    if token_file is None:
        return None
    return read_secret(None, token_file) or None


def _retry_after(headers: Headers | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not headers:
        return None
    value = headers.get("Retry-After")
    if not value:
        return None
    value = str(value).strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class InfluxSink(Sink):
    type = "influxdb"

    def __init__(self, name: str, config: InfluxSinkConfig) -> None:
        self.name = name
        self.url = config.url
        self.org = config.org
        self.bucket = config.bucket
        self.max_request_size: int | None = config.max_request_size
        self._token = resolve_token(config.token, config.token_file) or ""
        self._token_forms = secret_forms(self._token) if self._token else set()
        self.gzip = bool(config.gzip)
        # the buffer holds no code 0; a sink set to quality_code: always puts it back when sending
        self.all_quality_codes = config.quality_code == "always"
        self.timeout = float(config.timeout)
        parts = urlsplit(config.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        # Times stay nanoseconds whatever the sink's ``precision`` (the store cuts them down): that
        # setting tells the normaliser how far apart to keep acquisition times.
        query = urlencode({"org": config.org, "bucket": config.bucket, "precision": "ns"})
        self._path = f"{parts.path.rstrip('/')}/api/v2/write?{query}"
        self._headers = {"Content-Type": "text/plain; charset=utf-8", "Accept": "application/json",
                         "User-Agent": f"mos-agent/{__version__}"}
        if self._token:
            self._headers["Authorization"] = f"Token {self._token}"
        self._connection: http.client.HTTPConnection | None = None

    def __repr__(self) -> str:
        return f"InfluxSink(name={self.name!r}, url={self.url!r}, bucket={self.bucket!r})"

    def redact(self, text: str) -> str:
        return redact(text, self._token_forms)

    def write(self, payload: Payload, kind: BatchKind = BatchKind.LIVE) -> None:
        if self.all_quality_codes:
            payload = Payload(payload.points, plain=with_quality_codes(payload.plain))
        headers = self._headers
        if self.gzip:
            # the rows' gzip members as the buffer stored them: one valid gzip stream
            body = payload.gzipped
            headers = {**headers, "Content-Encoding": "gzip"}
        else:
            body = payload.plain
        if self.max_request_size is not None and len(body) > self.max_request_size:
            raise SinkTooLarge(f"a {len(body)}-byte request body exceeds the sink's max_request_size of "
                               f"{self.max_request_size}")
        status, reason, answer, answer_headers = self._post(body, headers)
        if status >= 300:
            raise self._map_status(status, reason, answer, answer_headers)
        self.sent_bytes += len(body)

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes, http.client.HTTPMessage]:
        """(status, reason, body, headers) of the store's answer; network failures raise
        :class:`SinkRetryable`."""
        reused = self._connection is not None
        try:
            try:
                return self._exchange(body, headers)
            except _STALE_CONNECTION:
                if not reused:
                    raise
                return self._exchange(body, headers)  # on a new connection
        except (OSError, http.client.HTTPException) as exc:
            raise SinkRetryable(self.redact(f"{self.url}: {type(exc).__name__}: {exc}")) from None

    def _exchange(self, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes, http.client.HTTPMessage]:
        """One request and its answer on the kept connection (opened if there is none); a failed
        exchange closes it."""
        connection = self._connection or self._connect()
        try:
            connection.request("POST", self._path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException):
            self._disconnect()
            raise
        if response.will_close:
            self._disconnect()
        return response.status, response.reason, answer, response.headers

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            self._connection = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout,
                                                           context=ssl.create_default_context())
        else:
            self._connection = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        return self._connection

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _map_status(self, status: int, reason: str, body: bytes, headers: Headers | None) -> Exception:
        detail = " ".join(body.decode("utf-8", "replace").split())[:300]
        message = self.redact(f"HTTP {status} {reason or ''} from {self.url}"
                              + (f": {detail}" if detail else "")).strip()
        if status == 413:
            return SinkTooLarge(message)
        if status in (401, 403):
            return SinkAuthError(message, status)
        if status >= 500 or status in _RETRYABLE_4XX:
            return SinkRetryable(message, _retry_after(headers))
        if 400 <= status < 500:
            return SinkRejected(message, status)
        # 1xx/3xx: a redirect or a proxy answer the sink does not follow; the data is kept
        return SinkRetryable(message, _retry_after(headers))

    def close(self) -> None:
        self._disconnect()
