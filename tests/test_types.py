"""The type checker passes on the packages (configuration: ``[tool.mypy]`` in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_mypy_passes_on_the_packages() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_packages_say_they_are_typed() -> None:
    for package in ("mos_agent", "drivers", "simulators"):
        assert (REPO / package / "py.typed").is_file(), package
