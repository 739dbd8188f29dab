"""Which configuration keys hold secrets, and hiding secrets in any text the agent shows.

A secret must not appear in a log line, a status field or a configuration error in any form: as
written, escaped (``repr``, JSON, a bytes literal), percent-encoded, or one line of a multi-line
value. :func:`redact` replaces every such form; configuration errors never print a secret key's
value at all (they describe its type instead).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable

# Shorter fragments would redact ordinary words; a secret this short is refused by no one, but
# hiding "abc" everywhere would garble every message.
MIN_SECRET_LENGTH = 4


# switches named after a secret, not holding one
_NOT_SECRETS = frozenset({"allow_plaintext_password"})


def is_secret_key(key: object) -> bool:
    """A key whose value is a secret: ``token``, ``password`` and any ``*_token`` / ``*_password``."""
    return (isinstance(key, str) and key not in _NOT_SECRETS
            and (key in ("token", "password") or key.endswith(("_token", "_password"))))


def is_secret_file_key(key: object) -> bool:
    """A key naming a file whose content is a secret (``token_file``, ``password_file``,
    ``private_key_password_file``…)."""
    return isinstance(key, str) and key.endswith(("token_file", "password_file"))


def secret_forms(secret: str) -> set[str]:
    """``secret`` and the forms it takes when a library escapes or splits it."""
    forms = {
        secret,
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        str(secret.encode("utf-8", "backslashreplace"))[2:-1],
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
    }
    forms.update(line.strip() for line in secret.splitlines())  # a line of a multi-line secret shown alone
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


def redact(text: str, forms: Iterable[str], mark: str = "***") -> str:
    """``text`` with every form of a secret replaced by ``mark`` (longest first, so a form that
    contains another goes whole)."""
    for form in sorted(forms, key=len, reverse=True):
        if form in text:
            text = text.replace(form, mark)
    return text
