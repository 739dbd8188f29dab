"""Messages the broker may deliver again, remembered with the times their readings were stored.

A QoS 1 message comes again when its acknowledgement did not reach the broker: after a crash
between the buffer commit and the acknowledgement, or after a reconnect (acknowledgements of an
earlier connection are dropped). It comes flagged DUP, with its original packet id. A reading
without a source time would get a new arrival time and so become a second point in the store;
given the time its first delivery was stored with, it overwrites itself instead.

The last :data:`CAPACITY` readings of QoS 1 messages are kept by message key (topic, payload and
packet id) in a ring file of fixed-size records in the device's state directory, written right
after each batch is normalised, before its buffer commit — so a crash at any point finds what was
committed — and read back on start. The file is written through the page cache, not synced: it
survives ``kill -9``; after a power cut its last writes may be missing and those messages, if
redelivered, stored a second time.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np

# Readings remembered: 65,535 messages of up to two readings each — an MQTT session cannot have
# more unacknowledged messages than its 16-bit packet ids allow. 4 MiB on disk.
CAPACITY = 131_072
MAX_READINGS = 4_096  # readings of one message; larger messages (long arrays) are not remembered
# 32 bytes a reading; ``sourced``: the time came from the source, not the agent's clock
RECORD = np.dtype([("key", "V10"), ("sourced", "u1"), ("spare", "u1"), ("readings", "<u2"), ("reading", "<u2"),
                   ("sequence", "<u8"), ("time", "<i8")])

# (key, first row, end row) of a message's readings in a batch
Remembered = tuple[bytes, int, int]
_KEY = struct.Struct("<IIH")  # 10 bytes: CRC-32 of the topic and of the payload, packet id


def message_key(topic: str, payload: bytes | bytearray, packet_id: int) -> bytes:
    """What identifies a delivery: a message published again with the same content is a new
    reading, but it does not come flagged DUP with the same packet id. Two CRC-32s, not a
    cryptographic digest (half the cost a message): a false match needs a DUP message with the
    packet id and both checksums of another remembered one."""
    return _KEY.pack(zlib.crc32(topic.encode()), zlib.crc32(payload), packet_id)


class RecentMessages:
    """The ring of remembered readings and an index from message key to the slot of its first
    reading. An index entry whose slot was overwritten since is recognised by the key stored in
    the slot; the index is rebuilt from the ring when such entries make it twice the ring's size.
    :meth:`first_times` is called from paho's network thread, :meth:`remember` in the event loop."""

    def __init__(self, path: Path, capacity: int = CAPACITY) -> None:
        self.path = path
        self.capacity = capacity
        self._ring = np.zeros(capacity, dtype=RECORD)
        self._index: dict[bytes, int] = {}
        self._next_slot = 0
        self._sequence = 1  # 0 marks an empty slot
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        data = os.pread(self._fd, capacity * RECORD.itemsize, 0)
        whole = len(data) // RECORD.itemsize
        self._ring[:whole] = np.frombuffer(data[:whole * RECORD.itemsize], dtype=RECORD)
        if not self._plausible():  # not a file of ours, or damaged: start afresh rather than fail
            self._ring[:] = np.zeros(capacity, dtype=RECORD)
            os.ftruncate(self._fd, 0)
        used = self._ring["sequence"] != 0
        # the latest acquisition time stored: those of a burst may have been moved ahead of the clock
        acquired = used & (self._ring["sourced"] == 0)
        self.latest_acquisition_time = int(self._ring["time"][acquired].max()) if acquired.any() else 0
        if used.any():
            newest = int(np.argmax(self._ring["sequence"]))  # a newest message's first reading
            self._sequence = int(self._ring["sequence"][newest]) + 1
            self._next_slot = (newest + int(self._ring["readings"][newest])) % capacity
        self._reindex()

    def _plausible(self) -> bool:
        used = self._ring[self._ring["sequence"] != 0]
        return not bool(((used["readings"] == 0) | (used["readings"] > MAX_READINGS) | (used["sourced"] > 1)
                         | (used["reading"] >= used["readings"]) | (used["sequence"] >= 2**62)).any())

    def _reindex(self) -> None:
        firsts = np.flatnonzero((self._ring["reading"] == 0) & (self._ring["sequence"] != 0))
        order = np.argsort(self._ring["sequence"][firsts], kind="stable")  # a key seen twice: the newer
        firsts = firsts[order]
        self._index = dict(zip(self._ring["key"][firsts].tolist(), firsts.tolist(), strict=True))

    def first_times(self, key: bytes) -> tuple[int, ...] | None:
        """The stored times of a remembered message's readings, in the order it produced them;
        None if it is not remembered (or only in part: overwritten)."""
        slot = self._index.get(key)
        if slot is None:
            return None
        with self._lock:
            first = self._ring[slot]
            if first["key"].tobytes() != key or first["reading"] != 0:
                return None
            records = self._ring[(slot + np.arange(int(first["readings"]))) % self.capacity]
        if (records["sequence"] != first["sequence"]).any():
            return None
        return tuple(records["time"].tolist())

    def remember(self, messages: list[Remembered], times: np.ndarray, source_time: np.ndarray | None) -> None:
        """Record the messages of a batch with their readings' final ``times`` (the batch's
        timestamps after normalising) and which came from the source: one write to the ring
        file."""
        messages = [m for m in messages if 0 < m[2] - m[1] <= MAX_READINGS]
        counts = np.array([end - begin for _, begin, end in messages], dtype=np.int64)
        while counts.sum() > self.capacity:  # more than the ring holds: the newest messages
            counts, messages = counts[1:], messages[1:]
        if not messages:
            return
        total = int(counts.sum())
        begins = np.array([begin for _, begin, _ in messages], dtype=np.int64)
        keys = [key for key, _, _ in messages]
        sequences = np.arange(self._sequence, self._sequence + len(messages), dtype=np.uint64)
        records = np.empty(total, dtype=RECORD)
        if total == len(messages):  # a reading a message, the usual case
            rows = begins
            records["key"] = np.frombuffer(b"".join(keys), dtype="V10")
            records["readings"] = 1
            records["reading"] = 0
            records["sequence"] = sequences
            first_slots = (self._next_slot + np.arange(total)) % self.capacity
        else:
            offsets = np.cumsum(counts) - counts
            reading = np.arange(total) - np.repeat(offsets, counts)
            rows = np.repeat(begins, counts) + reading
            records["key"] = np.repeat(np.frombuffer(b"".join(keys), dtype="V10"), counts)
            records["readings"] = np.repeat(counts, counts)
            records["reading"] = reading
            records["sequence"] = np.repeat(sequences, counts)
            first_slots = (self._next_slot + offsets) % self.capacity
        records["time"] = times[rows]
        records["sourced"] = source_time[rows] if source_time is not None else 0
        records["spare"] = 0
        start = self._next_slot
        slots = (start + np.arange(total)) % self.capacity
        with self._lock:
            self._ring[slots] = records
        head = min(total, self.capacity - start)
        os.pwrite(self._fd, records[:head].tobytes(), start * RECORD.itemsize)
        if head < total:
            os.pwrite(self._fd, records[head:].tobytes(), 0)
        self._next_slot = (start + total) % self.capacity
        self._sequence += len(messages)
        self._index.update(zip(keys, first_slots.tolist(), strict=True))
        if len(self._index) > 2 * self.capacity:
            self._reindex()

    def close(self) -> None:
        os.close(self._fd)
