"""Accounting of one equipment: time elements from its state samples, quantities from its counter
deltas, within the shift instances of the calendar.

Time is attributed forward: a state sample's class holds from its time until the next sample (or
until the time the figures are taken), and only the part of that span that is planned operating
time of the open shift counts. ``accounted_ns`` is how far time has been attributed; planned time
not attributed to a class is ``unknown`` (no data, bad quality, unmapped value, the agent down).

Counters: a delta is credited to the shift open at the new sample's time. A decrease is a wrap
at the tag type's width when the previous value was in the top 10 % of the type's range, else a
reset (the counter restarted from 0; the new value is what was counted since). A delta whose
previous sample lies before the shift started is credited only when the two samples are close
(ordinary polling across the shift change); a longer gap spans time nobody observed (the agent
was down across a shift change) and is not credited to either shift.
"""

from __future__ import annotations

from dataclasses import dataclass

from mos_agent.kpi.calendar import NS, ShiftCalendar, ShiftInstance
from mos_agent.kpi.figures import TIME_ELEMENTS, UNKNOWN, ShiftFigures, compute

# Longest gap between two counter samples across a shift start that still counts as ordinary
# polling; longer gaps are unobserved time.
BOUNDARY_TOLERANCE_NS = 60 * NS

_INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "int16": (-(2**15), 2**16), "uint16": (0, 2**16),
    "int32": (-(2**31), 2**32), "uint32": (0, 2**32),
    "int64": (-(2**63), 2**64), "uint64": (0, 2**64),
}
INTEGER_TYPES = frozenset(_INTEGER_RANGES)


@dataclass
class CounterTrack:
    """One counter tag: its range (``low``, ``modulus``; None when the type's width is not
    known, e.g. an OPC UA or MQTT number), its last good value and what the open shift got."""

    low: float | None = None
    modulus: float | None = None
    last: float | None = None
    last_ns: int = 0
    total: float = 0.0

    @classmethod
    def for_type(cls, data_type: str, scale: float = 1.0, offset: float = 0.0) -> CounterTrack:
        """A counter of a tag type; the range is scaled like the values the normaliser hands on."""
        if data_type not in _INTEGER_RANGES:
            return cls()
        low, modulus = _INTEGER_RANGES[data_type]
        return cls(low=low * scale + offset, modulus=modulus * abs(scale))

    def delta(self, previous: float, value: float) -> float:
        if value >= previous:
            return value - previous
        if self.modulus is not None and self.low is not None and previous >= self.low + 0.9 * self.modulus:
            return value - previous + self.modulus  # wrapped past the top of the type
        return max(value, 0.0)  # reset: counted from 0 again

    def sample(self, t_ns: int, value: float, shift: ShiftInstance | None) -> None:
        previous, previous_ns = self.last, self.last_ns
        self.last, self.last_ns = value, t_ns
        if previous is None or shift is None or not shift.start_ns <= t_ns < shift.end_ns:
            return
        if previous_ns < shift.start_ns and t_ns - previous_ns > BOUNDARY_TOLERANCE_NS:
            return
        self.total += self.delta(previous, value)

    def to_json(self) -> dict:
        return {"last": self.last, "last_ns": self.last_ns, "total": self.total}

    def restore(self, data: dict) -> None:
        self.last = None if data.get("last") is None else float(data["last"])
        self.last_ns = int(data.get("last_ns", 0))
        self.total = float(data.get("total", 0.0))


