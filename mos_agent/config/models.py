"""Schema of the agent file and the common part of device files.

Drivers subclass :class:`DeviceBase` and :class:`TagBase` with their own ``connection`` and tag
fields. Every model forbids unknown keys so a misspelt key is an error, never silently ignored.
Parsed durations are float seconds and sizes are int bytes.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from mos_agent import text, units
from mos_agent.kpi.calendar import WEEKDAYS, ShiftRule, overlapping_rules, parse_clock, parse_span
from mos_agent.kpi.equipment import INTEGER_TYPES
from mos_agent.taxonomy import ASSET_NAME, CATEGORIES, DEFAULT_KIND, DEFAULT_STAGES, KINDS, KPI_CATEGORY

if TYPE_CHECKING:
    from mos_agent.batch import SourceTimeWindow

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


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1); any other name or address (0.0.0.0
    too) lets other machines in."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


def _check_encoding(value: str) -> str:
    return text.check_encoding(value)


Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
AssetName = Annotated[str, AfterValidator(_check_asset_name)]
UnitCode = Annotated[str, AfterValidator(_check_unit)]
# How a device's text bytes are read (``cp949``, ``euc-kr``…); default UTF-8.
TextEncoding = Annotated[str, AfterValidator(_check_encoding)]
Category = Literal[CATEGORIES]  # type: ignore[valid-type]
Kind = Literal[KINDS]  # type: ignore[valid-type]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, populate_by_name=True)


def located_errors(title: str, problems: list[tuple[tuple[str | int, ...], str]]) -> ValidationError:
    """A ValidationError whose entries point at the exact keys (a model validator's own errors would
    all point at the model as a whole, and ``validate`` maps locations to lines)."""
    return ValidationError.from_exception_data(title, [
        InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=None)
        for loc, message in problems
    ])


def _check_clock(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 22:00 as the base-60 number 1320
        raise ValueError(f"expected a time of day like \"22:00\" in quotes, got the number {value} "
                         "(YAML reads unquoted 22:00 as a number)")
    if not isinstance(value, str):
        raise ValueError(f"expected a time of day like \"22:00\", got {value!r}")
    parse_clock(value)
    return value


def _check_span(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a break like \"12:00-13:00\", got {value!r}")
    parse_span(value)
    return value


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}: expected an IANA name like Asia/Seoul or UTC") from None
    return value


def _state_value(value: Any) -> float | str:
    """A raw state value as the engine compares it: numbers (and YAML booleans, for bit tags) as
    floats, text as written."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise ValueError(f"a state value is a number or a text, got {value!r}")


ClockTime = Annotated[str, BeforeValidator(_check_clock)]
ClockSpan = Annotated[str, BeforeValidator(_check_span)]
StateValue = Annotated[float | str, BeforeValidator(_state_value)]
Weekday = Literal[WEEKDAYS]  # type: ignore[valid-type]


# ---------------------------------------------------------------- agent file


class SourceTimeSection(StrictModel):
    """Source timestamps outside ``earliest`` … arrival + ``max_ahead`` are replaced by the arrival
    time (quality uncertain, code 1009)."""

    earliest: date = date(1990, 1, 1)
    max_ahead: Duration = 86400.0

    @field_validator("earliest")
    @classmethod
    def _earliest(cls, value: date) -> date:
        if not date(1970, 1, 1) <= value <= date(2200, 1, 1):
            raise ValueError(f"earliest must be between 1970-01-01 and 2200-01-01, got {value}")
        return value

    @field_validator("max_ahead")
    @classmethod
    def _max_ahead(cls, value: float) -> float:
        if value > 365 * 86400.0:
            raise ValueError("max_ahead must be at most a year (365d)")
        return value

    def window(self) -> SourceTimeWindow:
        from mos_agent.batch import SourceTimeWindow  # the configuration stays free of numpy

        start = datetime(self.earliest.year, self.earliest.month, self.earliest.day, tzinfo=UTC)
        return SourceTimeWindow(int(start.timestamp()) * 10**9, round(self.max_ahead * 1e9))


