"""The OPC UA device file: endpoint, security, user, acquisition mode, and tags by node id or by
browsing a folder.
drivers/opcua/README.md describes every key with an example (validated by tests/test_doc_examples.py);
sample.yaml is a complete file.

Everything that can be checked from the file alone is checked here, so ``mos-agent validate``
reports it at the key that is wrong instead of the driver failing at run time.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from mos_agent.config.loader import read_secret
from mos_agent.config.models import (
    DeviceBase,
    Duration,
    SeriesFields,
    StrictModel,
    TagBase,
    TextEncoding,
)

# OPC UA node id string forms (Part 6, 5.3.1.10): ns=<index>; or nsu=<namespace uri>; then
# i=<number>, s=<string>, g=<guid> or b=<base64 bytes>.
_NODE_ID = re.compile(
    r"^(?:(?:ns=(?P<ns>\d+)|nsu=(?P<nsu>[^;]+));)?"
    r"(?:i=(?P<i>\d+)|s=(?P<s>.+)|g=(?P<g>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
    r"|b=(?P<b>[A-Za-z0-9+/]+={0,2}))$",
    re.DOTALL,  # a string identifier may hold any character, a line break too
)

TagType = Literal["auto", "number", "bool", "string", "enum", "struct"]
DeadbandType = Literal["none", "absolute", "percent"]


def check_node_id(value: str) -> str:
    """A node id string as OPC UA writes it, checked for syntax (the server checks existence)."""
    value = value.strip()
    m = _NODE_ID.match(value)
    if not m:
        raise ValueError(
            f"bad node id {value!r}: expected ns=<index>;s=<name>, ns=<index>;i=<number>, "
            "ns=<index>;g=<guid>, ns=<index>;b=<base64> (or nsu=<namespace uri>; instead of ns=)")
    if m.group("ns") is not None and int(m.group("ns")) > 65535:
        raise ValueError(f"bad node id {value!r}: namespace index {m.group('ns')} is over 65535")
    if m.group("i") is not None and int(m.group("i")) > 0xFFFFFFFF:
        raise ValueError(f"bad node id {value!r}: numeric identifier {m.group('i')} is over 4294967295")
    return value


def check_endpoint(value: str) -> str:
    """``opc.tcp://host:port[/path]``; the port defaults to 4840 as OPC UA registers it."""
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme != "opc.tcp":
        raise ValueError(f"endpoint must start with opc.tcp://, got {value!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"endpoint {value!r} has a bad port") from None
    if not parts.hostname:
        raise ValueError(f"endpoint {value!r} has no host")
    if port is None:
        value = f"opc.tcp://{parts.netloc}:4840{parts.path}"
    if parts.username or parts.password:
        raise ValueError("put the user in connection.username and the password in password_file, "
                         "not in the endpoint URL")
    return value


class SecurityConfig(StrictModel):
    """Message security. With a secured policy the server's certificate is trusted only when it is
    pinned (``server_certificate``) or found in ``trust_dir`` (default ``<state_dir>/opcua/trusted``);
    an unknown one is saved to ``<state_dir>/opcua/untrusted/`` and the connection is refused."""

    policy: Literal["None", "Basic256Sha256"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] | None = None  # default: SignAndEncrypt when secured
    certificate: Path | None = None  # the agent's application instance certificate (DER or PEM)
    private_key: Path | None = None  # default: both generated into <state_dir>/opcua/ on first start
    server_certificate: Path | None = None  # pinned server certificate (DER or PEM)
    trust_dir: Path | None = None  # folder of trusted server (or CA) certificates

    @model_validator(mode="after")
    def _consistent(self) -> SecurityConfig:
        if self.mode is None:
            self.mode = "None" if self.policy == "None" else "SignAndEncrypt"
        if self.policy == "None" and self.mode != "None":
            raise ValueError(f"security mode {self.mode} needs a policy (policy: Basic256Sha256)")
        if self.policy != "None" and self.mode == "None":
            raise ValueError(f"policy {self.policy} needs mode Sign or SignAndEncrypt")
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together (leave both out to have them generated)")
        if self.policy == "None" and (self.server_certificate or self.trust_dir or self.certificate):
            raise ValueError("certificates are only used with a secured policy (policy: Basic256Sha256)")
        if self.server_certificate is not None and self.trust_dir is not None:
            raise ValueError("give either server_certificate (pinned) or trust_dir, not both")
        return self

    @property
    def secured(self) -> bool:
        return self.policy != "None"


class OpcUaConnection(StrictModel):
    endpoint: str
    timeout: Duration = 5.0  # per request
    session_timeout: Duration = 60.0  # the server drops the session after this long without us
    # how often the session is probed (a read of the server state) when nothing else shows it alive
    keepalive_interval: Duration = 2.0
    reconnect_max_delay: Duration = 30.0
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    username: str | None = Field(default=None, min_length=1)
    password: str | None = Field(default=None, repr=False)
    password_file: Path | None = None
    # security policy None sends the password as it is (Part 4, 7.36.3: an unencrypted token):
    # refused unless the operator says the network is trusted
    allow_plaintext_password: bool = False

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return check_endpoint(value)

    @model_validator(mode="after")
    def _credentials(self) -> OpcUaConnection:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give either password or password_file, not both")
        if (self.password is not None or self.password_file is not None) and not self.username:
            raise ValueError("a password needs a username")
        if self.sends_plaintext_password and not self.allow_plaintext_password:
            key = "password" if self.password is not None else "password_file"
            raise ValidationError.from_exception_data(type(self).__name__, [InitErrorDetails(
                type=PydanticCustomError("value_error", "without message security (security.policy None) the password "
                                                        "crosses the network in clear text: set security: {policy: "
                                                        "Basic256Sha256}, or allow_plaintext_password: true on a "
                                                        "network you trust"),
                loc=(key,), input="")])
        return self

    @property
    def sends_plaintext_password(self) -> bool:
        return (self.password is not None or self.password_file is not None) and not self.security.secured

    def read_password(self) -> str | None:
        if self.password_file is not None:
            return read_secret(None, self.password_file)
        return self.password


class SubscriptionConfig(StrictModel):
    publishing_interval: Duration = 0.5
    sampling_interval: Duration | None = None  # default: the publishing interval
    queue_size: int = Field(default=10, ge=1, le=100_000)  # values the server keeps per item between publishes
    max_items_per_subscription: int = Field(default=1000, ge=1, le=100_000)
    deadband_type: DeadbandType = "none"  # server-side filter (percent needs the node's EURange)
    deadband_value: float = Field(default=0.0, ge=0.0)
    # the server sends a keep-alive after this long without changes; three missed ones mean the
    # subscription is dead and the session is rebuilt
    keepalive_interval: Duration = 5.0

    @model_validator(mode="after")
    def _deadband(self) -> SubscriptionConfig:
        if self.deadband_type == "percent" and self.deadband_value > 100:
            raise ValueError("a percent deadband_value is between 0 and 100")
        if self.deadband_type == "none" and self.deadband_value:
            raise ValueError("deadband_value needs deadband_type absolute or percent")
        return self

    @property
    def effective_sampling_interval(self) -> float:
        return self.sampling_interval if self.sampling_interval is not None else self.publishing_interval


class PollConfig(StrictModel):
    # nodes per Read request; default: the server's OperationLimits/MaxNodesPerRead, else 1000
    max_nodes_per_read: int | None = Field(default=None, ge=1, le=100_000)


def _no_struct(value: str | None, where: str) -> None:
    if value == "struct":
        raise ValueError(
            f"{where}type struct is not supported: a structure has no single value; configure its fields "
            "as separate nodes (they are usually variables below the structure's node)")


class _NodeAndType(StrictModel):
    """A node id and the type its values are read as: what a tag and a browse entry share."""

    node: str
    type: TagType = "auto"  # auto: decided by the value the server sends
    # the code page the server's String bytes are in (cp949 on many older Korean PLCs); default:
    # the device's, else UTF-8
    encoding: TextEncoding | None = None

    @field_validator("node")
    @classmethod
    def _node(cls, value: str) -> str:
        return check_node_id(value)

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        _no_struct(value, "")
        return value


class OpcUaTag(TagBase, _NodeAndType):
    """A tag read from one node. Arrays become one series per element (``name[0]``, ``name[1]``…);
    strings, localized texts and enumerations (``type: enum``) become text readings."""

    poll_interval: Duration | None = None  # mode poll: default the device's poll_interval
    sampling_interval: Duration | None = None  # mode subscribe: default subscription.sampling_interval

    def data_type(self) -> str:
        return {"auto": "float", "number": "float", "bool": "bool", "string": "string", "enum": "enum"}[self.type]


class BrowseEntry(SeriesFields, _NodeAndType):
    """Every variable below ``node`` (to ``depth`` levels) becomes a tag at connect time, named by
    its browse path below ``node`` joined with '.' (after ``prefix``), with these defaults; the
    unit comes from the variable's EUInformation unless ``unit`` is given."""

    depth: int = Field(default=3, ge=1, le=20)
    prefix: str | None = Field(default=None, min_length=1)
    max_variables: int = Field(default=10_000, ge=1)

    def tag_for(self, name: str, node: str, unit: str | None, type_: str | None = None) -> OpcUaTag:
        return OpcUaTag(
            name=name, node=node, category=self.category, kind=self.kind, unit=self.unit or unit,
            scale=self.scale, offset=self.offset, deadband=self.deadband, range=self.range,
            type=type_ if self.type == "auto" and type_ else self.type, encoding=self.encoding,
        )


class OpcUaDevice(DeviceBase):
    driver_name = "opcua"

    connection: OpcUaConnection  # type: ignore[assignment]
    mode: Literal["subscribe", "poll"] = "subscribe"
    subscription: SubscriptionConfig = Field(default_factory=SubscriptionConfig)
    poll: PollConfig = Field(default_factory=PollConfig)
    tags: list[OpcUaTag] = Field(default_factory=list)  # type: ignore[assignment]
    browse: list[BrowseEntry] = Field(default_factory=list)
    # the code page of the server's String values and browse names when they are not UTF-8
    # (cp949, euc-kr, shift_jis…); a tag or browse entry may say otherwise
    encoding: TextEncoding | None = None

    @model_validator(mode="after")
    def _something_to_read(self) -> OpcUaDevice:
        if not self.tags and not self.browse:
            raise ValueError("an OPC UA device needs tags (by node) or browse entries (folders to take)")
        seen: dict[str, int] = {}
        problems = []
        for i, tag in enumerate(self.tags):
            if tag.node in seen:
                first = seen[tag.node]
                problems.append(InitErrorDetails(
                    type=PydanticCustomError("value_error", f"node {tag.node} is configured twice (also tags[{first}], "
                                                            f"{self.tags[first].name!r}): every reading would be "
                                                            "stored twice"),
                    loc=("tags", i, "node"), input=tag.node))
            else:
                seen[tag.node] = i
        if problems:  # located at the repeated node, so `validate` points at its line
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self

    def tag_interval(self, tag: OpcUaTag) -> float:
        if self.mode == "poll":
            return tag.poll_interval if tag.poll_interval is not None else self.poll_interval
        if tag.sampling_interval is not None:
            return tag.sampling_interval
        return self.subscription.effective_sampling_interval
