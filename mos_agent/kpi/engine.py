"""The KPI engine of the agent: fed with the normalised readings of devices that have a ``kpi:``
block, it keeps the accounting of each equipment and produces ``kpi`` records.

* Feeding is cheap and batch-wise: a device's feed looks its rows up in a small array indexed by
  series (which series is the state tag, which a counter); only those rows reach Python code.
* ``tick(now)`` (once a second from the agent) moves every equipment's time forward, closes
  shifts that ended (final records timestamped exactly at the shift's end), and every
  ``kpi.interval`` adds shift-to-date records timestamped ``now``. The records are line protocol
  (measurement ``kpi``) and go into the buffer through the agent's one writer, like readings.
* State (time elements, counter values, open shift, last complete shifts) is saved as one JSON
  document, written to a temporary file and renamed over ``kpi-state.json`` — never half
  written. The agent saves it only once the records of the same moment are committed to the
  buffer, so after a ``kill -9`` the saved state and the committed records agree: counter deltas
  after the saved values are counted once, by the next sample; time after the saved moment was
  not observed and is ``unknown``; a shift whose end passed while the agent was down is closed
  at the next start and its final record written then.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mos_agent.kpi.calendar import NS, ShiftCalendar, system_timezone
from mos_agent.kpi.equipment import CounterTrack, EquipmentKpi
from mos_agent.kpi.figures import KPI_NAMES, KPI_UNITS, TIME_CLASSES, UNKNOWN, ShiftFigures
from mos_agent.lineprotocol import series_prefix
from mos_agent.status import KpiEngineStats, KpiFigures, KpiStats
from mos_agent.taxonomy import Quality

if TYPE_CHECKING:
    from mos_agent.batch import ReadingBatch
    from mos_agent.config.models import AgentConfig, DeviceBase, DeviceKpi
    from mos_agent.normalise import NormalisedRows
    from mos_agent.series import SeriesTable

log = logging.getLogger("mos_agent.kpi")

KPI_MEASUREMENT = "kpi"
STATE_FILE = "kpi-state.json"
STATE_VERSION = 1
SAVE_INTERVAL_S = 10.0  # the state is saved at least this often (and at every emission)

# series roles in a device feed
_NONE, _STATE, _PRODUCED, _GOOD, _SCRAP = range(5)
_ROLE_NAMES = {_PRODUCED: "produced", _GOOD: "good", _SCRAP: "scrap"}
_BAD = int(Quality.BAD)


def calendar_from_config(config: AgentConfig) -> ShiftCalendar:
    return ShiftCalendar([s.rule() for s in config.shifts], config.agent.timezone or system_timezone())


def state_class_lookup(kpi: DeviceKpi) -> dict[float | str, int]:
    """Raw state value (number or text) → index into TIME_CLASSES."""
    lookup: dict[float | str, int] = {}
    for index, name in enumerate(TIME_CLASSES):
        for value in getattr(kpi.state.classes, name):
            lookup[value] = index
    return lookup


@dataclass
class KpiBatch:
    """Records ready for the buffer, and the state to save once they are committed."""

    body: bytes
    points: int
    state: bytes


@dataclass
class _Equipment:
    key: str  # asset path
    device: str
    labels: list[tuple[str, str | None]]  # site area line cell equipment stage
    accounting: EquipmentKpi
    latest: ShiftFigures | None = None
    prefixes: dict[tuple[str, str], str] = field(default_factory=dict)

    def prefix(self, shift: str, kpi: str) -> str:
        found = self.prefixes.get((shift, kpi))
        if found is None:
            found = series_prefix(KPI_MEASUREMENT, [*self.labels, ("shift", shift), ("tag", kpi),
                                                    ("unit", KPI_UNITS[kpi]), ("quality", "good")])
            self.prefixes[(shift, kpi)] = found
        return found

    @property
    def name(self) -> str:
        return dict(self.labels).get("equipment") or self.device


class DeviceFeed:
    """The KPI side of one device: which of its series matter and where their samples go."""

    def __init__(self, engine: KpiEngine, device: DeviceBase, table: SeriesTable) -> None:
        assert device.kpi is not None
        self.engine = engine
        self.device = device
        self.kpi = device.kpi
        self.table = table
        self.classes = state_class_lookup(device.kpi)
        self.roles = np.zeros(0, dtype=np.uint8)
        self.series_equipment: dict[int, tuple[_Equipment, CounterTrack | None]] = {}
        self._role_of_tag = {self.kpi.state.tag: _STATE, self.kpi.produced: _PRODUCED}
        if self.kpi.good:
            self._role_of_tag[self.kpi.good] = _GOOD
        if self.kpi.scrap:
            self._role_of_tag[self.kpi.scrap] = _SCRAP
        self._scan()

    def _scan(self) -> None:
        """Find the KPI tags among series registered since the last scan (drivers add series at
        run time: MQTT topic captures, OPC UA browse)."""
        table = self.table
        start = len(self.roles)
        roles = np.zeros(len(table), dtype=np.uint8)
        roles[:start] = self.roles
        for index in range(start, len(table)):
            spec = table.specs[index]
            role = self._role_of_tag.get(spec.tag, _NONE)
            if role == _NONE:
                continue
            roles[index] = role
            equipment = self.engine.equipment_for(self.device, spec.asset, spec.stage)
            acc = equipment.accounting
            if role != _STATE:
                track = CounterTrack.for_type(spec.data_type, spec.scale, spec.offset)
                counter = acc.install_counter(_ROLE_NAMES[role], track)
                self.series_equipment[index] = (equipment, counter)
            else:
                self.series_equipment[index] = (equipment, None)
        self.roles = roles

    def observe(self, batch: ReadingBatch, rows: NormalisedRows) -> None:
        started = time.thread_time()
        try:
            self._observe(batch, rows)
        finally:
            self.engine.cpu_seconds += time.thread_time() - started

    def _observe(self, batch: ReadingBatch, rows: NormalisedRows) -> None:
        if len(self.roles) != len(self.table):
            self._scan()
        idx = batch.series
        selected = self.roles.take(idx).nonzero()[0]
        if not len(selected):
            return
        # a few rows a batch: Python scalars from here on (numpy scalars cost more than they save)
        texts = batch.texts or {}
        engine = self.engine
        for row, series, t_ns, quality, value in zip(selected.tolist(), idx[selected].tolist(),
                                                     batch.timestamps[selected].tolist(),
                                                     rows.quality[selected].tolist(),
                                                     rows.values[selected].tolist(), strict=True):
            equipment, counter = self.series_equipment[series]
            if counter is None:
                state = self._state_class(value, texts.get(row)) if quality != _BAD else UNKNOWN
                finals = equipment.accounting.state_sample(t_ns, state)
            elif quality != _BAD and math.isfinite(value):
                finals = equipment.accounting.counter_sample(counter, t_ns, value)
            else:
                continue
            if finals:
                engine.finished(equipment, finals)

    def _state_class(self, value: float, text: str | None) -> int:
        if text is not None:
            found = self.classes.get(text)
            if found is not None:
                return found
            try:
                value = float(text)
            except ValueError:
                return UNKNOWN
        if value != value:
            return UNKNOWN
        return self.classes.get(value, UNKNOWN)


class KpiEngine:
    def __init__(self, config: AgentConfig, state_dir: Path, now_ns: int) -> None:
        self.config = config
        self.calendar = calendar_from_config(config)
        self.interval_ns = int(config.kpi.interval * NS)
        self.state_path = Path(state_dir) / STATE_FILE
        self.equipment: dict[str, _Equipment] = {}
        self.feeds: dict[str, DeviceFeed] = {}
        self._saved = self._load()
        self._finals: list[tuple[_Equipment, ShiftFigures]] = []
        self._next_emit = (now_ns // self.interval_ns + 1) * self.interval_ns
        self._next_save = now_ns + int(SAVE_INTERVAL_S * NS)
        self.records_emitted = 0
        self.cpu_seconds = 0.0  # CPU time spent in the engine (feeding and ticking), for its cost

    # ------------------------------------------------------------ set-up

    def attach(self, device: DeviceBase, table: SeriesTable) -> DeviceFeed | None:
        """The feed of a device with a ``kpi:`` block (None for others). Called when a device
        starts, again after a reload changed it."""
        if device.kpi is None:
            self.feeds.pop(device.name, None)
            return None
        feed = DeviceFeed(self, device, table)
        self.feeds[device.name] = feed
        return feed

    def equipment_for(self, device: DeviceBase, asset: tuple[tuple[str, str], ...], stage: str) -> _Equipment:
        levels = dict(asset)
        key = "/".join(name for _, name in asset)
        found = self.equipment.get(key)
        kpi = device.kpi
        assert kpi is not None
        if found is not None and found.device == device.name:
            found.accounting.ideal_cycle_s = kpi.ideal_cycle_time
            return found
        accounting = EquipmentKpi(self.calendar, kpi.ideal_cycle_time, CounterTrack())
        saved = self._saved.pop(key, None)
        if saved is not None:
            accounting.restore(saved)
            log.info("kpi %s: continuing the shift state saved by the previous run", key)
        labels = [(k, levels.get(k)) for k in ("site", "area", "line", "cell", "equipment")] + [("stage", stage)]
        equipment = _Equipment(key, device.name, labels, accounting)
        self.equipment[key] = equipment
        return equipment

    def retain(self, devices: Iterable[str]) -> None:
        """Forget the equipment and feeds of devices no longer configured with KPIs (reload)."""
        keep = set(devices)
        self.feeds = {name: feed for name, feed in self.feeds.items() if name in keep}
        self.equipment = {key: e for key, e in self.equipment.items() if e.device in keep}

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("kpi state %s unreadable (%s); starting the shifts' accounting afresh", self.state_path, exc)
            return {}
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            log.error("kpi state %s has an unknown format; starting the shifts' accounting afresh", self.state_path)
            return {}
        return dict(data.get("equipment", {}))

    # ------------------------------------------------------------ running

    def finished(self, equipment: _Equipment, finals: Sequence[ShiftFigures]) -> None:
        self._finals.extend((equipment, f) for f in finals)

    def tick(self, now_ns: int, save: bool = False) -> KpiBatch | None:
        """Move time to ``now``; records of closed shifts and, when due, shift-to-date records,
        with the state to save once they are committed (``save``: the state in any case).
        Returns None when nothing is to be written or saved."""
        started = time.thread_time()
        try:
            return self._tick(now_ns, save)
        finally:
            self.cpu_seconds += time.thread_time() - started

    def _tick(self, now_ns: int, save: bool) -> KpiBatch | None:
        for equipment in self.equipment.values():
            self.finished(equipment, equipment.accounting.advance(now_ns))
            equipment.latest = equipment.accounting.figures(now_ns)
        lines: list[str] = []
        finals, self._finals = self._finals, []
        for equipment, figures in finals:
            log.info("kpi %s: shift %s ended: %s", equipment.key, figures.shift, _summary(figures))
            lines.extend(self._lines(equipment, figures, figures.end_ns))
        emit = now_ns >= self._next_emit
        if emit:
            self._next_emit = (now_ns // self.interval_ns + 1) * self.interval_ns
            for equipment in self.equipment.values():
                if equipment.latest is not None:
                    lines.extend(self._lines(equipment, equipment.latest, now_ns))
        if not lines and not save and now_ns < self._next_save:
            return None
        self._next_save = now_ns + int(SAVE_INTERVAL_S * NS)
        self.records_emitted += len(lines)
        return KpiBatch("".join(lines).encode(), len(lines), self.snapshot(now_ns))

    def _lines(self, equipment: _Equipment, figures: ShiftFigures, t_ns: int) -> Iterable[str]:
        for kpi in KPI_NAMES:
            value = figures.values.get(kpi)
            if value is not None:
                yield f"{equipment.prefix(figures.shift, kpi)}value={float(value)!r} {t_ns}\n"

    def snapshot(self, now_ns: int) -> bytes:
        # equipment saved by the previous run and not seen yet (series an MQTT topic or OPC UA browse
        # adds later) keep their state
        equipment = {**self._saved, **{key: e.accounting.to_json() for key, e in self.equipment.items()}}
        data = {"version": STATE_VERSION, "saved_ns": now_ns, "equipment": equipment}
        return json.dumps(data, separators=(",", ":")).encode()

    def save(self, state: bytes) -> None:
        """Replace the state file atomically (write, fsync, rename)."""
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(state)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)

    # ------------------------------------------------------------ reporting

    def status(self) -> list[KpiStats]:
        return [KpiStats(equipment=e.name, asset=key, device=e.device, current=_figures_stats(e.latest),
                         last_complete=_figures_stats(e.accounting.last_complete),
                         completed=[f for f in (_figures_stats(c) for _, c in sorted(e.accounting.completed.items()))
                                    if f is not None])
                for key, e in sorted(self.equipment.items())]

    def engine_stats(self) -> KpiEngineStats:
        return KpiEngineStats(equipment=len(self.equipment), records_emitted=self.records_emitted,
                              cpu_seconds=round(self.cpu_seconds, 6))


def _figures_stats(figures: ShiftFigures | None) -> KpiFigures | None:
    if figures is None:
        return None
    return KpiFigures(shift=figures.shift, start=figures.start_ns / NS, end=figures.end_ns / NS,
                      at=figures.at_ns / NS, final=figures.final,
                      kpi={k: round(figures.values[k], 6) for k in KPI_NAMES if k in figures.values})


def _summary(figures: ShiftFigures) -> str:
    v = figures.values
    parts = [f"{name} {v[name]:.1f}%" for name in ("oee", "availability", "effectiveness", "quality_rate")
             if name in v]
    parts.append(f"PQ {v.get('pq', 0):.0f}")
    return ", ".join(parts)
