"""The Korean README is the whole README, not a summary: the same sections in the same order and
the same code blocks, each linking to the other."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```")


def _structure(path: Path) -> tuple[list[int], list[str]]:
    """Heading levels in order, and the fenced code blocks verbatim (headings inside code ignored)."""
    levels: list[int] = []
    blocks: list[str] = []
    block: list[str] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            if block is None:
                block = [line]
            else:
                block.append(line)
                blocks.append("\n".join(block))
                block = None
            continue
        if block is not None:
            block.append(line)
        elif line.startswith("#"):
            levels.append(len(line) - len(line.lstrip("#")))
    assert block is None, f"{path.name}: a code block is never closed"
    return levels, blocks


def test_same_sections_in_the_same_order() -> None:
    en_levels, _ = _structure(REPO / "README.md")
    ko_levels, _ = _structure(REPO / "README.ko.md")
    assert len(en_levels) > 10
    assert ko_levels == en_levels


def test_same_code_blocks() -> None:
    _, en_blocks = _structure(REPO / "README.md")
    _, ko_blocks = _structure(REPO / "README.ko.md")
    assert ko_blocks == en_blocks


def test_each_links_to_the_other() -> None:
    assert "(README.ko.md)" in (REPO / "README.md").read_text(encoding="utf-8").split("\n## ")[0]
    assert "(README.md)" in (REPO / "README.ko.md").read_text(encoding="utf-8").split("\n## ")[0]


def test_korean_readme_is_korean() -> None:
    text = (REPO / "README.ko.md").read_text(encoding="utf-8")
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    hangul = sum(1 for ch in prose if "\uac00" <= ch <= "\ud7a3")
    assert hangul > 3000, f"only {hangul} Hangul syllables outside code blocks"
