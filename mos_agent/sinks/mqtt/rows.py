"""Buffered line protocol back into readings, for sinks that publish per reading.

Our own encoder writes every reading of a series behind the same ``measurement,tags `` head, so
a head is parsed once (by :func:`mos_agent.lineprotocol.parse_lines`) and remembered. A body of
plain numeric lines of known heads — the steady state — is then read by columns with C-level
string operations (~1 µs a point less than a Python loop over lines); any other body is read line
by line, lines with quotes or backslashes (text values, escaped names) by the full parser. Every
distinct series is one :class:`Series` object (interned), so consumers key their own per-series
state by it at the cost of an identity hash. A body's readings are kept by columns
(:class:`Readings`): a consumer that works on columns makes no tuple per reading.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import repeat
from typing import cast, overload

from mos_agent.lineprotocol import LineProtocolError, parse_lines

# Asset levels a line carries as tags (the enterprise is the agent's, not the line's).
LINE_LEVELS: tuple[str, ...] = ("site", "area", "line", "cell", "equipment")
# Heads remembered per sink; configured series × 3 quality classes stays far below this.
HEAD_CACHE_LIMIT = 200_000
_NO_CODE = "quality_code=0i"


class Series:
    """What a line's head says: the series and the quality class of the reading. One object per
    distinct head (see :class:`ReadingParser`), compared by identity."""

    __slots__ = ("category", "device", "good", "kind", "levels", "metric", "quality", "stage", "tag", "unit")

    def __init__(self, category: str, tag: str, levels: tuple[tuple[str, str], ...], unit: str | None,
                 kind: str | None, stage: str | None, quality: str) -> None:
        self.category = category
        self.tag = tag
        self.levels = levels  # ((level, name), ...) present, in LINE_LEVELS order
        self.unit = unit
        self.kind = kind
        self.stage = stage
        self.quality = quality
        self.good = quality == "good"
        # the equipment the reading belongs to (the deepest level for readings above equipment
        # level, such as line KPIs)
        self.device = levels[-1][1] if levels else "_agent"
        self.metric = f"{category}/{tag}"

    def fields(self) -> tuple:
        return (self.category, self.tag, self.levels, self.unit, self.kind, self.stage, self.quality)

    def __repr__(self) -> str:
        return f"Series({self.device}/{self.metric}, {self.quality})"


# (series, value, text, quality_code, timestamp_ns): a plain tuple, made by the million in C.
# value is None where the reading has no number (text or a failed read).
Reading = tuple[Series, float | None, str | None, int, int]
_NO_CODE_TAIL = "," + _NO_CODE
_VALUE = "value="


class Readings(Sequence[Reading]):
    """The readings of one body by columns, in body order: ``series``, ``values`` (``None`` where
    a reading has no number), ``texts``, ``codes`` and ``times`` (ns). A body of plain numbers —
    every reading a number, none with a text, every quality code 0 — has ``texts`` and ``codes``
    ``None`` (:attr:`numbers_only`). Iterating or indexing gives :data:`Reading` tuples."""

    __slots__ = ("codes", "series", "texts", "times", "values")

    def __init__(self, series: list[Series], values: list[float | None], times: list[int],
                 texts: list[str | None] | None = None, codes: list[int] | None = None) -> None:
        self.series = series
        self.values = values
        self.times = times
        self.texts = texts
        self.codes = codes

    @classmethod
    def of(cls, rows: Sequence[Reading]) -> Readings:
        if not rows:
            return cls([], [], [], [], [])
        series, values, texts, codes, times = map(list, zip(*rows, strict=True))
        return cls(series, values, times, texts, codes)

    @property
    def numbers_only(self) -> bool:
        return self.texts is None and self.codes is None

    def __len__(self) -> int:
        return len(self.series)

    def __iter__(self) -> Iterator[Reading]:
        return zip(self.series, self.values, self.texts or repeat(None), self.codes or repeat(0), self.times,
                   strict=False)

    @overload
    def __getitem__(self, index: int) -> Reading: ...

    @overload
    def __getitem__(self, index: slice) -> Readings: ...

    def __getitem__(self, index: int | slice) -> Reading | Readings:
        texts, codes = self.texts, self.codes
        if isinstance(index, slice):
            return Readings(self.series[index], self.values[index], self.times[index],
                            None if texts is None else texts[index], None if codes is None else codes[index])
        return (self.series[index], self.values[index], None if texts is None else texts[index],
                0 if codes is None else codes[index], self.times[index])

    def pick(self, indices: list[int]) -> list[Reading]:
        """The readings at ``indices`` (made by C-level calls, not one Python call a reading)."""
        texts, codes = self.texts, self.codes
        return list(zip(map(self.series.__getitem__, indices), map(self.values.__getitem__, indices),
                        repeat(None) if texts is None else map(texts.__getitem__, indices),
                        repeat(0) if codes is None else map(codes.__getitem__, indices),
                        map(self.times.__getitem__, indices), strict=False))

    def __repr__(self) -> str:
        return f"Readings({len(self)} readings)"


class ReadingParser:
    """Parses bodies of line protocol into :class:`Readings`, remembering heads."""

    def __init__(self) -> None:
        self._heads: dict[str, Series] = {}
        self._interned: dict[tuple, Series] = {}

    def parse(self, body: bytes) -> Readings:
        """The readings of ``body``; raises :class:`LineProtocolError` for a malformed line."""
        text = body.decode("utf-8")
        # quotes and backslashes (text values, escaped names) need the full parser, line by line
        plain = '"' not in text and "\\" not in text
        if plain:
            readings = self._parse_numbers(text)
            if readings is not None:
                return readings
        return Readings.of(self._parse_lines(text, plain))

    def _parse_numbers(self, text: str) -> Readings | None:
        """The common body — every line a known head with ``value=V`` (code 0 is not written; rows
        an earlier version buffered say ``value=V,quality_code=0i``) — at C speed: the body's
        tokens split once and read by column. ``None`` for any other body (the line by line parser
        then reads it, and learns its heads)."""
        tokens = text.replace("\n", " ").split(" ")
        if tokens and not tokens[-1]:
            tokens.pop()
        n, odd = divmod(len(tokens), 3)
        if odd or not n:
            return None
        try:
            series = list(map(self._heads.__getitem__, tokens[0::3]))
        except KeyError:
            return None
        fields = "\n".join(tokens[1::3])
        if _NO_CODE_TAIL in fields:
            fields = fields.replace(_NO_CODE_TAIL, "")
        if not fields.startswith(_VALUE) or "," in fields:
            return None
        # Tokens hold no newline, so every newline in the joined field tokens is a token boundary:
        # n pieces means every token is "value=" + piece, and float() refuses a piece holding
        # anything else.
        pieces = fields[len(_VALUE):].split("\n" + _VALUE)
        if len(pieces) != n:
            return None
        time_texts = tokens[2::3]
        try:
            values = list(map(float, pieces))
            # a driver's batch shares one time: each distinct time is parsed once
            parsed_times = {t: int(t) for t in dict.fromkeys(time_texts)}
        except ValueError:
            return None
        return Readings(series, cast(list[float | None], values), list(map(parsed_times.__getitem__, time_texts)))

    def _parse_lines(self, text: str, plain: bool) -> list[Reading]:
        heads = self._heads
        out: list[Reading] = []
        append = out.append
        for number, line in enumerate(text.split("\n"), start=1):
            if not line:
                continue
            parts = line.split(" ")
            series = heads.get(parts[0])
            if series is None or len(parts) != 3 or not (plain or ('"' not in line and "\\" not in line)):
                out += self._parse_full(number, line, parts[0] if len(parts) == 3 else None)
                continue
            field_text = parts[1]
            try:
                # what the normaliser writes: "value=V", "value=V,quality_code=Ci" or "quality_code=Ci"
                value: float | None = None
                if field_text[:6] == "value=":
                    value_text, _, field_text = field_text[6:].partition(",")
                    value = float(value_text)
                if field_text == _NO_CODE or not field_text:
                    code = 0
                elif field_text.startswith("quality_code=") and field_text.endswith("i"):
                    code = int(field_text[13:-1])
                else:
                    out += self._parse_full(number, line)
                    continue
                append((series, value, None, code, int(parts[2])))
            except ValueError as exc:
                raise LineProtocolError(number, str(exc), line) from None
        return out

    def _series(self, measurement: str, tags: dict[str, str]) -> Series:
        levels = tuple((level, tags[level]) for level in LINE_LEVELS if tags.get(level))
        fresh = Series(measurement, tags.get("tag", ""), levels, tags.get("unit"), tags.get("kind"),
                       tags.get("stage"), tags.get("quality", "good"))
        key = fresh.fields()
        series = self._interned.get(key)
        if series is None:
            if len(self._interned) >= HEAD_CACHE_LIMIT:
                self._interned.clear()
            series = self._interned[key] = fresh
        return series

    def _parse_full(self, number: int, line: str, head: str | None = None) -> list[Reading]:
        readings = []
        try:
            for measurement, tags, fields, timestamp in parse_lines(line.encode("utf-8")):
                series = self._series(measurement, tags)
                if head is not None and len(self._heads) < HEAD_CACHE_LIMIT:
                    self._heads[head] = series
                value = fields.get("value")
                text = fields.get("text")
                code = fields.get("quality_code", 0)
                readings.append((series, float(value) if isinstance(value, int | float) else None,
                                 text if isinstance(text, str) else None, code if isinstance(code, int) else 0,
                                 timestamp or 0))
        except LineProtocolError as exc:
            raise LineProtocolError(number, exc.reason, line) from None
        return readings
