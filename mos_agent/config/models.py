"""Schema of the agent file and the common part of device files.

Drivers subclass :class:`DeviceBase` and :class:`TagBase` with their own ``connection`` and tag
fields. Every model forbids unknown keys so a misspelt key is an error, never silently ignored.
Parsed durations are float seconds and sizes are int bytes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from mos_agent import units
from mos_agent.taxonomy import ASSET_NAME, CATEGORIES, DEFAULT_KIND, DEFAULT_STAGES, KINDS

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h|d)\s*$")
_DURATION_FACTOR = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
                    "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$")
_SIZE_FACTOR = {None: 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
                "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def parse_duration(value: Any) -> float:
    """``100ms`` ``1s`` ``5m`` ``7d`` → seconds. A bare number is seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 500ms, 1s or 5m")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _DURATION_FACTOR[m.group(2)]
    else:
        raise ValueError(f"bad duration {value!r}: expected a number with a unit, like 500ms, 1s, 5m, 7d")
    if seconds <= 0:
        raise ValueError(f"duration {value!r} must be greater than zero")
    return seconds


def parse_size(value: Any) -> int:
    """``512MiB`` ``1GiB`` ``100MB`` → bytes. A bare number is bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 512MiB or 1GiB")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(float(m.group(1)) * _SIZE_FACTOR[m.group(2)])
    else:
        raise ValueError(f"bad size {value!r}: expected a number with a unit, like 512MiB or 1GiB")
    if size <= 0:
        raise ValueError(f"size {value!r} must be greater than zero")
    return size


def _check_asset_name(value: str) -> str:
    if not ASSET_NAME.match(value):
        raise ValueError(f"{value!r} is not a valid asset name: use lower-case letters, digits, '_' and '-'")
    return value


def _check_unit(value: str) -> str:
    if units.lookup(value) is None:
        close = units.suggest(value)
        hint = f"; did you mean {close!r}?" if close else ""
        raise ValueError(f"unknown unit {value!r} (expected a UCUM code from the unit table{hint})")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
AssetName = Annotated[str, AfterValidator(_check_asset_name)]
UnitCode = Annotated[str, AfterValidator(_check_unit)]
Category = Literal[CATEGORIES]  # type: ignore[valid-type]
Kind = Literal[KINDS]  # type: ignore[valid-type]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, populate_by_name=True)


# ---------------------------------------------------------------- agent file


class AgentSection(StrictModel):
    id: str = Field(min_length=1)
    enterprise: AssetName | None = None
    site: AssetName
    state_dir: Path = Path("/var/lib/mos-agent")
    health: str = "127.0.0.1:9750"
    stages: list[AssetName] = Field(default_factory=lambda: list(DEFAULT_STAGES))
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_timeout: Duration = 10.0

    @field_validator("health")
    @classmethod
    def _health_address(cls, value: str) -> str:
        if value == "off":
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"health must be HOST:PORT or 'off', got {value!r}")
        return value


class BufferSection(StrictModel):
    max_size: Size = 2**30
    overflow: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    # kept free on the state directory's filesystem: below it the disk is the buffer's cap (the
    # overflow policy applies), so SQLite always has room to move cursors and free space
    min_free_space: Size = Field(default=32 * 2**20, ge=2**20)
    commit_interval: Duration = 0.2


Precision = Literal["ns", "us", "ms", "s"]
PRECISION_NS: dict[str, int] = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}


class SinkBase(StrictModel):
    name: str | None = None  # cursor identity; defaults to the sink type (+ index if repeated)
    # every sink's failed writes are retried with backoff up to this delay (sinks/runner.py)
    max_retry_delay: Duration = 60.0


class InfluxSinkConfig(SinkBase):
    type: Literal["influxdb"]
    url: str
    org: str = ""
    bucket: str
    token: str | None = Field(default=None, repr=False)
    token_file: Path | None = None
    batch_size: int = Field(default=5000, gt=0, le=1_000_000)
    flush_interval: Duration = 1.0
    gzip: bool = True
    timeout: Duration = 10.0
    # Largest request body (uncompressed line protocol) the sink sends; larger batches are split.
    # For stores or proxies in front of them with a request size limit (default: none).
    max_request_size: Size | None = None
    # The finest time step the store keeps: readings of one series without a source time are
    # kept at least one step apart so the store does not merge them (VictoriaMetrics: ms).
    precision: Precision = "ns"
    # quality_code 0 (good) is not written: the quality tag says it, and stores keeping a series
    # per field would hold two rows a point. ``always`` writes it on every line, for stores whose
    # queries want it.
    quality_code: Literal["nonzero", "always"] = "nonzero"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"url must start with http:// or https://, got {value!r}")
        return value


class SqliteSinkConfig(SinkBase):
    type: Literal["sqlite"]
    retention: Duration = 7 * 86400.0
    path: Path | None = None  # default: <state_dir>/history.sqlite
    batch_size: int = Field(default=50_000, gt=0)
    flush_interval: Duration = 1.0


SinkConfig = Annotated[InfluxSinkConfig | SqliteSinkConfig, Field(discriminator="type")]


class LocalizedText(StrictModel):
    en: str | None = None
    ko: str | None = None


class CatalogSection(StrictModel):
    publisher: str | None = None
    contact: str | None = None
    license: str | None = None
    policy: str | None = None
    title: LocalizedText | None = None
    description: LocalizedText | None = None
    base_uri: str | None = None


class AgentConfig(StrictModel):
    agent: AgentSection
    devices: str | list[str] = "devices/*.yaml"
    buffer: BufferSection = Field(default_factory=BufferSection)
    sinks: list[SinkConfig] = Field(default_factory=list)
    catalog: CatalogSection | None = None

    def time_resolution_ns(self) -> int:
        """The coarsest precision of the sinks, in ns: readings without a source time are kept
        that far apart (a sink without ``precision`` keeps nanoseconds)."""
        return max((PRECISION_NS[getattr(sink, "precision", "ns")] for sink in self.sinks), default=1)


# ---------------------------------------------------------------- device files


class AssetSection(StrictModel):
    area: AssetName
    line: AssetName | None = None
    cell: AssetName | None = None


class SeriesFields(StrictModel):
    """What the taxonomy and the normaliser need of a series: a tag's fields, and the defaults a
    driver applies to series it discovers (OPC UA ``browse:``)."""

    category: Category
    kind: Kind | None = None
    unit: UnitCode | None = None
    scale: float = 1.0
    offset: float = 0.0
    deadband: float = Field(default=0.0, ge=0.0)
    range: tuple[float, float] | None = None


class TagBase(SeriesFields):
    """Fields every driver's tag has. ``data_type()`` names the value's type for the catalogue."""

    name: str = Field(min_length=1, max_length=200)
    description: str | None = None

    def effective_kind(self) -> str:
        return self.kind or DEFAULT_KIND[self.category]

    def data_type(self) -> str:
        return "float"


class DeviceBase(StrictModel):
    """A device file. Drivers narrow ``connection`` and ``tags`` to their own models."""

    driver_name: ClassVar[str] = ""

    name: AssetName
    driver: str
    asset: AssetSection
    stage: str
    title: LocalizedText | None = None
    description: LocalizedText | None = None
    enabled: bool = True
    poll_interval: Duration = 1.0
    connection: dict[str, Any] = Field(default_factory=dict)
    tags: list[TagBase] = Field(default_factory=list)

    @field_validator("stage")
    @classmethod
    def _stage(cls, value: str, info: ValidationInfo) -> str:
        stages = (info.context or {}).get("stages", DEFAULT_STAGES)
        if value not in stages:
            from difflib import get_close_matches

            close = get_close_matches(value, list(stages), n=1, cutoff=0.7)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown stage {value!r} (expected one of: {', '.join(stages)}{hint})")
        return value
