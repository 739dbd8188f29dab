"""InfluxDB v2 write API sink (InfluxDB 2.x/3.x and any store speaking it, e.g. VictoriaMetrics).

The buffer's pre-encoded line protocol is posted to ``/api/v2/write`` as it is, over one kept-alive
HTTP(S) connection (:mod:`mos_agent.sinks.httpconn`). A write is one request and one answer; the
runner owns batching, retries and dead-lettering. (CPU a write of 1,000 points: influxdb-client's
generated write service 0.88 ms, urllib3 alone 0.52 ms, ``http.client`` 0.37 ms, our connection
with httptools' parser 0.12 ms; at the loads plants run, one write a second, each step was a
tenth of the agent's CPU.) HTTP outcomes map to the runner's exceptions:

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
from mos_agent.sinks.httpconn import HttpAnswer, HttpConnection, HttpProtocolError, NoAnswer

_RETRYABLE_4XX = frozenset((404, 408, 425, 429))
_GZIP = {"Content-Encoding": "gzip"}


def resolve_token(token: str | None, token_file: Path | None) -> str | None:
    """The token from the configuration (``token``, already ``${VAR}``-expanded by the loader) or
    read from ``token_file`` the way the loader reads every secret."""
    if token:
        return token
    if token_file is None:
        return None
    return read_secret(None, token_file) or None


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); header names lower-cased."""
    if not headers:
        return None
    value = headers.get("retry-after")
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
        self.bucket = config.bucket
        self.max_request_size: int | None = config.max_request_size
        self._token = resolve_token(config.token, config.token_file) or ""
        self._token_forms = secret_forms(self._token) if self._token else set()
        self.gzip = bool(config.gzip)
        # the buffer holds no code 0; a sink set to quality_code: always puts it back when sending
        self.all_quality_codes = config.quality_code == "always"
        parts = urlsplit(config.url)
        # Times stay nanoseconds whatever the sink's ``precision`` (the store cuts them down): that
        # setting tells the normaliser how far apart to keep acquisition times.
        query = urlencode({"org": config.org, "bucket": config.bucket, "precision": "ns"})
        self._path = f"{parts.path.rstrip('/')}/api/v2/write?{query}"
        headers = {"Content-Type": "text/plain; charset=utf-8", "Accept": "application/json",
                   "User-Agent": f"mos-agent/{__version__}"}
        if self._token:
            headers["Authorization"] = f"Token {self._token}"
        self._connection = HttpConnection(parts.hostname or "", parts.port, https=parts.scheme == "https",
                                          timeout=float(config.timeout), headers=headers)

    def __repr__(self) -> str:
        return f"InfluxSink(name={self.name!r}, url={self.url!r}, bucket={self.bucket!r})"

    def redact(self, text: str) -> str:
        return redact(text, self._token_forms)

    def write(self, payload: Payload, kind: BatchKind = BatchKind.LIVE) -> None:
        if self.all_quality_codes:
            payload = Payload(payload.points, plain=with_quality_codes(payload.plain))
        # gzip: the rows' gzip members as the buffer stored them, one valid gzip stream
        body = payload.gzipped if self.gzip else payload.plain
        if self.max_request_size is not None and len(body) > self.max_request_size:
            raise SinkTooLarge(f"a {len(body)}-byte request body exceeds the sink's max_request_size of "
                               f"{self.max_request_size}")
        answer = self._post(body, _GZIP if self.gzip else None)
        if answer.status >= 300:
            raise self._map_status(answer.status, answer.reason, answer.body, answer.headers)
        self.sent_bytes += len(body)

    def _post(self, body: bytes, headers: dict[str, str] | None) -> HttpAnswer:
        """The store's answer; network failures raise :class:`SinkRetryable`. A request on a
        kept-alive connection the store closed meanwhile is sent again at once on a new one."""
        reused = self._connection.is_open
        try:
            try:
                return self._connection.post(self._path, body, headers)
            except NoAnswer:
                if not reused:
                    raise
                return self._connection.post(self._path, body, headers)  # on a new connection
        except (OSError, HttpProtocolError) as exc:
            raise SinkRetryable(self.redact(f"{self.url}: {type(exc).__name__}: {exc}")) from None

    def _map_status(self, status: int, reason: str, body: bytes, headers: Mapping[str, str]) -> Exception:
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
        self._connection.close()
