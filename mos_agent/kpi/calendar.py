"""The shift calendar: which planned shift (if any) holds a given instant, and how much of a time
span is planned operating time.

Shift rules are written as local wall-clock times in ``agent.timezone``; a rule whose end is not
after its start crosses midnight (``22:00``–``06:00``), and a rule with equal start and end is a
24-hour shift. ``days`` name the weekday on which a shift *starts*. Breaks are wall-clock spans
inside the shift; a break in a night shift may be after midnight. A shift instance is one
occurrence of a rule, fixed in UTC nanoseconds, so daylight-saving changes shorten or lengthen
that instance the way the clocks on the wall do.

This module knows nothing of configuration models, so the models can use it for their checks.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY = 86_400
WEEK = 7 * DAY
NS = 1_000_000_000

_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")


def parse_clock(text: str) -> int:
    """``"08:00"`` or ``"08:00:30"`` → seconds after midnight."""
    m = _CLOCK.match(text)
    if not m:
        raise ValueError(f"bad time of day {text!r}: expected HH:MM or HH:MM:SS, like \"08:00\"")
    hours, minutes, seconds = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ValueError(f"bad time of day {text!r}: hours 00-23, minutes and seconds 00-59")
    return hours * 3600 + minutes * 60 + seconds


def format_clock(seconds: int) -> str:
    hours, rest = divmod(seconds % DAY, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}" + (f":{secs:02d}" if secs else "")


def parse_span(text: str) -> tuple[int, int]:
    """``"12:00-13:00"`` → (start, end) in seconds after midnight."""
    start, sep, end = text.partition("-")
    if not sep:
        raise ValueError(f"bad break {text!r}: expected HH:MM-HH:MM, like \"12:00-13:00\"")
    return parse_clock(start), parse_clock(end)


def system_timezone() -> str:
    """The system's IANA time zone name (``TZ``, ``/etc/timezone``, the ``/etc/localtime`` link),
    or ``UTC`` when none can be found."""
    candidates: list[str] = []
    if os.environ.get("TZ"):
        candidates.append(os.environ["TZ"].removeprefix(":"))
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text().strip())
    try:
        target = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1].removeprefix("posix/").removeprefix("right/"))
    except OSError:
        pass
    for name in candidates:
        try:
            ZoneInfo(name)
            return name
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return "UTC"


@dataclass(frozen=True, slots=True)
class ShiftRule:
    """One configured shift: wall-clock start, length, breaks as offsets from the start."""

    name: str
    start: int  # seconds after local midnight
    length: int  # seconds, 1..86400
    breaks: tuple[tuple[int, int], ...]  # (offset, offset) from the start, sorted, inside the shift
    days: frozenset[int]  # weekdays (0 = Monday) on which the shift starts

    @classmethod
    def build(cls, name: str, start: int, end: int, breaks: Iterable[tuple[int, int]] = (),
              days: Iterable[str] | None = None) -> ShiftRule:
        """Raises ValueError for a break that is not inside the shift or overlaps another."""
        length = (end - start) % DAY or DAY
        offsets: list[tuple[int, int]] = []
        for b_start, b_end in breaks:
            first = (b_start - start) % DAY
            last = first + ((b_end - b_start) % DAY)
            if last == first or last > length:
                raise ValueError(f"break {format_clock(b_start)}-{format_clock(b_end)} is not inside the shift "
                                 f"{format_clock(start)}-{format_clock(end)}")
            offsets.append((first, last))
        offsets.sort()
        for (_, end_a), (start_b, _) in itertools.pairwise(offsets):
            if start_b < end_a:
                raise ValueError("breaks overlap each other")
        day_numbers = frozenset(range(7)) if not days else frozenset(WEEKDAYS.index(d) for d in days)
        return cls(name, start, length, tuple(offsets), day_numbers)

    def weekly_spans(self) -> list[tuple[int, int]]:
        """[start, end) in seconds after Monday 00:00, split at the end of the week."""
        spans: list[tuple[int, int]] = []
        for day in sorted(self.days):
            begin = day * DAY + self.start
            end = begin + self.length
            if end <= WEEK:
                spans.append((begin, end))
            else:
                spans.extend([(begin, WEEK), (0, end - WEEK)])
        return spans

    def describe(self) -> str:
        return f"{format_clock(self.start)}-{format_clock(self.start + self.length)}"


def overlapping_rules(rules: Sequence[ShiftRule]) -> list[tuple[int, int, int]]:
    """Pairs of rules whose planned times overlap on some weekday: ``(earlier index, later index,
    weekday of the overlap)``, each pair once. Wall-clock arithmetic (a daylight-saving night
    does not make two shifts overlap)."""
    found: list[tuple[int, int, int]] = []
    spans = [rule.weekly_spans() for rule in rules]
    for j in range(len(rules)):
        for i in range(j):
            overlap = next(((max(a0, b0) // DAY) for a0, a1 in spans[i] for b0, b1 in spans[j]
                            if max(a0, b0) < min(a1, b1)), None)
            if overlap is not None:
                found.append((i, j, overlap))
    return found


@dataclass(frozen=True, slots=True)
class ShiftInstance:
    """One occurrence of a shift, in UTC nanoseconds."""

    name: str
    start_ns: int
    end_ns: int
    breaks: tuple[tuple[int, int], ...] = ()  # absolute [start, end) nanoseconds

    def planned_ns(self, begin: int, end: int) -> int:
        """Nanoseconds of [begin, end) inside the shift and outside its breaks (planned operating
        time)."""
        begin = max(begin, self.start_ns)
        end = min(end, self.end_ns)
        if end <= begin:
            return 0
        planned = end - begin
        for b0, b1 in self.breaks:
            planned -= max(0, min(end, b1) - max(begin, b0))
        return planned

    def to_json(self) -> dict:
        return {"name": self.name, "start_ns": self.start_ns, "end_ns": self.end_ns,
                "breaks": [list(b) for b in self.breaks]}

    @classmethod
    def from_json(cls, data: dict) -> ShiftInstance:
        return cls(str(data["name"]), int(data["start_ns"]), int(data["end_ns"]),
                   tuple((int(a), int(b)) for a, b in data.get("breaks", ())))


class ShiftCalendar:
    """The configured shifts in one time zone; answers in UTC nanoseconds."""

    def __init__(self, rules: Sequence[ShiftRule], timezone: str) -> None:
        self.rules = list(rules)
        self.timezone = timezone
        self.zone = ZoneInfo(timezone)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def _instant(self, day: date, seconds: int) -> int:
        local = datetime.combine(day, time()) + timedelta(seconds=seconds)
        return int(local.replace(tzinfo=self.zone).timestamp()) * NS

    def _instance(self, rule: ShiftRule, day: date) -> ShiftInstance:
        start = self._instant(day, rule.start)
        end = self._instant(day, rule.start + rule.length)
        breaks = tuple((self._instant(day, rule.start + b0), self._instant(day, rule.start + b1))
                       for b0, b1 in rule.breaks)
        return ShiftInstance(rule.name, start, end, breaks)

    def _local_day(self, t_ns: int) -> date:
        return datetime.fromtimestamp(t_ns / NS, tz=self.zone).date()

    def instance_at(self, t_ns: int) -> ShiftInstance | None:
        """The shift instance with start <= t < end, if any."""
        today = self._local_day(t_ns)
        for day in (today - timedelta(days=1), today):
            for rule in self.rules:
                if day.weekday() in rule.days:
                    inst = self._instance(rule, day)
                    if inst.start_ns <= t_ns < inst.end_ns:
                        return inst
        return None

    def next_start_after(self, t_ns: int) -> int | None:
        """The earliest shift start strictly after ``t``, within the coming eight days."""
        today = self._local_day(t_ns)
        best: int | None = None
        for offset in range(-1, 9):
            day = today + timedelta(days=offset)
            for rule in self.rules:
                if day.weekday() in rule.days:
                    start = self._instance(rule, day).start_ns
                    if start > t_ns and (best is None or start < best):
                        best = start
            if best is not None and offset >= 1:
                break
        return best
