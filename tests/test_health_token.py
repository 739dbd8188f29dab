"""Which health addresses need a token: loopback ones do not, anything other machines can reach
does (a configuration error at the ``health`` line without one); the token is a secret the log
redactor knows."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mos_agent.config.loader import ConfigErrors, load_config
from mos_agent.config.models import is_loopback
from mos_agent.pipeline import collect_secrets


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True), ("[::1]", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("gateway.local", False), ("192.168.1.20", False),
])
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def write(tmp_path: Path, agent: dict) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({"agent": {"id": "gw", "site": "changwon", "state_dir": str(tmp_path / "s"),
                                              **agent}, "devices": []}))
    return path


def test_off_loopback_without_a_token_file_is_an_error_at_the_health_line(tmp_path: Path) -> None:
    path = write(tmp_path, {"health": "[::]:9750"})
    health_line = next(n for n, line in enumerate(path.read_text().splitlines(), 1) if "health:" in line)
    with pytest.raises(ConfigErrors) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert (problem.line, problem.col) == (health_line, 11)
    assert "agent.health_token_file" in problem.message


def test_off_loopback_with_a_token_file_and_loopback_without_one_are_fine(tmp_path: Path) -> None:
    token_file = tmp_path / "health.token"
    token_file.write_text("s3cret-health-token\n")
    loaded = load_config(write(tmp_path, {"health": "0.0.0.0:9750", "health_token_file": "health.token"}))
    assert loaded.agent.agent.health_token_file == token_file  # relative to the agent file
    assert "s3cret-health-token" in collect_secrets(loaded)  # hidden wherever a log line shows it
    assert load_config(write(tmp_path, {"health": "127.0.0.2:9750"})).agent.agent.health_token_file is None


def test_an_unreadable_token_file_is_reported_once_at_its_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as caught:
        load_config(write(tmp_path, {"health": "0.0.0.0:9750", "health_token_file": "missing.token"}))
    (problem,) = caught.value.problems
    assert "cannot read" in problem.message and "health_token_file" in problem.message
