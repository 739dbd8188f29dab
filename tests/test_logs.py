"""Logging: journald priority prefixes under systemd, repeats rate-limited, secrets redacted."""

from __future__ import annotations

import io
import logging

import pytest

from mos_agent import logs


@pytest.fixture
def captured() -> io.StringIO:
    stream = io.StringIO()
    yield stream
    logging.getLogger().handlers.clear()


def _use(stream: io.StringIO, journal: bool) -> logging.Logger:
    logs.setup_logging("info", journal=journal)
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    return logging.getLogger("mos_agent.test")


def test_journal_lines_carry_priority_and_no_timestamp(captured: io.StringIO) -> None:
    log = _use(captured, journal=True)
    log.error("sink %s failed", "influxdb")
    log.info("ready")
    assert captured.getvalue().splitlines() == ["<3>mos_agent.test: sink influxdb failed",
                                                "<6>mos_agent.test: ready"]


def test_repeats_are_rate_limited_but_different_messages_pass(captured: io.StringIO) -> None:
    log = _use(captured, journal=True)
    for _ in range(50):
        log.warning("device %s: %s", "press-01", "connecting")
    log.warning("device %s: %s", "press-01", "running")
    lines = captured.getvalue().splitlines()
    assert lines == ["<4>mos_agent.test: device press-01: connecting", "<4>mos_agent.test: device press-01: running"]


def test_secrets_are_redacted_whatever_logs_them(captured: io.StringIO) -> None:
    log = _use(captured, journal=False)
    logs.register_secrets(["s3cr3t-token-value"])
    log.error("request to http://x?token=%s failed", "s3cr3t-token-value")
    text = captured.getvalue()
    assert "s3cr3t-token-value" not in text and "token=***" in text
