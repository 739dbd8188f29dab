"""The latest value of every series, with a short history, for the status page (``/values``).

Nothing here runs on the data path: the normaliser already keeps each series' last value, quality
class, code and time in the :class:`~mos_agent.series.SeriesTable` arrays (for the deadband), and
this view reads them when it is asked. The history behind the sparklines is sampled from those
arrays only while someone looks: each request takes a sample if the last one is
:data:`HISTORY_INTERVAL` old, so with the page open (it asks every 2 s) every series holds its last
:data:`HISTORY_SAMPLES` samples — a few minutes — in one float32 array a device, and nobody looking
costs nothing: no timer samples, and :data:`WATCH_WINDOW` after the last request the history is
dropped (one deferred call, not a periodic one).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from mos_agent.series import SeriesTable
from mos_agent.taxonomy import QUALITY_NAMES

HISTORY_SAMPLES = 60
HISTORY_INTERVAL = 5.0  # seconds between samples: 60 samples are the last 5 minutes
WATCH_WINDOW = 600.0  # history is kept while values were asked for within this time
DEFAULT_LIMIT = 50  # series a device in one answer, unless the request says otherwise
MAX_LIMIT = 5000
SIGNIFICANT_DIGITS = 6  # of a history sample (a sparkline needs no more; float32 holds ~7)


class ValuesSource(Protocol):
    """What the values view needs of the agent: each running device's series table."""

    def series_tables(self) -> Mapping[str, SeriesTable]:
        """Device name -> its series table (the live one the normaliser updates)."""
        ...


@dataclass(slots=True)
class ValueQuery:
    """Which series a request asks for; every part optional."""

    device: str | None = None
    text: str = ""  # part of a device or tag name, any case
    category: str = ""
    quality: str = ""  # good | uncertain | bad
    limit: int = DEFAULT_LIMIT  # series a device, the first ones in file order that match

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> ValueQuery:
        """From a request's query string; raises ValueError on a bad ``limit`` or ``quality``."""
        quality = params.get("quality", "")
        if quality and quality not in QUALITY_NAMES:
            raise ValueError(f"quality must be one of {', '.join(QUALITY_NAMES)}")
        raw_limit = params.get("limit", str(DEFAULT_LIMIT))
        if not raw_limit.isdigit():
            raise ValueError("limit must be a whole number")
        return cls(device=params.get("device") or None, text=params.get("q", "").strip().lower(),
                   category=params.get("category", ""), quality=quality,
                   limit=min(int(raw_limit), MAX_LIMIT))


class _DeviceHistory:
    """A ring of samples of one device's last values: ``values[series, slot]``, ``times[slot]``."""

    def __init__(self, table: SeriesTable) -> None:
        self.table = table
        self.values = np.full((len(table), HISTORY_SAMPLES), np.nan, dtype=np.float32)
        self.times = np.zeros(HISTORY_SAMPLES)
        self.count = 0  # samples taken; the next goes to slot count % HISTORY_SAMPLES

    def sample(self, now: float) -> None:
        n = len(self.table)
        if n > len(self.values):  # series discovered at run time
            grown = np.full((n, HISTORY_SAMPLES), np.nan, dtype=np.float32)
            grown[: len(self.values)] = self.values
            self.values = grown
        slot = self.count % HISTORY_SAMPLES
        self.values[:n, slot] = self.table.last_value[:n]
        self.times[slot] = now
        self.count += 1

    def order(self) -> np.ndarray:
        """Slots from the oldest sample to the newest."""
        if self.count <= HISTORY_SAMPLES:
            return np.arange(self.count)
        return (np.arange(HISTORY_SAMPLES) + self.count) % HISTORY_SAMPLES


class _TableIndex:
    """What filtering needs of a table, built once per table size: categories as an array, tag
    names in lower case."""

    def __init__(self, table: SeriesTable) -> None:
        self.size = len(table)
        self.categories = np.array([s.category for s in table.specs[: self.size]], dtype=object)
        self.tags = [s.tag.lower() for s in table.specs[: self.size]]


