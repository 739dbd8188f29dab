"""Decoding whole register blocks at once with numpy.

A request's registers arrive as one uint16 array. The tags of the request are grouped by
(type, byte order, word order); for each group an index matrix (one row per tag, one column per
register in the order that makes the value's bytes big-endian) is built once at start-up. At run
time a group is one fancy-index gather, one byte-order conversion and one dtype view — no
per-value ``struct.unpack``.

Byte and word order, for the 32-bit value with bytes A B C D (A most significant):

=============  ==========  =====================  ====================
byte_order     word_order  registers              common name
=============  ==========  =====================  ====================
big            big         ``AB CD``              ABCD, big-endian
little         big         ``BA DC``              BADC, byte swap
big            little      ``CD AB``              CDAB, word swap
little         little      ``DC BA``              DCBA, little-endian
=============  ==========  =====================  ====================

A bit address (``hr:5.3``) reads bit 3 of the register's value, bit 0 being the least
significant. Strings hold two characters a register, the first in the high byte (``byte_order:
little`` swaps them); trailing NULs and spaces are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from drivers.modbus.config import REGISTER_COUNT, string_length
from drivers.modbus.plan import Request, TagRef

# big-endian dtype of each numeric type's bytes
_VALUE_DTYPE: dict[str, str] = {
    "int16": ">i2", "uint16": ">u2",
    "int32": ">i4", "uint32": ">u4", "float32": ">f4",
    "int64": ">i8", "uint64": ">u8", "float64": ">f8",
}
_WORD_DTYPE = {"big": ">u2", "little": "<u2"}


@dataclass(slots=True)
class _NumericGroup:
    positions: np.ndarray  # rows in the request's output
    index: np.ndarray  # (tags, registers) gather matrix, big-endian word order
    word_dtype: str  # how a register's two bytes are laid out
    value_dtype: str
    direct: bool  # 16-bit value with big byte order: the register is the value


@dataclass(slots=True)
class _StringTag:
    position: int
    offset: int
    registers: int
    length: int
    word_dtype: str


class BlockDecoder:
    """Decodes the registers (or bits) of one :class:`Request` into one float64 value per tag,
    in the request's tag order, plus the text of string tags."""

    __slots__ = ("_bit_offsets", "_bit_positions", "_bit_shifts", "_groups", "_strings", "count", "is_bits",
                 "size")

    def __init__(self, request: Request) -> None:
        self.count = request.count
        self.size = len(request.tags)
        self.is_bits = request.is_bits
        self._groups: list[_NumericGroup] = []
        self._strings: list[_StringTag] = []
        bit_pos: list[int] = []
        bit_off: list[int] = []
        bit_shift: list[int] = []
        by_layout: dict[tuple[str, str, str], list[tuple[int, TagRef]]] = {}
        for pos, tag in enumerate(request.tags):
            offset = tag.offset - request.start
            if self.is_bits or tag.bit is not None:
                bit_pos.append(pos)
                bit_off.append(offset)
                bit_shift.append(tag.bit or 0)
            elif tag.type.startswith("string:"):
                self._strings.append(_StringTag(pos, offset, tag.width, string_length(tag.type),
                                                _WORD_DTYPE[tag.byte_order]))
            else:
                by_layout.setdefault((tag.type, tag.byte_order, tag.word_order), []).append((pos, tag))
        for (type_name, byte_order, word_order), members in by_layout.items():
            words = REGISTER_COUNT[type_name]
            order = np.arange(words)
            if word_order == "little":
                order = order[::-1]
            offsets = np.array([tag.offset - request.start for _, tag in members], dtype=np.intp)
            self._groups.append(_NumericGroup(
                positions=np.array([pos for pos, _ in members], dtype=np.intp),
                index=offsets[:, None] + order[None, :],
                word_dtype=_WORD_DTYPE[byte_order],
                value_dtype=_VALUE_DTYPE[type_name],
                direct=words == 1 and byte_order == "big",
            ))
        self._bit_positions = np.array(bit_pos, dtype=np.intp)
        self._bit_offsets = np.array(bit_off, dtype=np.intp)
        self._bit_shifts = np.array(bit_shift, dtype=np.uint16)

    def decode_registers(self, registers: Sequence[int] | np.ndarray) -> tuple[np.ndarray, dict[int, str] | None]:
        """``registers`` as received (register values as unsigned 16-bit integers)."""
        regs = np.asarray(registers, dtype=np.uint16)
        if len(regs) < self.count:
            raise ValueError(f"expected {self.count} registers, got {len(regs)}")
        out = np.empty(self.size, dtype=np.float64)
        for g in self._groups:
            words = regs[g.index]  # (tags, registers)
            if g.direct:
                values = words[:, 0].view(g.value_dtype.replace(">", "="))
            else:
                values = words.astype(g.word_dtype).view(g.value_dtype)[:, 0]
            out[g.positions] = values
        if len(self._bit_positions):
            out[self._bit_positions] = (regs[self._bit_offsets] >> self._bit_shifts) & 1
        texts: dict[int, str] | None = None
        if self._strings:
            texts = {}
            for s in self._strings:
                raw = regs[s.offset:s.offset + s.registers].astype(s.word_dtype).tobytes()[:s.length]
                texts[s.position] = decode_text(raw)
                out[s.position] = np.nan
        return out, texts

    def decode_bits(self, bits: Sequence[bool] | np.ndarray) -> np.ndarray:
        """``bits`` as received from a coil or discrete-input read (at least ``count`` of them)."""
        arr = np.asarray(bits, dtype=np.bool_)
        if len(arr) < self.count:
            raise ValueError(f"expected {self.count} bits, got {len(arr)}")
        return arr[self._bit_offsets].astype(np.float64)


def decode_text(raw: bytes) -> str:
    """PLC strings are NUL- or space-padded ASCII; anything that is not UTF-8 is kept visible
    rather than dropped."""
    return raw.split(b"\x00", 1)[0].decode("utf-8", errors="backslashreplace").rstrip()
