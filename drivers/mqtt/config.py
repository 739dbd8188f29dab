"""The MQTT device file: broker connection and tags by topic (with ISA-95 captures) and JSON path.
drivers/mqtt/README.md describes every key with an example (validated by tests/test_doc_examples.py);
sample.yaml is a complete file.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from drivers.mqtt.paths import (
    ROOT,
    JsonPath,
    TopicTemplate,
    compile_json_path,
    compile_topic,
)
from mos_agent.config.loader import read_secret
from mos_agent.config.models import DeviceBase, Duration, SeriesFields, Size, StrictModel, TagBase, TextEncoding
from mos_agent.sparkplug import id_problem
from mos_agent.taxonomy import DEFAULT_KIND


def _protocol(value: Any) -> Any:
    # YAML reads `protocol: 5` as an int and `protocol: 3.1.1` as a string
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


class TlsConfig(StrictModel):
    """TLS to the broker. ``tls: {}`` means TLS with the system's trusted CAs."""

    ca: Path | None = None  # CA bundle that signed the broker's certificate
    certificate: Path | None = None  # client certificate (mutual TLS)
    private_key: Path | None = None
    private_key_password_file: Path | None = None
    insecure_skip_verify: bool = False  # testing only: accepts any broker certificate

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("tls: certificate and private_key go together (mutual TLS needs both)")
        if self.private_key_password_file is not None and self.private_key is None:
            raise ValueError("tls: private_key_password_file without a private_key")
        return self


class MqttConnection(StrictModel):
    host: str = Field(min_length=1)
    port: int | None = Field(default=None, gt=0, lt=65536)  # default 1883, or 8883 with tls
    client_id: str | None = Field(default=None, min_length=1, max_length=65535)  # mos-agent-<agent id>-<device>
    # MQTT 5 lets the agent say how many unacknowledged messages it accepts (receive_maximum);
    # with 3.1.1 the broker's own limit applies (Mosquitto: max_inflight_messages, 20 by default),
    # which caps QoS 1 throughput at about that many messages per buffer commit.
    protocol: Annotated[Literal["5", "3.1.1"], BeforeValidator(_protocol)] = "5"
    qos: Literal[0, 1] = 1  # 0 is lossy: no redelivery of what was in flight at a crash
    clean_session: bool = False  # False: the broker queues messages for the agent while it is away
    session_expiry: Duration = 7 * 86400.0  # MQTT 5: how long the broker keeps the session
    keepalive: Duration = 60.0
    connect_timeout: Duration = 10.0
    receive_maximum: int = Field(default=10_000, gt=0, le=65535)
    tls: TlsConfig | None = None
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    password_file: Path | None = None
    max_payload: Size = 256 * 1024
    # Topic captures create series at run time; this bounds how many a device may create.
    max_series: int = Field(default=10_000, gt=0)

    @model_validator(mode="after")
    def _credentials(self) -> MqttConnection:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give either password or password_file, not both")
        if (self.password is not None or self.password_file is not None) and not self.username:
            raise ValueError("a password needs a username")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or (8883 if self.tls is not None else 1883)

    def read_password(self) -> str | None:
        if self.password_file is not None:
            return read_secret(None, self.password_file)
        return self.password


class MqttTag(TagBase):
    """A tag: which topics carry it, where in the payload its value (and time) is, and its type."""

    topic: str
    json_path: str | None = Field(default=None, alias="json")
    timestamp: str | None = None  # JSON path of the source time; default: arrival time
    type: Literal["number", "bool", "string"] = "number"
    # False: a message without this tag's path is not an error (sources sending partial updates)
    required: bool = True
    # readings per second this tag is expected to produce over all its captured series
    # (for `validate`); default: one per poll_interval
    expected_rate: float | None = Field(default=None, gt=0)
    encoding: TextEncoding | None = None  # how the payload's bytes are read (cp949…); default: the device's

    _topic: TopicTemplate = PrivateAttr()
    _path: JsonPath = PrivateAttr()
    _timestamp: JsonPath | None = PrivateAttr(default=None)

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, value: str) -> str:
        compile_topic(value)
        return value

    @field_validator("json_path", "timestamp")
    @classmethod
    def _check_path(cls, value: str | None) -> str | None:
        if value is not None:
            compile_json_path(value)
        return value

    def model_post_init(self, context: Any) -> None:
        self._topic = compile_topic(self.topic)
        self._path = compile_json_path(self.json_path) if self.json_path is not None else ROOT
        self._timestamp = compile_json_path(self.timestamp) if self.timestamp is not None else None

    @property
    def template(self) -> TopicTemplate:
        return self._topic

    @property
    def path(self) -> JsonPath:
        return self._path

    @property
    def timestamp_path(self) -> JsonPath | None:
        return self._timestamp

    def data_type(self) -> str:
        return {"number": "float", "bool": "bool", "string": "string"}[self.type]


class SparkplugSource(StrictModel):
    """Which Sparkplug B edge nodes a ``format: sparkplug`` device reads."""

    group_id: str
    edge_node: str  # an edge node id, or "+" for every edge node of the group

    @field_validator("group_id")
    @classmethod
    def _group(cls, value: str) -> str:
        problem = id_problem(value)
        if problem:
            raise ValueError(f"group_id {value!r} {problem}")
        return value

    @field_validator("edge_node")
    @classmethod
    def _node(cls, value: str) -> str:
        problem = None if value == "+" else id_problem(value)
        if problem:
            raise ValueError(f"edge_node {value!r} {problem} (\"+\" reads every edge node of the group)")
        return value

    @property
    def every_node(self) -> bool:
        return self.edge_node == "+"