class ValuesView:
    def __init__(self, source: ValuesSource, clock: Callable[[], float] = time.time) -> None:
        self.source = source
        self.clock = clock
        self._history: dict[str, _DeviceHistory] = {}
        self._indexes: dict[str, tuple[SeriesTable, _TableIndex]] = {}
        self._last_sample = -math.inf
        self._last_request = -math.inf
        self._release: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ history

    def _watched(self, now: float) -> None:
        """A request came: sample if due, and make sure the history is dropped once nobody asks."""
        if now - self._last_request > WATCH_WINDOW:
            self._history.clear()  # a gap: old samples would draw a line across it
        self._last_request = now
        if now - self._last_sample >= HISTORY_INTERVAL:
            self._last_sample = now
            tables = self.source.series_tables()
            for name in [n for n in self._history if tables.get(n) is not self._history[n].table]:
                del self._history[name]  # device removed or restarted by a reload
            for name, table in tables.items():
                history = self._history.get(name)
                if history is None:
                    history = self._history[name] = _DeviceHistory(table)
                history.sample(now)
        if self._release is None:
            with contextlib.suppress(RuntimeError):  # used outside an event loop: never dropped
                self._release = asyncio.get_running_loop().call_later(WATCH_WINDOW, self._release_if_unwatched)

    def _release_if_unwatched(self) -> None:
        self._release = None
        idle = self.clock() - self._last_request
        if idle >= WATCH_WINDOW:
            self._history.clear()
            self._last_sample = -math.inf
        else:
            self._release = asyncio.get_running_loop().call_later(WATCH_WINDOW - idle, self._release_if_unwatched)

    def close(self) -> None:
        if self._release is not None:
            self._release.cancel()
            self._release = None

    # ------------------------------------------------------------ answering

    def values(self, query: ValueQuery) -> dict[str, Any]:
        """The ``/values`` JSON: per device the series that match (``total`` it has, ``matched``
        the query, the first ``limit`` of them shown), each with its latest value and history."""
        now = self.clock()
        self._watched(now)
        tables = self.source.series_tables()
        names = [query.device] if query.device else sorted(tables)
        devices: dict[str, Any] = {}
        for name in names:
            table = tables.get(name)
            if table is not None:
                devices[name] = self._device(name, table, query)
        return {"time": now, "devices": devices}

    def _index(self, name: str, table: SeriesTable) -> _TableIndex:
        cached = self._indexes.get(name)
        if cached is None or cached[0] is not table or cached[1].size != len(table):
            cached = self._indexes[name] = (table, _TableIndex(table))
        return cached[1]

    def _device(self, name: str, table: SeriesTable, query: ValueQuery) -> dict[str, Any]:
        n = len(table)
        index = self._index(name, table)
        mask = np.ones(n, dtype=bool)
        if query.category:
            mask &= index.categories == query.category
        if query.quality:
            mask &= table.last_quality[:n] == QUALITY_NAMES.index(query.quality)
        search = query.text.lower()
        if search and search not in name.lower():
            mask &= np.fromiter((search in tag for tag in index.tags), dtype=bool, count=n)
        chosen = np.flatnonzero(mask)
        shown = chosen[: query.limit]
        history = self._history.get(name)
        answer: dict[str, Any] = {"total": n, "matched": len(chosen), "history_time": [], "series": []}
        if history is not None and history.table is table:
            order = history.order()
            answer["history_time"] = [round(t, 3) for t in history.times[order].tolist()]
            samples = _rounded(history.values[shown][:, order]) if len(shown) else []
        else:
            samples = [[] for _ in shown]
        specs = table.specs
        values = table.last_value[shown].tolist()
        qualities = table.last_quality[shown].tolist()
        codes = table.last_code[shown].tolist()
        times = table.last_time[shown].tolist()
        texts = table.last_text
        series = answer["series"]
        for i, value, quality, code, reading_ns, spark in zip(shown.tolist(), values, qualities, codes, times,
                                                              samples, strict=True):
            spec = specs[i]
            text = texts.get(i)
            series.append({
                "tag": spec.tag, "category": spec.category, "stage": spec.stage, "kind": spec.kind,
                "unit": spec.unit, "value": None if value != value or text is not None else value,
                "text": text, "quality": QUALITY_NAMES[quality] if quality >= 0 else None,
                "quality_code": code, "time": reading_ns / 1e9 if reading_ns else None, "history": spark,
            })
        return answer


def _rounded(samples: np.ndarray) -> list[list[float | None]]:
    """float32 samples as JSON-ready rows: six significant digits (no float32 noise such as
    12.300000190734863 for 12.3), None where there was no value."""
    wide = samples.astype(np.float64)
    with np.errstate(all="ignore"):
        magnitude = np.nanmax(np.abs(wide), axis=1, initial=0.0, where=np.isfinite(wide))
        digits = SIGNIFICANT_DIGITS - np.ceil(np.log10(np.where(magnitude > 0, magnitude, 1.0)))
        scale = 10.0 ** np.clip(digits, -300, 300)[:, None]
        rounded = np.round(wide * scale) / scale
    return [[None if v != v else v for v in row] for row in rounded.tolist()]

