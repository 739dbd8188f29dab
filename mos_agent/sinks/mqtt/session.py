"""The MQTT connection of one sink, driven by one thread that owns the paho client.

Everything that goes on the wire is published from this thread, in order: births, data, deaths,
status. The sink's worker thread hands it a job (readings to publish) and waits; the job is done
when the broker has acknowledged every QoS 1 message of it (QoS 0 messages: when they were
written to the socket), and failed if the connection drops or ``ack_timeout`` passes first —
the runner then sends the same batch again, so nothing counts as sent that the broker did not
take.

Each connection uses a new paho client: messages of a lost connection are never sent again in
the next one (a Sparkplug host would see old sequence numbers after a new NBIRTH), the batch they
belonged to is sent again whole instead. ``clean_session`` is true, as Sparkplug requires.

The format (:class:`Publisher`) decides what is published: the will, subscriptions, what to send
once connected (UNS status; Sparkplug NBIRTH/DBIRTHs, possibly after the primary host is online),
how readings become messages, reactions to incoming messages (rebirth requests, host STATE) and a
farewell on an orderly close.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import select
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from mos_agent.config.models import MqttSinkConfig
from mos_agent.sinks.base import SinkAuthError, SinkError, SinkRetryable
from mos_agent.sinks.mqtt.messages import Message
from mos_agent.sinks.mqtt.rows import Readings
from mos_agent.status import MqttSinkStats

LOOP_TIMEOUT = 0.2  # longest wait for network events; a new job wakes the thread at once
TICK_INTERVAL = 1.0
RECONNECT_MIN_DELAY = 0.5
RECONNECT_MAX_DELAY = 10.0
FAREWELL_TIMEOUT = 3.0
MAX_INFLIGHT = 1000
# CONNACK reason codes that mean our credentials, not the network (MQTT 3.1.1 return codes 4
# and 5 as paho 2 names them)
_AUTH_REFUSED = frozenset((134, 135))


class Publisher(Protocol):
    """What a format publishes; called from the session thread only."""

    def will(self) -> Message:
        """The will of the next connection attempt."""

    def connect_sent(self) -> None:
        """The CONNECT carrying the last will went out."""

    def connected(self) -> None:
        """The broker accepted the connection whose will was made last."""

    def subscriptions(self) -> list[tuple[str, int]]: ...

    def on_connected(self) -> list[Message]:
        """Sent once the session is established (after the subscriptions)."""

    def on_message(self, topic: str, payload: bytes) -> tuple[list[Message], str | None]:
        """Messages to send in reaction, and a reason to drop the connection (or ``None``)."""

    def blocked(self) -> str | None:
        """Why data cannot be published now (``None``: it can)."""

    def encode(self, readings: Readings, historical: bool) -> list[Message]: ...

    def tick(self) -> list[Message]:
        """Called about once a second while connected."""

    def farewell(self) -> list[Message]:
        """Sent before an orderly disconnect."""

    def fill_status(self, stats: MqttSinkStats) -> None:
        """Add the format's own figures."""


@dataclass(eq=False)
class _Job:
    readings: Readings
    historical: bool
    done: threading.Event = field(default_factory=threading.Event)
    error: SinkError | None = None
    abandoned: bool = False


