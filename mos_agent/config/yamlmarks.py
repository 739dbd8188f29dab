"""YAML → plain Python data plus where every key and value sits in the file.

``mos-agent validate`` must point at the exact line of every mistake, and pydantic only knows a
path like ``("tags", 3, "unit")``. So the document is composed into nodes (which carry marks),
turned into dicts, lists and scalars by hand, and every path is recorded with the 1-based
line:column of its key and of its value. While walking, ``${VAR}`` in string scalars is expanded
from the environment and duplicate keys are caught (PyYAML silently keeps the last one).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import yaml

from mos_agent.i18n import _

# libyaml's parser is several times faster than the pure-Python one; start-up with 10,000 tags
# depends on it. Both produce nodes with marks.
_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_ENV_REF = re.compile(r"\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

PathKey = tuple[str | int, ...]

_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"


class Mark(NamedTuple):
    line: int  # 1-based
    col: int  # 1-based


class Located(NamedTuple):
    line: int
    col: int
    message: str


@dataclass(frozen=True, slots=True)
class Marks:
    key: Mark  # where the key is written (for a list item: where the item starts)
    value: Mark  # where the value starts


@dataclass
class MarkedDocument:
    """``data`` is None when the text is empty or could not be parsed."""

    data: Any
    marks: dict[PathKey, Marks] = field(default_factory=dict)
    problems: list[Located] = field(default_factory=list)

    def value_mark(self, path: PathKey) -> Mark:
        found = self.marks.get(path)
        return found.value if found else Mark(1, 1)

    def key_mark(self, path: PathKey) -> Mark:
        found = self.marks.get(path)
        return found.key if found else Mark(1, 1)


def _mark(yaml_mark: Any) -> Mark:
    return Mark(yaml_mark.line + 1, yaml_mark.column + 1)


def describe_path(path: PathKey) -> str:
    """``("tags", 3, "unit")`` → ``tags[3].unit``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def expand_env(text: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """Replace ``${NAME}`` with the variable's value; ``$${`` writes a literal ``${``.
    Returns the text and the problems (one per unset or malformed reference)."""
    if "${" not in text:
        return text, []
    problems: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        start = match.start()
        if start > 0 and text[start - 1] == "$":
            return match.group(0)  # escaped: the "$$" is reduced below
        name = match.group(1)
        if not _ENV_NAME.match(name):
            problems.append(_("bad environment reference {reference}: use ${{NAME}} with letters, digits and '_'")
                            .format(reference=f"${{{name}}}"))
            return match.group(0)
        if name not in environ:
            problems.append(_("environment variable {name} is not set").format(name=name))
            return match.group(0)
        return environ[name]

    expanded = _ENV_REF.sub(substitute, text)
    return expanded.replace("$${", "${"), problems


class _Builder:
    def __init__(self, loader: Any, environ: Mapping[str, str]) -> None:
        self.loader = loader
        self.environ = environ
        self.marks: dict[PathKey, Marks] = {}
        self.problems: list[Located] = []

    def build(self, node: yaml.Node, path: PathKey, key_mark: Mark) -> Any:
        value_mark = _mark(node.start_mark)
        self.marks[path] = Marks(key_mark, value_mark)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i), _mark(item.start_mark)) for i, item in enumerate(node.value)]
        if node.tag == _STR:
            # most scalars are strings; constructing them through PyYAML costs a third of the load
            if "${" not in node.value:
                return node.value
            value, problems = expand_env(node.value, self.environ)
            self.problems.extend(Located(*value_mark, p) for p in problems)
            return value
        try:
            return self.loader.construct_object(node, deep=True)
        except (ValueError, TypeError) as exc:  # e.g. "!!int x"
            self.problems.append(Located(*value_mark, _("cannot read value {value}: {reason}").format(
                value=repr(node.value), reason=exc)))
            return None

    def _mapping(self, node: yaml.MappingNode, path: PathKey) -> dict[Any, Any]:
        # "<<" merge keys are folded in by PyYAML's own rule: the merged pairs come first, the
        # mapping's own pairs after them, so a later pair wins. Only the mapping's own keys can be
        # duplicates; overriding a merged key is what merging is for.
        explicit = sum(1 for key_node, _value in node.value if key_node.tag != _MERGE)
        if explicit != len(node.value):
            self.loader.flatten_mapping(node)
        merged = len(node.value) - explicit
        result: dict[Any, Any] = {}
        first_seen: dict[Any, Mark] = {}
        for index, (key_node, value_node) in enumerate(node.value):
            key_mark = _mark(key_node.start_mark)
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(Located(*key_mark, _("a key must be a plain value, not a list or mapping")))
                continue
            key = key_node.value if key_node.tag == _STR else self.loader.construct_object(key_node, deep=True)
            if index >= merged:
                if key in first_seen:
                    seen = first_seen[key]
                    self.problems.append(Located(
                        *key_mark, _("duplicate key {key} (first at line {line}, column {col})").format(
                            key=repr(key), line=seen.line, col=seen.col)))
                    continue
                first_seen[key] = key_mark
            result[key] = self.build(value_node, (*path, key), key_mark)
        return result


def load_yaml(text: str, environ: Mapping[str, str] | None = None) -> MarkedDocument:
    """Parse one YAML document. Never raises for bad input: syntax errors, duplicate keys and
    unset environment variables come back as located problems."""
    environ = os.environ if environ is None else environ
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            return MarkedDocument(None, {}, [_syntax_problem(exc)])
        except yaml.YAMLError as exc:  # e.g. a control character the reader refuses
            return MarkedDocument(None, {}, [Located(1, 1, _("not valid YAML: {reason}").format(reason=exc))])
        if node is None:
            return MarkedDocument(None, {(): Marks(Mark(1, 1), Mark(1, 1))})
        builder = _Builder(loader, environ)
        try:
            data = builder.build(node, (), _mark(node.start_mark))
        except yaml.MarkedYAMLError as exc:  # a scalar whose explicit tag cannot be constructed
            return MarkedDocument(None, builder.marks, [*builder.problems, _syntax_problem(exc)])
        return MarkedDocument(data, builder.marks, builder.problems)
    finally:
        loader.dispose()


def _syntax_problem(exc: yaml.MarkedYAMLError) -> Located:
    mark = exc.problem_mark or exc.context_mark
    where = _mark(mark) if mark is not None else Mark(1, 1)
    # PyYAML's own words stay as they are; the sentence around them is the reader's language
    message = _("YAML syntax error: {problem}").format(problem=exc.problem or _("cannot parse"))
    if exc.context and exc.problem and exc.problem.startswith("but "):
        # PyYAML splits some messages as context "expected X" + problem "but found Y"
        message = _("YAML syntax error: {problem}").format(problem=f"{exc.context}, {exc.problem}")
    elif exc.context and exc.context_mark is not None and exc.context_mark is not mark:
        ctx = _mark(exc.context_mark)
        message += " " + _("({context} at line {line}, column {col})").format(context=exc.context, line=ctx.line,
                                                                             col=ctx.col)
    elif exc.context:
        message += f" ({exc.context})"
    if exc.problem and exc.problem.startswith("mapping values are not allowed"):
        message += " " + _("(check this line's indentation, or quote a value that contains ': ')")
    return Located(where.line, where.col, message)
