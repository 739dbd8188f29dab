"""Block decoding: every type × byte order × word order against struct-encoded references."""

from __future__ import annotations

import math
import struct
from itertools import product

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.decode import BlockDecoder
from drivers.modbus.plan import Request, TagRef

STRUCT_FORMAT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f",
                 "int64": "q", "uint64": "Q", "float64": "d"}
WIDTH = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "int64": 4, "uint64": 4, "float64": 4}
ORDERS = list(product(("big", "little"), ("big", "little")))  # (byte_order, word_order)

SAMPLES: dict[str, list[float]] = {
    "int16": [-32768, -1, 0, 1, 12345, 32767],
    "uint16": [0, 1, 0x1234, 0x8000, 65535],
    "int32": [-(2**31), -123456789, -1, 0, 0x12345678, 2**31 - 1],
    "uint32": [0, 1, 0x12345678, 0x80000000, 2**32 - 1],
    "int64": [-(2**63), -(2**53) - 2, -1, 0, 2**53, 0x0102030405060708, 2**63 - 1],
    "uint64": [0, 1, 2**53, 0x0102030405060708, 2**64 - 1],
    "float32": [0.0, -0.0, 1.0, -2.5, 3.14159, 1.0e-40, 3.4028234663852886e38, math.inf, -math.inf],
    "float64": [0.0, -0.0, math.pi, -1.0e300, 5.0e-324, 1.7976931348623157e308, math.inf],
}


def reference_registers(type_name: str, value: float, byte_order: str, word_order: str) -> list[int]:
    """The registers a device with this byte/word order holds for ``value`` (via struct)."""
    raw = struct.pack(">" + STRUCT_FORMAT[type_name], value)
    words = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    if word_order == "little":
        words.reverse()
    if byte_order == "little":
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def reference_value(type_name: str, value: float) -> float:
    """What the decoder must produce: the value as the device type holds it, as float64."""
    return struct.unpack(">" + STRUCT_FORMAT[type_name], struct.pack(">" + STRUCT_FORMAT[type_name], value))[0]


def block(entries: list[tuple[str, float, str, str]], start: int = 100) -> tuple[Request, list[int]]:
    tags: list[TagRef] = []
    registers: list[int] = []
    for i, (type_name, value, byte_order, word_order) in enumerate(entries):
        tags.append(TagRef(i, f"t{i}", "hr", start + len(registers), type_name, WIDTH[type_name],
                           byte_order=byte_order, word_order=word_order))
        registers += reference_registers(type_name, value, byte_order, word_order)
    return Request("hr", start, len(registers), tuple(tags)), registers


def assert_same(got: float, expected: float) -> None:
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == float(expected)
        assert math.copysign(1.0, got) == math.copysign(1.0, float(expected))


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@pytest.mark.parametrize("type_name", list(SAMPLES))
def test_every_type_and_order_decodes_exactly(type_name: str, byte_order: str, word_order: str) -> None:
    values = SAMPLES[type_name]
    request, registers = block([(type_name, v, byte_order, word_order) for v in values])
    decoded, texts = BlockDecoder(request).decode_registers(registers)
    assert texts is None
    assert decoded.dtype == np.float64
    for got, value in zip(decoded.tolist(), values, strict=True):
        assert_same(got, reference_value(type_name, value))


def test_float32_nan_stays_nan() -> None:
    for byte_order, word_order in ORDERS:
        request, registers = block([("float32", math.nan, byte_order, word_order)])
        assert math.isnan(BlockDecoder(request).decode_registers(registers)[0][0])


