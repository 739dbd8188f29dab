"""Buffered line protocol back into readings, for sinks that publish per reading.

Our own encoder writes every reading of a series behind the same ``measurement,tags `` head, so
a head is parsed once (by :func:`mos_agent.lineprotocol.parse_lines`) and remembered. A body of
plain numeric lines of known heads — the steady state — is then read by columns with C-level
string operations (~1 µs a point less than a Python loop over lines); any other body is read line
by line, lines with quotes or backslashes (text values, escaped names) by the full parser. Every
distinct series is one :class:`Series` object (interned), so consumers key their own per-series
state by it at the cost of an identity hash.
"""

from __future__ import annotations

from itertools import repeat
from typing import cast

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


class ReadingParser:
    """Parses bodies of line protocol into :class:`Reading` s, remembering heads."""

    def __init__(self) -> None:
        self._heads: dict[str, Series] = {}
        self._interned: dict[tuple, Series] = {}

    def parse(self, body: bytes) -> list[Reading]:
        """The readings of ``body``; raises :class:`LineProtocolError` for a malformed line."""
        text = body.decode("utf-8")
        # quotes and backslashes (text values, escaped names) need the full parser, line by line
        plain = '"' not in text and "\\" not in text
        if plain:
            readings = self._parse_numbers(text)
            if readings is not None:
                return readings
        return self._parse_lines(text, plain)

    def _parse_numbers(self, text: str) -> list[Reading] | None:
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
        series = list(map(self._heads.get, tokens[0::3]))
        if None in series:
            return None
        fields = "\n".join(tokens[1::3])
        if _NO_CODE_TAIL in fields:
            fields = fields.replace(_NO_CODE_TAIL, "")
        if not (fields.startswith("value=") and fields.count("\nvalue=") == n - 1 and "," not in fields):
            return None
        try:
            values = list(map(float, fields.replace("value=", "").split("\n")))
            times = list(map(int, tokens[2::3]))
        except ValueError:
            return None
        if len(values) != n:
            return None
        return list(zip(cast(list[Series], series), values, repeat(None), repeat(0), times, strict=False))

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
