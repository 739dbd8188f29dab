"""Unit table: UCUM codes (what device files and the store use) with their UNECE Rec 20 common
codes (what the catalogue and OPC UA ``EUInformation`` use).

An OPC UA ``UnitId`` is the UNECE code's ASCII characters packed into an integer, so it is
derived, not stored; the tests check every entry against the OPC Foundation's table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Unit:
    ucum: str
    unece: str
    name: str

    @property
    def opcua_unit_id(self) -> int:
        return unece_to_unit_id(self.unece)


def unece_to_unit_id(code: str) -> int:
    unit_id = 0
    for ch in code:
        unit_id = (unit_id << 8) | ord(ch)
    return unit_id


_TABLE: tuple[tuple[str, str, str], ...] = (
    # temperature
    ("Cel", "CEL", "degree Celsius"),
    ("[degF]", "FAH", "degree Fahrenheit"),
    ("K", "KEL", "kelvin"),
    # pressure
    ("bar", "BAR", "bar"),
    ("mbar", "MBR", "millibar"),
    ("Pa", "PAL", "pascal"),
    ("hPa", "A97", "hectopascal"),
    ("kPa", "KPA", "kilopascal"),
    ("MPa", "MPA", "megapascal"),
    ("[psi]", "PS", "pound-force per square inch"),
    # power and energy
    ("W", "WTT", "watt"),
    ("kW", "KWT", "kilowatt"),
    ("MW", "MAW", "megawatt"),
    ("kV.A", "KVA", "kilovolt-ampere"),
    ("W.h", "WHR", "watt hour"),
    ("kW.h", "KWH", "kilowatt hour"),
    ("MW.h", "MWH", "megawatt hour"),
    ("J", "JOU", "joule"),
    ("kJ", "KJO", "kilojoule"),
    ("MJ", "3B", "megajoule"),
    # electrical
    ("A", "AMP", "ampere"),
    ("kA", "B22", "kiloampere"),
    ("V", "VLT", "volt"),
    ("Hz", "HTZ", "hertz"),
    ("kHz", "KHZ", "kilohertz"),
    # time and rate
    ("ms", "C26", "millisecond"),
    ("s", "SEC", "second"),
    ("min", "MIN", "minute"),
    ("h", "HUR", "hour"),
    ("/min", "RPM", "revolutions per minute"),
    ("rad/s", "2A", "radian per second"),
    # length, speed, angle
    ("nm", "C45", "nanometre"),
    ("um", "4H", "micrometre"),
    ("mm", "MMT", "millimetre"),
    ("cm", "CMT", "centimetre"),
    ("m", "MTR", "metre"),
    ("mm/s", "C16", "millimetre per second"),
    ("mm/min", "H81", "millimetre per minute"),
    ("m/s", "MTS", "metre per second"),
    ("km/h", "KMH", "kilometre per hour"),
    ("deg", "DD", "degree (angle)"),
    ("m2", "MTK", "square metre"),
    # mass, force, torque
    ("g", "GRM", "gram"),
    ("kg", "KGM", "kilogram"),
    ("t", "TNE", "tonne"),
    ("kg/s", "KGS", "kilogram per second"),
    ("N", "NEW", "newton"),
    ("N.m", "NU", "newton metre"),
    # volume and flow
    ("mL", "MLT", "millilitre"),
    ("L", "LTR", "litre"),
    ("L/min", "L2", "litre per minute"),
    ("L/h", "E32", "litre per hour"),
    ("m3/h", "MQH", "cubic metre per hour"),
    ("m3/s", "MQS", "cubic metre per second"),
    # environment
    ("%", "P1", "percent"),
    ("[ppm]", "59", "part per million"),
    ("ug/m3", "GQ", "microgram per cubic metre"),
    ("g/m3", "A93", "gram per cubic metre"),
    ("kg/m3", "KMQ", "kilogram per cubic metre"),
    ("dB", "2N", "decibel"),
    ("lx", "LUX", "lux"),
    ("mPa.s", "C24", "millipascal second"),
    # dimensionless counts
    ("1", "C62", "one (count, dimensionless)"),
)

UNITS: dict[str, Unit] = {ucum: Unit(ucum, unece, name) for ucum, unece, name in _TABLE}
_BY_UNIT_ID: dict[int, Unit] = {u.opcua_unit_id: u for u in UNITS.values()}


def lookup(ucum: str) -> Unit | None:
    return UNITS.get(ucum)


# What people write instead of the UCUM code (for "did you mean" in validate); string similarity
# alone suggests 'deg' for 'degC'.
COMMON_SPELLINGS: dict[str, str] = {
    "degC": "Cel", "°C": "Cel", "C": "Cel", "celsius": "Cel", "degF": "[degF]", "°F": "[degF]",
    "psi": "[psi]", "ppm": "[ppm]", "rpm": "/min", "Wh": "W.h", "kWh": "kW.h", "MWh": "MW.h",
    "kVA": "kV.A", "Nm": "N.m", "l": "L", "l/min": "L/min", "lpm": "L/min", "l/h": "L/h",
    "sec": "s", "µm": "um", "μm": "um", "m²": "m2", "m³/h": "m3/h", "m^3/h": "m3/h", "°": "deg",
    "mPas": "mPa.s", "cP": "mPa.s", "percent": "%", "pcs": "1", "count": "1",
}


def suggest(text: str) -> str | None:
    """The table's UCUM code someone most likely meant by ``text``, if any."""
    if text in COMMON_SPELLINGS:
        return COMMON_SPELLINGS[text]
    ignoring_case = {k.lower(): v for k, v in COMMON_SPELLINGS.items()} | {c.lower(): c for c in UNITS}
    if text.lower() in ignoring_case:
        return ignoring_case[text.lower()]
    from difflib import get_close_matches

    close = get_close_matches(text, list(UNITS), n=1, cutoff=0.5)
    return close[0] if close else None


def from_opcua_unit_id(unit_id: int) -> Unit | None:
    """The table's unit for an OPC UA ``EUInformation.UnitId``, if it has one."""
    return _BY_UNIT_ID.get(unit_id)
