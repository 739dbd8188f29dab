"""The one piece of paho-mqtt's private state the driver uses (drivers/mqtt/wakeup.py): these tests
fail loudly when a paho release moves or changes it, instead of the acks silently costing a
wake-up each again."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from drivers.mqtt.wakeup import WAKEUP_PAIR, one_wakeup
from mos_agent.localservers import Mosquitto
from tests.support.waiting import wait_until

UPGRADE = f"paho-mqtt changed Client.{WAKEUP_PAIR}: drivers/mqtt/wakeup.py needs another way"
MESSAGES = 20


class CountingPair:
    """paho's wake-up socket, counting what is written to it."""

    def __init__(self, pair: socket.socket) -> None:
        self.pair = pair
        self.writes = 0

    def send(self, data: bytes) -> int:
        self.writes += 1
        return self.pair.send(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.pair, name)


@pytest.fixture
def client(mosquitto: Mosquitto) -> Iterator[mqtt.Client]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="wakeup-test")
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    try:
        wait_until(client.is_connected, what="the connection")
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def _counting(client: mqtt.Client) -> CountingPair:
    pair = getattr(client, WAKEUP_PAIR, None)
    assert isinstance(pair, socket.socket), UPGRADE
    counting = CountingPair(pair)
    setattr(client, WAKEUP_PAIR, counting)
    return counting


def test_paho_wakes_its_network_thread_once_a_packet(client: mqtt.Client) -> None:
    counting = _counting(client)
    infos = [client.publish("wakeup/test", b"x", qos=1) for _ in range(MESSAGES)]
    for info in infos:
        info.wait_for_publish(10)
    assert counting.writes >= MESSAGES, UPGRADE  # else the adapter has nothing left to save


def test_packets_queued_inside_the_block_wake_it_once_and_still_go_out(client: mqtt.Client) -> None:
    counting = _counting(client)
    with one_wakeup(client):
        infos = [client.publish("wakeup/test", b"x", qos=1) for _ in range(MESSAGES)]
        assert getattr(client, WAKEUP_PAIR) is None
    assert getattr(client, WAKEUP_PAIR) is counting
    assert counting.writes == 1
    for info in infos:
        info.wait_for_publish(10)  # every packet reached the broker
        assert info.is_published()
