"""InfluxDB v2 write API sink (InfluxDB 2.x/3.x and any store speaking it, e.g. VictoriaMetrics).

Pre-encoded line protocol bytes are posted synchronously through influxdb-client's v2 write
service (what its SYNCHRONOUS write API calls) — no ``Point`` objects (10× slower) and no
client-side batching ``WriteOptions`` (its RxPY scheduler stalls; the runner owns batching,
retries and dead-lettering instead). HTTP outcomes map to the runner's
exceptions:

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
from pathlib import Path
from typing import Any

import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.rest import ApiException
from influxdb_client.service.write_service import WriteService

from mos_agent.buffer import BatchKind
from mos_agent.config.loader import read_secret
from mos_agent.config.models import InfluxSinkConfig
from mos_agent.lineprotocol import with_quality_codes
from mos_agent.payload import Payload
from mos_agent.secrets import redact, secret_forms
from mos_agent.sinks.base import Sink, SinkAuthError, SinkRejected, SinkRetryable, SinkTooLarge

_RETRYABLE_4XX = frozenset((404, 408, 425, 429))


def resolve_token(token: str | None, token_file: Path | None) -> str | None:
    """The token from the configuration (``token``, already ``${VAR}``-expanded by the loader) or
    read from ``token_file`` the way the loader reads every secret."""
    if token:
        return token
    if token_file is None:
        return None
    return read_secret(None, token_file) or None


def _retry_after(headers: Any) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not headers:
        return None
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
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
        # enable_gzip stays off: the client would compress again, at level 9 (~1 µs a point, as
        # much CPU as the rest of the agent's path). The payload comes out of the buffer
        # compressed already and is posted as it is, through the same v2 write service the
        # client's write API uses, with Content-Encoding: gzip.
        self._client = InfluxDBClient(url=config.url, token=self._token, org=config.org,
                                      timeout=int(config.timeout * 1000), enable_gzip=False)
        self._write_service = WriteService(self._client.api_client)

    def __repr__(self) -> str:
        return f"InfluxSink(name={self.name!r}, url={self.url!r}, bucket={self.bucket!r})"

    def redact(self, text: str) -> str:
        return redact(text, self._token_forms)

    def write(self, payload: Payload, kind: BatchKind = BatchKind.LIVE) -> None:
        if self.all_quality_codes:
            payload = Payload(payload.points, plain=with_quality_codes(payload.plain))
        options: dict[str, str] = {}
        if self.gzip:
            body = payload.gzipped
            options["content_encoding"] = "gzip"
        else:
            body = payload.plain
        if self.max_request_size is not None and len(body) > self.max_request_size:
            raise SinkTooLarge(f"a {len(body)}-byte request body exceeds the sink's max_request_size of "
                               f"{self.max_request_size}")
        # Times stay nanoseconds whatever the sink's ``precision`` (the store cuts them down): that
        # setting tells the normaliser how far apart to keep acquisition times.
        try:
            self._write_service.post_write(org=self.org, bucket=self.bucket, body=body,
                                           precision=WritePrecision.NS,
                                           content_type="text/plain; charset=utf-8", **options)
        except ApiException as exc:
            raise self._map_status(exc) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise SinkRetryable(self.redact(f"{self.url}: {type(exc).__name__}: {exc}")) from None
        self.sent_bytes += len(body)

    def _map_status(self, exc: ApiException) -> Exception:
        status = int(exc.status or 0)
        detail = (exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body or ""))
        detail = " ".join(detail.split())[:300]
        message = self.redact(f"HTTP {status} {exc.reason or ''} from {self.url}"
                               + (f": {detail}" if detail else "")).strip()
        if status == 413:
            return SinkTooLarge(message)
        if status in (401, 403):
            return SinkAuthError(message, status)
        if status == 0 or status >= 500 or status in _RETRYABLE_4XX:
            return SinkRetryable(message, _retry_after(exc.headers))
        if 400 <= status < 500:
            return SinkRejected(message, status)
        return SinkRetryable(message, _retry_after(exc.headers))

    def close(self) -> None:
        self._client.close()
