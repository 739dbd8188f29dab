"""Text from devices as readable UTF-8, whatever bytes the device sent.

Older equipment (Korean PLCs in particular) keeps strings in a legacy code page such as CP949
(EUC-KR). Protocol libraries hand those bytes over as ``str`` that cannot be encoded: asyncua
decodes OPC UA strings as UTF-8 keeping undecodable bytes as lone surrogates
(``surrogateescape``), and a JSON ``"\\ud800"`` escape is a lone surrogate too. A tag or device
that declares ``encoding: cp949`` gets its bytes decoded in that code page; anything else that
still is not Unicode becomes U+FFFD, the replacement character — stored, never a failed batch.
"""

from __future__ import annotations

import codecs
import re
from difflib import get_close_matches

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"

# Offered as "did you mean" for a misspelt encoding (any codec Python knows is accepted).
COMMON_ENCODINGS: tuple[str, ...] = (
    "utf-8", "cp949", "euc-kr", "shift_jis", "cp932", "euc-jp", "gb18030", "gbk", "big5", "latin-1",
    "cp1252", "iso-8859-15", "ascii",
)


def is_readable(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (it holds no lone surrogate)."""
    return _LONE_SURROGATE.search(text) is None


def repaired(text: str) -> str:
    """``text`` with every lone surrogate — an undecodable byte kept by ``surrogateescape``, or an
    unpaired JSON escape — replaced by U+FFFD."""
    return _LONE_SURROGATE.sub(REPLACEMENT, text)


def decoded(text: str, encoding: str) -> str:
    """A string a protocol library decoded as UTF-8 (undecodable bytes kept as surrogates), read
    again as the device's bytes in ``encoding``; bytes that are not valid there become U+FFFD."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that stands for no byte: nothing to decode again
        return repaired(text)
    return raw.decode(encoding, "replace")


def check_encoding(value: str) -> str:
    """A text encoding Python knows (``cp949``, ``euc-kr``, ``shift_jis``…), as its canonical
    name; ValueError with a suggestion otherwise."""
    try:
        # LookupError for unknown codecs and for bytes-to-bytes ones (base64); empty input would
        # skip the lookup
        b"text".decode(value, "replace")
    except LookupError:
        close = get_close_matches(value.lower().replace("_", "-"), COMMON_ENCODINGS, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown text encoding {value!r} (for example utf-8, cp949, euc-kr, shift_jis, "
                         f"gb18030, latin-1){hint}") from None
    return codecs.lookup(value).name
