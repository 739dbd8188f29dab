"""YAML → plain Python data plus where every key and value sits in the file.

``mos-agent validate`` must point at the exact line of every mistake, and pydantic only knows a
path like ``("tags", 3, "unit")``. So the document is composed into nodes (which carry marks),
turned into dicts, lists and scalars by hand, and the 1-based line:column of the key and of the
value at any path is looked up in the node tree when a problem needs it (recording every path of a
100,000-tag file up front cost as much as building the data). While walking, ``${VAR}`` in string scalars is expanded
from the environment and duplicate keys are caught (PyYAML silently keeps the last one).

An alias is walked again at every place it is used, so a few hundred bytes of nested aliases
stand for billions of values ("billion laughs"). The walk has a budget linear in the text, and an
alias inside its own anchor is refused where the anchor is: both are located problems, never a
hang or a crash.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import yaml

from mos_agent.i18n import _

# libyaml's parser is several times faster than the pure-Python one; start-up with 10,000 tags
# depends on it. Both produce nodes with marks.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_ENV_REF = re.compile(r"\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

PathKey = tuple[str | int, ...]

_ScalarNode = yaml.ScalarNode
_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_VALUE = "tag:yaml.org,2002:value"

# Without aliases a document has fewer values than characters, so a budget of a few values a
# character never refuses one; it only stops expansion through aliases far beyond the text.
_VALUES_BASE = 10_000
_VALUES_PER_CHAR = 2
# Configuration files nest a handful of levels; anything deeper is a mistake or a recursive alias.
_MAX_DEPTH = 100


# PyYAML's rules for the tag of a plain scalar, by its first character with the wildcard rules
# after them: what PyYAML's resolve() assembles anew for every scalar, assembled once
_PLAIN_WILDCARD: tuple[tuple[str, re.Pattern[str]], ...] = tuple(_SafeLoader.yaml_implicit_resolvers.get(None, []))
_PLAIN_RESOLVERS: dict[str, tuple[tuple[str, re.Pattern[str]], ...]] = {
    first: (*resolvers, *_PLAIN_WILDCARD)
    for first, resolvers in _SafeLoader.yaml_implicit_resolvers.items() if first is not None}

_PLAIN_TAGS_KEPT = 1024
# the scalars built by calling their constructor directly (each is a plain function of the node)
_PLAIN_CONSTRUCTORS = {tag: _SafeLoader.yaml_constructors[tag] for tag in (
    "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null")}


class _Loader(_SafeLoader):  # type: ignore[misc,valid-type]
    """The safe loader with the composer's calls back into Python made cheap: it asks for the tag
    of every scalar (1.3 million at 100,000 tags) and keeps a path for path resolvers at every
    node. The tags follow PyYAML's implicit rules; this loader has no path resolvers."""

    yaml_path_resolvers: ClassVar[dict[Any, Any]] = {}

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        # keys and values like "unit", "bar", "0.1" come back thousands of times in a file
        self.plain_tags: dict[str, str] = {}

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is not yaml.ScalarNode:
            return super().resolve(kind, value, implicit)
        if not implicit[0]:
            return _STR
        known = self.plain_tags.get(value)
        if known is not None:
            return known
        found = _STR
        for tag, pattern in _PLAIN_RESOLVERS.get(value[:1], _PLAIN_WILDCARD):
            if pattern.match(value):
                found = tag
                break
        if len(self.plain_tags) < _PLAIN_TAGS_KEPT:
            self.plain_tags[value] = found
        return found

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass


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
    marks: Mapping[PathKey, Marks] = field(default_factory=dict)
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


class _Refused(Exception):
    """The walk stops: the document is refused with this one located problem."""

    def __init__(self, problem: Located) -> None:
        super().__init__(problem.message)
        self.problem = problem