class MqttSession:
    def __init__(self, name: str, config: MqttSinkConfig, publisher: Publisher, client_id: str,
                 password: str | None, logger: logging.Logger | None = None) -> None:
        self.name = name
        self.config = config
        self.publisher = publisher
        self.client_id = client_id
        self._password = password
        self.log = logger or logging.getLogger("mos_agent.sinks.mqtt")
        self.host, self.port = config.host_port
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"mqtt:{name}", daemon=True)
        # a job wakes the session thread out of select() through this pair
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._client: paho.Client | None = None
        self._incoming: list[tuple[str, bytes]] = []
        self._connack: Any = None  # reason code of the last CONNACK, until handled
        self._lost = False
        self._established = False
        self._attempts = 0
        self._next_attempt = 0.0
        self.connected = False
        self.last_error: str | None = None
        self.auth_failed = False
        self.connections = 0
        self.messages_published = 0
        self.connected_since: float | None = None

    # ------------------------------------------------------------ the sink's side

    def start(self) -> None:
        self._thread.start()

    def publish(self, readings: Readings, historical: bool) -> None:
        """Publish and wait for the broker's acknowledgements; raises :class:`SinkRetryable` (or
        :class:`SinkAuthError`) when the batch may not have reached the broker."""
        job = _Job(readings, historical)
        self._jobs.put(job)
        with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending anyway
            self._wake_w.send(b"\0")
        if not job.done.wait(self.config.ack_timeout + 5.0):
            job.abandoned = True
            raise SinkRetryable(f"{self._where()}: no acknowledgement within {self.config.ack_timeout:g}s")
        if job.error is not None:
            raise job.error

    def close(self, timeout: float = FAREWELL_TIMEOUT + 2.0) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        if self._thread.is_alive():
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._wake_r.close()
            self._wake_w.close()

    def status(self) -> MqttSinkStats:
        stats = MqttSinkStats(broker=f"{self.host}:{self.port}", connected=self.connected,
                              connections=self.connections, messages_published=self.messages_published)
        self.publisher.fill_status(stats)
        return stats

    def _where(self) -> str:
        return f"mqtt broker {self.host}:{self.port}"

    # ------------------------------------------------------------ the session thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._serve()
            except Exception:
                self.log.exception("sink %s: MQTT session failed; reconnecting", self.name)
                self._drop("internal error", farewell=self._client is not None)
        self._farewell()

    def _serve(self) -> None:
        next_tick = 0.0
        while not self._stop.is_set():
            if self._client is None:
                self._fail_jobs()
                wait = self._next_attempt - time.monotonic()
                if wait > 0:
                    self._stop.wait(min(wait, LOOP_TIMEOUT * 4))
                    continue
                self._connect()
                continue
            if not self._pump(LOOP_TIMEOUT):
                continue
            now = time.monotonic()
            if self._established and now >= next_tick:
                next_tick = now + TICK_INTERVAL
                self._send(self.publisher.tick())
            self._serve_jobs()

    def _pump(self, timeout: float) -> bool:
        """Network I/O and the reactions it calls for; ``False`` if the connection is gone."""
        client = self._client
        assert client is not None
        rc = self._io(client, timeout)
        if self._connack is not None:
            self._on_connack(self._connack)
            self._connack = None
        if self._client is None:
            return False
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._lost:
            self._drop(paho.error_string(rc) if rc != MQTTErrorCode.MQTT_ERR_SUCCESS else "connection lost")
            return False
        while self._incoming and self._established:
            topic, payload = self._incoming.pop(0)
            messages, reason = self.publisher.on_message(topic, payload)
            self._send(messages)
            if reason is not None:
                self.log.warning("sink %s: %s; reconnecting", self.name, reason)
                self._drop(reason, farewell=True)
                return False
        return True

    def _io(self, client: paho.Client, timeout: float) -> MQTTErrorCode:
        """One round of network I/O through paho's external-loop API, waiting at most
        ``timeout`` for the socket or a wake-up."""
        sock = client.socket()
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        pending = bool(getattr(sock, "pending", lambda: 0)())  # TLS bytes already decrypted
        readable: list[Any] = [sock] if pending else []
        writable: list[Any] = []
        if not pending:
            try:
                readable, writable, _ = select.select([sock, self._wake_r], [sock] if client.want_write() else [],
                                                      [], timeout)
            except (OSError, ValueError):
                return MQTTErrorCode.MQTT_ERR_CONN_LOST
        if self._wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                self._wake_r.recv(4096)
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        if sock in readable:
            rc = client.loop_read()
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and (sock in writable or client.want_write()):
            rc = client.loop_write()
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            rc = client.loop_misc()
        return rc

    def _connect(self) -> None:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True,
                             reconnect_on_failure=False)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.max_queued_messages_set(0)
        client.connect_timeout = 10.0
        if self.config.username is not None:
            client.username_pw_set(self.config.username, self._password)
        tls = self.config.tls
        if self.config.tls_enabled:
            client.tls_set(ca_certs=str(tls.ca_file) if tls and tls.ca_file else None,
                           certfile=str(tls.cert_file) if tls and tls.cert_file else None,
                           keyfile=str(tls.key_file) if tls and tls.key_file else None,
                           cert_reqs=ssl.CERT_REQUIRED)
        will = self.publisher.will()
        client.will_set(will.topic, will.payload, will.qos, will.retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._lost = False
        self._established = False
        self._incoming.clear()
        try:
            client.connect(self.host, self.port, keepalive=int(self.config.keepalive))
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._schedule_reconnect(f"{type(exc).__name__}: {exc}")
            return
        self.publisher.connect_sent()
        self._client = client

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._connack = reason

    def _on_connack(self, reason: Any) -> None:
        client = self._client
        assert client is not None
        if reason.is_failure:
            self.auth_failed = reason.value in _AUTH_REFUSED
            self._drop(f"connection refused: {reason}", farewell=True)
            return
        self.auth_failed = False
        self.connected = True
        self.connected_since = time.time()
        self.connections += 1
        self._attempts = 0
        self.publisher.connected()
        for topic, qos in self.publisher.subscriptions():
            client.subscribe(topic, qos)
        self._established = True
        if self.connections == 1 or self.last_error is not None:
            self.log.info("sink %s: connected to %s", self.name, self._where())
        self.last_error = None
        self._send(self.publisher.on_connected())

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._lost = True

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._incoming.append((message.topic, bytes(message.payload)))

    def _send(self, messages: Sequence[Message]) -> list[paho.MQTTMessageInfo]:
        client = self._client
        if client is None or not messages:
            return []
        infos = [client.publish(m.topic, m.payload, m.qos, m.retain) for m in messages]
        self.messages_published += len(infos)
        return infos

    def _serve_jobs(self) -> None:
        while self._established:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job.abandoned:
                continue
            blocked = self.publisher.blocked()
            if blocked is not None:
                job.error = SinkRetryable(f"{self._where()}: {blocked}")
                job.done.set()
                continue
            try:
                messages = self.publisher.encode(job.readings, job.historical)
            except Exception as exc:
                # a bug, not the broker: the batch stays buffered, and the session starts over
                # (sequence numbers may have been used for messages never sent)
                job.error = SinkRetryable(f"cannot encode the batch: {type(exc).__name__}: {exc}")
                job.done.set()
                raise
            infos = self._send(messages)
            job.error = self._await_acks(infos)
            job.done.set()
            if self._client is None:
                return

    def _await_acks(self, infos: list[paho.MQTTMessageInfo]) -> SinkError | None:
        deadline = time.monotonic() + self.config.ack_timeout
        index = 0
        while index < len(infos):
            if infos[index].is_published():
                index += 1
                continue
            if time.monotonic() >= deadline:
                self._drop(f"no acknowledgement within {self.config.ack_timeout:g}s", farewell=True)
                return SinkRetryable(f"{self._where()}: {len(infos) - index} of {len(infos)} messages not "
                                     f"acknowledged within {self.config.ack_timeout:g}s")
            client = self._client
            if client is None or not self._pump(LOOP_TIMEOUT):
                return SinkRetryable(f"{self._where()}: connection lost with {len(infos) - index} of "
                                     f"{len(infos)} messages unacknowledged ({self.last_error})")
        return None

    def _fail_jobs(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            reason = self.last_error or "not connected"
            job.error = (SinkAuthError(f"{self._where()} refuses our credentials: {reason}")
                         if self.auth_failed else SinkRetryable(f"{self._where()}: {reason}"))
            job.done.set()

    def _drop(self, reason: str, *, farewell: bool = False) -> None:
        """Forget the connection and plan the next attempt. ``farewell``: the connection still
        works and we leave it on purpose, so say goodbye (Sparkplug: NDEATH) and DISCONNECT; a
        lost connection's socket is already closed."""
        if farewell:
            self._disconnect(self.publisher.farewell() if self._established else [])
        self._client = None
        if self.connected:
            self.log.warning("sink %s: disconnected from %s (%s); data stays buffered", self.name,
                             self._where(), reason)
        self.connected = False
        self._established = False
        self._schedule_reconnect(reason)

    def _schedule_reconnect(self, reason: str) -> None:
        if self.last_error is None:
            self.log.warning("sink %s: cannot reach %s (%s); retrying, data stays buffered", self.name,
                             self._where(), reason)
        self.last_error = reason
        self._attempts += 1
        ceiling = min(RECONNECT_MAX_DELAY, RECONNECT_MIN_DELAY * 2 ** min(self._attempts - 1, 10))
        self._next_attempt = time.monotonic() + random.uniform(ceiling / 2, ceiling)

    def _disconnect(self, farewell: Sequence[Message]) -> None:
        """Send ``farewell`` (waiting briefly for its acknowledgements), then DISCONNECT."""
        client = self._client
        if client is None:
            return
        infos = self._send(farewell)
        deadline = time.monotonic() + FAREWELL_TIMEOUT
        while any(not i.is_published() for i in infos) and time.monotonic() < deadline:
            if self._io(client, LOOP_TIMEOUT) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        client.disconnect()
        self._io(client, 0)

    def _farewell(self) -> None:
        self._fail_jobs()
        if self._client is not None and self._established:
            self._disconnect(self.publisher.farewell())
        elif self._client is not None:
            self._client.disconnect()
        self._client = None
        self.connected = False
        self._fail_jobs()
