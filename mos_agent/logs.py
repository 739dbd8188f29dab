"""Logging: one line an event, journald-friendly under systemd (syslog priority prefixes, no
timestamps: journald adds its own), repeats rate-limited, secrets redacted."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable

from mos_agent.secrets import redact, secret_forms

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def under_systemd() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


class JournalFormatter(logging.Formatter):
    """``<6>message`` — journald reads the priority from the prefix."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", " | ")
        return f"<{_PRIORITY.get(record.levelno, 6)}>{text}"


class RepeatFilter(logging.Filter):
    """Lets the same message (logger + final text) through at most once per ``window`` seconds and
    says how many were held back when it next passes. Keyed on the final text, not the template:
    "device x: connecting" must not hide "device x: running"."""

    def __init__(self, window: float = 30.0) -> None:
        super().__init__()
        self.window = window
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL:
            return True
        key = (record.name, record.getMessage())
        now = time.monotonic()
        last, held = self._seen.get(key, (-1e18, 0))
        if now - last < self.window:
            self._seen[key] = (last, held + 1)
            return False
        self._seen[key] = (now, 0)
        if held:
            record.msg, record.args = f"{record.getMessage()} ({held} repeats suppressed)", None
        if len(self._seen) > 10_000:
            self._seen.clear()
        return True


class SecretRedactor(logging.Filter):
    """Replaces every configured secret, in every form it takes (escaped, one line of it…), with
    ``***`` in the final message, whatever logged it."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: set[str] = set()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            if secret:
                self.secrets |= secret_forms(secret)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            redacted = redact(message, self.secrets)
            if redacted != message:
                record.msg, record.args = redacted, None
        return True


_redactor = SecretRedactor()


def setup_logging(level: str = "info", journal: bool | None = None) -> None:
    journal = under_systemd() if journal is None else journal
    handler = logging.StreamHandler(sys.stderr)
    if journal:
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RepeatFilter())
    handler.addFilter(_redactor)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # libraries are chatty at INFO (asyncua logs every request)
    for noisy in ("asyncua", "pymodbus", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def redact_secrets(text: str | None) -> str | None:
    """``text`` with every registered secret hidden, as in the log: for status fields that carry
    what a driver or library said (a device's last error)."""
    return redact(text, _redactor.secrets) if text else text


def register_secrets(secrets: Iterable[str]) -> None:
    _redactor.add(secrets)