class AgentSection(StrictModel):
    id: str = Field(min_length=1)
    enterprise: AssetName | None = None
    site: AssetName
    state_dir: Path = Path("/var/lib/mos-agent")
    # the bearer token the health port asks for (before ``health``: its check reads this)
    health_token_file: Path | None = None
    health: str = "127.0.0.1:9750"
    stages: list[AssetName] = Field(default_factory=lambda: list(DEFAULT_STAGES))
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_timeout: Duration = 10.0
    timezone: Annotated[str, AfterValidator(_check_timezone)] | None = None  # IANA; default the system's
    source_time: SourceTimeSection = Field(default_factory=SourceTimeSection)

    @field_validator("health")
    @classmethod
    def _health_address(cls, value: str, info: ValidationInfo) -> str:
        if value == "off":
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"health must be HOST:PORT or 'off', got {value!r}")
        # (a health_token_file that failed its own check is missing from info.data: reported there)
        if not is_loopback(host) and "health_token_file" in info.data and info.data["health_token_file"] is None:
            raise ValueError(f"health binds to {host}, which other machines can reach: set agent.health_token_file "
                             "(a file holding the bearer token the status page and `mos-agent status` send) or "
                             "bind to 127.0.0.1")
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
    # "contracts": the sink receives only what a sharing contract naming it releases
    share: Literal["contracts"] | None = None

    @model_validator(mode="after")
    def _share_needs_name(self) -> SinkBase:
        if self.share is not None and not self.name:
            raise ValueError("a sink with share: contracts needs a name: (contracts name the sink that "
                             "receives what they release)")
        return self


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


_MQTT_URL = re.compile(r"^(mqtts?)://([^/:\s]+|\[[0-9a-fA-F:]+\])(?::(\d+))?/?$")
# MQTT topic separators and wildcards cannot be part of a topic level we write
_TOPIC_SPECIALS = frozenset("+#")


