"""Helpers for the MQTT driver tests: a publisher on the real Mosquitto, the driver running in the
test's event loop with an emit that records every batch (and runs, or withholds, the commit
callbacks that acknowledge messages), and a small test CA for TLS."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from drivers.mqtt import MqttDriver
from drivers.mqtt.config import MqttDevice
from mos_agent.batch import ReadingBatch
from mos_agent.config.models import AgentSection
from mos_agent.driver_api import DeviceState, DriverContext
from mos_agent.taxonomy import DEFAULT_STAGES, QUALITY_NAMES
from tests.support.waiting import wait_until_async

AGENT = AgentSection(id="gw-test", enterprise="acme", site="changwon")


def build_device(port: int, tags: list[dict], name: str = "env-sensors", **connection: Any) -> MqttDevice:
    data = {
        "name": name, "driver": "mqtt", "asset": {"area": "utilities", "line": "hvac"}, "stage": "utility",
        "poll_interval": "1s",
        "connection": {"host": "127.0.0.1", "port": port, **connection},
        "tags": tags,
    }
    return MqttDevice.model_validate(data, context={"stages": list(DEFAULT_STAGES)})


class Publisher:
    """A plain paho client publishing test messages; every publish waits for the broker's ack."""

    def __init__(self, port: int, client_id: str = "test-publisher", username: str | None = None,
                 password: str | None = None, **tls: Any) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        if username:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(**tls)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, topic: str, payload: Any, qos: int = 1, retain: bool = False) -> None:
        if not isinstance(payload, bytes | str):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(mosquitto) -> Iterator[Publisher]:
    pub = Publisher(mosquitto.port)
    try:
        yield pub
    finally:
        pub.close()


@pytest.fixture
def publisher_for() -> Iterator[Callable[..., Publisher]]:
    """Publishers to other brokers (TLS, passwords), closed at the end of the test."""
    made: list[Publisher] = []

    def make(port: int, client_id: str = "test-publisher", username: str | None = None,
             password: str | None = None, **tls: Any) -> Publisher:
        pub = Publisher(port, client_id, username=username, password=password, **tls)
        made.append(pub)
        return pub

    try:
        yield make
    finally:
        for pub in made:
            pub.close()


@pytest.fixture
def make_device() -> Callable[..., MqttDevice]:
    """make_device(port, tags, name=..., **connection) -> a validated MQTT device."""
    return build_device


@pytest.fixture
def agent_section() -> AgentSection:
    return AGENT


@dataclass
class Running:
    """A driver running in the test's loop. ``commit=False`` withholds the commit callbacks, as if
    the agent died before its buffer commit."""

    device: MqttDevice
    commit: bool = True
    agent: AgentSection = field(default_factory=lambda: AGENT)  # its state_dir: the driver's own files
    batches: list[ReadingBatch] = field(default_factory=list)
    ctx: DriverContext | None = None
    driver: MqttDriver | None = None
    task: asyncio.Task | None = None

    async def _emit(self, batch: ReadingBatch) -> None:
        self.batches.append(batch)
        if self.commit:
            for callback in batch.on_committed:
                callback()

    def start(self) -> Running:
        self.ctx = DriverContext(self.agent, self.device, self._emit)
        self.driver = MqttDriver(self.ctx)
        self.task = asyncio.create_task(self.driver.run())
        return self

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.driver is not None:
            # the network thread is gone once the disconnect went out
            client = self.driver._client
            deadline = time.monotonic() + 15
            while client is not None and client._thread is not None and client._thread.is_alive():
                assert time.monotonic() < deadline, "paho network thread did not stop"
                await asyncio.sleep(0.05)

    def readings(self) -> list[dict]:
        assert self.ctx is not None
        out = []
        for batch in self.batches:
            for row in range(len(batch)):
                spec = self.ctx.series.specs[int(batch.series[row])]
                text = (batch.texts or {}).get(row)
                value = float(batch.values[row])
                out.append({"tag": spec.tag, "asset": spec.asset_path,
                            "value": text if text is not None else (None if value != value else value),
                            "quality": QUALITY_NAMES[int(batch.quality[row])], "code": int(batch.codes[row]),
                            "time": int(batch.timestamps[row])})
        return out

    async def wait_running(self, timeout: float = 20.0) -> None:
        ctx = self.ctx
        assert ctx is not None
        await wait_until_async(lambda: ctx.status.state == DeviceState.RUNNING, timeout, "state running")
        # the subscription is sent right after CONNACK; give the broker a moment to register it
        await asyncio.sleep(0.3)


@pytest.fixture
async def run_driver(tmp_path: Path) -> AsyncIterator[Callable[..., Running]]:
    """start(device, commit=True): the driver running; every driver a test starts shares one
    state directory in the test's temp dir, as restarts of one agent do."""
    started: list[Running] = []
    agent = AGENT.model_copy(update={"state_dir": tmp_path / "state"})

    def start(device: MqttDevice, commit: bool = True) -> Running:
        running = Running(device, commit, agent).start()
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in started:
            await running.stop()


# ---------------------------------------------------------------- test CA


def _write_key(key: Any, path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))


def _certificate(subject_cn: str, key: Any, issuer: Any, issuer_key: Any, ca: bool,
                 san: list[Any] | None = None) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    builder = (x509.CertificateBuilder()
               .subject_name(name)
               .issuer_name(issuer.subject if issuer is not None else name)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())


@dataclass
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: the broker must be rejected with it


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    d = tmp_path / "pki"
    d.mkdir()

    def key() -> Any:
        return ec.generate_private_key(ec.SECP256R1())

    def pem(cert: Any, path: Path) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key = key()
    ca = _certificate("mos-agent test CA", ca_key, None, None, ca=True)
    server_key, client_key, other_key = key(), key(), key()
    server = _certificate("localhost", server_key, ca, ca_key, ca=False,
                          san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client = _certificate("mos-agent", client_key, ca, ca_key, ca=False)
    other = _certificate("unrelated CA", other_key, None, None, ca=True)
    _write_key(server_key, d / "server.key")
    _write_key(client_key, d / "client.key")
    return TlsFiles(pem(ca, d / "ca.pem"), pem(server, d / "server.pem"), d / "server.key",
                    pem(client, d / "client.pem"), d / "client.key", pem(other, d / "other-ca.pem"))
