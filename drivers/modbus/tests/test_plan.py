"""Request planning: coalescing, limits, gaps, poll groups, bits, splitting."""

from __future__ import annotations

from typing import Any

import pytest

from drivers.modbus.config import ModbusDevice
from drivers.modbus.plan import Limits, Request, TagRef, coalesce, plan_device, split_request


def device(tags: list[dict[str, Any]], poll_interval: str = "1s", **connection: Any) -> ModbusDevice:
    return ModbusDevice.model_validate({
        "name": "press-01", "driver": "modbus", "asset": {"area": "stamping"}, "stage": "forming",
        "poll_interval": poll_interval, "connection": {"host": "127.0.0.1", **connection},
        "tags": [{"category": "process", **t} for t in tags],
    })


def spans(requests: tuple[Request, ...] | list[Request]) -> list[tuple[str, int, int]]:
    return [(r.table, r.start, r.count) for r in requests]


def test_adjacent_tags_make_one_request_with_offsets() -> None:
    plan = plan_device(device([
        {"name": "a", "address": "hr:0", "type": "float32"},
        {"name": "b", "address": "hr:2", "type": "uint32"},
        {"name": "c", "address": "hr:4"},
    ]))
    (group,) = plan.groups
    assert spans(group.requests) == [("hr", 0, 5)]
    assert [(t.name, t.offset, t.width) for t in group.requests[0].tags] == [("a", 0, 2), ("b", 2, 2), ("c", 4, 1)]


def test_gap_up_to_max_gap_is_read_through_and_a_larger_gap_splits() -> None:
    tags = [
        {"name": "a", "address": "hr:0"},
        {"name": "b", "address": "hr:11"},  # hole of 10 registers (1..10)
        {"name": "c", "address": "hr:23"},  # hole of 11 registers (12..22)
    ]
    plan = plan_device(device(tags))
    assert spans(plan.groups[0].requests) == [("hr", 0, 12), ("hr", 23, 1)]
    tight = plan_device(device(tags, max_gap=0))
    assert spans(tight.groups[0].requests) == [("hr", 0, 1), ("hr", 11, 1), ("hr", 23, 1)]


def test_register_limit_125_and_the_devices_lower_maximum() -> None:
    tags = [{"name": f"r{i}", "address": f"hr:{i}"} for i in range(130)]
    assert spans(plan_device(device(tags)).groups[0].requests) == [("hr", 0, 125), ("hr", 125, 5)]
    assert spans(plan_device(device(tags, max_registers_per_request=50)).groups[0].requests) == [
        ("hr", 0, 50), ("hr", 50, 50), ("hr", 100, 30)]


def test_a_multi_register_value_is_never_cut_by_the_limit() -> None:
    # 62 float32 = 124 registers, the 63rd would end at 126 > 125: it starts the next request
    tags = [{"name": f"f{i}", "address": f"hr:{2 * i}", "type": "float32"} for i in range(63)]
    requests = plan_device(device(tags)).groups[0].requests
    assert spans(requests) == [("hr", 0, 124), ("hr", 124, 2)]
    assert all(t.end <= r.end for r in requests for t in r.tags)


def test_tables_are_planned_separately_in_table_order() -> None:
    plan = plan_device(device([
        {"name": "d", "address": "di:0"},
        {"name": "c", "address": "co:0"},
        {"name": "i", "address": "ir:0"},
        {"name": "h", "address": "hr:0"},
    ]))
    assert spans(plan.groups[0].requests) == [("hr", 0, 1), ("ir", 0, 1), ("co", 0, 1), ("di", 0, 1)]
    assert [r.function_code for r in plan.groups[0].requests] == [3, 4, 1, 2]


def test_bits_coalesce_up_to_2000_and_gaps_count_sixteen_bits_a_register() -> None:
    coils = [{"name": f"c{i}", "address": f"co:{i}"} for i in range(2001)]
    assert spans(plan_device(device(coils)).groups[0].requests) == [("co", 0, 2000), ("co", 2000, 1)]
    gaps = [{"name": "a", "address": "di:0"}, {"name": "b", "address": "di:161"},  # hole of 160 bits: joins
            {"name": "c", "address": "di:323"}]  # hole of 161 bits: does not
    assert spans(plan_device(device(gaps)).groups[0].requests) == [("di", 0, 162), ("di", 323, 1)]
    assert spans(plan_device(device(coils[:300], max_bits_per_request=256)).groups[0].requests) == [
        ("co", 0, 256), ("co", 256, 44)]