class MqttTls(StrictModel):
    ca_file: Path | None = None  # default: the system's trusted CAs
    cert_file: Path | None = None  # client certificate, with key_file
    key_file: Path | None = Field(default=None, validate_default=True)

    @field_validator("key_file")
    @classmethod
    def _pair(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if (value is None) != (info.data.get("cert_file") is None):
            raise ValueError("cert_file and key_file go together: give both or neither")
        return value


class MqttSinkConfig(SinkBase):
    """Northbound MQTT: the plant as a Unified Namespace (``format: uns``, JSON a value) or as a
    Sparkplug B 3.0 edge node (``format: sparkplug``)."""

    type: Literal["mqtt"]
    url: str
    format: Literal["uns", "sparkplug"]
    prefix: str | None = Field(default=None, validate_default=True)  # uns: first topic level(s)
    group_id: str | None = Field(default=None, validate_default=True)  # sparkplug
    # sparkplug: publish only while this primary host application says it is online (STATE topic)
    primary_host_id: str | None = Field(default=None, validate_default=True)
    client_id: str | None = None  # default: mos-agent-<agent id>-<sink name>
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    password_file: Path | None = None
    tls: MqttTls | None = None
    qos: Literal[0, 1] = 1
    keepalive: Duration = 30.0
    # how long a batch may wait for the broker's acknowledgements before it is sent again
    ack_timeout: Duration = 30.0
    batch_size: int = Field(default=5000, gt=0, le=1_000_000)
    flush_interval: Duration = 1.0
    max_retry_delay: Duration = 60.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        m = _MQTT_URL.match(value)
        if not m:
            raise ValueError(f"url must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got {value!r}")
        if m.group(3) is not None and not 0 < int(m.group(3)) < 65536:
            raise ValueError(f"port {m.group(3)} in {value!r} is out of range")
        return value

    @field_validator("tls")
    @classmethod
    def _tls_needs_mqtts(cls, value: MqttTls | None, info: ValidationInfo) -> MqttTls | None:
        # with mqtt:// the files would be ignored and the password sent in clear
        if value is not None and str(info.data.get("url", "")).startswith("mqtt://"):
            raise ValueError("tls is for mqtts:// urls; with mqtt:// the connection is not encrypted "
                             "(use mqtts://HOST[:PORT], default port 8883)")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if info.data.get("format") == "sparkplug":
            raise ValueError("prefix is for format: uns (Sparkplug topics start with spBv1.0)")
        if not value.strip("/") or set(value) & _TOPIC_SPECIALS or "//" in value:
            raise ValueError(f"prefix {value!r} must be topic levels without '+', '#' or empty levels")
        return value.strip("/")

    @field_validator("group_id", "primary_host_id")
    @classmethod
    def _sparkplug_ids(cls, value: str | None, info: ValidationInfo) -> str | None:
        from mos_agent.sparkplug.topic import id_problem

        sparkplug = info.data.get("format") == "sparkplug"
        if value is None:
            if sparkplug and info.field_name == "group_id":
                raise ValueError("group_id is required with format: sparkplug")
            return value
        if not sparkplug and "format" in info.data:
            raise ValueError(f"{info.field_name} is for format: sparkplug")
        problem = id_problem(value)
        if problem:
            raise ValueError(f"{info.field_name} {value!r} {problem}")
        return value

    @property
    def tls_enabled(self) -> bool:
        return self.url.startswith("mqtts://")

    @property
    def host_port(self) -> tuple[str, int]:
        m = _MQTT_URL.match(self.url)
        assert m is not None
        host = m.group(2).strip("[]")
        return host, int(m.group(3)) if m.group(3) else (8883 if m.group(1) == "mqtts" else 1883)


SinkConfig = Annotated[InfluxSinkConfig | SqliteSinkConfig | MqttSinkConfig, Field(discriminator="type")]


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


class SharingSection(StrictModel):
    contracts: str | list[str]  # glob(s) of contract files, relative to the agent file


class ShiftConfig(StrictModel):
    """One shift of the calendar: wall-clock times in ``agent.timezone``; ``end`` not after
    ``start`` crosses midnight; ``days`` are the weekdays the shift starts on (default: every day)."""

    name: str = Field(min_length=1, max_length=64)
    start: ClockTime
    end: ClockTime
    breaks: list[ClockSpan] = Field(default_factory=list)
    days: list[Weekday] | None = Field(default=None, min_length=1)

    def rule(self) -> ShiftRule:
        return ShiftRule.build(self.name, parse_clock(self.start), parse_clock(self.end),
                               [parse_span(b) for b in self.breaks], self.days)


class KpiSection(StrictModel):
    interval: Duration = 60.0  # how often shift-to-date KPIs are emitted

    @field_validator("interval")
    @classmethod
    def _at_least_a_second(cls, value: float) -> float:
        if value < 1.0:
            raise ValueError(f"interval must be at least 1s (the KPIs are computed once a second), got {value:g}s")
        return value


class AgentConfig(StrictModel):
    agent: AgentSection
    devices: str | list[str] = "devices/*.yaml"
    buffer: BufferSection = Field(default_factory=BufferSection)
    sinks: list[SinkConfig] = Field(default_factory=list)
    catalog: CatalogSection | None = None
    sharing: SharingSection | None = None
    shifts: list[ShiftConfig] = Field(default_factory=list)  # planned operating time for KPIs
    kpi: KpiSection = Field(default_factory=KpiSection)

    @model_validator(mode="after")
    def _shift_calendar(self) -> AgentConfig:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        rules: list[ShiftRule] = []
        first_named: dict[str, int] = {}
        for i, shift in enumerate(self.shifts):
            if shift.name in first_named:
                problems.append((("shifts", i, "name"), f"duplicate shift name {shift.name!r} "
                                                        f"(also shifts[{first_named[shift.name]}])"))
            first_named.setdefault(shift.name, i)
            try:
                rules.append(shift.rule())
            except ValueError as exc:
                problems.append((("shifts", i, "breaks"), str(exc)))
        if problems:
            raise located_errors(type(self).__name__, problems)
        for i, j, day in overlapping_rules(rules):
            problems.append((("shifts", j, "start"), f"shift {rules[j].name!r} ({rules[j].describe()}) overlaps "
                                                     f"shift {rules[i].name!r} ({rules[i].describe()}) on "
                                                     f"{WEEKDAYS[day]}"))
        if problems:
            raise located_errors(type(self).__name__, problems)
        return self

    def time_resolution_ns(self) -> int:
        """The coarsest precision of the sinks, in ns: readings without a source time are kept
        that far apart (a sink without ``precision`` keeps nanoseconds)."""
        return max((PRECISION_NS[getattr(sink, "precision", "ns")] for sink in self.sinks), default=1)

    @field_validator("sinks")
    @classmethod
    def _edge_node_id(cls, sinks: list[Any], info: ValidationInfo) -> list[Any]:
        """A Sparkplug sink publishes under the agent id (its edge node id), which must then be a
        valid topic level."""
        from mos_agent.sparkplug.topic import id_problem

        agent = info.data.get("agent")
        if agent is not None and any(isinstance(s, MqttSinkConfig) and s.format == "sparkplug" for s in sinks):
            problem = id_problem(agent.id)
            if problem:
                raise ValueError(f"a format: sparkplug sink uses agent.id {agent.id!r} as its edge node id, "
                                 f"which {problem}")
        return sinks


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


TAG_NAME_MAX = 200  # names a driver generates (OPC UA browse paths) are shortened to fit


class TagBase(SeriesFields):
    """Fields every driver's tag has. ``data_type()`` names the value's type for the catalogue."""

    name: str = Field(min_length=1, max_length=TAG_NAME_MAX)
    description: str | None = None

    def effective_kind(self) -> str:
        return self.kind or DEFAULT_KIND[self.category]

    def data_type(self) -> str:
        return "float"


class KpiClasses(StrictModel):
    """Raw state values → ISO 22400 time class; a value in none of them is ``unknown``."""

    production: list[StateValue] = Field(default_factory=list)  # APT
    setup: list[StateValue] = Field(default_factory=list)  # AUST
    delay: list[StateValue] = Field(default_factory=list)  # ADET
    down: list[StateValue] = Field(default_factory=list)  # ADOT
    planned_down: list[StateValue] = Field(default_factory=list)  # PDOT

    unknown_key_noun: ClassVar[str] = "time class"

    @model_validator(mode="after")
    def _one_class_a_value(self) -> KpiClasses:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        first_class: dict[float | str, str] = {}
        for cls in type(self).model_fields:
            for i, value in enumerate(getattr(self, cls)):
                if value in first_class:
                    problems.append(((cls, i), f"state value {format_state_value(value)} is listed under "
                                               f"{first_class[value]} and {cls}: a value belongs to one class"))
                else:
                    first_class[value] = cls
        if problems:
            raise located_errors(type(self).__name__, problems)
        return self


class KpiState(StrictModel):
    tag: str = Field(min_length=1)
    classes: KpiClasses


class DeviceKpi(StrictModel):
    """A device's ``kpi:`` block (ISO 22400-2 work-unit KPIs per shift)."""

    state: KpiState
    produced: str = Field(min_length=1)  # counter tag: produced quantity PQ
    good: str | None = Field(default=None, min_length=1)  # counter tag: good quantity GQ
    scrap: str | None = Field(default=None, min_length=1)  # counter tag: scrap quantity SQ
    ideal_cycle_time: Duration  # PRI, planned run time per item

    @model_validator(mode="after")
    def _good_or_scrap(self) -> DeviceKpi:
        if (self.good is None) == (self.scrap is None):
            which = "both are given" if self.good else "neither is given"
            message = f"give exactly one of good (good-parts counter) or scrap (scrap counter); {which}"
            if self.scrap is None:
                raise ValueError(message)
            # both: point at the second of the two keys, the one to remove or keep
            raise located_errors(type(self).__name__, [(("scrap",), message)])
        return self


def kpi_problems(kpi: DeviceKpi, tags: list[TagBase]) -> list[tuple[tuple[str | int, ...], str]]:
    """A ``kpi:`` block checked against the device's tags: every tag it names exists and counters
    are integer tags."""
    from difflib import get_close_matches

    problems: list[tuple[tuple[str | int, ...], str]] = []
    by_name = {tag.name: tag for tag in tags}

    def known(loc: tuple[str | int, ...], name: str) -> TagBase | None:
        tag = by_name.get(name)
        if tag is None:
            close = get_close_matches(name, list(by_name), n=1, cutoff=0.7)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append((loc, f"unknown tag {name!r}: the KPIs use tags of this device{hint}"))
        return tag

    known(("kpi", "state", "tag"), kpi.state.tag)
    for role in ("produced", "good", "scrap"):
        name = getattr(kpi, role)
        if name is None:
            continue
        tag = known(("kpi", role), name)
        # "float" is a number whose type the source decides (OPC UA auto/number, MQTT number)
        if tag is not None and tag.data_type() not in INTEGER_TYPES and tag.data_type() != "float":
            problems.append((("kpi", role), f"counter tag {name!r} is {tag.data_type()}: a counter must be "
                                            f"an integer type ({', '.join(sorted(INTEGER_TYPES))})"))
    return problems


def format_state_value(value: float | str) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)


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
    # A device profile (mos_agent.config.profiles) merged into this device when loaded: its file,
    # and the profile's tags this machine lacks.
    profile: Path | None = None
    exclude: list[str] = Field(default_factory=list)
    kpi: DeviceKpi | None = None  # ISO 22400 KPIs of this equipment per shift

    @model_validator(mode="after")
    def _kpi_references(self) -> DeviceBase:
        if self.kpi is not None and (problems := kpi_problems(self.kpi, list(self.tags))):
            raise located_errors(type(self).__name__, problems)
        return self

    def configured_tags(self) -> list[TagBase]:
        """The tags that are series from the start (configured tag ``i`` is series ``i``). A
        device whose tags are only patterns for series found at run time has none."""
        return self.tags

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


