"""The three small languages of an MQTT device file: topic templates, JSON paths and source
timestamps. Each is compiled once at validation time; the compiled forms are what the message
hot path runs, so a mistake is reported with its position before the agent starts.

* Topic template — an MQTT filter (``+`` one level, ``#`` the rest) where ``{area}``,
  ``{line}``, ``{cell}`` or ``{equipment}`` also match one level and capture it into the ISA-95
  asset path: ``acme/changwon/{area}/{line}/{equipment}/environment``.
* JSON path — ``$``, ``.key``, ``['key with space']``, ``[index]`` (negative counts from the
  end): ``$.axes[0].load``.
* Timestamp — epoch seconds, milliseconds, microseconds or nanoseconds (told apart by
  magnitude), or an ISO 8601 string (no offset means UTC). Whether the time is plausible is the
  decoder's question (the agent's ``source_time`` window), not the parser's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

CAPTURE_LEVELS: tuple[str, ...] = ("area", "line", "cell", "equipment")

_MISSING = object()


# ---------------------------------------------------------------- topic templates


@dataclass(frozen=True, slots=True)
class TopicTemplate:
    """A compiled topic template.

    ``levels`` holds, per topic level, a literal string, ``"+"``, ``"#"`` or ``None`` for a
    capture (whose asset level is then in ``captures``, keyed by level position).
    """

    source: str
    filter: str  # what is subscribed: captures replaced by '+'
    levels: tuple[str | None, ...]
    captures: tuple[tuple[int, str], ...]  # (level position, asset level)

    def match(self, topic_levels: list[str]) -> dict[str, str] | None:
        """The captured levels if ``topic_levels`` (a topic split on '/') matches, else None."""
        levels = self.levels
        n = len(levels)
        if levels[-1] == "#":
            # 'a/#' also matches 'a' itself (MQTT 4.7.1.2)
            if len(topic_levels) < n - 1:
                return None
            n -= 1
        elif len(topic_levels) != n:
            return None
        # Wildcards at the first level never match topics starting with '$' (MQTT 4.7.2).
        if topic_levels and topic_levels[0].startswith("$") and (levels[0] is None or levels[0] in "+#"):
            return None
        for i in range(n):
            want = levels[i]
            if want is not None and want != "+" and want != topic_levels[i]:
                return None
        return {level: topic_levels[pos] for pos, level in self.captures}


def compile_topic(template: str) -> TopicTemplate:
    """Compile a topic template, raising ValueError with what is wrong and where."""
    if not template:
        raise ValueError("topic must not be empty")
    if "\x00" in template:
        raise ValueError("topic must not contain a NUL character")
    if len(template.encode()) > 65535:
        raise ValueError("topic is longer than MQTT allows (65535 bytes)")
    parts = template.split("/")
    levels: list[str | None] = []
    captures: list[tuple[int, str]] = []
    seen: set[str] = set()
    for pos, part in enumerate(parts):
        where = f"level {pos + 1} ({part!r})" if part else f"level {pos + 1}"
        if "{" in part or "}" in part:
            m = re.fullmatch(r"\{([^{}]*)\}", part)
            if not m:
                raise ValueError(
                    f"topic {template!r}: a capture must be a whole level, like 'plant/{{area}}/env'; "
                    f"{where} mixes it with other text")
            name = m.group(1)
            if name in ("enterprise", "site"):
                raise ValueError(f"topic {template!r}: '{{{name}}}' cannot be captured: enterprise and site come "
                                 f"from the agent file (captures are {{area}}, {{line}}, {{cell}}, {{equipment}})")
            if name not in CAPTURE_LEVELS:
                from difflib import get_close_matches

                close = get_close_matches(name, CAPTURE_LEVELS, n=1, cutoff=0.5)
                hint = f"; did you mean '{{{close[0]}}}'?" if close else ""
                raise ValueError(
                    f"topic {template!r}: unknown capture '{{{name}}}' at {where} "
                    f"(captures are {{area}}, {{line}}, {{cell}}, {{equipment}}){hint}")
            if name in seen:
                raise ValueError(f"topic {template!r}: capture '{{{name}}}' appears twice")
            seen.add(name)
            captures.append((pos, name))
            levels.append(None)
            continue
        if "#" in part and (part != "#" or pos != len(parts) - 1):
            raise ValueError(
                f"topic {template!r}: '#' must be a whole level and the last one, like 'plant/#'; "
                f"found at {where}")
        if "+" in part and part != "+":
            raise ValueError(
                f"topic {template!r}: '+' must be a whole level, like 'plant/+/env'; found at {where}")
        levels.append(part)
    filter_ = "/".join("+" if level is None else level for level in levels)
    return TopicTemplate(template, filter_, tuple(levels), tuple(captures))


def filter_covers(general: str, specific: str) -> bool:
    """Whether every topic matching filter ``specific`` also matches filter ``general``
    (so subscribing to both would only deliver messages twice)."""
    g, s = general.split("/"), specific.split("/")
    for i, level in enumerate(g):
        if level == "#":
            # '#' covers everything from here; but 'a/#' does not cover '$x' topics under a
            # first-level wildcard, and at the first level it covers none of the '$' topics.
            return not (i == 0 and s[0].startswith("$"))
        if i >= len(s):
            return False
        if level == "+":
            if s[i] == "#" or (i == 0 and s[0].startswith("$")):
                return False
            continue
        if level != s[i]:
            return False
    return len(g) == len(s)


def minimal_filters(filters: list[str]) -> list[str]:
    """Distinct filters with the ones another filter already covers left out."""
    distinct = list(dict.fromkeys(filters))
    return [f for f in distinct if not any(o != f and filter_covers(o, f) for o in distinct)]


# ---------------------------------------------------------------- JSON paths


@dataclass(frozen=True, slots=True)
class JsonPath:
    source: str
    steps: tuple[str | int, ...]

    @property
    def is_root(self) -> bool:
        return not self.steps

    @property
    def starts_with_key(self) -> bool:
        return bool(self.steps) and isinstance(self.steps[0], str)

    def get(self, doc: Any) -> Any:
        """The value at this path, or ``MISSING``."""
        node = doc
        for step in self.steps:
            if isinstance(step, str):
                if type(node) is not dict:
                    return _MISSING
                node = node.get(step, _MISSING)
                if node is _MISSING:
                    return _MISSING
            else:
                if type(node) is not list:
                    return _MISSING
                try:
                    node = node[step]
                except IndexError:
                    return _MISSING
        return node


MISSING = _MISSING
ROOT = JsonPath("$", ())
_KEY_CHARS = re.compile(r"[^.\[\]'\"\s$]+")


def compile_json_path(path: str) -> JsonPath:
    """``$``, ``.key``, ``['key']``/``["key"]``, ``[index]``. ValueError says where it broke
    (positions count characters from 1)."""
    if not path:
        raise ValueError("json path must not be empty; use '$' for the whole payload")
    if not path.startswith("$"):
        guess = path.lstrip(".")
        hint = f"; did you mean '$.{guess}'?" if _KEY_CHARS.fullmatch(guess.split(".")[0] or "-") else ""
        raise ValueError(f"json path {path!r} must start with '$' (the payload), like '$.temp'{hint}")
    steps: list[str | int] = []
    i, n = 1, len(path)
    while i < n:
        c = path[i]
        if c == ".":
            m = _KEY_CHARS.match(path, i + 1)
            if not m:
                raise ValueError(
                    f"json path {path!r}: expected a key after '.' at position {i + 1}; "
                    f"use ['...'] for keys with spaces or special characters")
            steps.append(m.group(0))
            i = m.end()
        elif c == "[":
            close = _bracket(path, i)
            inner = path[i + 1:close]
            if inner[:1] in ("'", '"'):
                quote = inner[0]
                if len(inner) < 2 or inner[-1] != quote:
                    raise ValueError(f"json path {path!r}: unterminated quoted key at position {i + 2}")
                key = inner[1:-1].replace("\\" + quote, quote).replace("\\\\", "\\")
                steps.append(key)
            elif re.fullmatch(r"-?\d+", inner.strip()):
                steps.append(int(inner))
            elif inner.strip() == "*":
                raise ValueError(
                    f"json path {path!r}: '[*]' is not supported; a top-level array of samples is "
                    f"expanded automatically (write the path of one element, like '$.temp')")
            else:
                raise ValueError(
                    f"json path {path!r}: bad index {inner!r} at position {i + 1}: use a number like [0] "
                    f"or a quoted key like ['key name']")
            i = close + 1
        else:
            raise ValueError(
                f"json path {path!r}: unexpected {c!r} at position {i + 1}; steps are '.key', ['key'] or [index]")
    return JsonPath(path, tuple(steps))


def _bracket(path: str, start: int) -> int:
    """Position of the ']' closing the '[' at ``start``, skipping quoted text."""
    i, n = start + 1, len(path)
    quote = None
    while i < n:
        c = path[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in ("'", '"'):
            quote = c
        elif c == "]":
            return i
        i += 1
    raise ValueError(f"json path {path!r}: '[' at position {start + 1} is never closed")


# ---------------------------------------------------------------- timestamps

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FRACTION = re.compile(r"([T ]\d{2}:?\d{2}:?\d{2})[.,](\d+)")


def epoch_to_ns(value: float | int) -> int:
    """Epoch seconds / ms / µs / ns, told apart by magnitude (unambiguous from 1973 to ~5000; any
    number gives some time, which may lie far outside int64 nanoseconds)."""
    magnitude = abs(value)
    if magnitude < 1e11:
        unit, resolution = 1_000_000_000, 1_000  # a float second near 2e9 resolves ~0.2 µs
    elif magnitude < 1e14:
        unit, resolution = 1_000_000, 1
    elif magnitude < 1e17:
        unit, resolution = 1_000, 1
    else:
        unit, resolution = 1, 1
    if isinstance(value, float):
        # whole and fraction apart: 1700000000.25 * 1e9 in one float product is off by ~100 ns
        whole = int(value)
        ns = whole * unit + round((value - whole) * unit / resolution) * resolution
    else:
        ns = value * unit
    return ns


def iso_to_ns(text: str) -> int | None:
    """ISO 8601 with up to nanosecond fractions; no offset means UTC."""
    extra_ns = 0
    m = _FRACTION.search(text)
    if m and len(m.group(2)) > 6:
        digits = m.group(2)[:9].ljust(9, "0")
        extra_ns = int(digits[6:])
        text = text[: m.start(2)] + digits[:6] + text[m.end(2):]
    try:
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        delta = dt - _EPOCH
    except (ValueError, OverflowError):  # not ISO 8601, or beyond year 9999 once its offset is applied
        return None
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000 + extra_ns


def timestamp_to_ns(value: Any) -> int | None:
    """A source timestamp in nanoseconds (unbounded: check it against a window), or None if
    ``value`` is not a timestamp at all."""
    kind = type(value)
    if kind is int or kind is float:
        if value != value or value in (float("inf"), float("-inf")):
            return None
        return epoch_to_ns(value)
    if kind is str:
        text = value.strip()
        if not text:
            return None
        if text[0].isdigit() and text.replace(".", "", 1).isdigit():
            return epoch_to_ns(float(text) if "." in text else int(text))
        return iso_to_ns(text)
    return None
