"""ISO 22400-2 work-unit KPIs of one shift (to date or final) from its time elements and
quantities.

Time elements are seconds of planned operating time (POT); quantities are counts. Ratios are in
percent; a ratio whose denominator is 0 is absent (not 0, not 100), and effectiveness above 100 %
is reported as it is: it says the ideal cycle time is set too long.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The state classes a device file maps raw values to, and the ISO 22400 time element each one
# accumulates. Order is the order of ShiftFigures.times.
TIME_CLASSES: tuple[str, ...] = ("planned_down", "production", "setup", "delay", "down")
TIME_ELEMENTS: tuple[str, ...] = ("pdot", "apt", "aust", "adet", "adot")
UNKNOWN = -1  # class index of "no usable state": no data, bad quality, unmapped value

RATIOS: tuple[str, ...] = ("oee", "availability", "effectiveness", "quality_rate")
TIMES: tuple[str, ...] = ("pot", "pdot", "pbt", "apt", "aust", "adet", "adot", "unknown")
QUANTITIES: tuple[str, ...] = ("pq", "gq", "sq")
KPI_NAMES: tuple[str, ...] = RATIOS + TIMES + QUANTITIES

# UCUM units in the store: percent for ratios, seconds for time elements, the unity "1" for
# counted quantities (UNECE C62, "one").
KPI_UNITS: dict[str, str] = {**dict.fromkeys(RATIOS, "%"), **dict.fromkeys(TIMES, "s"),
                             **dict.fromkeys(QUANTITIES, "1")}

KPI_DESCRIPTIONS: dict[str, str] = {
    "oee": "overall equipment effectiveness: availability × effectiveness × quality rate",
    "availability": "APT / PBT",
    "effectiveness": "PRI × PQ / APT (ideal cycle time × produced quantity over production time)",
    "quality_rate": "GQ / PQ",
    "pot": "planned operating time: shift time so far minus breaks",
    "pdot": "planned downtime",
    "pbt": "planned busy time: POT − PDOT",
    "apt": "actual production time",
    "aust": "actual unit setup time",
    "adet": "actual unit delay time",
    "adot": "actual unit down time",
    "unknown": "planned time without a usable state sample (no data, bad quality, unmapped value, agent down)",
    "pq": "produced quantity",
    "gq": "good quantity",
    "sq": "scrap quantity",
}


@dataclass(frozen=True, slots=True)
class ShiftFigures:
    """The KPIs of one equipment for one shift instance, as of ``at_ns``."""

    shift: str
    start_ns: int
    end_ns: int
    at_ns: int
    final: bool
    values: dict[str, float] = field(default_factory=dict)  # KPI name → value, ratios only when defined

    def to_json(self) -> dict:
        return {"shift": self.shift, "start_ns": self.start_ns, "end_ns": self.end_ns, "at_ns": self.at_ns,
                "final": self.final, "values": dict(self.values)}

    @classmethod
    def from_json(cls, data: dict) -> ShiftFigures:
        return cls(str(data["shift"]), int(data["start_ns"]), int(data["end_ns"]), int(data["at_ns"]),
                   bool(data["final"]), {str(k): float(v) for k, v in data["values"].items()})


def compute(pot_s: float, times_s: tuple[float, ...] | list[float], pq: float, good: float | None,
            scrap: float | None, ideal_cycle_s: float) -> dict[str, float]:
    """Every KPI from POT, the five time elements (in TIME_ELEMENTS order), PQ and either GQ or
    SQ (the other follows from PQ)."""
    pdot, apt, aust, adet, adot = times_s
    pbt = pot_s - pdot
    if good is not None:
        gq, sq = good, pq - good
    else:
        sq = scrap if scrap is not None else 0.0
        gq = pq - sq
    values: dict[str, float] = {
        "pot": pot_s, "pdot": pdot, "pbt": pbt, "apt": apt, "aust": aust, "adet": adet, "adot": adot,
        "unknown": max(0.0, pot_s - sum(times_s)), "pq": pq, "gq": gq, "sq": sq,
    }
    if pbt > 0:
        values["availability"] = 100.0 * apt / pbt
    if apt > 0:
        values["effectiveness"] = 100.0 * ideal_cycle_s * pq / apt
    if pq > 0:
        values["quality_rate"] = 100.0 * gq / pq
    if all(k in values for k in ("availability", "effectiveness", "quality_rate")):
        values["oee"] = values["availability"] * values["effectiveness"] * values["quality_rate"] / 10_000.0
    return values
