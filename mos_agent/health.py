"""HTTP health endpoint: ``/healthz`` (200 ok / 503 with reasons), ``/status`` (JSON), ``/metrics``
(Prometheus text), ``/values`` (latest values per series, :mod:`mos_agent.values`) and the operator's
status page (``/``, ``/devices/<name>``, ``/assets/*`` from :mod:`mos_agent.web`). Metrics are read
from the agent's own status report (:mod:`mos_agent.status`) at scrape time, so there is one source
of truth and no per-point bookkeeping for them. The server knows the agent only as a
:class:`~mos_agent.status.StatusSource` (and a :class:`~mos_agent.values.ValuesSource`); latency
histograms are fed by the ``observe_*`` hooks the agent calls.

Read-only: only GET (and HEAD) routes exist. With a token every data endpoint — all but
``/healthz`` and the page shell and its assets, which carry no data and must load for the page to
offer its sign-in — asks for ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from mos_agent import web as page
from mos_agent.status import DeviceState, StatusSource
from mos_agent.values import ValueQuery, ValuesSource, ValuesView

log = logging.getLogger("mos_agent.health")

# A connection that has not completed a request within this time is closed — one that never
# finishes its headers, or an idle keep-alive one (aiohttp's own default keeps them an hour, so a
# handful of silent connections would hold the port's resources for good).
REQUEST_TIMEOUT = 10.0
# What the page and its assets may load: their own origin only (no CDN, no request elsewhere).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# Served without the token: they carry no data, and the page must load to offer its sign-in.
OPEN_PATHS = ("/healthz", "/assets/")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StatusCollector:
    """Turns the status report into Prometheus metric families."""

    def __init__(self, source: StatusSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Any]:
        status = self.source.status()
        labels = ["device", "driver"]
        read = CounterMetricFamily("mos_agent_points_read", "Readings acquired from devices", labels=labels)
        bad = CounterMetricFamily("mos_agent_points_bad", "Readings with bad quality", labels=labels)
        errors = CounterMetricFamily("mos_agent_read_errors", "Read errors by device and kind",
                                     labels=[*labels, "kind"])
        overruns = CounterMetricFamily("mos_agent_poll_overruns", "Poll cycles that overran their interval",
                                       labels=labels)
        skipped_polls = CounterMetricFamily("mos_agent_polls_skipped", "Polls skipped because a cycle overran",
                                            labels=labels)
        skipped_points = CounterMetricFamily("mos_agent_points_skipped",
                                             "Readings the skipped polls would have made", labels=labels)
        state = GaugeMetricFamily("mos_agent_device_state", "1 for the device's current state",
                                  labels=[*labels, "state"])
        series = GaugeMetricFamily("mos_agent_device_series", "Series per device", labels=labels)
        for d in status.devices:
            lv = [d.name, d.driver]
            read.add_metric(lv, d.points_read)
            bad.add_metric(lv, d.points_bad)
            overruns.add_metric(lv, d.overruns)
            skipped_polls.add_metric(lv, d.skipped_polls)
            skipped_points.add_metric(lv, d.skipped_points)
            series.add_metric(lv, d.series)
            for kind, count in d.errors.items():
                errors.add_metric([*lv, kind], count)
            for s in DeviceState:
                state.add_metric([*lv, s.value], 1.0 if d.state == s else 0.0)
        yield from (read, bad, errors, overruns, skipped_polls, skipped_points, state, series)

        yield CounterMetricFamily("mos_agent_points_committed", "Points committed to the on-disk buffer",
                                  value=status.pipeline.committed_points)
        buf = status.buffer
        yield GaugeMetricFamily("mos_agent_buffer_points", "Points in the buffer", value=buf.points)
        yield GaugeMetricFamily("mos_agent_buffer_bytes", "Bytes in the buffer", value=buf.bytes)
        yield GaugeMetricFamily("mos_agent_buffer_oldest_age_seconds", "Age of the oldest buffered point",
                                value=buf.oldest_age_s or 0)
        yield CounterMetricFamily("mos_agent_points_dropped", "Points dropped by the buffer overflow policy",
                                  value=buf.dropped_points)

        sink_labels = ["sink", "type"]
        sent = CounterMetricFamily("mos_agent_points_sent", "Points delivered to a sink", labels=sink_labels)
        sent_bytes = CounterMetricFamily("mos_agent_bytes_sent", "Request body bytes a sink's store accepted",
                                         labels=sink_labels)
        dead = CounterMetricFamily("mos_agent_points_dead_lettered", "Points a sink rejected (dead letter)",
                                   labels=sink_labels)
        retried = CounterMetricFamily("mos_agent_sink_retries", "Sink write retries", labels=sink_labels)
        lag = GaugeMetricFamily("mos_agent_sink_lag_points", "Points not yet delivered to a sink",
                                labels=sink_labels)
        lag_s = GaugeMetricFamily("mos_agent_sink_lag_seconds", "Age of the oldest undelivered point",
                                  labels=sink_labels)
        for sink in status.sinks:
            lv = [sink.name, sink.type]
            sent.add_metric(lv, sink.sent_points)
            sent_bytes.add_metric(lv, sink.sent_bytes)
            dead.add_metric(lv, sink.dead_lettered_points)
            retried.add_metric(lv, sink.retried)
            lag.add_metric(lv, sink.lag_points)
            lag_s.add_metric(lv, sink.lag_seconds)
        yield from (sent, sent_bytes, dead, retried, lag, lag_s)

        mqtt_labels = ["sink", "format"]
        connected = GaugeMetricFamily("mos_agent_mqtt_connected", "1 while the MQTT sink is connected to its broker",
                                      labels=mqtt_labels)
        published = CounterMetricFamily("mos_agent_mqtt_messages_published", "Messages an MQTT sink published",
                                        labels=mqtt_labels)
        births = CounterMetricFamily("mos_agent_sparkplug_births", "Sparkplug NBIRTH sequences published",
                                     labels=mqtt_labels)
        for sink in status.sinks:
            if sink.mqtt is not None:
                lv = [sink.name, sink.mqtt.format]
                connected.add_metric(lv, 1.0 if sink.mqtt.connected else 0.0)
                published.add_metric(lv, sink.mqtt.messages_published)
                births.add_metric(lv, sink.mqtt.births)
        yield from (connected, published, births)

        kpi = GaugeMetricFamily("mos_agent_kpi", "ISO 22400-2 KPIs per equipment and shift: the running shift "
                                                 "to date, the last complete figures of every other shift "
                                                 "(ratios in %, times in s, quantities in counts)",
                                labels=["equipment", "kpi", "shift"])
        for item in status.kpi:
            latest = {figures.shift: figures for figures in item.completed}
            if item.current is not None:
                latest[item.current.shift] = item.current
            for shift, figures in latest.items():
                for name, value in figures.kpi.items():
                    kpi.add_metric([item.equipment, name, shift], value)
        yield kpi
        if status.kpi:
            engine = status.kpi_engine
            yield CounterMetricFamily("mos_agent_kpi_records", "KPI records written to the buffer",
                                      value=engine.records_emitted)
            yield CounterMetricFamily("mos_agent_kpi_engine_cpu_seconds", "CPU time of the KPI engine",
                                      value=engine.cpu_seconds)


class HealthServer:
    def __init__(self, source: StatusSource, address: str, request_timeout: float = REQUEST_TIMEOUT, *,
                 values_source: ValuesSource | None = None, token: str | None = None) -> None:
        self.source = source
        self.request_timeout = request_timeout
        host, _, port = address.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self.values = ValuesView(values_source) if values_source is not None else None
        self._token = token.encode() if token else None
        self.registry = CollectorRegistry()
        self.registry.register(StatusCollector(source))
        self.commit_size = Histogram("mos_agent_commit_points", "Points per buffer commit",
                                     buckets=(10, 100, 1_000, 10_000, 100_000, 1_000_000),
                                     registry=self.registry)
        self.read_latency = Histogram("mos_agent_read_latency_seconds",
                                      "Device read round trip (poll drivers)", ["device"],
                                      registry=self.registry)
        self.send_latency = Histogram("mos_agent_send_latency_seconds", "Sink write duration", ["sink"],
                                      registry=self.registry)
        self._runner: web.AppRunner | None = None

    def observe_commit(self, points: int) -> None:
        self.commit_size.observe(points)

    def read_observer(self, device: str) -> Callable[[float], None]:
        """Records one read round trip of ``device`` (its histogram child looked up once, not per
        read)."""
        return self.read_latency.labels(device).observe

    def observe_send(self, sink: str, seconds: float) -> None:
        self.send_latency.labels(sink).observe(seconds)

    async def start(self) -> None:
        app = web.Application(middlewares=[self._authorise] if self._token else [])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/status", self._status)
        app.router.add_get("/values", self._values)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._page)
        app.router.add_get("/devices/{name}", self._page)
        app.router.add_get("/assets/{name}", self._asset)
        # keepalive_timeout runs from the connection's start until a request is complete, and
        # again after each response: it is the header timeout as well as the idle timeout
        self._runner = web.AppRunner(app, access_log=None, keepalive_timeout=self.request_timeout)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        log.info("health on http://%s:%d (status page at /, /healthz /status /values /metrics)%s", self.host,
                 self.port, "; a bearer token is required for all but /healthz" if self._token else "")

    async def stop(self) -> None:
        if self.values is not None:
            self.values.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _authorise(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every data endpoint asks for the bearer token (compared in constant time)."""
        path = request.path
        if path.startswith(OPEN_PATHS) or path == "/" or path.startswith("/devices/"):
            return await handler(request)
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        assert self._token is not None
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), self._token):
            return web.json_response({"error": "a bearer token is required (agent.health_token_file)"},
                                     status=401, headers={"WWW-Authenticate": 'Bearer realm="mos-agent"'})
        return await handler(request)

    async def _healthz(self, request: web.Request) -> web.Response:
        ok, reasons = self.source.health()
        if ok:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="".join(f"{r}\n" for r in reasons))

    async def _status(self, request: web.Request) -> web.Response:
        started = time.thread_time()
        return _timed(web.json_response(self.source.status().to_dict()), started)

    async def _values(self, request: web.Request) -> web.Response:
        started = time.thread_time()
        try:
            query = ValueQuery.from_params(request.query)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if self.values is None:
            return web.json_response({"time": None, "devices": {}})
        return _timed(web.json_response(self.values.values(query)), started)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _page(self, request: web.Request) -> web.Response:
        return self._asset_response("index.html")

    async def _asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in page.ASSETS or name == "index.html":
            raise web.HTTPNotFound()
        return self._asset_response(name)

    def _asset_response(self, name: str) -> web.Response:
        body, content_type = page.asset(name)
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=PAGE_HEADERS)


def _timed(response: web.Response, started: float) -> web.Response:
    """``Server-Timing: cpu;dur=<ms>``: the CPU the event loop spent making this answer (the
    report and its JSON), so what the page costs the agent can be measured from outside."""
    response.headers["Server-Timing"] = f"cpu;dur={(time.thread_time() - started) * 1000:.3f}"
    return response
