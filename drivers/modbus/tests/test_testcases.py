"""Data-driven cases in drivers/modbus/testcases/<case>/: ``device.yaml`` and ``expected.txt``,
the expected request plan or the expected validation errors exactly as ``mos-agent validate``
prints them (``device.yaml:LINE:COL: key: message``).

To add a case: write its device.yaml and run this file with ``MOS_WRITE_EXPECTED=1`` once; then
read the generated expected.txt and keep it only if it is right.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.modbus.config import ModbusDevice
from drivers.modbus.plan import plan_device
from mos_agent.config.loader import ConfigErrors, load_device_file
from mos_agent.taxonomy import DEFAULT_STAGES

CASES = Path(__file__).resolve().parent.parent / "testcases"
SAMPLE = Path(__file__).resolve().parent.parent / "sample.yaml"


def render(device_file: Path) -> str:
    """What ``mos-agent validate`` prints for the file (paths relative to its folder), or the plan."""
    try:
        device = load_device_file(device_file, DEFAULT_STAGES)
    except ConfigErrors as exc:
        return "".join(f"{p.path.name}:{p.line}:{p.col}: {p.message}\n" for p in exc.problems)
    assert isinstance(device, ModbusDevice)
    return plan_device(device).describe()


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if (p / "device.yaml").exists()))
def test_case(case: str) -> None:
    folder = CASES / case
    got = render(folder / "device.yaml")
    expected_file = folder / "expected.txt"
    if os.environ.get("MOS_WRITE_EXPECTED") and not expected_file.exists():
        expected_file.write_text(got)
    assert expected_file.exists(), f"{case}: no expected.txt"
    assert got == expected_file.read_text()
    # error cases are named error_*; the others must plan
    assert case.startswith("error_") == (not got.startswith("every "))


def test_sample_device_file_validates_and_plans() -> None:
    text = render(SAMPLE)
    assert text.startswith("every "), text


def test_plan_command_prints_the_plan_or_the_errors() -> None:
    repo = CASES.parents[2]
    ok = subprocess.run([sys.executable, "-m", "drivers.modbus", str(CASES / "gap_limit" / "device.yaml")],
                        cwd=repo, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout == (CASES / "gap_limit" / "expected.txt").read_text()
    bad = subprocess.run([sys.executable, "-m", "drivers.modbus", str(CASES / "error_span" / "device.yaml")],
                         cwd=repo, capture_output=True, text=True)
    assert bad.returncode == 2 and "tags[0].type: float64 at hr:65534 needs 4 registers" in bad.stderr
