"""Human-facing text in the reader's language: Korean when the locale says so (``LANG``,
``LC_ALL``, ``LC_MESSAGES`` starting ``ko``, or ``MOS_AGENT_LANG=ko``), English otherwise.

Message ids are the English text. Catalogs are compiled before release (``mos_agent/locale/``,
see ``tests/test_i18n.py``) and shipped, so nothing extra runs or is installed at run time.
Only what a person reads goes through here: ``--json``, ``/status``, ``/metrics``, the store's
labels, log lines and the ``PATH:LINE:COL:`` prefix of configuration errors stay as they are.
"""

from __future__ import annotations

import gettext
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from pathlib import Path

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "mos_agent"
LANGUAGES = ("en", "ko")

# set while the agent produces text that ends up in its log (a SIGHUP reload's problems)
_forced: ContextVar[str | None] = ContextVar("mos_agent_language", default=None)


def language() -> str:
    """``ko`` or ``en``: ``MOS_AGENT_LANG`` first, then the POSIX locale variables in their order."""
    forced = _forced.get()
    if forced is not None:
        return forced
    chosen = os.environ.get("MOS_AGENT_LANG", "")
    if not chosen:
        for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
            chosen = os.environ.get(variable, "")
            if chosen:
                break
    return "ko" if chosen.lower().startswith("ko") else "en"


@contextmanager
def english() -> Iterator[None]:
    """Text made inside stays English whatever the locale: what goes to the log (logs are read by
    support and search engines)."""
    token = _forced.set("en")
    try:
        yield
    finally:
        _forced.reset(token)


@cache
def _translations(lang: str) -> gettext.NullTranslations:
    if lang == "en":
        return gettext.NullTranslations()
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=[lang], fallback=True)


def _(message: str) -> str:
    """The message in the reader's language (the English text when there is no translation)."""
    return _translations(language()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return _translations(language()).ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Marks a message for the catalog where it is defined (a table built at import time); it is
    translated with ``_()`` where it is used."""
    return message
