"""Sparkplug B 3.0 payload codec and topic helpers (no network code).

The payload classes are generated from our own ``sparkplug_b.proto`` (written from the Eclipse
Sparkplug 3.0 specification's field numbers; see :mod:`mos_agent.sparkplug.generate`). Used by the
northbound MQTT sink and by the MQTT driver's Sparkplug input.
"""

from mos_agent.sparkplug.codec import (
    QUALITY_BAD,
    QUALITY_GOOD,
    QUALITY_PROPERTY,
    QUALITY_STALE,
    DataType,
    Metric,
    Payload,
    PropertySet,
    PropertyValue,
    UnsupportedDataType,
    Value,
    add_metric,
    decode,
    encode,
    get_properties,
    get_value,
    set_properties,
    set_value,
)
from mos_agent.sparkplug.topic import (
    NAMESPACE,
    HostState,
    MessageType,
    Topic,
    id_problem,
    parse_host_state,
    parse_state_topic,
    parse_topic,
    state_topic,
    topic,
)

__all__ = [
    "NAMESPACE",
    "QUALITY_BAD",
    "QUALITY_GOOD",
    "QUALITY_PROPERTY",
    "QUALITY_STALE",
    "DataType",
    "HostState",
    "MessageType",
    "Metric",
    "Payload",
    "PropertySet",
    "PropertyValue",
    "Topic",
    "UnsupportedDataType",
    "Value",
    "add_metric",
    "decode",
    "encode",
    "get_properties",
    "get_value",
    "id_problem",
    "parse_host_state",
    "parse_state_topic",
    "parse_topic",
    "set_properties",
    "set_value",
    "state_topic",
    "topic",
]
