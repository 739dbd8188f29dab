"""End to end: the simulated Sparkplug B edge node → Mosquitto → `mos-agent run` (a
``format: sparkplug`` MQTT device) → buffer → VictoriaMetrics, with the series named from the
births; `mos-agent status` shows what was learnt and ignored; `mos-agent read` prints the births."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from drivers.mqtt.tests.test_e2e_kill9 import Agent, agent_command
from drivers.mqtt.tests.test_sparkplug import NODE_EQ, OVEN, PARTS, PRESS, TEMPERATURE, UPTIME
from mos_agent.localservers import free_port
from simulators.sparkplug_node import SparkplugConfig, SparkplugNode
from tests.support.servers import StoreReader

pytestmark = pytest.mark.slow
DATA_MESSAGES = 20


def write_config(tmp_path: Path, node: SparkplugNode, store_url: str, health: str) -> Path:
    devices = tmp_path / "devices"
    devices.mkdir()
    (devices / "node-7.yaml").write_text(yaml.safe_dump(node.device_file(), sort_keys=False))
    config = {"agent": {"id": "gw-e2e", "site": "changwon", "state_dir": str(tmp_path / "state"), "health": health},
              "devices": "devices/*.yaml",
              "sinks": [{"type": "influxdb", "url": store_url, "org": "e2e", "bucket": "e2e", "token": "t",
                         "flush_interval": "200ms", "precision": "ms"}]}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_edge_node_metrics_reach_the_store_named_from_the_births(tmp_path: Path, mosquitto, victoria) -> None:
    node = SparkplugNode(SparkplugConfig(port=mosquitto.port, devices=2, seed=3))
    health = f"127.0.0.1:{free_port()}"
    config = write_config(tmp_path, node, victoria.url, health)
    agent = Agent(config, tmp_path / "agent.log")
    agent.start()
    try:
        agent.wait_connected()
        node.connect()  # births (the agent's first rebirth request went out before the node was there)
        node.publish_data(DATA_MESSAGES)
        store = StoreReader(victoria.url)
        # per device: the birth's value and ten DDATA values of each of its five matched metrics
        expected = 2 * 5 * (1 + DATA_MESSAGES // 2) + 1  # + the node's Uptime
        assert store.wait_for_count(expected, '{__name__=~".+_value|.+_text"}', timeout=60) == expected
        series = store.export('{__name__="production_value"}')
        counts = {s["metric"]["equipment"]: s["values"] for s in series if s["metric"]["tag"] == PARTS}
        assert counts == {PRESS: [float(n) for n in range(1, 12)], OVEN: [float(n) for n in range(1, 12)]}
        temperature = store.export(f'{{__name__="process_value",tag="{TEMPERATURE}"}}')
        assert {s["metric"]["equipment"] for s in temperature} == {PRESS, OVEN}
        assert {s["metric"].get("unit") for s in temperature} == {"Cel"}  # from the births' unit property

        status = json.loads(subprocess.run([*agent_command(), "status", "-c", str(config), "--json"],
                                           capture_output=True, text=True, timeout=30, check=True).stdout)
        sparkplug = status["devices"][0]["sparkplug"]
        assert (sparkplug["edge_nodes_online"], sparkplug["births"], sparkplug["metrics"]) == (1, 3, 11)
        assert sparkplug["unmatched_examples"] == ["Vibration/RMS"]
        assert sparkplug["ignored_points"] == 2 + DATA_MESSAGES and sparkplug["dropped_points"] == 0

        # `read` asks the node for its births in a session of its own and prints them
        read = subprocess.run([*agent_command(), "read", "-c", str(config), "node-7", "--json"], capture_output=True,
                              text=True, timeout=90, check=True)
        rows = json.loads(read.stdout)
        assert {(r["asset"].rsplit("/", 1)[1], r["tag"]) for r in rows} >= {(PRESS, PARTS), (NODE_EQ, UPTIME)}
        assert node.stats.rebirths == 1
    finally:
        node.stop()
        assert agent.stop() == 0, agent.log.read_text()[-3000:]
