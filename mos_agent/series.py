"""The series of one device: what each row index of a batch means.

A series is one tag at one asset path. Configured tags are registered in file order at start-up
(tag ``i`` of the device file is series ``i``); drivers that discover series at run time (MQTT topic
captures, OPC UA ``browse:``) add more through :meth:`SeriesTable.add`. Per-series parameters
(scale, offset, deadband, range) live in numpy arrays so a batch is normalised with vector
operations, and each series' line-protocol prefix per quality class is built once here, from
parts shared by every series of one asset and one stage/kind/unit (a device's tags differ mostly
in their names, so 100,000 tags cost 100,000 escaped names, not 900,000 escaped tags).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from mos_agent.lineprotocol import escape_tag, series_prefix
from mos_agent.taxonomy import ASSET_LEVELS, QUALITY_NAMES
from mos_agent.text import repaired


@dataclass(frozen=True, slots=True)
class SeriesSpec:
    asset: tuple[tuple[str, str], ...]  # ((level, name), ...) in ASSET_LEVELS order
    tag: str
    category: str
    kind: str
    stage: str
    unit: str | None = None
    data_type: str = "float"
    scale: float = 1.0
    offset: float = 0.0
    deadband: float = 0.0
    range: tuple[float, float] | None = None

    @property
    def asset_levels(self) -> dict[str, str]:
        return dict(self.asset)

    @property
    def asset_path(self) -> str:
        return "/".join(name for _, name in self.asset)

    @property
    def key(self) -> tuple[tuple[tuple[str, str], ...], str]:
        return (self.asset, self.tag)


# the asset levels a series' prefix names (the enterprise is the store's concern, not the series')
_PREFIX_LEVELS = ("site", "area", "line", "cell", "equipment")


def make_asset(levels: dict[str, str | None]) -> tuple[tuple[str, str], ...]:
    return tuple((k, levels[k]) for k in ASSET_LEVELS if levels.get(k))  # type: ignore[misc]


_INITIAL_ROWS = 64


@dataclass
class SeriesTable:
    specs: list[SeriesSpec] = field(default_factory=list)
    # prefixes[q][i] = "measurement,tags,quality=<q> " of series i for quality class q: one list a
    # class, so a block of consecutive series of one quality is a list slice when encoding
    prefixes: tuple[list[str], ...] = field(default_factory=lambda: tuple([] for _ in QUALITY_NAMES))
    _index: dict[tuple, int] = field(default_factory=dict)
    scale: np.ndarray = field(default_factory=lambda: np.ones(0))
    offset: np.ndarray = field(default_factory=lambda: np.zeros(0))
    deadband: np.ndarray = field(default_factory=lambda: np.zeros(0))
    range_low: np.ndarray = field(default_factory=lambda: np.zeros(0))
    range_high: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # state for deadband and change detection, and the latest values the status page shows: the
    # last value, quality class and code a series kept (within its deadband of the newest reading)
    last_value: np.ndarray = field(default_factory=lambda: np.zeros(0))
    last_quality: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    last_code: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    last_time: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    last_text: dict[int, str] = field(default_factory=dict)
    # how many series scale or shift their values, have a plausible range or a deadband: a device
    # with none skips that arithmetic
    transformed: int = 0
    ranged: int = 0
    deadbanded: int = 0
    # prefix parts shared by many series: "measurement,site=…,equipment=…" by (category, asset)
    # and ",stage=…,kind=…,unit=…,quality=" by (stage, kind, unit)
    _heads: dict[tuple, str] = field(default_factory=dict)
    _tails: dict[tuple, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.specs)

    def find(self, asset: tuple[tuple[str, str], ...], tag: str) -> int | None:
        return self._index.get((asset, tag))

    def add(self, spec: SeriesSpec) -> int:
        """Register a series (idempotent by asset path and tag name) and return its index."""
        return self.add_many([spec])[0]

    def add_many(self, specs: Iterable[SeriesSpec]) -> list[int]:
        """Register series (a device's configured tags at start-up, in one go: the arrays are
        filled a slice at a time, not an element at a time) and return their indices."""
        indices: list[int] = []
        fresh: list[SeriesSpec] = []
        middles: list[str] = []  # each fresh series' prefix up to its quality
        index = self._index
        for spec in specs:
            key = spec.key
            existing = index.get(key)
            if existing is None:
                existing = index[key] = len(self.specs) + len(fresh)
                fresh.append(spec)
                if spec.tag:
                    tag = escape_tag(spec.tag)
                    # repaired: a name taken from a device (a browse name in a legacy code page)
                    # must not make every reading of the series unencodable
                    middles.append(f"{self._head(spec)},tag={tag if tag.isascii() else repaired(tag)}"
                                   f"{self._tail(spec)}")
                else:
                    middles.append(self._head(spec) + self._tail(spec))
            indices.append(existing)
        if fresh:
            self.specs.extend(fresh)
            for by_series, quality in zip(self.prefixes, QUALITY_NAMES, strict=True):
                by_series.extend([f"{middle}{quality} " for middle in middles])
            self._fill(len(self.specs) - len(fresh), fresh)
        return indices

    def _fill(self, start: int, specs: list[SeriesSpec]) -> None:
        end = start + len(specs)
        if end > len(self.scale):
            # geometric: a table that grows to n series (MQTT discovery of a large namespace)
            # copies its arrays O(log n) times, not n / 64 times
            self._grow(max(_INITIAL_ROWS, 2 * len(self.scale), end))
        rows = slice(start, end)
        self.scale[rows] = [spec.scale for spec in specs]
        self.offset[rows] = [spec.offset for spec in specs]
        self.deadband[rows] = [spec.deadband for spec in specs]
        ranged = [spec.range for spec in specs if spec.range is not None]
        if ranged:
            self.range_low[rows] = [spec.range[0] if spec.range else -np.inf for spec in specs]
            self.range_high[rows] = [spec.range[1] if spec.range else np.inf for spec in specs]
        self.ranged += len(ranged)
        self.transformed += sum(spec.scale != 1.0 or spec.offset != 0.0 for spec in specs)
        self.deadbanded += sum(spec.deadband > 0 for spec in specs)

    def _head(self, spec: SeriesSpec) -> str:
        """``measurement,site=…,…,equipment=…`` — the same for every tag of a device (repaired
        like the tag name: a lone surrogate is replaced wherever it is)."""
        key = (spec.category, spec.asset)
        head = self._heads.get(key)
        if head is None:
            levels = spec.asset_levels
            head = repaired(series_prefix(spec.category, [(level, levels.get(level)) for level in _PREFIX_LEVELS])[:-1])
            self._heads[key] = head
        return head

    def _tail(self, spec: SeriesSpec) -> str:
        """``,stage=…,kind=…,unit=…,quality=`` (absent values left out, as line protocol wants)."""
        key = (spec.stage, spec.kind, spec.unit)
        tail = self._tails.get(key)
        if tail is None:
            parts = [f"{k}={escape_tag(v)}" for k, v in (("stage", spec.stage), ("kind", spec.kind),
                                                          ("unit", spec.unit)) if v]
            tail = repaired("".join(f",{part}" for part in parts) + ",quality=")
            self._tails[key] = tail
        return tail

    def _grow(self, capacity: int) -> None:
        def grown(arr: np.ndarray, fill) -> np.ndarray:
            new = np.full(capacity, fill, dtype=arr.dtype)
            new[: len(arr)] = arr
            return new

        self.scale = grown(self.scale, 1.0)
        self.offset = grown(self.offset, 0.0)
        self.deadband = grown(self.deadband, 0.0)
        self.range_low = grown(self.range_low, -np.inf)
        self.range_high = grown(self.range_high, np.inf)
        self.last_value = grown(self.last_value, np.nan)
        self.last_quality = grown(self.last_quality, -1)
        self.last_code = grown(self.last_code, 0)
        self.last_time = grown(self.last_time, 0)
