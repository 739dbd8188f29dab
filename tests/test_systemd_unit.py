"""The unit file passes systemd-analyze verify and carries the promised settings."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "mos-agent.service"


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_verifies_clean(tmp_path: Path) -> None:
    # ExecStart must point at an existing executable for verify; use this venv's entry point.
    venv_bin = Path(sys.executable).parent
    text = UNIT.read_text().replace("/opt/mos-agent/venv/bin", str(venv_bin))
    unit = tmp_path / "mos-agent.service"
    unit.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                            cwd=tmp_path)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "mos-agent.service" in line or "Unknown" in line]
    assert result.returncode == 0, result.stderr
    assert problems == []


def test_unit_promises() -> None:
    s = _unit_settings()
    assert s["Service.Type"] == ["notify"]
    assert s["Service.Restart"] == ["on-failure"]
    assert int(s["Service.WatchdogSec"][0]) > 0
    assert s["Service.ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["Service.User"] == ["mos-agent"]
    assert "dialout" in s["Service.SupplementaryGroups"][0]
    assert s["Service.StateDirectory"] == ["mos-agent"]
    assert s["Service.ConfigurationDirectory"] == ["mos-agent"]
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                       ("PrivateTmp", "yes"), ("CapabilityBoundingSet", "")):
        assert s[f"Service.{key}"] == [value], key
    assert set(s["Service.RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}


def test_install_script_is_valid_bash() -> None:
    result = subprocess.run(["bash", "-n", str(REPO / "systemd" / "install.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
