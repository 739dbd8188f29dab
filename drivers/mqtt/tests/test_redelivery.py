"""Redelivered messages keep the times their first delivery was stored with: the memory of recent
messages on its own (ring, restart, overwrite), and the driver against a real Mosquitto handing
over again what was committed but not acknowledged."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from drivers.mqtt.redelivery import RECORD, RecentMessages, message_key
from tests.support.servers import FaultProxy
from tests.support.waiting import wait_until_async

PLAIN_TAGS = [{"name": "temperature", "topic": "acme/changwon/line-1/temperature", "unit": "Cel",
               "category": "environment"}]
TOPIC = "acme/changwon/line-1/temperature"


def keys(n: int) -> list[bytes]:
    return [message_key(TOPIC, b"21.5", packet_id) for packet_id in range(1, n + 1)]


def test_the_key_is_the_delivery_not_the_content() -> None:
    assert message_key(TOPIC, b"21.5", 7) == message_key(TOPIC, b"21.5", 7)
    assert len({message_key(TOPIC, b"21.5", 7), message_key(TOPIC, b"21.5", 8), message_key(TOPIC, b"21.6", 7),
                message_key(TOPIC + "x", b"21.5", 7)}) == 4


def test_times_are_remembered_across_a_restart(tmp_path: Path) -> None:
    k = keys(3)
    recent = RecentMessages(tmp_path / "recent", capacity=16)
    # three messages in a batch: one reading, two readings (a JSON object with two tags), one reading
    recent.remember([(k[0], 0, 1), (k[1], 1, 3), (k[2], 3, 4)], np.array([10, 20, 21, 30]), None)
    assert [recent.first_times(key) for key in k] == [(10,), (20, 21), (30,)]
    recent.close()
    assert (tmp_path / "recent").stat().st_size == 4 * RECORD.itemsize

    again = RecentMessages(tmp_path / "recent", capacity=16)
    try:
        assert [again.first_times(key) for key in k] == [(10,), (20, 21), (30,)]
        assert again.first_times(message_key(TOPIC, b"21.5", 99)) is None
        # remembering goes on after what was there
        more = [message_key(TOPIC, b"22.0", i) for i in range(1, 3)]
        again.remember([(more[0], 0, 1), (more[1], 1, 2)], np.array([40, 50]), None)
        assert [again.first_times(key) for key in [*k, *more]] == [(10,), (20, 21), (30,), (40,), (50,)]
    finally:
        again.close()


def test_the_ring_forgets_the_oldest_and_what_it_overwrote_in_part(tmp_path: Path) -> None:
    k = keys(5)
    recent = RecentMessages(tmp_path / "recent", capacity=5)
    recent.remember([(k[0], 0, 2), (k[1], 2, 4)], np.array([1, 2, 3, 4]), None)  # slots 0-1, 2-3
    recent.remember([(k[2], 0, 2)], np.array([5, 6]), None)  # slots 4, 0: the first reading of k[0] is gone
    assert recent.first_times(k[0]) is None
    assert recent.first_times(k[1]) == (3, 4)
    assert recent.first_times(k[2]) == (5, 6)
    recent.close()
    reopened = RecentMessages(tmp_path / "recent", capacity=5)
    try:
        assert [reopened.first_times(key) for key in k[:3]] == [None, (3, 4), (5, 6)]
        reopened.remember([(k[3], 0, 1)], np.array([7]), None)  # slot 1: k[0]'s leftover, then slot 2 next
        reopened.remember([(k[4], 0, 1)], np.array([8]), None)  # slot 2: overwrites k[1] in part
        assert [reopened.first_times(key) for key in k] == [None, None, (5, 6), (7,), (8,)]
    finally:
        reopened.close()


def test_a_file_that_is_not_a_ring_of_ours_is_started_afresh(tmp_path: Path) -> None:
    (tmp_path / "recent").write_bytes(bytes(range(256)) * 40)
    recent = RecentMessages(tmp_path / "recent", capacity=16)
    try:
        assert len(recent._index) == 0
        recent.remember([(keys(1)[0], 0, 1)], np.array([10]), None)
        assert recent.first_times(keys(1)[0]) == (10,)
    finally:
        recent.close()
    assert (tmp_path / "recent").stat().st_size == RECORD.itemsize


def test_the_latest_acquisition_time_survives_and_source_times_do_not_count(tmp_path: Path) -> None:
    k = keys(3)
    recent = RecentMessages(tmp_path / "recent", capacity=16)
    recent.remember([(k[0], 0, 1), (k[1], 1, 2), (k[2], 2, 3)], np.array([50, 90, 70]),
                    np.array([False, True, False]))  # 90 came from the source
    recent.close()
    again = RecentMessages(tmp_path / "recent", capacity=16)
    try:
        assert again.latest_acquisition_time == 70
    finally:
        again.close()


def test_the_index_stays_bounded_over_many_batches(tmp_path: Path) -> None:
    recent = RecentMessages(tmp_path / "recent", capacity=64)
    try:
        for batch in range(50):
            batch_keys = [message_key(TOPIC, b"%d" % (batch * 10 + i), i) for i in range(10)]
            recent.remember([(key, i, i + 1) for i, key in enumerate(batch_keys)], np.arange(10) + batch * 10, None)
            assert len(recent._index) <= 2 * 64
        assert recent.first_times(message_key(TOPIC, b"499", 9)) == (499,)
        assert recent.first_times(message_key(TOPIC, b"0", 0)) is None
    finally:
        recent.close()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_redelivered_message_gets_its_first_arrival_time(mosquitto, publisher, run_driver, make_device,
                                                                 monkeypatch, protocol: str) -> None:
    """Committed but never acknowledged (the agent died in between): the broker hands the messages
    over again, and each reading comes back with the time it was stored with. The same payload
    published anew afterwards is a new reading with a new time."""
    monkeypatch.setattr("drivers.mqtt.driver.STOP_ACK_GRACE", 1.0)  # no ack will go out: don't wait 5 s
    device = make_device(mosquitto.port, PLAIN_TAGS, protocol=protocol)
    crashed = run_driver(device, commit=False)
    await crashed.wait_running()
    for value in ("21.5", "21.5", "21.7"):  # no time field: arrival times
        publisher.send(TOPIC, value)
    await wait_until_async(lambda: len(crashed.readings()) == 3, what="3 readings")
    await crashed.stop()
    stored = sorted((r["time"], r["value"]) for r in crashed.readings())
    assert len({t for t, _ in stored}) == 3

    restarted = run_driver(device)
    await wait_until_async(lambda: len(restarted.readings()) >= 3, what="the redelivery")
    await restarted.wait_running()
    assert sorted((r["time"], r["value"]) for r in restarted.readings()) == stored
    publisher.send(TOPIC, "21.5")
    await wait_until_async(lambda: len(restarted.readings()) >= 4, what="a new message")
    new = restarted.readings()[3]
    assert new["value"] == 21.5 and new["time"] > stored[-1][0]
    assert len(restarted.readings()) == 4


async def test_messages_handed_over_again_after_a_reconnect_keep_their_time(mosquitto, publisher, run_driver,
                                                                            make_device) -> None:
    """The connection drops before the acknowledgements go out (those of the old connection are
    dropped): the broker hands the messages over again on the new one, in the same run."""
    proxy = FaultProxy(mosquitto.port)
    try:
        running = run_driver(make_device(proxy.port, PLAIN_TAGS), commit=False)
        await running.wait_running()
        for value in ("20.0", "20.5"):
            publisher.send(TOPIC, value)
        await wait_until_async(lambda: len(running.readings()) == 2, what="2 readings")
        proxy.drop_connections()
        await wait_until_async(lambda: len(running.readings()) >= 4, what="the messages again")
        first, again = running.readings()[:2], running.readings()[2:]
        assert [(r["time"], r["value"]) for r in again] == [(r["time"], r["value"]) for r in first]
    finally:
        proxy.close()


async def test_after_a_restart_arrival_times_start_after_the_last_stored_one(tmp_path: Path, mosquitto, publisher,
                                                                             run_driver, make_device) -> None:
    """A burst kept a millisecond apart ran ahead of the clock, then the agent died: a message
    arriving after the restart must not land on a time already stored."""
    device = make_device(mosquitto.port, PLAIN_TAGS)
    ahead = time.time_ns() + 30 * 10**9
    # what the run before left in the state directory run_driver gives the driver
    recent = RecentMessages(tmp_path / "state" / "devices" / device.name / "mqtt-recent-messages")
    recent.remember([(keys(1)[0], 0, 1)], np.array([ahead]), None)
    recent.close()
    running = run_driver(device)
    await running.wait_running()
    publisher.send(TOPIC, "21.5")
    await wait_until_async(lambda: len(running.readings()) == 1, what="a reading")
    assert running.readings()[0]["time"] > ahead


async def test_without_a_persistent_session_nothing_is_remembered(mosquitto, publisher, run_driver,
                                                                  make_device) -> None:
    device = make_device(mosquitto.port, PLAIN_TAGS, clean_session=True)
    running = run_driver(device)
    await running.wait_running()
    publisher.send(TOPIC, "21.5")
    await wait_until_async(lambda: len(running.readings()) == 1, what="a reading")
    assert running.driver._recent is None
    assert not (running.agent.state_dir / "devices" / device.name).exists()
