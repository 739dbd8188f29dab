"""How HTTP answers map to what the runner does with a batch (real ApiException objects built from
real urllib3 responses; the end-to-end paths run against VictoriaMetrics in test_sink_influx)."""

from __future__ import annotations

import email.utils
import time

import pytest
import urllib3
from influxdb_client.rest import ApiException

from mos_agent.config.models import InfluxSinkConfig
from mos_agent.payload import Payload
from mos_agent.sinks.base import SinkAuthError, SinkRejected, SinkRetryable, SinkTooLarge
from mos_agent.sinks.influxdb import InfluxSink, _retry_after

TOKEN = "tok-abcdef-123456"


@pytest.fixture
def sink() -> InfluxSink:
    config = InfluxSinkConfig(type="influxdb", url="http://127.0.0.1:9", org="mdcg", bucket="factory", token=TOKEN,
                              timeout=1.0)
    s = InfluxSink("influxdb", config)
    yield s
    s.close()


def _api_exception(status: int, body: str = "", headers: dict | None = None) -> ApiException:
    response = urllib3.HTTPResponse(body=body.encode(), status=status, reason="Reason",
                                    headers=headers or {}, preload_content=True)
    return ApiException(http_resp=response)


@pytest.mark.parametrize(("status", "kind"), [
    (400, SinkRejected), (422, SinkRejected), (409, SinkRejected),
    (401, SinkAuthError), (403, SinkAuthError),
    (413, SinkTooLarge),
    (404, SinkRetryable), (408, SinkRetryable), (429, SinkRetryable),
    (500, SinkRetryable), (502, SinkRetryable), (503, SinkRetryable),
])
def test_status_mapping(sink: InfluxSink, status: int, kind: type) -> None:
    mapped = sink._map_status(_api_exception(status, f'{{"message":"token {TOKEN} is not valid"}}'))
    assert isinstance(mapped, kind)
    assert str(status) in str(mapped)
    assert TOKEN not in str(mapped)


def test_retry_after_in_seconds_and_as_a_date(sink: InfluxSink) -> None:
    mapped = sink._map_status(_api_exception(429, headers={"Retry-After": "7"}))
    assert isinstance(mapped, SinkRetryable) and mapped.retry_after == 7.0
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    mapped = sink._map_status(_api_exception(503, headers={"Retry-After": when}))
    assert isinstance(mapped, SinkRetryable) and 100 < (mapped.retry_after or 0) <= 121
    assert _retry_after({"Retry-After": "soon"}) is None
    assert _retry_after(None) is None


def test_a_body_over_max_request_size_is_too_large_before_sending() -> None:
    config = InfluxSinkConfig(type="influxdb", url="http://127.0.0.1:9", bucket="b", timeout=1.0, gzip=False,
                              max_request_size=10)
    sink = InfluxSink("influxdb", config)
    try:
        with pytest.raises(SinkTooLarge):
            sink.write(Payload(2, plain=b"m v=1 1\nm v=2 2\n"))
        with pytest.raises(SinkRetryable, match=r"127\.0\.0\.1:9"):  # nothing listens there
            sink.write(Payload(1, plain=b"m v=1 1\n"))
    finally:
        sink.close()