class _Builder:
    def __init__(self, loader: Any, root: yaml.Node, environ: Mapping[str, str], text: str) -> None:
        self.loader = loader
        self.root = root
        self.environ = environ
        self.problems: list[Located] = []
        self.budget = _VALUES_BASE + _VALUES_PER_CHAR * len(text)
        # a merge key is "<<" or a tag spelt with "merge": a text with neither has none to fold in
        self.may_merge = "<<" in text or "merge" in text
        self.built = 0
        self.top_key: yaml.Node | None = None  # the key of the top-level pair being built
        # merge sources flattened once however often they are merged (None: being flattened)
        self.flattened: dict[int, list[tuple[yaml.Node, yaml.Node]] | None] = {}

    def build(self, node: yaml.Node, depth: int = 0) -> Any:
        self.built += 1
        if self.built > self.budget:
            raise _Refused(self._bomb())
        if isinstance(node, yaml.MappingNode):
            if depth >= _MAX_DEPTH:
                raise _Refused(self._too_deep(node))
            return self._mapping(node, depth)
        if isinstance(node, yaml.SequenceNode):
            if depth >= _MAX_DEPTH:
                raise _Refused(self._too_deep(node))
            return [self.build(item, depth + 1) for item in node.value]
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> Any:
        if node.tag == _STR:
            # most scalars are strings; constructing them through PyYAML costs a third of the load
            if "${" not in node.value:
                return node.value
            value, problems = expand_env(node.value, self.environ)
            self.problems.extend(Located(*_mark(node.start_mark), p) for p in problems)
            return value
        try:
            plain = _PLAIN_CONSTRUCTORS.get(node.tag)
            if plain is not None:  # a number, true/false or null: its constructor, without the bookkeeping
                return plain(self.loader, node)
            return self.loader.construct_object(node, deep=True)
        except (ValueError, TypeError) as exc:  # e.g. "!!int x"
            self.problems.append(Located(*_mark(node.start_mark), _("cannot read value {value}: {reason}").format(
                value=repr(node.value), reason=exc)))
            return None

    def _bomb(self) -> Located:
        # the values reached through aliases carry the anchor's marks; the top-level key being
        # expanded is where the reader looks
        if self.top_key is None:
            where, prefix = _mark(self.root.start_mark), ""
        else:
            where, prefix = _mark(self.top_key.start_mark), f"{self.top_key.value}: "
        return Located(*where, prefix + _("aliases expand to more than {count} values (an alias bomb?): write the "
                                          "values out, or use fewer levels of aliases").format(
            count=f"{self.budget:,}"))

    def _too_deep(self, node: yaml.Node) -> Located:
        anchored = _self_containing(self.root)
        if anchored is not None:
            return Located(*_mark(anchored.start_mark), _("recursive alias: the value anchored here contains an "
                                                          "alias to itself"))
        return Located(*_mark(node.start_mark), _("nested more than {levels} levels deep").format(levels=_MAX_DEPTH))

    def key(self, key_node: yaml.ScalarNode) -> Any:
        return key_node.value if key_node.tag in (_STR, _VALUE) else self.loader.construct_object(key_node, deep=True)

    def pairs(self, node: yaml.MappingNode) -> tuple[list[tuple[yaml.Node, yaml.Node]], int]:
        """The pairs of a mapping with its ``<<`` merges folded in, and how many were merged."""
        if not self.may_merge:
            return node.value, 0
        for key_node, _value in node.value:
            if key_node.tag == _MERGE:
                break
        else:  # no merge key (nearly every mapping): a loop, not a generator, for a million of them
            return node.value, 0
        inherited = self._merged_pairs(node)
        return [*inherited, *(pair for pair in node.value if pair[0].tag != _MERGE)], len(inherited)

    def _mapping(self, node: yaml.MappingNode, depth: int) -> dict[Any, Any]:
        # "<<" merge keys follow PyYAML's rule: the merged pairs come first, the mapping's own
        # pairs after them, so a later pair wins. Only the mapping's own keys can be duplicates;
        # overriding a merged key is what merging is for.
        pairs, merged = self.pairs(node)
        result: dict[Any, Any] = {}
        # the mapping's own keys, when merged ones are in result too
        own: dict[Any, yaml.Node] | None = {} if merged else None
        for index, (key_node, value_node) in enumerate(pairs):
            if not isinstance(key_node, _ScalarNode):
                self.problems.append(Located(*_mark(key_node.start_mark),
                                             _("a key must be a plain value, not a list or mapping")))
                continue
            key = key_node.value if key_node.tag in (_STR, _VALUE) else self.key(key_node)
            if own is None:
                if key in result:
                    self._duplicate(key, key_node, next(k for k, _value in pairs
                                                             if isinstance(k, yaml.ScalarNode) and self.key(k) == key))
                    continue
            elif index >= merged:
                if key in own:
                    self._duplicate(key, key_node, own[key])
                    continue
                own[key] = key_node
            if depth == 0:
                self.top_key = key_node
            if type(value_node) is _ScalarNode:
                # build() inlined for the commonest value, a scalar (1.2 million at 100,000 tags),
                # and a plain string taken as it is
                self.built += 1
                if self.built > self.budget:
                    raise _Refused(self._bomb())
                value = value_node.value
                result[key] = value if value_node.tag == _STR and "${" not in value else self._scalar(value_node)
            else:
                result[key] = self.build(value_node, depth + 1)
        return result

    def _duplicate(self, key: Any, key_node: yaml.Node, first: yaml.Node) -> None:
        seen = _mark(first.start_mark)
        self.problems.append(Located(*_mark(key_node.start_mark), _(
            "duplicate key {key} (first at line {line}, column {col})").format(key=repr(key), line=seen.line,
                                                                                col=seen.col)))

    def find(self, node: yaml.MappingNode, key: Any) -> tuple[yaml.Node, yaml.Node] | None:
        """The pair that gave ``key`` its value: the mapping's own first, then the merged one."""
        pairs, merged = self.pairs(node)
        for key_node, value_node in (*pairs[merged:], *pairs[:merged]):
            if isinstance(key_node, yaml.ScalarNode) and self.key(key_node) == key:
                return key_node, value_node
        return None

    def _merged_pairs(self, node: yaml.MappingNode) -> list[tuple[yaml.Node, yaml.Node]]:
        """The pairs the ``<<`` keys of ``node`` bring in, one per key, as PyYAML's
        ``flatten_mapping`` gives them: the first mapping merged that has a key wins."""
        sources: list[yaml.MappingNode] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE:
                continue
            listed = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in listed:
                if not isinstance(source, yaml.MappingNode):
                    raise _Refused(Located(*_mark(source.start_mark),
                                           _("'<<' merges a mapping or a list of mappings (an alias like *defaults)")))
            sources.extend(listed)
        by_key: dict[tuple[str, str], tuple[yaml.Node, yaml.Node]] = {}
        for source in sources:
            for pair in self._flattened(source):
                by_key.setdefault((pair[0].tag, str(pair[0].value)), pair)
        return list(by_key.values())

    def _flattened(self, node: yaml.MappingNode) -> list[tuple[yaml.Node, yaml.Node]]:
        """All pairs of a merge source, its own merges folded in, computed once per node."""
        key = id(node)
        if key in self.flattened:
            done = self.flattened[key]
            if done is None:
                raise _Refused(Located(*_mark(node.start_mark), _("recursive alias: the mapping anchored here "
                                                                   "merges itself")))
            return done
        self.flattened[key] = None
        own = [pair for pair in node.value if pair[0].tag != _MERGE]
        pairs = [*self._merged_pairs(node), *own] if len(own) != len(node.value) else own
        self.flattened[key] = pairs
        return pairs


