"""Shared fixtures for tests/ and drivers/*/tests: real Mosquitto and VictoriaMetrics on free
loopback ports in temp dirs, and a fault-injecting proxy. The helpers behind them are in
tests/support (not part of the package)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mos_agent.localservers import Mosquitto
from tests.support.mqtt import SPARKPLUG_JS, MqttRecorder, SparkplugJs
from tests.support.servers import FaultProxy, StoreReader, VictoriaMetrics, running

REPO = Path(__file__).resolve().parent


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    with running(VictoriaMetrics.start(tmp_path / "vm")) as server:
        yield server


@pytest.fixture
def store(victoria: VictoriaMetrics) -> StoreReader:
    return StoreReader(victoria.url)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    with running(Mosquitto.start(tmp_path / "mosquitto")) as server:
        yield server


@pytest.fixture
def store_proxy(victoria: VictoriaMetrics) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the store: ``cut()``, ``heal()``, ``delay``."""
    proxy = FaultProxy(victoria.port)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture(scope="session")
def sparkplug_js() -> SparkplugJs:
    """The independent Sparkplug B codec (npm sparkplug-payload under Node.js)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the independent Sparkplug decoder (npm sparkplug-payload) "
                    "cannot run")
    if not (SPARKPLUG_JS / "node_modules" / "sparkplug-payload").is_dir():
        # ./setup.sh test installs it; a run without it installs it here rather than pass silently
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=SPARKPLUG_JS, check=True,
                       capture_output=True, timeout=600)
    return SparkplugJs(node)


@pytest.fixture
def mqtt_recorder(mosquitto: Mosquitto) -> Iterator[Callable[..., MqttRecorder]]:
    """``mqtt_recorder(topic)`` subscribes on the test broker; closed at the end of the test."""
    recorders: list[MqttRecorder] = []

    def make(topic: str, qos: int = 1, client_id: str = "") -> MqttRecorder:
        recorders.append(MqttRecorder(mosquitto.port, topic, qos, client_id))
        return recorders[-1]

    yield make
    for recorder in recorders:
        recorder.close()
