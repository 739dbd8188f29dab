"""The series of one device: what each row index of a batch means.

A series is one tag at one asset path. Configured tags are registered in file order at start-up
(tag ``i`` of the device file is series ``i``); drivers that discover series at run time (MQTT topic
captures, OPC UA ``browse:``) add more through :meth:`SeriesTable.add`. Per-series parameters
(scale, offset, deadband, range) live in numpy arrays so a batch is normalised with vector
operations, and each series' line-protocol prefix per quality class is built once here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mos_agent.lineprotocol import series_prefix
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


def make_asset(levels: dict[str, str | None]) -> tuple[tuple[str, str], ...]:
    return tuple((k, levels[k]) for k in ASSET_LEVELS if levels.get(k))  # type: ignore[misc]


_GROW = 64


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
    # state for deadband and change detection
    last_value: np.ndarray = field(default_factory=lambda: np.zeros(0))
    last_quality: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    last_time: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    last_text: dict[int, str] = field(default_factory=dict)
    # how many series scale or shift their values, have a plausible range or a deadband: a device
    # with none skips that arithmetic
    transformed: int = 0
    ranged: int = 0
    deadbanded: int = 0

    def __len__(self) -> int:
        return len(self.specs)

    def find(self, asset: tuple[tuple[str, str], ...], tag: str) -> int | None:
        return self._index.get((asset, tag))

    def add(self, spec: SeriesSpec) -> int:
        """Register a series (idempotent by asset path and tag name) and return its index."""
        existing = self._index.get(spec.key)
        if existing is not None:
            return existing
        idx = len(self.specs)
        self.specs.append(spec)
        self._index[spec.key] = idx
        levels = spec.asset_levels
        base = [
            ("site", levels.get("site")),
            ("area", levels.get("area")),
            ("line", levels.get("line")),
            ("cell", levels.get("cell")),
            ("equipment", levels.get("equipment")),
            ("tag", spec.tag),
            ("stage", spec.stage),
            ("kind", spec.kind),
            ("unit", spec.unit),
        ]
        for by_series, quality in zip(self.prefixes, QUALITY_NAMES, strict=True):
            # repaired: a name taken from a device (a browse name in a legacy code page) must not
            # make every reading of the series unencodable
            by_series.append(repaired(series_prefix(spec.category, [*base, ("quality", quality)])))
        if idx >= len(self.scale):
            self._grow(idx + _GROW)
        self.scale[idx] = spec.scale
        self.offset[idx] = spec.offset
        self.deadband[idx] = spec.deadband
        low, high = spec.range if spec.range else (-np.inf, np.inf)
        self.range_low[idx] = low
        self.range_high[idx] = high
        self.transformed += spec.scale != 1.0 or spec.offset != 0.0
        self.ranged += spec.range is not None
        self.deadbanded += spec.deadband > 0
        self.last_value[idx] = np.nan
        self.last_quality[idx] = -1
        return idx

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
        self.last_time = grown(self.last_time, 0)
