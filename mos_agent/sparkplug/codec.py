"""Sparkplug B payloads: the generated protobuf classes plus the few helpers both directions need
(the northbound MQTT sink builds births and data with them; the MQTT driver reads them).

Values travel in the ``oneof value`` field the datatype selects (specification, "Sparkplug B"
payload chapter): 8-32-bit integers in ``int_value`` (uint32; signed ones as two's complement),
64-bit integers and DateTime (ms since the epoch) in ``long_value`` (uint64; Int64 as two's
complement), Float/Double in ``float_value``/``double_value``, Boolean in ``boolean_value``,
String/Text/UUID in ``string_value``, Bytes/File in ``bytes_value``. A null value is
``is_null = true`` with no value at all. Readers take the value from whichever field is set, so
payloads from codecs that disagree on a field (Tahu's JavaScript codec reads UInt32 from
``long_value``) still decode; writers that want every consumer to agree use Int64 for integers.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import TypeAlias

from mos_agent.sparkplug.sparkplug_b_pb2 import Payload

Metric: TypeAlias = Payload.Metric
PropertySet: TypeAlias = Payload.PropertySet
PropertyValue: TypeAlias = Payload.PropertyValue

Value = bool | int | float | str | bytes | None


class DataType(enum.IntEnum):
    """The specification's datatype codes (the ``DataType`` enum of the .proto)."""

    UNKNOWN = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14
    UUID = 15
    DATASET = 16
    BYTES = 17
    FILE = 18
    TEMPLATE = 19
    PROPERTYSET = 20
    PROPERTYSETLIST = 21


# Quality codes of the specification's ``Quality`` property (type Int32).
QUALITY_PROPERTY = "Quality"
QUALITY_BAD = 0
QUALITY_GOOD = 192
QUALITY_STALE = 500

_SIGNED_BITS = {DataType.INT8: 8, DataType.INT16: 16, DataType.INT32: 32}
_UINT32_TYPES = frozenset((DataType.UINT8, DataType.UINT16, DataType.UINT32))
_STRING_TYPES = frozenset((DataType.STRING, DataType.TEXT, DataType.UUID))
_MASK32 = (1 << 32) - 1
_MASK64 = (1 << 64) - 1


class UnsupportedDataType(ValueError):
    """A datatype this codec does not carry as a scalar value (DataSet, Template, arrays)."""


# datatype → the ``oneof value`` field that carries it
VALUE_FIELDS: dict[int, str] = {
    **dict.fromkeys((DataType.INT8, DataType.INT16, DataType.INT32, DataType.UINT8, DataType.UINT16,
                     DataType.UINT32), "int_value"),
    **dict.fromkeys((DataType.INT64, DataType.UINT64, DataType.DATETIME), "long_value"),
    DataType.FLOAT: "float_value",
    DataType.DOUBLE: "double_value",
    DataType.BOOLEAN: "boolean_value",
    **dict.fromkeys(_STRING_TYPES, "string_value"),
    **dict.fromkeys((DataType.BYTES, DataType.FILE), "bytes_value"),
}


def value_field(datatype: int) -> str:
    """The name of the value field ``datatype`` selects; raises :class:`UnsupportedDataType`."""
    field = VALUE_FIELDS.get(datatype)
    if field is None:
        raise UnsupportedDataType(f"datatype {datatype} has no scalar value")
    return field


def to_wire(datatype: int, value: Value) -> Value:
    """``value`` as the value field of ``datatype`` holds it (two's complement for negative
    signed integers); raises ``ValueError`` for a value the datatype cannot hold."""
    if datatype in _SIGNED_BITS:
        return int(value) & _MASK32  # type: ignore[arg-type]
    if datatype == DataType.INT64:
        return int(value) & _MASK64  # type: ignore[arg-type]
    if datatype in _UINT32_TYPES or datatype in (DataType.UINT64, DataType.DATETIME):
        number = int(value)  # type: ignore[arg-type]
        if number < 0:
            raise ValueError(f"{DataType(datatype).name} value {value!r} is negative")
        return number
    if datatype in (DataType.FLOAT, DataType.DOUBLE):
        return float(value)  # type: ignore[arg-type]
    if datatype == DataType.BOOLEAN:
        return bool(value)
    if datatype in _STRING_TYPES:
        return str(value)
    return value


def _from_wire(datatype: int, raw: Value) -> Value:
    bits = _SIGNED_BITS.get(datatype)  # type: ignore[call-overload]
    if bits is not None:
        number = int(raw) & ((1 << bits) - 1)  # type: ignore[arg-type]
        return number - (1 << bits) if number >= 1 << (bits - 1) else number
    if datatype == DataType.INT64:
        number = int(raw)  # type: ignore[arg-type]
        return number - (1 << 64) if number >= 1 << 63 else number
    return raw


def set_value(target: Metric | PropertyValue, datatype: int, value: Value) -> None:
    """Put ``value`` into the value field ``datatype`` selects, or mark it null for ``None``.
    Does not set the datatype itself (``Metric.datatype`` / ``PropertyValue.type``)."""
    if value is None:
        target.is_null = True
        return
    setattr(target, value_field(datatype), to_wire(datatype, value))


def get_value(source: Metric | PropertyValue, datatype: int | None = None) -> Value:
    """The value of a metric or property value as Python (``None`` when null or absent);
    ``datatype`` defaults to the one the message carries (births do; DATA messages carry only an
    alias, so the reader passes the datatype it learnt from the birth)."""
    if source.is_null:
        return None
    if datatype is None:
        datatype = source.datatype if isinstance(source, Payload.Metric) else source.type
    field = source.WhichOneof("value")
    if field is None:
        return None
    return _from_wire(datatype, getattr(source, field))


def add_metric(payload: Payload, *, datatype: int, value: Value, timestamp_ms: int, name: str | None = None,
               alias: int | None = None, with_datatype: bool = True, is_historical: bool = False,
               properties: Mapping[str, tuple[int, Value]] | None = None) -> Metric:
    """Append a metric whose value goes in the field ``datatype`` selects. Births pass ``name``,
    ``alias`` and keep ``with_datatype``; DATA messages pass only the ``alias`` and
    ``with_datatype=False`` (the specification says DATA metrics should not repeat it)."""
    metric = payload.metrics.add()
    if name is not None:
        metric.name = name
    if alias is not None:
        metric.alias = alias
    metric.timestamp = timestamp_ms
    if with_datatype:
        metric.datatype = datatype
    if is_historical:
        metric.is_historical = True
    if properties:
        set_properties(metric.properties, properties)
    set_value(metric, datatype, value)
    return metric


def set_properties(target: PropertySet, properties: Mapping[str, tuple[int, Value]]) -> None:
    """Fill a property set from ``{key: (datatype, value)}``."""
    for key, (datatype, value) in properties.items():
        target.keys.append(key)
        prop = target.values.add()
        prop.type = datatype
        set_value(prop, datatype, value)


def get_properties(source: PropertySet) -> dict[str, Value]:
    """``{key: value}`` of a property set (nested property sets are not read)."""
    return {key: get_value(prop) for key, prop in zip(source.keys, source.values, strict=False)}


def encode(payload: Payload) -> bytes:
    return payload.SerializeToString()


def decode(data: bytes) -> Payload:
    """Parse a Sparkplug B payload; raises ``google.protobuf.message.DecodeError`` on garbage."""
    payload = Payload()
    payload.ParseFromString(data)
    return payload


def metric_names(payload: Payload) -> Iterable[str]:
    return (m.name for m in payload.metrics if m.HasField("name"))