# ---------------------------------------------------------------- sharing contracts

# What a contract may release: the taxonomy's categories and the agent's own KPIs.
SHAREABLE_CATEGORIES: tuple[str, ...] = tuple(dict.fromkeys((*CATEGORIES, KPI_CATEGORY)))
ShareableCategory = Literal[SHAREABLE_CATEGORIES]  # type: ignore[valid-type]


def parse_instant(value: Any) -> date | datetime:
    """A contract's validity bound: a date (``2026-12-01``) or a date-time with or without an
    offset (``2027-11-30T23:59:59+09:00``); YAML may already have made either."""
    if isinstance(value, datetime | date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                return date.fromisoformat(text)
            return datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError:
            pass
    raise ValueError(f"bad date {value!r}: expected a date like 2026-12-01 or a date-time like "
                     f"2026-12-01T08:00:00+09:00")


def parse_resolution(value: Any) -> float | None:
    """``raw`` → None (every reading as it is); a duration → window length in seconds."""
    if value == "raw":
        return None
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError(f"bad resolution {value!r}: expected 'raw' or a duration like 10s, 1m or 1h") from None


Instant = Annotated[date | datetime, BeforeValidator(parse_instant)]
Resolution = Annotated[float | None, BeforeValidator(parse_resolution)]


class ValidityPeriod(StrictModel):
    start: Instant = Field(alias="from")
    end: Instant = Field(alias="to")


class ContractConfig(StrictModel):
    """A sharing contract file: what one consumer receives, through which sink, for how long."""

    id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
    title: LocalizedText | None = None
    consumer: str = Field(min_length=1)
    sink: str = Field(min_length=1)
    valid: ValidityPeriod
    datasets: list[str] = Field(min_length=1)
    categories: list[ShareableCategory] = Field(default_factory=lambda: list(SHAREABLE_CATEGORIES))
    resolution: Resolution = None
    pseudonymise: bool = False
