"""One wake-up of paho-mqtt's network thread for many queued packets — the only place the MQTT
driver touches paho's private state.

paho writes a byte to its wake-up socket pair (``Client._sockpairW``) for every packet queued from
another thread, so each ack of a batch costs a syscall and a thread switch: a third of the
driver's CPU per message. paho has no public way to queue several packets with one wake-up (its
public alternative, running the socket on our own event loop, would replace the whole client
loop). drivers/mqtt/tests/test_wakeup.py fails if a paho release moves or drops the pair; where a
client has no pair, the packets go out one wake-up each, as paho sends them by itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import paho.mqtt.client as mqtt

WAKEUP_PAIR = "_sockpairW"  # paho-mqtt 2.x: the write end of the network thread's wake-up pair


@contextlib.contextmanager
def one_wakeup(client: mqtt.Client) -> Iterator[None]:
    """Packets queued inside the block (from outside the network thread) wake it once, at the end."""
    pair = getattr(client, WAKEUP_PAIR, None)
    if pair is None:
        yield
        return
    setattr(client, WAKEUP_PAIR, None)
    try:
        yield
    finally:
        setattr(client, WAKEUP_PAIR, pair)
        with contextlib.suppress(OSError):
            pair.send(b"0")
