"""Shared fixtures for tests/ and drivers/*/tests: real Mosquitto and VictoriaMetrics on free
loopback ports in temp dirs, and a fault-injecting proxy. The helpers behind them are in
tests/support (not part of the package)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mos_agent.localservers import Mosquitto
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
