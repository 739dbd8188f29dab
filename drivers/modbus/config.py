"""The Modbus device file: connection (TCP, RTU over serial, RTU framed over TCP) and tags by
address. drivers/modbus/README.md describes every key with an example (validated by
tests/test_doc_examples.py); sample.yaml is a complete file.

Every check that can be made from the file alone is made here, so ``mos-agent validate``
reports it at the key that is wrong instead of the driver failing at run time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import get_close_matches
from functools import cached_property, lru_cache
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from mos_agent.config.models import DeviceBase, Duration, StrictModel, TagBase, located_errors
from mos_agent.config.validation import hint_after
from mos_agent.i18n import _

Table = Literal["hr", "ir", "co", "di"]
Order = Literal["big", "little"]
Transport = Literal["tcp", "rtu", "rtu_over_tcp"]

TABLES: tuple[str, ...] = ("hr", "ir", "co", "di")
BIT_TABLES: frozenset[str] = frozenset({"co", "di"})
TABLE_NAMES: dict[str, str] = {
    "hr": "holding register",
    "ir": "input register",
    "co": "coil",
    "di": "discrete input",
}

# registers a value of each fixed-size type occupies
REGISTER_COUNT: dict[str, int] = {
    "int16": 1, "uint16": 1,
    "int32": 2, "uint32": 2, "float32": 2,
    "int64": 4, "uint64": 4, "float64": 4,
}
TYPE_NAMES: tuple[str, ...] = ("bool", *REGISTER_COUNT, "string:N")

MAX_ADDRESS = 65535
MAX_REGISTERS_PER_REQUEST = 125  # Modbus Application Protocol V1.1b3, function codes 3 and 4
MAX_BITS_PER_REQUEST = 2000  # function codes 1 and 2
MAX_STRING_LENGTH = 2 * MAX_REGISTERS_PER_REQUEST

_ADDRESS = re.compile(r"^\s*([A-Za-z]+)\s*:\s*(\d+)(?:\.(\d+))?\s*$")
_STRING_TYPE = re.compile(r"^string(?::(\d+))?$")


@dataclass(frozen=True, slots=True)
class Address:
    table: str
    offset: int
    bit: int | None = None

    def __str__(self) -> str:
        return f"{self.table}:{self.offset}" + (f".{self.bit}" if self.bit is not None else "")


def _did_you_mean(value: str, choices: tuple[str, ...] | list[str]) -> str:
    return hint_after(get_close_matches(value, list(choices), n=1, cutoff=0.5))


@lru_cache(maxsize=65536)
def parse_address(text: str) -> Address:
    """``"hr:0"`` ``"ir:5"`` ``"co:3"`` ``"di:7"`` ``"hr:5.3"`` → :class:`Address`.
    Raises ValueError with a message meant for the person who wrote the file."""
    m = _ADDRESS.match(text)
    if not m:
        raise ValueError(_(
            "bad address {address}: expected TABLE:OFFSET with TABLE one of hr, ir, co, di and a zero-based "
            "OFFSET, e.g. hr:0, ir:5, co:3, di:7, or hr:5.3 for bit 3 of a register").format(address=repr(text)))
    table, offset_text, bit_text = m.group(1).lower(), m.group(2), m.group(3)
    if table not in TABLES:
        raise ValueError(_("unknown table {table} in address {address} (expected hr, ir, co or di{hint})").format(
            table=repr(m.group(1)), address=repr(text), hint=_did_you_mean(table, TABLES)))
    offset = int(offset_text)
    if offset > MAX_ADDRESS:
        raise ValueError(_("offset {offset} in address {address} is out of range (0..{last})").format(
            offset=offset, address=repr(text), last=MAX_ADDRESS))
    bit: int | None = None
    if bit_text is not None:
        if table in BIT_TABLES:
            raise ValueError(_("bit addresses (.N) are for registers (hr, ir); {address} is already a single bit "
                               "({table})").format(address=f"{table}:{offset}", table=TABLE_NAMES[table]))
        bit = int(bit_text)
        if bit > 15:
            raise ValueError(_("bit {bit} in address {address} is out of range (0..15: a register has 16 bits)").format(
                bit=bit, address=repr(text)))
    return Address(table, offset, bit)


def parse_type(text: str) -> tuple[str, int]:
    """Type name → (type, registers it occupies); ``string:N`` → ("string:N", ceil(N/2));
    bool → ("bool", 0)."""
    if text == "bool":
        return text, 0
    if text in REGISTER_COUNT:
        return text, REGISTER_COUNT[text]
    m = _STRING_TYPE.match(text)
    if m:
        if m.group(1) is None:
            raise ValueError(_("type string needs a length: string:N (N characters, two per register)"))
        length = int(m.group(1))
        if length < 1:
            raise ValueError(_("type {type}: a string needs a length of at least 1 character").format(type=repr(text)))
        if length > MAX_STRING_LENGTH:
            raise ValueError(_("type {type}: at most {longest} fits in one read ({registers} registers)").format(
                type=repr(text), longest=f"string:{MAX_STRING_LENGTH}", registers=MAX_REGISTERS_PER_REQUEST))
        return f"string:{length}", (length + 1) // 2
    raise ValueError(_("unknown type {type} (expected one of: {types}{hint})").format(
        type=repr(text), types=", ".join(TYPE_NAMES), hint=_did_you_mean(text, ("bool", *REGISTER_COUNT, "string"))))


def string_length(type_name: str) -> int:
    return int(type_name.split(":", 1)[1])


class SerialSettings(StrictModel):
    """The serial line of a Modbus RTU device (or of an RS-485 bus with several devices)."""

    port: str = Field(min_length=1)  # device path, e.g. /dev/ttyUSB0 or /dev/serial/by-id/...
    baudrate: int = Field(default=19200, gt=0, le=4_000_000)
    parity: Literal["N", "E", "O"] = "E"  # the Modbus over Serial Line spec's default is even
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


_TCP_TRANSPORTS = ("tcp", "rtu_over_tcp")


class ModbusConnection(StrictModel):
    transport: Transport = "tcp"
    host: str | None = Field(default=None, min_length=1)
    port: int | None = Field(default=None, gt=0, lt=65536)  # 502 unless given
    serial: SerialSettings | None = None
    unit_id: int = Field(default=1, ge=0, le=247)
    timeout: Duration = 1.0
    reconnect_delay: Duration = 0.5
    max_reconnect_delay: Duration = 30.0
    max_registers_per_request: int = Field(default=MAX_REGISTERS_PER_REQUEST, ge=1, le=MAX_REGISTERS_PER_REQUEST)
    max_bits_per_request: int = Field(default=MAX_BITS_PER_REQUEST, ge=1, le=MAX_BITS_PER_REQUEST)
    max_gap: int = Field(default=10, ge=0, le=MAX_REGISTERS_PER_REQUEST - 1)
    byte_order: Order = "big"
    word_order: Order = "big"

    @field_validator("host", "port")
    @classmethod
    def _network_only(cls, value: object, info: ValidationInfo) -> object:
        transport = info.data.get("transport")
        if value is not None and transport == "rtu":
            raise ValueError(_("{key} applies to transport tcp or rtu_over_tcp; transport rtu talks over a serial "
                               "line: give serial.port instead").format(key=info.field_name))
        return value

    @field_validator("serial")
    @classmethod
    def _serial_only(cls, value: SerialSettings | None, info: ValidationInfo) -> SerialSettings | None:
        transport = info.data.get("transport")
        if value is not None and transport in _TCP_TRANSPORTS:
            raise ValueError(_("serial settings apply to transport rtu, but this connection uses transport "
                               "{transport} (add transport: rtu for a serial line)").format(transport=transport))
        return value

    @model_validator(mode="after")
    def _complete(self) -> ModbusConnection:
        if self.transport in _TCP_TRANSPORTS:
            if self.host is None:
                raise ValueError(_("transport {transport} needs host (the device's or gateway's address)").format(
                    transport=self.transport))
            if self.port is None:
                self.port = 502
        elif self.serial is None:
            raise ValueError(_("transport rtu needs serial settings, e.g. {example}").format(
                example="serial: {port: /dev/ttyUSB0, baudrate: 19200, parity: E}"))
        if self.max_reconnect_delay < self.reconnect_delay:
            raise ValueError(_("max_reconnect_delay ({longest}) is shorter than reconnect_delay ({delay})").format(
                longest=f"{self.max_reconnect_delay:g}s", delay=f"{self.reconnect_delay:g}s"))
        return self

    @property
    def endpoint(self) -> tuple[str, ...]:
        """What identifies the physical link: devices with the same endpoint share a connection."""
        if self.transport == "rtu":
            assert self.serial is not None
            return ("rtu", self.serial.port)
        return (self.transport, str(self.host), str(self.port))

    def describe_endpoint(self) -> str:
        if self.transport == "rtu":
            assert self.serial is not None
            return f"rtu:{self.serial.port}"
        return f"{self.transport}://{self.host}:{self.port}"


class ModbusTag(TagBase):
    """One value at one address. The address is declared before the type so the type's check
    can see which table it is in."""

    address: str
    type: str | None = None  # bool for coils, discrete inputs and bit addresses; uint16 otherwise
    byte_order: Order | None = None  # default: the connection's
    word_order: Order | None = None
    poll_interval: Duration | None = None  # default: the device's; equal intervals form a poll group
    # a value that has not changed for this long is flagged uncertain/STALE (PLC heartbeats,
    # counters that must move: a frozen PLC still answers with its last values)
    stale_after: Duration | None = None

    @field_validator("address")
    @classmethod
    def _address_syntax(cls, value: str) -> str:
        return str(parse_address(value))

    @field_validator("type")
    @classmethod
    def _type_fits(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        type_name, registers = parse_type(value)
        address_text = info.data.get("address")
        if address_text is None:  # the address itself was wrong; that error is reported
            return type_name
        address = parse_address(address_text)
        if address.table in BIT_TABLES:
            if type_name != "bool":
                raise ValueError(_("{address} is a {table}: its type is bool, not {type}").format(
                    address=address, table=TABLE_NAMES[address.table], type=type_name))
        elif address.bit is not None:
            if type_name != "bool":
                raise ValueError(_("{address} is a single bit of a register: its type is bool, not {type}").format(
                    address=address, type=type_name))
        elif type_name == "bool":
            raise ValueError(_("type bool on a register needs a bit address, like {address}.0 (bit 0 of {address}); "
                               "for a 0/1 register value use uint16").format(address=address))
        elif address.offset + registers - 1 > MAX_ADDRESS:
            raise ValueError(_("{type} at {address} needs {registers} registers, past the last address {last}").format(
                type=type_name, address=address, registers=registers, last=MAX_ADDRESS))
        return type_name

    @field_validator("byte_order", "word_order")
    @classmethod
    def _orders_need_registers(cls, value: str | None, info: ValidationInfo) -> str | None:
        address_text = info.data.get("address")
        if value is None or address_text is None:
            return value
        address = parse_address(address_text)
        if address.table in BIT_TABLES or address.bit is not None:
            raise ValueError(_("{key} applies to values stored in registers, not to a single bit ({address})").format(
                key=info.field_name, address=address))
        return value

    @field_validator("stale_after")
    @classmethod
    def _stale_needs_number(cls, value: float | None, info: ValidationInfo) -> float | None:
        type_name = info.data.get("type")
        if value is not None and type_name and type_name.startswith("string:"):
            raise ValueError(_("stale_after applies to numbers and bits, not to strings"))
        return value

    @model_validator(mode="after")
    def _resolve_layout(self) -> ModbusTag:
        """Work out where the value sits, its type and its width once, here: the device's checks,
        planning and the series table ask for each of them for every tag at start-up, and three
        first reads through functools.cached_property cost three times as much (0.3 s at 100,000
        tags). The properties below find them in their cache (the instance's ``__dict__``)."""
        location = parse_address(self.address)
        value_type = self.type or ("bool" if location.table in BIT_TABLES or location.bit is not None else "uint16")
        self.__dict__.update(location=location, value_type=value_type,
                             width=1 if value_type == "bool" else parse_type(value_type)[1])
        return self

    # Kept in the instance: a pydantic private attribute costs a __getattr__ call a read (a second
    # at 100,000 tags).
    @cached_property
    def location(self) -> Address:
        return parse_address(self.address)

    @cached_property
    def value_type(self) -> str:
        """The effective type (``type`` or its default)."""
        location = self.location
        return self.type or ("bool" if location.table in BIT_TABLES or location.bit is not None else "uint16")

    @cached_property
    def width(self) -> int:
        """Units the tag occupies in its table: registers for hr/ir, bits for co/di."""
        return 1 if self.value_type == "bool" else parse_type(self.value_type)[1]

    def data_type(self) -> str:
        return self.value_type


class ModbusDevice(DeviceBase):
    driver_name = "modbus"

    connection: ModbusConnection  # type: ignore[assignment]
    tags: list[ModbusTag] = Field(min_length=1)  # type: ignore[assignment]

    @model_validator(mode="after")
    def _whole_device(self) -> ModbusDevice:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        first_use: dict[str, int] = {}
        limit = self.connection.max_registers_per_request
        for i, tag in enumerate(self.tags):
            if tag.name in first_use:
                problems.append((("tags", i, "name"), _("duplicate tag name {name} (also {other})").format(
                    name=repr(tag.name), other=f"tags[{first_use[tag.name]}]")))
            else:
                first_use[tag.name] = i
            if tag.location.table not in BIT_TABLES and tag.width > limit:
                problems.append((("tags", i, "type"), _("{type} needs {registers} registers, more than this "
                                                        "connection's max_registers_per_request ({limit})").format(
                    type=tag.value_type, registers=tag.width, limit=limit)))
        if problems:
            raise located_errors(type(self).__name__, problems)
        return self

    def tag_interval(self, tag: ModbusTag) -> float:
        return tag.poll_interval if tag.poll_interval is not None else self.poll_interval
