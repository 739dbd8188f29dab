"""InfluxDB line protocol for the store mapping in the product contract.

measurement = category; tags = site area line cell equipment tag stage kind unit quality;
fields = value (float), text (string), quality_code (integer, written only when it is not 0: the
``quality`` tag already says good, and stores keeping a series per field would otherwise hold two
rows for every point; :func:`with_quality_codes` puts the zeros back for a sink that wants them);
timestamp = source time in ns.

A series' ``measurement,tags `` prefix is escaped once when the series is registered, so the hot
path only formats value, code and time — with the templates defined here (``NUMBER_LINE`` …), so
the field names are spelt in this module only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

SERIES_TAG_KEYS: tuple[str, ...] = (
    "site", "area", "line", "cell", "equipment", "tag", "stage", "kind", "unit", "quality",
)

_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\r": r"\r", "\t": r"\t"})
_TAG_ESCAPES = str.maketrans(
    {",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\r": r"\r", "\t": r"\t"}
)


def escape_measurement(name: str) -> str:
    return name.replace("\\", "\\\\").translate(_MEASUREMENT_ESCAPES)


# a character escape_tag changes: most names have none, and are returned as they are (a series
# table of 100,000 tags escapes 100,000 names)
_TAG_SPECIAL = re.compile("[" + re.escape("\\" + "".join(map(chr, _TAG_ESCAPES))) + "]")


def escape_tag(value: str) -> str:
    """Escape a tag key or value. A trailing backslash is doubled so it cannot escape the next
    separator."""
    if _TAG_SPECIAL.search(value) is None:
        return value
    return value.replace("\\", "\\\\").translate(_TAG_ESCAPES)


def escape_string_field(value: str) -> str:
    """Body of a double-quoted string field: only ``"`` and ``\\`` are escaped; newlines are
    replaced because line protocol is line-based."""
    return (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )


# What follows a series' prefix on a line, as str.format templates: the normaliser binds them once
# a batch and formats its rows in bulk. The ``…_NO_CODE`` forms are for code 0. A reading without a
# value (bad quality, NaN) has only the code, even 0 (a line needs a field); a string reading's
# text is escaped with escape_string_field first.
VALUE_KEY = "value="
CODE_AND_TIME = ",quality_code={}i {}\n"  # code, time in ns
TIME_ONLY = " {}\n"  # time in ns
NUMBER_LINE = "{}" + VALUE_KEY + "{!r}" + CODE_AND_TIME  # prefix, float value, code, time
NUMBER_LINE_NO_CODE = "{}" + VALUE_KEY + "{!r}" + TIME_ONLY  # prefix, float value, time
TEXT_LINE = '{}text="{}"' + CODE_AND_TIME  # prefix, escaped text, code, time
TEXT_LINE_NO_CODE = '{}text="{}"' + TIME_ONLY  # prefix, escaped text, time
CODE_ONLY_LINE = "{}" + CODE_AND_TIME.removeprefix(",")  # prefix, code, time
_CODE_AND_TIME, _TIME_ONLY = CODE_AND_TIME.format, TIME_ONLY.format


def line_end(code: int, time_ns: int) -> str:
    """What follows a reading's value: the code unless it is 0, and the time."""
    return _CODE_AND_TIME(code, time_ns) if code else _TIME_ONLY(time_ns)


# A line of ours that carries its code ends in ``quality_code=<int>i <time>`` (a string field
# would end in a quote): the field the store mapping puts last.
_ENDS_WITH_CODE = re.compile(rb"[ ,]quality_code=-?[0-9]+i -?[0-9]+\r?\Z")


def with_quality_codes(body: bytes) -> bytes:
    """``body`` with ``quality_code=0i`` on every line that has no code (code 0 is not written),
    for a sink set to ``quality_code: always``."""
    lines = body.split(b"\n")
    for number, line in enumerate(lines):
        if line and not line.startswith(b"#") and not _ENDS_WITH_CODE.search(line):
            cut = line.rfind(b" ")
            lines[number] = line[:cut] + b",quality_code=0i" + line[cut:]
    return b"\n".join(lines)


def series_prefix(measurement: str, tags: Iterable[tuple[str, str | None]]) -> str:
    """``measurement,k=v,... `` with empty or absent tag values left out (line protocol has no
    empty tag values)."""
    parts = [escape_measurement(measurement)]
    parts.extend(f"{escape_tag(k)}={escape_tag(v)}" for k, v in tags if v)
    return ",".join(parts) + " "



# ---------------------------------------------------------------- parsing

FieldValue = float | int | str | bool

# The escapes our encoder writes (escape_measurement, escape_tag, escape_string_field); any other
# backslash pair is kept as written, as InfluxDB does.
_UNESCAPE = {"\\": "\\", ",": ",", "=": "=", " ": " ", '"': '"', "n": "\n", "r": "\r", "t": "\t"}
_TRUE = frozenset(("t", "T", "true", "True", "TRUE"))
_FALSE = frozenset(("f", "F", "false", "False", "FALSE"))


