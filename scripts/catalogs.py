"""Refresh the translation catalogs after changing human-facing text:

    .venv/bin/python scripts/catalogs.py          # extract, merge into every .po, compile the .mo files

Then translate the new or changed entries in ``mos_agent/locale/<lang>/LC_MESSAGES/mos_agent.po``
(entries with an empty ``msgstr`` or marked fuzzy) and run it again to compile. The test suite
fails while any entry is untranslated or a .mo is older than its .po.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

REPO = Path(__file__).resolve().parent.parent
LOCALE = REPO / "mos_agent" / "locale"
SOURCES = ("mos_agent", "drivers")
KEYWORDS = {"_": None, "N_": None, "ngettext": (1, 2)}


def extract() -> Catalog:
    """Every message id in the sources, with where it is used."""
    template = Catalog(project="mos-agent", domain="mos_agent")
    for source in SOURCES:
        for filename, lineno, message, comments, context in extract_from_dir(
                REPO / source, method_map=[("**.py", "python")], keywords=KEYWORDS):
            template.add(message, locations=[(f"{source}/{filename}", lineno)], auto_comments=comments,
                         context=context)
    return template


def compiled(po_path: Path) -> bytes:
    with po_path.open("rb") as handle:
        catalog = read_po(handle)
    out = io.BytesIO()
    write_mo(out, catalog, use_fuzzy=False)
    return out.getvalue()


def main() -> int:
    template = extract()
    for po_path in sorted(LOCALE.glob("*/LC_MESSAGES/mos_agent.po")):
        with po_path.open("rb") as handle:
            catalog = read_po(handle)
        created = catalog.creation_date
        catalog.update(template, no_fuzzy_matching=True)
        catalog.creation_date = created  # a run that changes no message leaves the file as it was
        with po_path.open("wb") as handle:
            # no line numbers: they change with every edit above a message, and each such edit
            # would otherwise rewrite the catalog and collide with the next merge
            write_po(handle, catalog, width=100, omit_header=False, ignore_obsolete=True, include_lineno=False)
        po_path.with_suffix(".mo").write_bytes(compiled(po_path))
        missing = [m.id for m in catalog if m.id and not (all(m.string) if isinstance(m.string, tuple) else m.string)]
        print(f"{po_path.relative_to(REPO)}: {len(catalog)} messages, {len(missing)} untranslated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