class _NodeMarks(Mapping[PathKey, Marks]):
    """Where the key and the value at a path are written, found in the node tree when asked."""

    def __init__(self, builder: _Builder) -> None:
        self.builder = builder

    def __getitem__(self, path: PathKey) -> Marks:
        node = key_node = self.builder.root
        for part in path:
            if isinstance(node, yaml.SequenceNode) and type(part) is int and 0 <= part < len(node.value):
                node = key_node = node.value[part]
            elif isinstance(node, yaml.MappingNode) and (pair := self.builder.find(node, part)) is not None:
                key_node, node = pair
            else:
                raise KeyError(path)
        return Marks(_mark(key_node.start_mark), _mark(node.start_mark))

    def __iter__(self) -> Iterator[PathKey]:
        return iter(_node_paths(self.builder, self.builder.root, ()))

    def __len__(self) -> int:
        return len(_node_paths(self.builder, self.builder.root, ()))


def _node_paths(builder: _Builder, node: yaml.Node, path: PathKey) -> list[PathKey]:
    found = [path]
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found += _node_paths(builder, item, (*path, index))
    elif isinstance(node, yaml.MappingNode):
        pairs, merged = builder.pairs(node)
        own = {builder.key(k): v for k, v in reversed(pairs[merged:]) if isinstance(k, yaml.ScalarNode)}
        inherited = {builder.key(k): v for k, v in pairs[:merged] if isinstance(k, yaml.ScalarNode)}
        for key, value in {**inherited, **own}.items():
            found += _node_paths(builder, value, (*path, key))
    return found


def _self_containing(root: yaml.Node) -> yaml.Node | None:
    """The first collection node that contains itself through an alias, found without recursion."""
    on_path: set[int] = set()
    done: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        if leaving:
            on_path.discard(id(node))
            done.add(id(node))
            continue
        if not isinstance(node, yaml.MappingNode | yaml.SequenceNode) or id(node) in done:
            continue
        if id(node) in on_path:
            return node
        on_path.add(id(node))
        stack.append((node, True))
        children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
        stack.extend((child, False) for child in reversed(children))
    return None


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
        builder = _Builder(loader, node, environ, text)
        try:
            data = builder.build(node)
        except _Refused as refused:
            return MarkedDocument(None, {}, [*builder.problems, refused.problem])
        except yaml.MarkedYAMLError as exc:  # a scalar whose explicit tag cannot be constructed
            return MarkedDocument(None, {}, [*builder.problems, _syntax_problem(exc)])
        return MarkedDocument(data, _NodeMarks(builder), builder.problems)
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
