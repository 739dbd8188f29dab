"""Buffered line protocol back into readings, for sinks that publish per reading.

Our own encoder writes every reading of a series behind the same ``measurement,tags `` head, so
a head is parsed once (by :func:`mos_agent.lineprotocol.parse_lines`) and remembered; each line
then costs a split and its field values. Lines with quotes or backslashes (text values, escaped
names) go through the full parser every time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from mos_agent.lineprotocol import LineProtocolError, parse_lines

# Asset levels a line carries as tags (the enterprise is the agent's, not the line's).
LINE_LEVELS: tuple[str, ...] = ("site", "area", "line", "cell", "equipment")
# Heads remembered per sink; configured series × 3 quality classes stays far below this.
HEAD_CACHE_LIMIT = 200_000


@dataclass(frozen=True, slots=True)
class Series:
    """What a line's head says: the series and the quality class of the reading."""

    category: str
    tag: str
    levels: tuple[tuple[str, str], ...]  # ((level, name), ...) present, in LINE_LEVELS order
    unit: str | None
    kind: str | None
    stage: str | None
    quality: str

    @property
    def device(self) -> str:
        """The equipment the reading belongs to (the deepest asset level for readings above
        equipment level, such as line KPIs)."""
        return self.levels[-1][1] if self.levels else "_agent"

    @property
    def metric(self) -> str:
        return f"{self.category}/{self.tag}"


@dataclass(slots=True)
class Reading:
    series: Series
    value: float | int | bool | None  # None: no numeric value (text or bad reading)
    text: str | None
    quality_code: int
    timestamp_ns: int


def _series(measurement: str, tags: dict[str, str]) -> Series:
    levels = tuple((level, tags[level]) for level in LINE_LEVELS if tags.get(level))
    return Series(category=measurement, tag=tags.get("tag", ""), levels=levels, unit=tags.get("unit"),
                  kind=tags.get("kind"), stage=tags.get("stage"), quality=tags.get("quality", "good"))


def _reading(series: Series, fields: dict, timestamp_ns: int | None) -> Reading:
    value = fields.get("value")
    text = fields.get("text")
    code = fields.get("quality_code", 0)
    return Reading(series, value if not isinstance(value, str) else None,
                   text if isinstance(text, str) else None, int(code) if not isinstance(code, str) else 0,
                   timestamp_ns or 0)


class ReadingParser:
    """Parses bodies of line protocol into :class:`Reading` s, remembering heads."""

    def __init__(self) -> None:
        self._heads: dict[str, Series] = {}

    def parse(self, body: bytes) -> Iterator[Reading]:
        """The readings of ``body``; raises :class:`LineProtocolError` for a malformed line."""
        heads = self._heads
        for number, line in enumerate(body.decode("utf-8").split("\n"), start=1):
            if not line or line[0] == "#":
                continue
            if '"' in line or "\\" in line:
                yield from self._parse_full(line)
                continue
            head, _, rest = line.partition(" ")
            series = heads.get(head)
            if series is None:
                yield from self._parse_full(line, head)
                continue
            field_text, _, ts_text = rest.partition(" ")
            try:
                # what the normaliser writes: "value=V,quality_code=Ci" or "quality_code=Ci"
                value: float | None = None
                if field_text.startswith("value="):
                    value_text, _, field_text = field_text[6:].partition(",")
                    value = float(value_text)
                if field_text.startswith("quality_code=") and field_text.endswith("i"):
                    code = int(field_text[13:-1])
                elif not field_text:
                    code = 0
                else:
                    yield from self._parse_full(line)
                    continue
                yield Reading(series, value, None, code, int(ts_text) if ts_text else 0)
            except ValueError as exc:
                raise LineProtocolError(number, str(exc), line) from None

    def _parse_full(self, line: str, head: str | None = None) -> Iterator[Reading]:
        for measurement, tags, fields, timestamp in parse_lines(line.encode("utf-8")):
            series = _series(measurement, tags)
            if head is not None and len(self._heads) < HEAD_CACHE_LIMIT:
                self._heads[head] = series
            yield _reading(series, fields, timestamp)
