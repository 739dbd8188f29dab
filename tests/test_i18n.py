"""Korean for the people who run it: every human-facing message has a Korean translation, the
shipped catalogs are compiled from their sources, and machine-facing output does not change."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("babel")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import catalogs  # noqa: E402
from babel.messages.pofile import read_po  # noqa: E402

BIN = Path(sys.executable).parent
KO_PO = catalogs.LOCALE / "ko" / "LC_MESSAGES" / "mos_agent.po"


def _korean_catalog():
    with KO_PO.open("rb") as handle:
        return read_po(handle)


def test_every_message_in_the_sources_is_translated() -> None:
    template = catalogs.extract()
    korean = _korean_catalog()
    assert len(template) > 0
    missing = [m.id for m in template if m.id and (korean.get(m.id) is None or not korean.get(m.id).string
                                                     or korean.get(m.id).fuzzy)]
    assert not missing, f"untranslated (run scripts/catalogs.py and translate): {missing[:20]}"


def test_shipped_catalog_is_compiled_from_its_source() -> None:
    assert KO_PO.with_suffix(".mo").read_bytes() == catalogs.compiled(KO_PO), \
        "mos_agent.mo is stale: run scripts/catalogs.py"


def test_placeholders_survive_translation() -> None:
    import re

    for message in _korean_catalog():
        if not message.id or not message.string:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        wanted = set(re.findall(r"\{[a-z_]*\}", ids[0]))
        for text in strings:
            assert set(re.findall(r"\{[a-z_]*\}", text)) == wanted, (message.id, text)


def _run(env_lang: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LANG", "LC_ALL", "LC_MESSAGES", "MOS_AGENT_LANG")}
    env.update(env_lang)
    return subprocess.run([str(BIN / "mos-agent"), *args], capture_output=True, text=True,
                          env=env, timeout=60)


def test_one_line_errors_follow_the_locale(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.yaml"
    english = _run({"LANG": "C.UTF-8"}, "validate", "-c", str(missing))
    korean = _run({"LANG": "ko_KR.UTF-8"}, "validate", "-c", str(missing))
    forced = _run({"LANG": "C.UTF-8", "MOS_AGENT_LANG": "ko"}, "validate", "-c", str(missing))
    assert english.returncode == korean.returncode == forced.returncode == 2
    assert "not found" in english.stderr
    assert str(missing) in korean.stderr and "not found" not in korean.stderr
    assert any("\uac00" <= ch <= "\ud7a3" for ch in korean.stderr)
    assert forced.stderr == korean.stderr
