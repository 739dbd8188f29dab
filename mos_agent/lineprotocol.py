"""InfluxDB line protocol for the store mapping in the product contract.

measurement = category; tags = site area line cell equipment tag stage kind unit quality;
fields = value (float), text (string), quality_code (integer); timestamp = source time in ns.

A series' ``measurement,tags `` prefix is escaped once when the series is registered, so the hot
path only formats value, code and time.
"""

from __future__ import annotations

from collections.abc import Iterable

SERIES_TAG_KEYS: tuple[str, ...] = (
    "site", "area", "line", "cell", "equipment", "tag", "stage", "kind", "unit", "quality",
)

_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\r": r"\r", "\t": r"\t"})
_TAG_ESCAPES = str.maketrans(
    {",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\r": r"\r", "\t": r"\t"}
)


def escape_measurement(name: str) -> str:
    return name.replace("\\", "\\\\").translate(_MEASUREMENT_ESCAPES)


def escape_tag(value: str) -> str:
    """Escape a tag key or value. A trailing backslash is doubled so it cannot escape the next
    separator."""
    return value.replace("\\", "\\\\").translate(_TAG_ESCAPES)


def escape_string_field(value: str) -> str:
    """Body of a double-quoted string field: only ``"`` and ``\\`` are escaped; newlines are
    replaced because line protocol is line-based."""
    return (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )


def series_prefix(measurement: str, tags: Iterable[tuple[str, str | None]]) -> str:
    """``measurement,k=v,... `` with empty or absent tag values left out (line protocol has no
    empty tag values)."""
    parts = [escape_measurement(measurement)]
    parts.extend(f"{escape_tag(k)}={escape_tag(v)}" for k, v in tags if v)
    return ",".join(parts) + " "