class EquipmentKpi:
    """The running accounting of one equipment. Feed samples in time order (a late sample's time
    is taken as ``accounted_ns``); every call returns the shifts it completed."""

    def __init__(self, calendar: ShiftCalendar, ideal_cycle_s: float, produced: CounterTrack,
                 good: CounterTrack | None = None, scrap: CounterTrack | None = None) -> None:
        self.calendar = calendar
        self.ideal_cycle_s = ideal_cycle_s
        self.produced = produced
        self.good = good
        self.scrap = scrap
        self.shift: ShiftInstance | None = None
        self.times_ns = [0] * len(TIME_ELEMENTS)
        self.state_class = UNKNOWN
        self.accounted_ns = 0  # 0: nothing observed yet
        self.last_complete: ShiftFigures | None = None
        self.completed: dict[str, ShiftFigures] = {}  # the last complete instance of each shift name
        self._saved_counters: dict[str, dict] = {}  # restored before their tracks are installed

    def install_counter(self, role: str, track: CounterTrack) -> CounterTrack:
        """Set the track of ``role`` (produced, good, scrap). A running track keeps its values
        and takes the new range; a new one starts from saved state if there is any."""
        current: CounterTrack | None = getattr(self, role)
        if current is not None and (current.last is not None or current.total):
            current.low, current.modulus = track.low, track.modulus
            return current
        saved = self._saved_counters.pop(role, None)
        if saved is not None:
            track.restore(saved)
        setattr(self, role, track)
        return track

    @property
    def counters(self) -> list[CounterTrack]:
        return [c for c in (self.produced, self.good, self.scrap) if c is not None]

    # ------------------------------------------------------------ time

    def advance(self, t_ns: int) -> list[ShiftFigures]:
        """Attribute time up to ``t_ns`` to the current class; close and open shifts on the way."""
        if self.accounted_ns == 0:
            self.accounted_ns = t_ns
            self.shift = self.calendar.instance_at(t_ns)
            return []
        finals: list[ShiftFigures] = []
        while self.accounted_ns < t_ns:
            shift = self.shift
            if shift is not None:
                until = min(t_ns, shift.end_ns)
                if self.state_class != UNKNOWN:
                    self.times_ns[self.state_class] += shift.planned_ns(self.accounted_ns, until)
                self.accounted_ns = until
                if until >= shift.end_ns:
                    finals.append(self._close())
                continue
            if self._open(self.accounted_ns):
                continue
            upcoming = self.calendar.next_start_after(self.accounted_ns)
            self.accounted_ns = t_ns if upcoming is None else min(t_ns, upcoming)
        if self.shift is None:
            self._open(t_ns)  # exactly at a shift start: a sample at this instant counts in it
        return finals

    def _open(self, t_ns: int) -> bool:
        self.shift = self.calendar.instance_at(t_ns)
        if self.shift is None:
            return False
        self._reset()
        return True

    def _reset(self) -> None:
        self.times_ns = [0] * len(TIME_ELEMENTS)
        for counter in self.counters:
            counter.total = 0.0

    def _close(self) -> ShiftFigures:
        assert self.shift is not None
        final = self._figures(self.shift, self.shift.end_ns, final=True)
        self.last_complete = final
        self.completed[final.shift] = final
        self.shift = None
        self._reset()
        return final

    def state_sample(self, t_ns: int, state_class: int) -> list[ShiftFigures]:
        finals = self.advance(t_ns)
        self.state_class = state_class
        return finals

    def counter_sample(self, counter: CounterTrack, t_ns: int, value: float) -> list[ShiftFigures]:
        finals = self.advance(t_ns)
        counter.sample(max(t_ns, self.accounted_ns), value, self.shift)
        return finals

    # ------------------------------------------------------------ figures

    def figures(self, at_ns: int) -> ShiftFigures | None:
        """Shift-to-date figures of the open shift as of ``at_ns`` (after ``advance(at_ns)``)."""
        if self.shift is None:
            return None
        return self._figures(self.shift, max(at_ns, self.shift.start_ns), final=False)

    def _figures(self, shift: ShiftInstance, at_ns: int, final: bool) -> ShiftFigures:
        pot = shift.planned_ns(shift.start_ns, at_ns) / NS
        times = [t / NS for t in self.times_ns]
        values = compute(pot, times, self.produced.total, self.good.total if self.good else None,
                         self.scrap.total if self.scrap else None, self.ideal_cycle_s)
        return ShiftFigures(shift.name, shift.start_ns, shift.end_ns, at_ns, final, values)

    # ------------------------------------------------------------ persistence

    def to_json(self) -> dict:
        return {
            "shift": self.shift.to_json() if self.shift else None,
            "times_ns": list(self.times_ns),
            "accounted_ns": self.accounted_ns,
            "counters": {name: c.to_json() for name, c in
                         (("produced", self.produced), ("good", self.good), ("scrap", self.scrap)) if c is not None},
            "last_complete": self.last_complete.to_json() if self.last_complete else None,
            "completed": {name: f.to_json() for name, f in self.completed.items()},
        }

    def restore(self, data: dict) -> None:
        """Continue from a saved state. The state class is not restored: from the saved
        ``accounted_ns`` until the next state sample the agent did not observe the equipment."""
        self.shift = ShiftInstance.from_json(data["shift"]) if data.get("shift") else None
        times = [int(t) for t in data.get("times_ns", ())]
        self.times_ns = times if len(times) == len(TIME_ELEMENTS) else [0] * len(TIME_ELEMENTS)
        self.accounted_ns = int(data.get("accounted_ns", 0))
        self.state_class = UNKNOWN
        self._saved_counters = dict(data.get("counters", {}))
        for role in ("produced", "good", "scrap"):
            if getattr(self, role) is not None and role in self._saved_counters:
                getattr(self, role).restore(self._saved_counters.pop(role))
        self.last_complete = ShiftFigures.from_json(data["last_complete"]) if data.get("last_complete") else None
        self.completed = {name: ShiftFigures.from_json(f) for name, f in data.get("completed", {}).items()}
