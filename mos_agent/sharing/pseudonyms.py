"""Keyed pseudonyms for asset names: HMAC-SHA256 with a key kept in the state directory.

The key is 32 random bytes generated once (``<state_dir>/sharing.key``, mode 0600) and read on
every later start, so a name always gets the same pseudonym: the consumer can follow
``equipment=3f9a…`` across months without learning it is ``press-01``. Without the key, a
pseudonym cannot be turned back into a name by trying candidate names (plant vocabularies are
small, a plain hash would be guessed in seconds).

A level's pseudonym is the HMAC of the asset path down to that level (``changwon/stamping``), so
two areas called ``stamping`` at two sites do not share one. It is 16 hex digits (64 bits): a
valid asset name, and no collision in any plant's asset list.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

KEY_FILE = "sharing.key"
KEY_BYTES = 32
PSEUDONYM_HEX_DIGITS = 16
# The line-protocol labels a contract's pseudonymise replaces, outermost first.
PSEUDONYMISED_LEVELS: tuple[str, ...] = ("site", "area", "line", "cell", "equipment")

log = logging.getLogger("mos_agent.sharing")


def load_or_create_key(state_dir: Path) -> bytes:
    """The pseudonym key of this state directory, made on first use. Two processes starting at
    once agree: the file is created exclusively and the loser reads the winner's key."""
    path = Path(state_dir) / KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)
    key = secrets.token_bytes(KEY_BYTES)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):  # the directory entry too, so a power cut cannot lose the key
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    log.info("generated the pseudonym key %s (keep it: new pseudonyms would follow from a new key)", path)
    return key


def _read_key(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        # a key others can read lets them reverse every pseudonym by trying names
        os.chmod(path, 0o600)
        log.warning("pseudonym key %s was readable by others (mode %o); set to 0600", path, mode)
    key = path.read_bytes()
    if len(key) < 16:
        raise ValueError(f"pseudonym key {path} holds {len(key)} bytes; expected {KEY_BYTES} "
                         f"(restore it from a backup: a new key would change every pseudonym)")
    return key


class Pseudonymiser:
    """Names → pseudonyms, memoised (a plant has a few hundred asset names)."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._cache: dict[str, str] = {}

    def __repr__(self) -> str:  # never the key
        return "Pseudonymiser()"

    def pseudonym(self, path: str) -> str:
        """The pseudonym of the asset at ``path`` (``site/area/…``, the levels down to this one)."""
        found = self._cache.get(path)
        if found is None:
            digest = hmac.new(self._key, path.encode("utf-8"), hashlib.sha256).hexdigest()
            found = self._cache[path] = digest[:PSEUDONYM_HEX_DIGITS]
        return found

    def levels(self, labels: Mapping[str, str | None]) -> dict[str, str]:
        """``{level: pseudonym}`` for the levels present in ``labels`` (site … equipment)."""
        out: dict[str, str] = {}
        path: list[str] = []
        for level in PSEUDONYMISED_LEVELS:
            value = labels.get(level)
            if value:
                path.append(f"{level}={value}")
                out[level] = self.pseudonym("/".join(path))
        return out