def test_bit_addresses_share_their_register_with_the_register_tag() -> None:
    plan = plan_device(device([
        {"name": "word", "address": "hr:5"},
        {"name": "bit3", "address": "hr:5.3"},
        {"name": "bit15", "address": "hr:5.15"},
        {"name": "next", "address": "hr:6.0"},
    ]))
    (request,) = plan.groups[0].requests
    assert (request.start, request.count) == (5, 2)
    assert [(t.name, t.offset, t.bit, t.type) for t in request.tags] == [
        ("word", 5, None, "uint16"), ("bit3", 5, 3, "bool"), ("bit15", 5, 15, "bool"), ("next", 6, 0, "bool")]


def test_per_tag_poll_intervals_form_groups_shortest_first() -> None:
    plan = plan_device(device([
        {"name": "slow", "address": "hr:1", "poll_interval": "10s"},
        {"name": "fast", "address": "hr:0", "poll_interval": "100ms"},
        {"name": "default", "address": "hr:2"},
        {"name": "fast2", "address": "hr:3", "poll_interval": "0.1s"},
    ], poll_interval="1s"))
    assert [g.interval for g in plan.groups] == [0.1, 1.0, 10.0]
    assert [[t.name for t in g.tags] for g in plan.groups] == [["fast", "fast2"], ["default"], ["slow"]]
    # fast and fast2 are 3 registers apart: one request of 4 in their own group
    assert spans(plan.groups[0].requests) == [("hr", 0, 4)]


def test_string_spans_its_registers_and_tag_indices_are_configured_order() -> None:
    plan = plan_device(device([
        {"name": "after", "address": "hr:10"},
        {"name": "die", "address": "hr:4", "type": "string:11"},  # 6 registers: 4..9
    ]))
    (request,) = plan.groups[0].requests
    assert (request.start, request.count) == (4, 7)
    assert [(t.name, t.index) for t in request.tags] == [("die", 1), ("after", 0)]


def test_describe_is_stable_text() -> None:
    plan = plan_device(device([
        {"name": "a", "address": "hr:0", "type": "float32"},
        {"name": "run", "address": "co:3"},
        {"name": "slow", "address": "ir:7", "poll_interval": "5s"},
    ], poll_interval="500ms"))
    assert plan.describe() == (
        "every 500ms: 2 requests\n"
        "  hr 0..1 (2 registers): a@0\n"
        "  co 3..3 (1 bit): run@3\n"
        "every 5s: 1 request\n"
        "  ir 7..7 (1 register): slow@7\n")


def ref(index: int, offset: int, width: int = 1, bit: int | None = None, table: str = "hr") -> TagRef:
    return TagRef(index, f"t{index}", table, offset, "bool" if bit is not None else "uint16", width, bit)


def test_barriers_keep_requests_off_known_bad_addresses() -> None:
    tags = [ref(0, 0), ref(1, 2), ref(2, 4)]
    assert spans(coalesce(tags, Limits())) == [("hr", 0, 5)]
    # register 3 answered an exception: 0..2 may still merge, 4 stands alone
    assert spans(coalesce(tags, Limits(), [("hr", 3, 4)])) == [("hr", 0, 3), ("hr", 4, 1)]
    # a barrier in another table changes nothing
    assert spans(coalesce(tags, Limits(), [("ir", 0, 10)])) == [("hr", 0, 5)]


@pytest.mark.parametrize(("offsets", "expected"), [
    ([0, 1, 2, 3], [[0, 1], [2, 3]]),
    ([0, 1, 2], [[0], [1, 2]]),
    ([0, 10], [[0], [10]]),
])
def test_split_request_halves_by_tag(offsets: list[int], expected: list[list[int]]) -> None:
    tags = tuple(ref(i, o) for i, o in enumerate(offsets))
    request = Request("hr", offsets[0], offsets[-1] + 1 - offsets[0], tags)
    halves = split_request(request)
    assert halves is not None
    assert [[t.offset for t in h.tags] for h in halves] == expected
    for half in halves:
        assert half.start == min(t.offset for t in half.tags)
        assert half.end == max(t.end for t in half.tags)


def test_split_request_keeps_overlapping_tags_together_and_refuses_the_unsplittable() -> None:
    # a float32 at 0 (0..1) and a bit of register 1: they overlap, so the cut goes after them
    tags = (TagRef(0, "f", "hr", 0, "float32", 2), ref(1, 1, bit=4), ref(2, 2), ref(3, 3))
    halves = split_request(Request("hr", 0, 4, tags))
    assert halves is not None
    assert [[t.index for t in h.tags] for h in halves] == [[0, 1], [2, 3]]
    same_register = (ref(0, 5, bit=0), ref(1, 5, bit=1))
    assert split_request(Request("hr", 5, 1, same_register)) is None
    assert split_request(Request("hr", 5, 1, (ref(0, 5),))) is None
