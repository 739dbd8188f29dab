"""The layering the code relies on, checked on the imports themselves: storage knows no sinks,
the health server no pipeline, the status model nothing of the agent, and the package nothing of
the test helpers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "mos_agent"


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function (``TYPE_CHECKING`` too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def under(modules: set[str], prefix: str) -> set[str]:
    return {m for m in modules if m == prefix or m.startswith(prefix + ".")}


@pytest.mark.parametrize(("module", "forbidden"), [
    ("buffer.py", "mos_agent.sinks"),
    ("buffer.py", "mos_agent.pipeline"),
    ("health.py", "mos_agent.pipeline"),
    ("sinks/forward.py", "mos_agent.pipeline"),
])
def test_a_layer_does_not_import_the_one_above(module: str, forbidden: str) -> None:
    assert under(imported_modules(PACKAGE / module), forbidden) == set()


def test_the_status_model_imports_nothing_of_the_agent() -> None:
    assert under(imported_modules(PACKAGE / "status.py"), "mos_agent") == set()


def test_the_package_does_not_import_the_test_helpers() -> None:
    offenders = {str(path.relative_to(REPO)): sorted(under(imported_modules(path), "tests"))
                 for root in ("mos_agent", "drivers", "simulators")
                 for path in (REPO / root).rglob("*.py") if "tests" not in path.relative_to(REPO).parts}
    assert {path: mods for path, mods in offenders.items() if mods} == {}
