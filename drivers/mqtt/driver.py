"""MQTT driver: subscribes to the device's topics and turns messages into reading batches.

Threads: paho runs the connection on its own network thread, and messages are decoded there (see
:mod:`drivers.mqtt.decode`) into columns. Those columns are handed to the event loop as one
:class:`ReadingBatch` when enough messages have gathered or every ``FLUSH_INTERVAL``, and the
event loop emits them in order. ``ctx.emit`` waits while the buffer stage is full; while it waits
at most ``MAX_PENDING`` batches queue up, then the network thread stops reading the socket, so a
slow disk slows the broker down instead of growing memory.

Delivery: with QoS 1 and manual acknowledgement, a message is acknowledged to the broker only in
the batch's ``on_committed`` callback, which the pipeline runs after the readings are durably in
the buffer — also for messages that produced no reading (malformed ones), so the broker does not
redeliver them forever. A crash before the commit leaves the message unacknowledged and the
persistent session hands it over again on the next connection. Acknowledgements belonging to a
previous connection are dropped: the broker redelivers those messages on the new one.

Redelivery: a message the broker hands over again after its readings were committed (a crash
between commit and acknowledgement, or a reconnect) comes flagged DUP. Readings without a source
time would get a second arrival time and become second points; :mod:`drivers.mqtt.redelivery`
remembers the stored times of recent messages, and a redelivered one gets them back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import ssl
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from drivers.mqtt.config import MqttConnection, MqttDevice, SparkplugMetricTag, SparkplugSource
from drivers.mqtt.decode import Decoder, Rows, SeriesLimitReached
from drivers.mqtt.paths import minimal_filters
from drivers.mqtt.redelivery import RecentMessages, message_key
from drivers.mqtt.sparkplug import BirthFiles, SparkplugDecoder, sparkplug_filters
from drivers.mqtt.wakeup import one_wakeup
from mos_agent.batch import ReadingBatch
from mos_agent.config.loader import read_secret
from mos_agent.driver_api import DeviceState, Driver, DriverContext, series_spec_for
from mos_agent.series import SeriesSpec
from mos_agent.status import SparkplugInStats
from mos_agent.taxonomy import CollectorCode

FLUSH_INTERVAL = 0.05  # seconds a decoded message waits at most before it is handed over
FLUSH_MESSAGES = 2_000  # ... or this many messages
FLUSH_ROWS = 10_000  # ... or this many readings
MAX_PENDING = 4  # batches handed over but not yet emitted; then the network thread waits
STOP_ACK_GRACE = 5.0  # seconds a stopping driver stays connected to acknowledge committed batches
READ_MIN_WAIT, READ_MAX_WAIT = 5.0, 60.0
BIRTHS_SETTLE = 1.0  # seconds without another birth after which `read` has a node's births
RECENT_MESSAGES_FILE = "mqtt-recent-messages"
SPARKPLUG_BIRTHS_DIR = "sparkplug-births"


class _Closing(Exception):
    """The driver is stopping: the network thread abandons the message (it stays unacknowledged)."""


def tls_context(conn: MqttConnection) -> ssl.SSLContext:
    tls = conn.tls
    assert tls is not None
    context = ssl.create_default_context(cafile=str(tls.ca) if tls.ca else None)
    if tls.certificate is not None and tls.private_key is not None:
        password = None
        if tls.private_key_password_file is not None:
            password = read_secret(None, tls.private_key_password_file)
        context.load_cert_chain(str(tls.certificate), str(tls.private_key), password=password)
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def make_client(device: MqttDevice, client_id: str, clean: bool, manual_ack: bool) -> tuple[mqtt.Client, dict]:
    """A configured paho client and the keyword arguments for its ``connect_async``."""
    conn = device.connection
    v5 = conn.protocol == "5"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=None if v5 else clean,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        manual_ack=manual_ack,
    )
    client.connect_timeout = conn.connect_timeout
    client.reconnect_delay_set(1, 30)
    if conn.tls is not None:
        client.tls_set_context(tls_context(conn))
    if conn.username:
        client.username_pw_set(conn.username, conn.read_password())
    connect: dict[str, Any] = {"host": conn.host, "port": conn.effective_port, "keepalive": max(1, int(conn.keepalive))}
    if v5:
        props = Properties(PacketTypes.CONNECT)
        # how many unacknowledged QoS 1 messages the broker may send; acks wait for the buffer commit
        props.ReceiveMaximum = conn.receive_maximum
        props.SessionExpiryInterval = 0 if clean else min(int(conn.session_expiry), 0xFFFFFFFE)
        connect["clean_start"] = clean
        connect["properties"] = props
    return client, connect


def subscriptions(device: MqttDevice, retain_handling: int) -> list[tuple[str, Any]]:
    """One subscription per distinct filter (captures subscribe as '+'); a filter another one
    covers is left out so a message is not delivered twice. Sparkplug: the births, data and
    deaths of the edge node(s) and their devices."""
    conn = device.connection
    if device.sparkplug is not None:
        filters = sparkplug_filters(device.sparkplug)
    else:
        filters = minimal_filters([tag.template.filter for tag in device.topic_tags])
    if conn.protocol == "5":
        # retainHandling 1: retained messages only for a new subscription, not again on every
        # reconnect of a persistent session
        return [(f, SubscribeOptions(qos=conn.qos, retainHandling=retain_handling)) for f in filters]
    return [(f, conn.qos) for f in filters]


def sp_topic_hint(source: SparkplugSource) -> str:
    if source.every_node:
        return f"any edge node of group {source.group_id} (each node seen publishing is asked for a rebirth)"
    return f"edge node {source.edge_node} of group {source.group_id} (a rebirth was requested)"


def newest_per_series(batch: ReadingBatch) -> ReadingBatch:
    """The newest reading of each series in ``batch`` (what ``read`` prints)."""
    newest: dict[int, int] = {}
    for row, series in enumerate(batch.series.tolist()):
        newest[series] = row
    return batch.select(np.array(sorted(newest.values()), dtype=np.int64))


def connect_error() -> str:
    """Why the connection failed: paho calls on_connect_fail inside its ``except OSError``
    block, so the exception is still at hand there."""
    exc = sys.exc_info()[1]
    return f": {exc}" if exc is not None else ""


def reason_text(reason: Any) -> str:
    return getattr(reason, "getName", lambda: str(reason))()


class MqttDriver(Driver):
    device_model = MqttDevice
    standard = "MQTT (OASIS Standard, ISO/IEC 20922)"
    standard_uri = "https://mqtt.org/mqtt-specification/"

    def __init__(self, ctx: DriverContext) -> None:
        super().__init__(ctx)
        assert isinstance(ctx.device, MqttDevice)
        self.device_config = ctx.device
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._client: mqtt.Client | None = None
        self._generation = 0  # successful connections so far; acks carry theirs
        self._refused: str | None = None  # the broker's reason when it refused the last CONNECT
        self._closing = False
        self._lock = threading.Lock()
        self._rows = Rows()
        self._acks: list[tuple[int, int, int]] = []  # (mid, qos, generation)
        self._handoff: asyncio.Queue | None = None
        self._permits = threading.BoundedSemaphore(MAX_PENDING)
        self._unacked_batches = 0
        self._disconnect_once = threading.Lock()
        self._disconnected = False
        self._decoder: Decoder | SparkplugDecoder
        if self.device_config.format == "sparkplug":
            ctx.status.sparkplug = SparkplugInStats()
            self._decoder = SparkplugDecoder(self.device_config, self._register_metric, self._send_command,
                                             ctx.status.sparkplug, window=ctx.agent.source_time.window(),
                                             source_names=ctx.status.source_names)
        else:
            self._decoder = Decoder(self.device_config, self._register, window=ctx.agent.source_time.window(),
                                    source_names=ctx.status.source_names)
        self._recent: RecentMessages | None = None  # with QoS 1 and a persistent session
        self._arrival_floor = 0  # no arrival time before this (see run)

    # ------------------------------------------------------------ validate / catalogue

    @classmethod
    def expected_points_per_second(cls, device: Any) -> float:
        """``poll_interval`` is, for MQTT, the interval sources are expected to publish at;
        ``expected_rate`` on a tag overrides it (useful when captures fan one tag out)."""
        return sum(tag.expected_rate or 1.0 / device.poll_interval for tag in device.tags)

    @classmethod
    def publishing_interval(cls, device: Any) -> float | None:
        return None if device.format == "sparkplug" else device.poll_interval  # Sparkplug: report by exception

    # ------------------------------------------------------------ series registration

    def _register(self, tag_index: int, overrides: dict[str, str]) -> int:
        """Adds a captured series."""
        tag = self.device_config.topic_tags[tag_index]
        return self._add_series(lambda: series_spec_for(self.ctx.agent, self.ctx.device, tag, overrides))

    def _register_metric(self, pattern: SparkplugMetricTag, overrides: dict[str, str], tag_name: str,
                         unit: str | None, data_type: str) -> int:
        """Adds the series of a Sparkplug metric learnt from a birth."""

        def spec() -> SeriesSpec:
            base = series_spec_for(self.ctx.agent, self.ctx.device, pattern, overrides, tag_name)  # type: ignore[arg-type]
            return dataclasses.replace(base, unit=unit, data_type=data_type)

        return self._add_series(spec)

    def _add_series(self, make_spec: Callable[[], SeriesSpec]) -> int:
        """The series of ``make_spec()``, added if new. The series table belongs to the event loop
        (the normaliser reads it there), so the network thread asks the loop to do it and waits."""
        ctx = self.ctx
        limit = self.device_config.connection.max_series

        def add() -> int:
            spec = make_spec()
            existing = ctx.series.find(spec.asset, spec.tag)
            if existing is not None:
                return existing
            if len(ctx.series) >= limit:
                raise SeriesLimitReached(f"device already has {len(ctx.series)} series (max_series {limit}); "
                                         f"{spec.tag} at {spec.asset_path} dropped")
            return ctx.series.add(spec)

        if self._loop is None or threading.get_ident() == self._loop_thread:
            return add()
        future: concurrent.futures.Future[int] = concurrent.futures.Future()

        def run_on_loop() -> None:
            try:
                future.set_result(add())
            except Exception as exc:
                future.set_exception(exc)

        try:
            self._loop.call_soon_threadsafe(run_on_loop)
        except RuntimeError as exc:  # loop closed
            raise _Closing() from exc
        while True:
            try:
                return future.result(timeout=0.2)
            except concurrent.futures.TimeoutError:
                if self._closing:
                    raise _Closing() from None

    # ------------------------------------------------------------ network thread

    def _call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing left to tell
                loop.call_soon_threadsafe(fn, *args)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        conn = self.device_config.connection
        if reason.is_failure:
            self._refused = (f"broker {conn.host}:{conn.effective_port} refused the connection: "
                             f"{reason_text(reason)}; retrying")
            self._call_soon(self.ctx.set_state, DeviceState.DOWN, self._refused)
            return
        self._refused = None
        self._generation += 1
        if self._closing:
            return
        # Subscribe on every connection: a broker may have lost the persistent session.
        client.subscribe(subscriptions(self.device_config, retain_handling=1))
        if isinstance(self._decoder, SparkplugDecoder):
            with self._lock:
                self._decoder.on_connected()
        self._call_soon(self._connected, getattr(flags, "session_present", False))

    def _send_command(self, topic: str, payload: bytes) -> None:
        """A Sparkplug command (a rebirth request) to an edge node: QoS 0, not retained, as the
        specification has NCMD."""
        client = self._client
        if client is not None and not self._closing:
            client.publish(topic, payload, qos=0)

    def _connected(self, session_present: bool) -> None:
        conn = self.device_config.connection
        self.ctx.log.info("device %s: connected to %s:%d (MQTT %s, session %s)", self.device_config.name,
                          conn.host, conn.effective_port, conn.protocol,
                          "resumed" if session_present else "new")
        self.ctx.set_state(DeviceState.RUNNING)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list, properties: Any) -> None:
        refused = [reason_text(r) for r in reasons if getattr(r, "is_failure", False)]
        if refused:
            message = f"broker refused {len(refused)} subscription(s): {', '.join(sorted(set(refused)))}"
            self._call_soon(self.ctx.report_error, "subscribe", message)
            self._call_soon(self.ctx.set_state, DeviceState.DEGRADED, message)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self._closing:
            client.disconnect()  # do not reconnect: a stopping driver must not take its session back
            return
        if self._refused is not None:
            return  # the refusal already says why; the socket closing after it adds nothing
        conn = self.device_config.connection
        self._call_soon(self.ctx.set_state, DeviceState.DOWN,
                        f"disconnected from {conn.host}:{conn.effective_port}: {reason_text(reason)}; reconnecting")

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        conn = self.device_config.connection
        self._call_soon(self.ctx.set_state, DeviceState.DOWN,
                        f"cannot connect to {conn.host}:{conn.effective_port}{connect_error()}; retrying")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._closing:
            return  # left unacknowledged: the broker redelivers it to the next run
        arrival = time.time_ns()
        if arrival < self._arrival_floor:
            arrival = self._arrival_floor
        generation = self._generation
        recent = self._recent if message.qos else None
        with self._lock:
            rows = self._rows
            first_row = len(rows)
            try:
                topic = message.topic
                payload = message.payload
                self._decoder.decode(topic, payload, arrival, rows)
                if recent is not None and len(rows) > first_row:
                    key = message_key(topic, payload, message.mid)
                    if message.dup:
                        times = recent.first_times(key)
                        if times is not None:
                            rows.restore_times(first_row, times)
                    rows.remembered.append((key, first_row, len(rows)))
            except _Closing:
                return
            except UnicodeDecodeError:
                rows.error("topic", "a message arrived with a topic that is not valid UTF-8")
            except Exception as exc:  # a bug must not kill paho's network thread nor block the session
                rows.error("internal", f"{type(exc).__name__}: {exc}")
            if message.qos:
                self._acks.append((message.mid, message.qos, generation))
            full = rows.messages >= FLUSH_MESSAGES or len(rows) >= FLUSH_ROWS
        if full:
            self._flush(from_loop=False)

    # ------------------------------------------------------------ hand-off

    def _take(self) -> tuple[Rows, list[tuple[int, int, int]]] | None:
        """Swap out what has been decoded (caller holds the lock)."""
        rows = self._rows
        if not rows.messages:
            return None
        acks = self._acks
        self._rows, self._acks = Rows(), []
        return rows, acks

    def _flush(self, from_loop: bool) -> None:
        """Hand the decoded rows to the event loop. The network thread waits for a permit (that is
        the back-pressure); the loop's ticker never blocks and simply tries again next tick."""
        if from_loop:
            if not self._permits.acquire(blocking=False):
                return
            if not self._lock.acquire(blocking=False):  # the network thread is decoding: it flushes itself
                self._permits.release()
                return
        else:
            while not self._permits.acquire(timeout=0.2):
                if self._closing:
                    return
            self._lock.acquire()
        try:
            taken = self._take()
        finally:
            self._lock.release()
        if taken is None:
            self._permits.release()
            return
        assert self._handoff is not None
        if from_loop:
            self._handoff.put_nowait(taken)
        else:
            self._call_soon(self._handoff.put_nowait, taken)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            if self._rows.messages:
                self._flush(from_loop=True)

    async def _consume(self) -> None:
        assert self._handoff is not None
        while True:
            rows, acks = await self._handoff.get()
            try:
                await self._emit(rows, acks)
            finally:
                self._permits.release()

    async def _emit(self, rows: Rows, acks: list[tuple[int, int, int]]) -> None:
        for kind, (count, message) in rows.errors.items():
            self.ctx.report_error(kind, message, count)
        batch = rows.to_batch()
        if acks:
            self._unacked_batches += 1
            batch.on_committed.append(partial(self._acknowledge, self._client, acks))
        await self.ctx.emit(batch)
        if self._recent is not None and rows.remembered:
            # before the commit (see ctx.emit): a crash at any point later finds these times
            self._recent.remember(rows.remembered, batch.timestamps, batch.source_time)
        if rows.redelivered:
            self.ctx.log.info("device %s: %d redelivered message(s) kept their first arrival time",
                              self.device_config.name, rows.redelivered)

    def _acknowledge(self, client: mqtt.Client | None, acks: list[tuple[int, int, int]]) -> None:
        """Runs in the event loop once the batch is in the buffer."""
        self._unacked_batches -= 1
        if client is not None and client is self._client and not self._disconnected:
            current = self._generation
            with one_wakeup(client):
                for mid, qos, generation in acks:
                    if generation == current:
                        client.ack(mid, qos)
        if self._closing and self._unacked_batches <= 0:
            self._disconnect()

    def _disconnect(self) -> None:
        """Send what is queued (acks), disconnect and stop the network thread. The join runs on a
        non-daemon thread so the process does not exit before the acks are on the wire."""
        with self._disconnect_once:
            if self._disconnected or self._client is None:
                return
            self._disconnected = True
        client = self._client
        client.disconnect()
        threading.Thread(target=client.loop_stop, name=f"mqtt-stop:{self.device_config.name}").start()

    # ------------------------------------------------------------ run

    async def run(self) -> None:
        device = self.device_config
        conn = device.connection
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._handoff = asyncio.Queue()
        client, connect = make_client(device, device.client_id(self.ctx.agent.id), clean=conn.clean_session,
                                      manual_ack=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        if isinstance(self._decoder, SparkplugDecoder) and conn.qos and not conn.clean_session:
            # the session keeps messages while the agent is away; the births name them on return
            self._decoder.births = BirthFiles(self.ctx.state_path(SPARKPLUG_BIRTHS_DIR))
            self._decoder.restore()
        if conn.qos and not conn.clean_session:
            self._recent = RecentMessages(self.ctx.state_path(RECENT_MESSAGES_FILE))
            # Times of a burst kept apart may run ahead of the clock; after a quick restart, new
            # arrivals start after the last stored one rather than on it.
            step = self.ctx.time_resolution_ns
            self._arrival_floor = (self._recent.latest_acquisition_time // step + 1) * step
        self.ctx.set_state(DeviceState.CONNECTING)
        client.connect_async(**connect)
        client.loop_start()
        tasks = [asyncio.create_task(self._consume(), name=f"mqtt-consume:{device.name}"),
                 asyncio.create_task(self._ticker(), name=f"mqtt-tick:{device.name}")]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._stop_gracefully()
            if self._recent is not None:
                self._recent.close()

    async def _stop_gracefully(self) -> None:
        """Stop taking messages, emit what was decoded, stay connected until those batches are
        committed (their acks sent) or ``STOP_ACK_GRACE`` passes, then disconnect. Anything not
        acknowledged comes back from the broker on the next start."""
        self._closing = True
        await asyncio.to_thread(self._lock.acquire)
        try:
            taken = self._take()
        finally:
            self._lock.release()
        leftovers = []
        assert self._handoff is not None
        while not self._handoff.empty():
            leftovers.append(self._handoff.get_nowait())
        if taken is not None:
            leftovers.append(taken)
        try:
            async with asyncio.timeout(STOP_ACK_GRACE):
                for rows, acks in leftovers:
                    await self._emit(rows, acks)
        except TimeoutError:
            self.ctx.log.warning("device %s: stopping before the last messages were handed over; the broker "
                                 "will deliver them again", self.device_config.name)
        if self._unacked_batches <= 0:
            self._disconnect()
        else:
            timer = threading.Timer(STOP_ACK_GRACE, self._disconnect)
            timer.daemon = True
            timer.start()

    # ------------------------------------------------------------ read once

    @contextlib.asynccontextmanager
    async def _read_session(self, on_message: Callable[..., None],
                            on_subscribe: Callable[..., None] | None = None
                            ) -> AsyncIterator[asyncio.AbstractEventLoop]:
        """A separate clean session for ``read`` (client id + ``-read``, so the agent's queued
        messages are not taken): connected and subscribed on entry (``ConnectionError`` if the
        broker refuses or does not answer), disconnected on exit."""
        device = self.device_config
        conn = device.connection
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._loop_thread = threading.get_ident()
        client, connect = make_client(device, device.client_id(self.ctx.agent.id) + "-read", clean=True,
                                      manual_ack=False)
        self._client = client
        connected = asyncio.Event()
        failure: list[str] = []

        def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
            if reason.is_failure:
                failure.append(f"broker {conn.host}:{conn.effective_port} refused the connection: "
                               f"{reason_text(reason)}")
            else:
                client.subscribe(subscriptions(device, retain_handling=0))
            self._call_soon(connected.set)

        def on_connect_fail(client: mqtt.Client, userdata: Any) -> None:
            failure.append(f"cannot connect to {conn.host}:{conn.effective_port}{connect_error()}")
            self._call_soon(connected.set)

        client.on_connect = on_connect
        client.on_connect_fail = on_connect_fail
        if on_subscribe is not None:
            client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.connect_async(**connect)
        client.loop_start()
        try:
            try:
                async with asyncio.timeout(conn.connect_timeout + 1.0):
                    await connected.wait()
            except TimeoutError:
                failure.append(f"no answer from {conn.host}:{conn.effective_port} within "
                               f"{conn.connect_timeout:g}s")
            if failure:
                raise ConnectionError(failure[0])
            yield loop
        finally:
            self._closing = True
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)

    async def read_once(self) -> ReadingBatch:
        """Subscribe with a separate clean session (client id + ``-read``, so the agent's queued
        messages are not taken), wait until every tag has a reading or ``max(2 × poll_interval,
        5 s)`` (at most 60 s) passes, and return the newest reading per series; tags that saw
        nothing are bad rows with code TIMEOUT. Retained messages count as readings. Sparkplug:
        see :meth:`_read_births`."""
        if isinstance(self._decoder, SparkplugDecoder):
            return await self._read_births(self._decoder)
        device = self.device_config
        seen: set[int] = set()
        rows = Rows()
        lock = threading.Lock()
        decoder = self._decoder
        assert isinstance(decoder, Decoder)

        def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
            with lock:
                before = len(rows)
                try:
                    decoder.decode(message.topic, message.payload, time.time_ns(), rows)
                except (_Closing, UnicodeDecodeError):
                    return
                if len(rows) > before:
                    seen.update(target.route.index for target in decoder.targets(message.topic, rows))

        async with self._read_session(on_message) as loop:
            wait = min(max(2 * device.poll_interval, READ_MIN_WAIT), READ_MAX_WAIT)
            deadline = loop.time() + wait
            while loop.time() < deadline and len(seen) < len(device.tags):
                await asyncio.sleep(0.05)
        with lock:
            for kind, (count, message) in rows.errors.items():
                self.ctx.report_error(kind, message, count)
            batch = rows.to_batch()
        result = newest_per_series(batch)
        missing = [i for i in range(len(device.tags)) if i not in seen]
        if missing:
            result = ReadingBatch.concat([result, ReadingBatch.failed(missing, CollectorCode.TIMEOUT)])
        return result

    async def _read_births(self, decoder: SparkplugDecoder) -> ReadingBatch:
        """Sparkplug: subscribe with a separate clean session, ask a named edge node for its
        births (any other node is asked when its data shows it exists), and return the values of
        the first births: those that arrive until ``BIRTHS_SETTLE`` passes without another
        (DBIRTHs follow their NBIRTH), within ``max(2 × poll_interval, 5 s)`` (at most 60 s).
        Raises ``TimeoutError`` if no birth came."""
        device = self.device_config
        births: list[float] = []
        rows = Rows()

        def on_subscribe(client: mqtt.Client, userdata: Any, mid: int, reasons: list, properties: Any) -> None:
            with self._lock:
                decoder.on_connected()  # only once subscribed, or the answer could come first

        def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
            with self._lock:
                before = decoder.stats.births
                try:
                    decoder.decode(message.topic, message.payload, time.time_ns(), rows)
                except (_Closing, UnicodeDecodeError):
                    return
                if decoder.stats.births > before:
                    births.append(time.monotonic())

        wait = min(max(2 * device.poll_interval, READ_MIN_WAIT), READ_MAX_WAIT)
        async with self._read_session(on_message, on_subscribe) as loop:
            deadline = loop.time() + wait
            while loop.time() < deadline and not (births and time.monotonic() - births[-1] >= BIRTHS_SETTLE):
                await asyncio.sleep(0.05)
        if not births:
            source = device.sparkplug
            assert source is not None
            raise TimeoutError(f"no Sparkplug birth from {sp_topic_hint(source)} within {wait:g}s")
        with self._lock:
            for kind, (count, message) in rows.errors.items():
                self.ctx.report_error(kind, message, count)
            return newest_per_series(rows.to_batch())

