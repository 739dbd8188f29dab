"""The agent's own vocabulary as the tables show it — device and sink states, reading quality,
contract status — in the reader's language. ``--json`` and ``/status`` keep the identifiers."""

from __future__ import annotations

from rich.cells import cell_len

from mos_agent.i18n import N_, _

_WORDS = frozenset({
    # device states
    N_("starting"), N_("connecting"), N_("running"), N_("degraded"), N_("down"), N_("stopped"),
    # sink states
    N_("idle"), N_("sending"), N_("draining"), N_("retrying"), N_("auth_failed"), N_("failed"),
    # reading quality
    N_("good"), N_("uncertain"), N_("bad"),
    # sharing contracts
    N_("active"), N_("pending"), N_("expired"),
})


def word(identifier: str) -> str:
    """A state or quality as a person reads it; anything else as it is."""
    return _(identifier) if identifier in _WORDS else identifier


def pad(label: str, width: int) -> str:
    """``label`` followed by spaces to ``width`` terminal cells (a Hangul syllable takes two)."""
    return label + " " * max(1, width - cell_len(label))
