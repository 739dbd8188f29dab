"""The manufacturing-data taxonomy every reading is normalised into.

Categories and kinds are fixed by the product contract; process stages are plant-configurable
with the default list below. Quality is a class (good/uncertain/bad) plus the source's own code.
"""

from __future__ import annotations

import hashlib
import re
from enum import IntEnum

CATEGORIES: tuple[str, ...] = (
    "process",
    "quality",
    "equipment_state",
    "production",
    "energy",
    "environment",
    "material",
    "maintenance",
)

CATEGORY_DESCRIPTIONS: dict[str, str] = {
    "process": "machine and process parameters (pressure, temperature, speed, feed)",
    "quality": "inspection results and measured part characteristics",
    "equipment_state": "run / idle / fault state and operating mode",
    "production": "counts, cycle times, orders, programs",
    "energy": "power, energy, current, voltage",
    "environment": "ambient temperature, humidity, particles",
    "material": "lots, batches, material consumption",
    "maintenance": "alarms, wear, service counters",
}

# The category of the ISO 22400 KPI records the agent itself produces (never a tag's category).
KPI_CATEGORY = "kpi"
CATEGORY_DESCRIPTIONS[KPI_CATEGORY] = ("ISO 22400-2 key performance indicators per equipment and shift "
                                       "(OEE, availability, effectiveness, quality rate, time elements, quantities)")
RECORD_CATEGORIES: tuple[str, ...] = (*CATEGORIES, KPI_CATEGORY)  # every measurement in the store

KINDS: tuple[str, ...] = ("sample", "event", "condition")

# Which kind a category implies when a tag does not say.
DEFAULT_KIND: dict[str, str] = {
    "process": "sample",
    "quality": "sample",
    "equipment_state": "event",
    "production": "event",
    "energy": "sample",
    "environment": "sample",
    "material": "event",
    "maintenance": "condition",
}

DEFAULT_STAGES: tuple[str, ...] = (
    "receiving",
    "machining",
    "forming",
    "welding",
    "assembly",
    "painting",
    "inspection",
    "packing",
    "shipping",
    "utility",
)

ASSET_LEVELS: tuple[str, ...] = ("enterprise", "site", "area", "line", "cell", "equipment")
ASSET_NAME = re.compile(r"^[a-z0-9_-]+$")


class Quality(IntEnum):
    """Quality class; the integer is what drivers put in a batch's ``quality`` column."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


QUALITY_NAMES: tuple[str, ...] = ("good", "uncertain", "bad")


class CollectorCode(IntEnum):
    """Quality codes the agent itself assigns (Modbus exception codes are 1-11, OPC UA StatusCodes
    are 32-bit with the severity in the top bits, so 1000-1099 collides with neither)."""

    OK = 0
    TIMEOUT = 1001
    CONNECTION_LOST = 1002
    STALE = 1003
    NOT_A_NUMBER = 1004
    OUT_OF_RANGE = 1005
    DECODE_ERROR = 1006
    PAYLOAD_ERROR = 1007
    NOT_CONNECTED = 1008
    SOURCE_TIME_REPLACED = 1009  # the source's timestamp was outside the plausible window


NAME_DIGEST_CHARS = 10  # 40 bits: 10,000 names sharing a readable part collide with odds of 1 in 20,000
_NOT_ASSET_CHARS = re.compile(r"[^a-z0-9_-]+")
_READABLE_ASSET_CHARS = 48


def name_digest(raw: str) -> str:
    """A short, stable hash of a name as it came from the source (the same on every run and
    machine, unlike ``hash()``)."""
    data = raw.encode("utf-8", "surrogatepass")  # even text that is not valid Unicode hashes
    return hashlib.blake2b(data, digest_size=8).hexdigest()[:NAME_DIGEST_CHARS]


def asset_name_for(raw: str) -> str:
    """The asset name (``[a-z0-9_-]``) of a name taken from the source at run time: an MQTT topic
    level captured into the asset path (and Sparkplug device ids and metric names).

    A valid name of at most 48 characters stays as it is. Any other name becomes its readable
    ASCII part (lower case, runs of other characters as ``_``, at most 48 characters) plus ``-``
    and a hash of the whole original, so ``plant/온도계1`` and ``plant/습도계1`` stay two
    pieces of equipment (``1-<hash>``, ``1-<other hash>``), and ``Press01`` does not merge with
    ``press01``. The mapping is a pure function: the same on every restart."""
    if len(raw) <= _READABLE_ASSET_CHARS and ASSET_NAME.match(raw):
        return raw
    readable = _NOT_ASSET_CHARS.sub("_", raw.lower()).strip("_")[:_READABLE_ASSET_CHARS].rstrip("_")
    digest = name_digest(raw)
    return f"{readable}-{digest}" if readable else digest


def shortened_name(name: str, limit: int) -> str:
    """``name`` itself when it fits in ``limit`` characters, else its start and its end around a
    hash of the whole (``head~<hash>~tail``): deterministic, distinct for distinct names, and
    the end of a long path — usually the variable's own name — still readable."""
    if len(name) <= limit:
        return name
    digest = name_digest(name)
    room = limit - len(digest) - 2
    head = room // 3
    return f"{name[:head]}~{digest}~{name[len(name) - (room - head):]}"


def asset_path(levels: dict[str, str | None]) -> str:
    """``enterprise/site/area/line/cell/equipment`` with absent levels left out."""
    return "/".join(name for k in ASSET_LEVELS if (name := levels.get(k)))
