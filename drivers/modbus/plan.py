"""Request planning, done once at start-up: which reads fetch which tags.

Tags are grouped by poll interval (a *poll group*), then by table; within a table they are sorted
by address and coalesced into as few requests as the protocol allows: a tag joins the current
request while the registers it would add stay within the per-request limit (125 registers, 2000
bits, or the connection's lower maximum) and the hole before it is at most ``max_gap`` registers
(``max_gap × 16`` bits for coils and discrete inputs: the same bytes on the wire). Reading a
few unused registers costs far less than another round trip.

Greedy left-to-right coalescing of address-sorted spans is optimal for this problem (each
request starts at the first tag not yet covered and extends as far as the limits allow).

Everything here is pure: a plan is data, printable with :meth:`Plan.describe` (the testcases/
folders compare that text).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from drivers.modbus.config import BIT_TABLES, TABLES, ModbusDevice

FUNCTION_CODES: dict[str, int] = {"co": 1, "di": 2, "hr": 3, "ir": 4}


@dataclass(frozen=True, slots=True)
class TagRef:
    """A tag as the planner and decoder see it."""

    index: int  # configured tag index == series index
    name: str
    table: str
    offset: int
    type: str
    width: int  # registers (hr/ir) or bits (co/di) the tag occupies
    bit: int | None = None  # bit within the register for "hr:5.3"
    byte_order: str = "big"
    word_order: str = "big"

    @property
    def end(self) -> int:
        """One past the last register (or bit) of the tag."""
        return self.offset + self.width


@dataclass(frozen=True, slots=True)
class Request:
    """One read: ``count`` registers or bits from ``start`` in ``table``, covering ``tags``."""

    table: str
    start: int
    count: int
    tags: tuple[TagRef, ...]

    @property
    def end(self) -> int:
        return self.start + self.count

    @property
    def function_code(self) -> int:
        return FUNCTION_CODES[self.table]

    @property
    def is_bits(self) -> bool:
        return self.table in BIT_TABLES

    def describe(self) -> str:
        unit = "bits" if self.is_bits else "registers"
        if self.count == 1:
            unit = unit[:-1]
        names = ", ".join(
            f"{t.name}@{t.offset}{f'.{t.bit}' if t.bit is not None else ''}" for t in self.tags)
        return f"{self.table} {self.start}..{self.end - 1} ({self.count} {unit}): {names}"


@dataclass(frozen=True, slots=True)
class PollGroup:
    interval: float  # seconds
    requests: tuple[Request, ...]

    @property
    def tags(self) -> tuple[TagRef, ...]:
        return tuple(t for r in self.requests for t in r.tags)


@dataclass(frozen=True, slots=True)
class Limits:
    max_registers: int = 125
    max_bits: int = 2000
    max_gap: int = 10

    def size_limit(self, table: str) -> int:
        return self.max_bits if table in BIT_TABLES else self.max_registers

    def gap_limit(self, table: str) -> int:
        return self.max_gap * 16 if table in BIT_TABLES else self.max_gap


@dataclass(frozen=True, slots=True)
class Plan:
    groups: tuple[PollGroup, ...]
    limits: Limits = field(default_factory=Limits)

    @property
    def request_count(self) -> int:
        return sum(len(g.requests) for g in self.groups)

    def describe(self) -> str:
        """Human-readable plan, one request a line under its poll group."""
        lines: list[str] = []
        for group in self.groups:
            n = len(group.requests)
            lines.append(f"every {format_interval(group.interval)}: {n} request{'s' if n != 1 else ''}")
            lines.extend(f"  {request.describe()}" for request in group.requests)
        return "\n".join(lines) + "\n"


def format_interval(seconds: float) -> str:
    if seconds < 1 and round(seconds * 1000, 6) == int(round(seconds * 1000, 6)):
        return f"{round(seconds * 1000)}ms"
    return f"{seconds:g}s"


def tag_refs(device: ModbusDevice) -> list[TagRef]:
    conn = device.connection
    # positional arguments: a frozen dataclass is built faster from them than from keywords
    # (100,000 times at start-up for 100,000 tags)
    return [
        TagRef(i, tag.name, (location := tag.location).table, location.offset, tag.value_type, tag.width,
               location.bit, tag.byte_order or conn.byte_order, tag.word_order or conn.word_order)
        for i, tag in enumerate(device.tags)
    ]


def limits_for(device: ModbusDevice) -> Limits:
    conn = device.connection
    return Limits(conn.max_registers_per_request, conn.max_bits_per_request, conn.max_gap)


def coalesce(tags: Iterable[TagRef], limits: Limits, barriers: Sequence[tuple[str, int, int]] = ()) -> list[Request]:
    """Tags of any tables → the fewest requests within ``limits``, in table then address order.

    ``barriers`` are ``(table, start, end)`` ranges a request must not span unless it reads a tag
    inside them: addresses known to answer with an exception (see the driver's isolation).
    """
    by_table: dict[str, list[TagRef]] = {}
    for tag in tags:
        by_table.setdefault(tag.table, []).append(tag)
    requests: list[Request] = []
    for table in TABLES:
        if table in by_table:
            fences = sorted((s, e) for t, s, e in barriers if t == table)
            requests.extend(_coalesce_table(table, by_table[table], limits, fences))
    return requests


def _coalesce_table(table: str, tags: list[TagRef], limits: Limits,
                    fences: list[tuple[int, int]]) -> list[Request]:
    size_limit = limits.size_limit(table)
    gap_limit = limits.gap_limit(table)
    # offset + width is TagRef.end, spelt out: a property call for each of 100,000 tags counts
    ordered = sorted(tags, key=lambda t: (t.offset, t.offset + t.width, t.bit if t.bit is not None else -1, t.index))
    requests: list[Request] = []
    current: list[TagRef] = []
    start = end = 0
    for tag in ordered:
        tag_end = tag.offset + tag.width
        if current:
            new_end = max(end, tag_end)
            fits = new_end - start <= size_limit
            close = tag.offset - end <= gap_limit
            if fits and close and not (fences and _crosses_fence(end, tag.offset, fences)):
                current.append(tag)
                end = new_end
                continue
            requests.append(Request(table, start, end - start, tuple(current)))
        current, start, end = [tag], tag.offset, tag_end
    if current:
        requests.append(Request(table, start, end - start, tuple(current)))
    return requests


def _crosses_fence(gap_start: int, gap_end: int, fences: list[tuple[int, int]]) -> bool:
    """Whether the unread hole [gap_start, gap_end) touches a barrier range."""
    return any(s < gap_end and gap_start < e for s, e in fences)


def plan_device(device: ModbusDevice) -> Plan:
    """The start-up plan: poll groups (shortest interval first), each with its coalesced requests."""
    limits = limits_for(device)
    refs = tag_refs(device)
    by_interval: dict[float, list[TagRef]] = {}
    for ref, tag in zip(refs, device.tags, strict=True):
        by_interval.setdefault(device.tag_interval(tag), []).append(ref)
    groups = tuple(
        PollGroup(interval, tuple(coalesce(members, limits)))
        for interval, members in sorted(by_interval.items())
    )
    return Plan(groups, limits)


def split_request(request: Request) -> tuple[Request, Request] | None:
    """Split a request's tags into two requests of about half the tags each, at a boundary where
    no tag of the first half overlaps the second (bits of one register stay together). None when
    the request cannot be split (one tag, or tags all sharing registers)."""
    tags = sorted(request.tags, key=lambda t: (t.offset, t.end))
    n = len(tags)
    if n < 2:
        return None
    # candidate cut points, nearest to the middle first
    prefix_end = []
    running = -1
    for t in tags:
        running = max(running, t.end)
        prefix_end.append(running)
    cuts = sorted(range(1, n), key=lambda k: (abs(2 * k - n), k))
    for k in cuts:
        if prefix_end[k - 1] <= tags[k].offset:
            return _spanning(request.table, tags[:k]), _spanning(request.table, tags[k:])
    return None


def _spanning(table: str, tags: Sequence[TagRef]) -> Request:
    start = min(t.offset for t in tags)
    end = max(t.end for t in tags)
    return Request(table, start, end - start, tuple(tags))


def main(argv: list[str] | None = None) -> int:
    """``python -m drivers.modbus DEVICE.yaml``: print the requests a device file makes."""
    import sys
    from pathlib import Path

    from mos_agent.config.loader import ConfigErrors, load_device_file

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m drivers.modbus DEVICE.yaml  (prints the request plan)", file=sys.stderr)
        return 2
    try:
        device = load_device_file(Path(args[0]))
    except ConfigErrors as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    if not isinstance(device, ModbusDevice):
        print(f"{args[0]}: not a modbus device (driver: {device.driver})", file=sys.stderr)
        return 2
    print(plan_device(device).describe(), end="")
    return 0
