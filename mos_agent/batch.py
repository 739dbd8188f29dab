"""The columnar batch every driver emits: one array per column, never one object per point."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mos_agent.taxonomy import Quality


def now_ns() -> int:
    return time.time_ns()


@dataclass(frozen=True, slots=True)
class SourceTimeWindow:
    """Source timestamps a driver believes: from ``earliest_ns`` to ``ahead_ns`` past the reading's
    arrival. Outside it (a clock never set, a year-9999 placeholder, epoch seconds read as
    nanoseconds) a reading keeps its value at its arrival time, flagged uncertain with code
    :attr:`CollectorCode.SOURCE_TIME_REPLACED`. The window also keeps every timestamp within the
    int64 nanoseconds of the time column (years 1678 to 2262)."""

    earliest_ns: int = 631_152_000 * 10**9  # 1990-01-01
    ahead_ns: int = 86_400 * 10**9  # a day

    def accepts(self, source_ns: int, arrival_ns: int) -> bool:
        return self.earliest_ns <= source_ns <= arrival_ns + self.ahead_ns


@dataclass(slots=True)
class ReadingBatch:
    """Readings of one device.

    ``series`` indexes the device's :class:`~mos_agent.series.SeriesTable`. ``values`` are raw
    source values as float64 (bools 0/1; NaN where there is no numeric value: bad reads and text
    readings). ``texts`` maps a row to its string value for string/enumeration tags.
    ``quality`` holds :class:`Quality` classes, ``codes`` the source's own quality code.
    ``on_committed`` runs once every row is durably in the buffer (MQTT acknowledges its
    messages there); it runs in the event loop thread and must not block.

    ``source_time`` marks the rows whose time the source gave (kept as it is); the others carry
    the agent's acquisition time, which the normaliser keeps strictly increasing per series at the
    stores' precision (in place, so a driver sees the times that were stored). None: no row has a
    source time.
    """

    series: np.ndarray  # int32
    values: np.ndarray  # float64
    timestamps: np.ndarray  # int64 nanoseconds since the epoch
    quality: np.ndarray  # uint8 Quality
    codes: np.ndarray  # int64 source quality code
    texts: dict[int, str] | None = None
    source_time: np.ndarray | None = None  # bool
    on_committed: list[Callable[[], None]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.series)

    @classmethod
    def build(
        cls,
        series: Sequence[int] | np.ndarray,
        values: Sequence[float] | np.ndarray | float,
        timestamps: Sequence[int] | np.ndarray | int,
        quality: Sequence[int] | np.ndarray | int = Quality.GOOD,
        codes: Sequence[int] | np.ndarray | int = 0,
        texts: dict[int, str] | None = None,
        source_time: Sequence[bool] | np.ndarray | bool | None = None,
    ) -> ReadingBatch:
        """Make a batch from sequences or scalars (a scalar is repeated for every row)."""
        series_arr = np.asarray(series, dtype=np.int32)
        n = len(series_arr)

        def column(data, dtype) -> np.ndarray:
            if np.isscalar(data):
                return np.full(n, data, dtype=dtype)
            arr = np.asarray(data, dtype=dtype)
            if len(arr) != n:
                raise ValueError(f"column of {len(arr)} rows in a batch of {n}")
            return arr

        return cls(
            series=series_arr,
            values=column(values, np.float64),
            timestamps=column(timestamps, np.int64),
            quality=column(quality, np.uint8),
            codes=column(codes, np.int64),
            texts=texts or None,
            source_time=None if source_time is None else column(source_time, np.bool_),
        )

    @classmethod
    def failed(cls, series: Sequence[int] | np.ndarray, code: int, timestamp_ns: int | None = None,
               quality: Quality = Quality.BAD) -> ReadingBatch:
        """Bad-quality readings for tags whose read failed: a failed read is a record, not silence."""
        return cls.build(series, np.nan, timestamp_ns if timestamp_ns is not None else now_ns(),
                         int(quality), code)

    def select(self, rows: np.ndarray) -> ReadingBatch:
        """The batch of the given row indexes (in that order), without commit callbacks."""
        texts = None
        if self.texts:
            texts = {new: self.texts[old] for new, old in enumerate(rows.tolist()) if old in self.texts} or None
        return ReadingBatch(self.series[rows], self.values[rows], self.timestamps[rows], self.quality[rows],
                            self.codes[rows], texts,
                            source_time=None if self.source_time is None else self.source_time[rows])

    @classmethod
    def concat(cls, batches: Sequence[ReadingBatch]) -> ReadingBatch:
        if len(batches) == 1:
            return batches[0]
        texts: dict[int, str] = {}
        offset = 0
        callbacks: list[Callable[[], None]] = []
        for b in batches:
            if b.texts:
                texts.update({row + offset: t for row, t in b.texts.items()})
            offset += len(b)
            callbacks.extend(b.on_committed)
        sourced = None
        if any(b.source_time is not None for b in batches):
            sourced = np.concatenate([b.source_time if b.source_time is not None else np.zeros(len(b), dtype=bool)
                                      for b in batches])
        return cls(
            series=np.concatenate([b.series for b in batches]),
            values=np.concatenate([b.values for b in batches]),
            timestamps=np.concatenate([b.timestamps for b in batches]),
            quality=np.concatenate([b.quality for b in batches]),
            codes=np.concatenate([b.codes for b in batches]),
            texts=texts or None,
            source_time=sourced,
            on_committed=callbacks,
        )
