"""The shipped example configuration and every driver's sample device file validate."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mos_agent.cli import main as cli_main
from mos_agent.config.loader import load_config

REPO = Path(__file__).resolve().parents[1]
SAMPLES = sorted(REPO.glob("drivers/*/sample*.yaml"))


def test_example_configuration_validates(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("MOS_INFLUX_TOKEN", "example-token")
    assert cli_main(["validate", "-c", str(REPO / "configs" / "agent.yaml")]) == 0
    out = capsys.readouterr().out
    loaded = load_config(REPO / "configs" / "agent.yaml")
    assert {d.driver for d in loaded.devices} == {"modbus", "opcua", "mqtt"}
    assert f"{len(loaded.devices)} (" in out


def test_example_needs_its_token(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("MOS_INFLUX_TOKEN", raising=False)
    assert cli_main(["validate", "-c", str(REPO / "configs" / "agent.yaml")]) == 2
    assert "MOS_INFLUX_TOKEN" in capsys.readouterr().err


@pytest.mark.parametrize("sample", SAMPLES, ids=[f"{p.parent.name}/{p.name}" for p in SAMPLES])
def test_driver_sample_validates(sample: Path, tmp_path: Path) -> None:
    (tmp_path / "devices").mkdir()
    shutil.copy(sample, tmp_path / "devices" / sample.name)
    (tmp_path / "agent.yaml").write_text(f"agent: {{id: gw, site: changwon, state_dir: {tmp_path}}}\n")
    loaded = load_config(tmp_path / "agent.yaml")
    assert len(loaded.devices) == 1 and loaded.devices[0].driver == sample.parent.name


def test_every_bundled_driver_has_a_sample() -> None:
    assert {p.parent.name for p in SAMPLES} == {"modbus", "opcua", "mqtt"}


def test_readme_northbound_mqtt_example_validates(tmp_path: Path) -> None:
    import re

    import yaml

    readme = (REPO / "README.md").read_text()
    section = readme.split("## Northbound MQTT: UNS and Sparkplug B", 1)[1].split("\n## ", 1)[0]
    [snippet] = re.findall(r"```yaml\n(.*?)```", section, re.S)
    # the example's files, made where the test can write
    snippet = snippet.replace("/etc/mos-agent/", f"{tmp_path}/")
    (tmp_path / "mqtt.password").write_text("secret\n")
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    agent = {"agent": {"id": "gw-changwon-01", "enterprise": "acme", "site": "changwon", "state_dir": str(tmp_path)},
             "devices": [], **yaml.safe_load(snippet)}
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(agent))
    loaded = load_config(tmp_path / "agent.yaml")
    assert [(s.type, s.format) for s in loaded.agent.sinks] == [("mqtt", "uns"), ("mqtt", "sparkplug")]