def test_one_block_mixing_all_types_orders_and_gaps() -> None:
    entries = [(t, SAMPLES[t][k % len(SAMPLES[t])], bo, wo)
               for k, (t, (bo, wo)) in enumerate(product(SAMPLES, ORDERS))]
    request, registers = block(entries)
    # put an unused register before every tag (what a coalesced read through gaps returns)
    spaced_tags, spaced_regs = [], []
    for tag in request.tags:
        spaced_regs.append(0xDEAD)
        n = tag.width
        own = registers[tag.offset - request.start:tag.offset - request.start + n]
        spaced_tags.append(TagRef(tag.index, tag.name, "hr", request.start + len(spaced_regs), tag.type, n,
                                  byte_order=tag.byte_order, word_order=tag.word_order))
        spaced_regs += own
    spaced = Request("hr", request.start, len(spaced_regs), tuple(spaced_tags))
    decoded, _ = BlockDecoder(spaced).decode_registers(spaced_regs)
    for got, (type_name, value, _, _) in zip(decoded.tolist(), entries, strict=True):
        assert_same(got, reference_value(type_name, value))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_values_round_trip(data: st.DataObject) -> None:
    entries = []
    for _ in range(data.draw(st.integers(1, 12))):
        type_name = data.draw(st.sampled_from(list(SAMPLES)))
        fmt = STRUCT_FORMAT[type_name]
        if type_name.startswith("float"):
            width = 32 if type_name == "float32" else 64
            value = data.draw(st.floats(width=width, allow_nan=False))
        else:
            bits = 16 * WIDTH[type_name]
            lo, hi = (0, 2**bits - 1) if fmt.isupper() else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            value = data.draw(st.integers(lo, hi))
        byte_order, word_order = data.draw(st.sampled_from(ORDERS))
        entries.append((type_name, value, byte_order, word_order))
    request, registers = block(entries, start=data.draw(st.integers(0, 1000)))
    decoded, _ = BlockDecoder(request).decode_registers(np.array(registers, dtype=np.uint16))
    for got, (type_name, value, _, _) in zip(decoded.tolist(), entries, strict=True):
        assert_same(got, reference_value(type_name, value))


def test_bits_of_registers_every_position() -> None:
    register = 0b1010_0000_1100_0101
    tags = tuple(TagRef(b, f"b{b}", "hr", 7, "bool", 1, bit=b) for b in range(16))
    decoded, _ = BlockDecoder(Request("hr", 7, 1, tags)).decode_registers([register])
    assert decoded.tolist() == [float((register >> b) & 1) for b in range(16)]


def test_coils_pick_their_bits_from_a_coalesced_read() -> None:
    bits = [bool((i * 7) % 3 == 0) for i in range(40)]
    wanted = [0, 1, 5, 17, 33, 39]
    tags = tuple(TagRef(k, f"c{k}", "co", 10 + o, "bool", 1) for k, o in enumerate(wanted))
    request = Request("co", 10, 40, tags)
    padded = bits + [False] * 8  # pymodbus pads bit responses to whole bytes
    assert BlockDecoder(request).decode_bits(padded).tolist() == [float(bits[o]) for o in wanted]


@pytest.mark.parametrize(("text", "length", "byte_order", "expected"), [
    ("DIE-4711", 8, "big", "DIE-4711"),
    ("ABCDE", 5, "big", "ABCDE"),  # odd length: the last register's low byte is padding
    ("AB", 8, "big", "AB"),  # NUL padding dropped
    ("XY  ", 4, "big", "XY"),  # space padding dropped
    ("DIE-4711", 8, "little", "DIE-4711"),
    ("Prüfung", 8, "big", "Prüfung"),  # UTF-8 (8 bytes)
])
def test_strings(text: str, length: int, byte_order: str, expected: str) -> None:
    raw = text.encode()[:length].ljust(length + (length % 2), b"\x00")
    pairs = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    if byte_order == "little":
        pairs = [p[::-1] for p in pairs]
    registers = [0x4141] + [int.from_bytes(p, "big") for p in pairs] + [0x4242]
    tags = (TagRef(0, "before", "hr", 0, "uint16", 1),
            TagRef(1, "s", "hr", 1, f"string:{length}", len(pairs), byte_order=byte_order),
            TagRef(2, "after", "hr", 1 + len(pairs), "uint16", 1))
    decoded, texts = BlockDecoder(Request("hr", 0, len(registers), tags)).decode_registers(registers)
    assert texts == {1: expected}
    assert decoded[0] == 0x4141 and decoded[2] == 0x4242 and math.isnan(decoded[1])


def test_short_answers_are_refused() -> None:
    request, registers = block([("float64", 1.0, "big", "big")])
    with pytest.raises(ValueError, match="expected 4 registers, got 3"):
        BlockDecoder(request).decode_registers(registers[:3])
    with pytest.raises(ValueError, match="expected 10 bits"):
        BlockDecoder(Request("co", 0, 10, (TagRef(0, "c", "co", 9, "bool", 1),))).decode_bits([True] * 8)