class SparkplugMetricTag(SeriesFields):
    """A pattern over Sparkplug metric names (``*``, ``?``, ``[...]`` as in shell globs, matched
    case-sensitively against the whole name) and the taxonomy its metrics get."""

    metric: str = Field(min_length=1, max_length=200)
    # readings per second this pattern's metrics are expected to produce (for `validate`);
    # default: one per poll_interval
    expected_rate: float | None = Field(default=None, gt=0)

    _pattern: re.Pattern[str] = PrivateAttr()

    @field_validator("metric")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        if value.count("[") != value.count("]"):
            raise ValueError(f"metric pattern {value!r} has an unclosed '['")
        return value

    def model_post_init(self, context: Any) -> None:
        self._pattern = re.compile(fnmatch.translate(self.metric))

    def matches(self, name: str) -> bool:
        return self._pattern.match(name) is not None

    @property
    def name(self) -> str:
        return self.metric

    def effective_kind(self) -> str:
        return self.kind or DEFAULT_KIND[self.category]

    def data_type(self) -> str:
        """Numbers unless the birth says otherwise (each metric's series takes its birth's type)."""
        return "float"


def _located(loc: tuple[str | int, ...], message: str, value: Any) -> ValidationError:
    """A validation error at ``loc`` from a validator of the whole device (which pydantic would
    otherwise place at the device itself)."""
    error = PydanticCustomError("value_error", message)
    return ValidationError.from_exception_data("MqttDevice", [InitErrorDetails(type=error, loc=loc, input=value)])


def _tag_form(value: Any) -> str:
    return "by_metric" if isinstance(value, dict) and "metric" in value else "by_topic"


DeviceTag = Annotated[Annotated[MqttTag, Tag("by_topic")] | Annotated[SparkplugMetricTag, Tag("by_metric")],
                      Discriminator(_tag_form)]


class MqttDevice(DeviceBase):
    driver_name = "mqtt"

    driver: Literal["mqtt"] = "mqtt"
    connection: MqttConnection  # type: ignore[assignment]
    # json: tags by topic and JSON path; sparkplug: Sparkplug B edge nodes, tags by metric name
    format: Literal["json", "sparkplug"] = "json"
    sparkplug: SparkplugSource | None = None
    tags: list[DeviceTag] = Field(min_length=1)  # type: ignore[assignment]
    # How payload bytes are read when sources do not send UTF-8 (cp949, euc-kr, shift_jis…);
    # default UTF-8, with bytes that are not valid UTF-8 replaced by U+FFFD.
    encoding: TextEncoding | None = None

    @field_validator("tags")
    @classmethod
    def _unique_tags(cls, tags: list[Any]) -> list[Any]:
        first: dict[str, int] = {}
        for i, tag in enumerate(tags):
            if tag.name in first:
                what = "is the metric pattern" if isinstance(tag, SparkplugMetricTag) else "is named"
                raise ValueError(f"tag {i + 1} {what} {tag.name!r} like tag {first[tag.name] + 1}; "
                                 f"tags must be unique in a device")
            first[tag.name] = i
        return tags

    @model_validator(mode="after")
    def _tags_of_the_format(self) -> MqttDevice:
        """``format`` is read after ``tags``, so the tags are checked against it here (with the
        problem located at the tag)."""
        sparkplug = self.format == "sparkplug"
        if sparkplug and self.sparkplug is None:
            raise _located(("format",), "format: sparkplug needs a sparkplug section: "
                                        "{group_id: ..., edge_node: ...}", self.format)
        if not sparkplug and self.sparkplug is not None:
            raise _located(("sparkplug",), "a sparkplug section needs format: sparkplug", None)
        for i, tag in enumerate(self.tags):
            if sparkplug and isinstance(tag, MqttTag):
                raise _located(("tags", i), f"tag {i + 1} has a topic, but the tags of a format: sparkplug "
                                            f"device are metric name patterns ({{metric: \"Temp*\", category: ...}})",
                               tag.name)
            if not sparkplug and isinstance(tag, SparkplugMetricTag):
                raise _located(("tags", i), f"tag {i + 1} is a metric name pattern ({tag.metric!r}), which "
                                            f"needs format: sparkplug and a sparkplug section", tag.metric)
        return self

    def configured_tags(self) -> list[TagBase]:
        return [] if self.format == "sparkplug" else self.tags  # type: ignore[return-value]

    @property
    def topic_tags(self) -> list[MqttTag]:
        """The tags of a ``format: json`` device."""
        return [tag for tag in self.tags if isinstance(tag, MqttTag)]

    @property
    def metric_tags(self) -> list[SparkplugMetricTag]:
        """The metric patterns of a ``format: sparkplug`` device, first match wins."""
        return [tag for tag in self.tags if isinstance(tag, SparkplugMetricTag)]

    def client_id(self, agent_id: str) -> str:
        return self.connection.client_id or f"mos-agent-{agent_id}-{self.name}"