class LineProtocolError(ValueError):
    """A line that is not valid line protocol; ``line_number`` counts from 1 within the body."""

    def __init__(self, line_number: int, message: str, line: str) -> None:
        shown = line if len(line) <= 200 else line[:200] + "…"
        super().__init__(f"line {line_number}: {message}: {shown!r}")
        self.line_number = line_number
        self.reason = message


def _scan(text: str, i: int, stops: str) -> tuple[str, int]:
    """Unescaped text from ``i`` up to the first unescaped character in ``stops``; returns it and
    the index of that character (``len(text)`` if none)."""
    out: list[str] = []
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            nxt = text[i + 1]
            if nxt in _UNESCAPE:
                out.append(_UNESCAPE[nxt])
                i += 2
                continue
        elif ch in stops:
            break
        out.append(ch)
        i += 1
    return "".join(out), i


def _scan_string(text: str, i: int) -> tuple[str, int]:
    """A double-quoted string field starting at ``text[i] == '"'``; returns the unescaped string
    and the index after the closing quote."""
    value, end = _scan(text, i + 1, '"')
    if end >= len(text):
        raise ValueError("unterminated string field")
    return value, end + 1


def split_series(line: bytes) -> tuple[bytes, bytes]:
    """A line's ``measurement,tags`` and the rest (fields and timestamp), split at the first
    unescaped space."""
    if b"\\" not in line:
        prefix, _, rest = line.partition(b" ")
        return prefix, rest
    text = line.decode("utf-8")
    _, end = _scan(text, 0, " ")
    return text[:end].encode("utf-8"), text[end + 1:].encode("utf-8")


def parse_number(raw: str) -> FieldValue:
    """A numeric or boolean field value: ``1.5`` ``3i`` ``3u`` ``t``; NaN and inf are refused."""
    if not raw:
        raise ValueError("empty field value")
    if raw[-1] == "i":
        return int(raw[:-1])
    if raw[-1] == "u":
        unsigned = int(raw[:-1])
        if unsigned < 0:
            raise ValueError(f"unsigned field {raw!r} is negative")
        return unsigned
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    value = float(raw)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"field value {raw!r} is not a finite number")
    return value


def _parse_line(line: str) -> tuple[str, dict[str, str], dict[str, FieldValue], int | None]:
    n = len(line)
    measurement, i = _scan(line, 0, ", ")
    if not measurement:
        raise ValueError("empty measurement")
    tags: dict[str, str] = {}
    while i < n and line[i] == ",":
        key, i = _scan(line, i + 1, "=, ")
        if i >= n or line[i] != "=" or not key:
            raise ValueError(f"bad tag {key!r}: expected key=value")
        value, i = _scan(line, i + 1, ", ")
        if not value:
            raise ValueError(f"tag {key!r} has no value")
        tags[key] = value
    if i >= n:
        raise ValueError("no field set")
    fields: dict[str, FieldValue] = {}
    while True:
        key, i = _scan(line, i + 1, "=, ")
        if i >= n or line[i] != "=" or not key:
            raise ValueError(f"bad field {key!r}: expected key=value")
        i += 1
        if i < n and line[i] == '"':
            fields[key], i = _scan_string(line, i)
        else:
            start = i
            while i < n and line[i] not in " ,":
                i += 1
            fields[key] = parse_number(line[start:i])
        if i >= n or line[i] == " ":
            break
        if line[i] != ",":
            raise ValueError(f"unexpected {line[i]!r} after field {key!r}")
    ts_text = line[i + 1:].strip() if i < n else ""
    return measurement, tags, fields, int(ts_text) if ts_text else None


def _parse_plain_line(line: str) -> tuple[str, dict[str, str], dict[str, FieldValue], int | None]:
    """Lines without backslashes or quotes (all numeric lines our encoder writes): plain splits
    are exact there and several times faster than scanning."""
    head, sep, rest = line.partition(" ")
    if not sep:
        raise ValueError("no field set")
    field_text, _, ts_text = rest.partition(" ")
    measurement, *tag_parts = head.split(",")
    if not measurement:
        raise ValueError("empty measurement")
    tags: dict[str, str] = {}
    for part in tag_parts:
        key, eq, value = part.partition("=")
        if not eq or not key or not value:
            raise ValueError(f"bad tag {part!r}: expected key=value")
        tags[key] = value
    fields: dict[str, FieldValue] = {}
    for part in field_text.split(","):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise ValueError(f"bad field {part!r}: expected key=value")
        fields[key] = parse_number(value)
    ts_text = ts_text.strip()
    return measurement, tags, fields, int(ts_text) if ts_text else None


def parse_lines(body: bytes) -> Iterator[tuple[str, dict[str, str], dict[str, FieldValue], int | None]]:
    """Parse a line-protocol body into ``(measurement, tags, fields, timestamp_ns_or_None)``
    per line. Blank lines and ``#`` comments are skipped. Field values come back typed: float,
    int (``i``/``u`` suffix), bool, or str. Raises :class:`LineProtocolError` naming the line."""
    text = body.decode("utf-8")
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            if "\\" in line or '"' in line:
                yield _parse_line(line)
            else:
                yield _parse_plain_line(line)
        except ValueError as exc:
            raise LineProtocolError(number, str(exc), line) from None
