"""The unit table against the OPC Foundation's UNECE → OPC UA UnitId table."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from mos_agent import units
from mos_agent.config.models import TagBase

# the OPC Foundation's UNECE → UnitId table, kept in the repository (tests/data/SOURCE.md)
REFERENCE = Path(__file__).resolve().parent / "data" / "UNECE_to_OPCUA.csv"


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, str]]:
    assert REFERENCE.exists(), f"reference table missing: {REFERENCE}"
    # the file starts with a UTF-8 byte-order mark; utf-8-sig drops it so the first column is
    # named "UNECECode" and not "\ufeffUNECECode"
    with REFERENCE.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and "UNECECode" in rows[0] and "UnitId" in rows[0]
    return {row["UNECECode"]: row for row in rows}


def test_table_is_large_enough() -> None:
    assert len(units.UNITS) >= 40


@pytest.mark.parametrize("unit", list(units.UNITS.values()), ids=lambda u: u.ucum)
def test_unece_code_and_unit_id_match_the_reference(unit: units.Unit, reference: dict[str, dict[str, str]]) -> None:
    assert unit.unece in reference, f"{unit.ucum}: UNECE code {unit.unece!r} is not in {REFERENCE.name}"
    assert int(reference[unit.unece]["UnitId"]) == unit.opcua_unit_id


@pytest.mark.parametrize("unit", list(units.UNITS.values()), ids=lambda u: u.ucum)
def test_from_opcua_unit_id_round_trips(unit: units.Unit) -> None:
    assert units.from_opcua_unit_id(unit.opcua_unit_id) == unit
    assert units.lookup(unit.ucum) == unit


def test_codes_are_unique() -> None:
    uneces = [u.unece for u in units.UNITS.values()]
    assert len(uneces) == len(set(uneces))


def test_unknown_unit_id_is_none(reference: dict[str, dict[str, str]]) -> None:
    # a UnitId from the reference whose UNECE code the table does not carry
    known = {u.unece for u in units.UNITS.values()}
    other = next(code for code in reference if code not in known)
    assert units.from_opcua_unit_id(int(reference[other]["UnitId"])) is None


@pytest.mark.parametrize(("written", "meant"), [("degC", "Cel"), ("kWh", "kW.h"), ("rpm", "/min"),
                                                ("KPA", "kPa"), ("psi", "[psi]")])
def test_common_misspellings_suggest_the_ucum_code(written: str, meant: str) -> None:
    assert units.lookup(written) is None
    assert units.suggest(written) == meant
    with pytest.raises(ValueError, match=re.escape(f"did you mean '{meant}'?")):
        TagBase(name="t", category="process", unit=written)
