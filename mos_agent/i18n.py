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
from functools import cache
from pathlib import Path

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "mos_agent"
LANGUAGES = ("en", "ko")


def language() -> str:
    """``ko`` or ``en``: ``MOS_AGENT_LANG`` first, then the POSIX locale variables in their order."""
    chosen = os.environ.get("MOS_AGENT_LANG", "")
    if not chosen:
        for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
            chosen = os.environ.get(variable, "")
            if chosen:
                break
    return "ko" if chosen.lower().startswith("ko") else "en"


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
