"""Shared fixtures: real Mosquitto and VictoriaMetrics on free loopback ports in temp dirs."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from mos_agent.testing import FaultProxy, Mosquitto, StoreReader, VictoriaMetrics, running

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


SPARKPLUG_JS = REPO / "tests" / "sparkplug_js"


class SparkplugJs:
    """Eclipse Tahu's JavaScript Sparkplug B codec (npm ``sparkplug-payload``) run by Node.js: an
    implementation independent of ours. 64-bit integers come back as decimal strings."""

    def __init__(self, node: str) -> None:
        self.node = node

    def _run(self, mode: str, items: Sequence[Any]) -> list[Any]:
        result = subprocess.run([self.node, str(SPARKPLUG_JS / "codec.js"), mode], input=json.dumps(items).encode(),
                                capture_output=True, timeout=60, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"codec.js {mode} failed: {result.stderr.decode()[-2000:]}")
        return json.loads(result.stdout)

    def decode(self, payloads: Sequence[bytes]) -> list[dict[str, Any]]:
        return self._run("decode", [base64.b64encode(p).decode() for p in payloads])

    def encode(self, payloads: Sequence[dict[str, Any]]) -> list[bytes]:
        return [base64.b64decode(b) for b in self._run("encode", payloads)]


@pytest.fixture(scope="session")
def sparkplug_js() -> SparkplugJs:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the independent Sparkplug decoder (npm sparkplug-payload) "
                    "cannot run")
    if not (SPARKPLUG_JS / "node_modules" / "sparkplug-payload").is_dir():
        # ./setup.sh test installs it; a run without it must not pass silently
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=SPARKPLUG_JS, check=True,
                       capture_output=True, timeout=600)
    return SparkplugJs(node)
