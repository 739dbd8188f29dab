"""Every YAML example in the documentation is a valid configuration: each ```yaml block of every
README (and docs/) is validated as an agent file or a device file, its problems reported at their
line in the Markdown file. An example that appears in several places must read the same in all of
them, so the copies cannot drift apart."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from mos_agent.config.models import AgentConfig, ContractConfig
from mos_agent.config.profiles import DEVICE, PROFILE_KEY, Profile, SourceView, merge, profile_rules
from mos_agent.config.validation import pydantic_problems
from mos_agent.config.yamlmarks import Mark, load_yaml
from mos_agent.registry import load_driver
from mos_agent.taxonomy import DEFAULT_STAGES

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = sorted([REPO / "README.md", REPO / "README.ko.md", *REPO.glob("drivers/*/README.md"),
                    *REPO.glob("docs/*.md")])
FENCE = re.compile(r"^```yaml[ \t]*\n(.*?)^```", re.M | re.S)
PLACEHOLDER_AGENT = {"id": "gw-example", "site": "example"}


class AnyVariable(Mapping[str, str]):
    """``${VAR}`` in an example stands for whatever the reader sets."""

    def __getitem__(self, key: str) -> str:
        return f"value-of-{key}"

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def yaml_blocks() -> list[tuple[Path, int, str]]:
    """``(document, line of the block's first line, text)`` for every ```yaml block."""
    blocks = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            blocks.append((document, text.count("\n", 0, match.start(1)) + 1, match.group(1)))
    return blocks


BLOCKS = yaml_blocks()


def profile_blocks() -> dict[str, str]:
    """The device profiles the documents show, by name: a device example naming
    ``…/profiles/<name>.yaml`` is validated merged with the one of that name."""
    found: dict[str, str] = {}
    for _, _, text in BLOCKS:
        data = load_yaml(text, AnyVariable()).data
        if isinstance(data, dict) and PROFILE_KEY in data and "name" not in data:
            found[str(data[PROFILE_KEY])] = text
    return found


PROFILES = profile_blocks()


def problems_in(text: str) -> list[tuple[int, int, str]]:
    """What validating the block reports: an agent file (a block of agent-file sections without
    the ``agent:`` one gets a placeholder for it), a device file of its driver, or a sharing
    contract (it names a ``consumer``)."""
    doc = load_yaml(text, AnyVariable())
    found = [(p.line, p.col, p.message) for p in doc.problems]
    data = doc.data
    if not isinstance(data, dict):
        return [*found, (1, 1, "not a mapping: neither an agent file nor a device file")]
    if PROFILE_KEY in data and "name" not in data:  # a profile: checked with the devices naming it
        return [*found, *((p.line, p.col, p.message) for p in profile_rules(doc)[1])]
    if PROFILE_KEY in data:  # a device on a profile: the device the models see is the merged one
        profile_text = PROFILES.get(Path(str(data[PROFILE_KEY])).stem)
        if profile_text is None:
            return [*found, (1, 1, f"names a profile no example shows: {data[PROFILE_KEY]}")]
        profile = Profile(Path("profile.yaml"), load_yaml(profile_text, AnyVariable()))
        profile.name = profile_rules(profile.doc)[0]  # type: ignore[arg-type]
        merged, exclude_problems = merge(profile, data, doc, str(profile.path))
        found += [(p.line, p.col, p.message) for p in exclude_problems]
        doc = SourceView(merged, doc, DEVICE, Mark(1, 1))
        data = merged.data
    model: Any
    context: dict[str, Any] | None = None
    if "driver" in data:
        model = load_driver(str(data["driver"])).device_model
        context = {"stages": list(DEFAULT_STAGES)}
    elif "consumer" in data:
        model = ContractConfig
    elif set(data) <= set(AgentConfig.model_fields):
        model = AgentConfig
        data = {"agent": PLACEHOLDER_AGENT, **data}
    else:
        return [*found, (1, 1, "neither an agent file (unknown sections) nor a device file (no driver:)")]
    try:
        model.model_validate(data, context=context)
    except Exception as exc:  # pydantic's ValidationError, rendered as the loader renders it
        found += [(p.line, p.col, p.message) for p in pydantic_problems(exc, doc, model)]  # type: ignore[arg-type]
    return found


def test_the_documents_have_examples() -> None:
    names = {path.relative_to(REPO).as_posix() for path, _, _ in BLOCKS}
    assert {"README.md", "drivers/modbus/README.md", "drivers/mqtt/README.md", "drivers/opcua/README.md",
            "docs/catalog.md"} <= names


@pytest.mark.parametrize(("document", "first_line", "text"), BLOCKS,
                         ids=[f"{p.relative_to(REPO).as_posix()}:{line}" for p, line, _ in BLOCKS])
def test_every_yaml_example_validates(document: Path, first_line: int, text: str) -> None:
    located = [f"{document.relative_to(REPO)}:{first_line + line - 1}:{col}: {message}"
               for line, col, message in problems_in(text)]
    assert located == []


def test_an_example_shown_twice_is_the_same_everywhere() -> None:
    """Device examples are keyed by device name: two blocks describing the same device are one
    example copied, and must not differ."""
    by_device: dict[str, set[str]] = {}
    for _, _, text in BLOCKS:
        data = load_yaml(text, AnyVariable()).data
        if isinstance(data, dict) and "name" in data and ("driver" in data or PROFILE_KEY in data):
            by_device.setdefault(str(data["name"]), set()).add(text)
    assert {name: texts for name, texts in by_device.items() if len(texts) > 1} == {}


def test_a_broken_example_is_reported_at_its_line() -> None:
    broken = "name: press-01\ndriver: modbus\nasset: {area: stamping}\nstage: forming\n" \
             "connection: {host: 10.0.0.5}\ntags:\n" \
             "  - {name: p, address: \"hr:0\", type: float23, category: process}\n"
    problems = problems_in(broken)
    assert len(problems) == 1
    line, _, message = problems[0]
    assert line == 7 and "float23" in message and "float32" in message  # with "did you mean"
