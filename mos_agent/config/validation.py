"""Pydantic's validation errors as located, readable problems: each error's path is walked
through the data (union branches and discriminator tags dropped), mapped to the YAML marks of
:mod:`mos_agent.config.yamlmarks`, and worded for a person — "unknown key 'sitee' (did you mean
'site'?)", "expected a number, got 'fast'". :mod:`mos_agent.config.loader` collects them per file.
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from mos_agent.config.yamlmarks import Located, Mark, MarkedDocument, PathKey, describe_path
from mos_agent.i18n import N_, _, ngettext
from mos_agent.secrets import is_secret_key

# difflib ratios: 'proces'→'process' 0.92, 'sitee'→'site' 0.89, 'unti'→'unit' 0.75, but
# 'verbose'→'error' 0.67 and 'forming'→'trimming' 0.67 are suggestions that mislead.
KEY_CUTOFF = 0.6
VALUE_CUTOFF = 0.7

_TYPE_EXPECTATIONS: dict[str, str] = {
    "string_type": N_("a string"),
    "int_type": N_("an integer"),
    "int_parsing": N_("an integer"),
    "int_from_float": N_("an integer"),
    "float_type": N_("a number"),
    "float_parsing": N_("a number"),
    "bool_type": N_("true or false"),
    "bool_parsing": N_("true or false"),
    "list_type": N_("a list"),
    "tuple_type": N_("a list"),
    "set_type": N_("a list"),
    "dict_type": N_("a mapping of keys"),
    "model_type": N_("a mapping of keys"),
    "model_attributes_type": N_("a mapping of keys"),
    "dataclass_type": N_("a mapping of keys"),
    "path_type": N_("a file path"),
    "none_required": N_("nothing"),
}

# pydantic's own wording of a constraint (after "Input should be " became "must be "), and the
# message a reader gets in their language; the English is unchanged
_CONSTRAINTS: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(pattern), message) for pattern, message in (
    (r"^must be greater than or equal to (?P<limit>.+)$", N_("must be greater than or equal to {limit}")),
    (r"^must be greater than (?P<limit>.+)$", N_("must be greater than {limit}")),
    (r"^must be less than or equal to (?P<limit>.+)$", N_("must be less than or equal to {limit}")),
    (r"^must be less than (?P<limit>.+)$", N_("must be less than {limit}")),
    (r"^must be a multiple of (?P<limit>.+)$", N_("must be a multiple of {limit}")),
    (r"^must not be empty$", N_("must not be empty")),
    (r"^must be a valid number, unable to parse string as a number$", N_("must be a number")),
    (r"^String should have at least (?P<limit>\d+) characters$", N_("must have at least {limit} characters")),
    (r"^String should have at most (?P<limit>\d+) characters$", N_("must have at most {limit} characters")),
    (r"^String should match pattern '(?P<limit>.+)'$", N_("must match the pattern '{limit}'")),
))


def did_you_mean(suggestion: Any) -> str:
    """The hint after a misspelt key or value: "did you mean 'site'?"."""
    return _("did you mean {suggestion}?").format(suggestion=repr(suggestion))


def hint_after(close: Sequence[Any]) -> str:
    """``"; did you mean 'x'?"`` to append after a list of what is expected, or nothing."""
    return "; " + did_you_mean(close[0]) if close else ""


def missing_key(key: Any) -> str:
    return _("missing required key {key}").format(key=repr(key))


def _constraint(message: str) -> str:
    for pattern, translated in _CONSTRAINTS:
        if match := pattern.match(message):
            return _(translated).format(**match.groupdict())
    return message


@dataclass
class _Resolved:
    real: PathKey  # the part of pydantic's loc that exists in the data
    missing_key: Any = None  # for "missing": the key that is not there
    branch_at: int | None = None  # index into real where a union branch name was skipped


def _has(container: Any, part: Any) -> bool:
    if isinstance(container, dict):
        return part in container
    return isinstance(container, list) and isinstance(part, int) and 0 <= part < len(container)


def _resolve(loc: tuple[Any, ...], data: Any, error_type: str) -> _Resolved:
    """Walk pydantic's ``loc`` through the data, dropping the segments that name a union branch
    or discriminator tag (``('sinks', 0, 'influxdb', 'url')`` → ``('sinks', 0, 'url')``)."""
    current = data
    real: list[Any] = []
    branch_at: int | None = None
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if _has(current, part):
            real.append(part)
            current = current[part]
        elif last and error_type == "missing" and isinstance(current, dict):
            return _Resolved(tuple(real), missing_key=part, branch_at=branch_at)
        elif branch_at is None:
            branch_at = len(real)
    return _Resolved(tuple(real), branch_at=branch_at)


def describe_input(value: Any, secret: bool = False) -> str:
    """What a wrong value is; for a secret key only its kind, never the value."""
    if value is None:
        return _("nothing")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return _("a mapping")
    if isinstance(value, list):
        return _("a list")
    if secret:
        return _("a number") if isinstance(value, int | float) else \
            _("a {kind} (not shown)").format(kind=type(value).__name__)
    return repr(value)


def _expected_values(ctx: Mapping[str, Any], key: str) -> list[str]:
    text = str(ctx.get(key, ""))
    quoted = re.findall(r"'([^']*)'", text)
    return quoted or [v for v in re.split(r", | or ", text) if v]


def _unwrap(tp: Any) -> list[Any]:
    origin = get_origin(tp)
    if origin is Annotated:
        return _unwrap(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return [m for arg in get_args(tp) for m in _unwrap(arg)]
    return [tp]


def _field_keys(model: type[BaseModel]) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        keys[name] = info.annotation
        if info.alias:
            keys[info.alias] = info.annotation
    return keys


def _models_at(root: type[BaseModel], real: PathKey, data: Any) -> list[type[BaseModel]]:
    """The model classes that describe the mapping at ``real`` (several for a union, narrowed by
    a ``type`` discriminator when the data has one)."""
    candidates: list[Any] = [root]
    current = data
    for part in real:
        following: list[Any] = []
        for tp in candidates:
            for member in _unwrap(tp):
                if isinstance(member, type) and issubclass(member, BaseModel):
                    annotation = _field_keys(member).get(part) if isinstance(part, str) else None
                    if annotation is not None:
                        following.append(annotation)
                    continue
                origin, args = get_origin(member), get_args(member)
                if origin in (list, set, frozenset, Sequence) and isinstance(part, int) and args:
                    following.append(args[0])
                elif origin is tuple and isinstance(part, int) and args:
                    following.append(args[min(part, len(args) - 1)] if args[-1] is not Ellipsis else args[0])
                elif origin in (dict, Mapping) and len(args) == 2:
                    following.append(args[1])
        candidates = following
        current = current.get(part) if isinstance(current, dict) else (
            current[part] if isinstance(current, list) and isinstance(part, int) and part < len(current) else None)
    models = [m for tp in candidates for m in _unwrap(tp) if isinstance(m, type) and issubclass(m, BaseModel)]
    tag = current.get("type") if isinstance(current, dict) else None
    if tag is not None and len(models) > 1:
        narrowed = [m for m in models if _literal_allows(m, "type", tag)]
        models = narrowed or models
    return models


def _literal_allows(model: type[BaseModel], field_name: str, value: Any) -> bool:
    info = model.model_fields.get(field_name)
    if info is None:
        return False
    return any(get_origin(t) is Literal and value in get_args(t) for t in _unwrap(info.annotation))


def unknown_value(name: Any, value: Any, expected: Sequence[str], close: Sequence[Any] = ()) -> str:
    """"unknown overflow 'drop_newst' (expected one of: drop_oldest, drop_newest; did you mean ...)"."""
    return _("unknown {name} {value} (expected one of: {expected}{hint})").format(
        name=name, value=repr(value), expected=", ".join(expected), hint=hint_after(close))


def _prefix(real: PathKey) -> str:
    where = describe_path(real)
    return f"{where}: " if where else ""


def pydantic_problems(exc: ValidationError, doc: MarkedDocument, model: type[BaseModel],
                      ignore: set[PathKey] | None = None) -> list[Located]:
    """Pydantic errors as located, readable problems (with "did you mean" for misspelt keys and
    values)."""
    ignore = ignore or set()
    errors = exc.errors(include_url=False)
    resolved = [_resolve(tuple(e["loc"]), doc.data, e["type"]) for e in errors]
    problems: list[Located] = []
    # a type mismatch against one union branch is noise when another branch got further in
    deeper = {r.real for r in resolved}
    type_mismatches: dict[PathKey, tuple[list[str], Any]] = {}

    for error, res in zip(errors, resolved, strict=True):
        kind = error["type"]
        real = res.real
        if real in ignore:
            continue
        ctx = error.get("ctx") or {}
        value = error.get("input")
        key_name = next((p for p in reversed(real) if isinstance(p, str)), "value")
        secret = is_secret_key(key_name)
        if real and isinstance(real[-1], int):  # an item of a list: "categories[1]" is a category
            key_name = re.sub(r"ies$", "y", key_name) if key_name.endswith("ies") else key_name.removesuffix("s")

        if kind == "missing":
            where = doc.key_mark(real) if real else Mark(1, 1)
            problems.append(Located(*where, _prefix(real) + missing_key(res.missing_key)))
        elif kind == "extra_forbidden":
            key = real[-1] if real else value
            parent = real[:-1]
            models = _models_at(model, parent, doc.data)
            allowed = sorted({k for m in models for k in _field_keys(m)})
            close = get_close_matches(str(key), allowed, n=1, cutoff=KEY_CUTOFF)
            hint = did_you_mean(close[0]) if close else _("allowed: {keys}").format(keys=", ".join(allowed))
            # a model whose keys are names of things (time classes) says so instead of "key"
            noun = next((m.unknown_key_noun for m in models if hasattr(m, "unknown_key_noun")), None)
            unknown = _("unknown {noun} {key} ({hint})").format(noun=_(noun), key=repr(key), hint=hint) if noun \
                else _("unknown key {key} ({hint})").format(key=repr(key), hint=hint)
            problems.append(Located(*doc.key_mark(real), _prefix(parent) + unknown))
        elif kind in ("literal_error", "enum"):
            expected = _expected_values(ctx, "expected")
            close = get_close_matches(str(value), expected, n=1, cutoff=VALUE_CUTOFF) if isinstance(value, str) else []
            problems.append(Located(*doc.value_mark(real), _prefix(real) + unknown_value(key_name, value, expected,
                                                                                         close)))
        elif kind == "union_tag_invalid":
            tag_key = str(ctx.get("discriminator", "type")).strip("'")
            expected = _expected_values(ctx, "expected_tags")
            tag = ctx.get("tag")
            close = get_close_matches(str(tag), expected, n=1, cutoff=VALUE_CUTOFF)
            at = (*real, tag_key)
            problems.append(Located(*doc.value_mark(at), f"{describe_path(at)}: "
                                                         + unknown_value(tag_key, tag, expected, close)))
        elif kind == "union_tag_not_found":
            tag_key = str(ctx.get("discriminator", "type")).strip("'")
            problems.append(Located(*doc.key_mark(real), _prefix(real) + missing_key(tag_key)))
        elif kind in ("too_long", "too_short") and "actual_length" in ctx:
            if kind == "too_long":
                limit = ctx.get("max_length")
                wording = ngettext("expected at most {limit} item, got {actual}",
                                   "expected at most {limit} items, got {actual}", int(limit or 0))
            else:
                limit = ctx.get("min_length")
                wording = ngettext("expected at least {limit} item, got {actual}",
                                   "expected at least {limit} items, got {actual}", int(limit or 0))
            problems.append(Located(*doc.value_mark(real), _prefix(real) + wording.format(
                limit=limit, actual=ctx["actual_length"])))
        elif kind in _TYPE_EXPECTATIONS:
            if res.branch_at is not None and any(len(o) > len(real) and o[:len(real)] == real for o in deeper):
                continue
            phrases, _first_value = type_mismatches.setdefault(real, ([], value))
            if _TYPE_EXPECTATIONS[kind] not in phrases:
                phrases.append(_TYPE_EXPECTATIONS[kind])
        else:
            message = str(error.get("msg", ""))
            for noise in ("Value error, ", "Assertion failed, "):
                message = message.removeprefix(noise)
            message = re.sub(r"^Input should be ", "must be ", message)
            message = re.sub(r"^String should have at least 1 character$", "must not be empty", message)
            if secret and value is not None and str(value) and str(value) in message:
                message = message.replace(str(value), _("(the value, not shown)"))
            problems.append(Located(*doc.value_mark(real), f"{_prefix(real)}{_constraint(message)}"))

    problems = _drop_missing_explained_by_misspelling(problems, errors, resolved, model, doc)
    for real, (phrases, value) in type_mismatches.items():
        secret = is_secret_key(next((p for p in reversed(real) if isinstance(p, str)), None))
        wanted = _(" or ").join(_(phrase) for phrase in phrases)
        got = describe_input(value, secret)
        if not real and value is None:
            message = _("the file is empty")
        elif phrases == ["a string"] and isinstance(value, int | float) and not isinstance(value, bool):
            message = _("expected {expected}, got {value} (put it in quotes)").format(expected=wanted, value=got)
        else:
            message = _("expected {expected}, got {value}").format(expected=wanted, value=got)
        problems.append(Located(*doc.value_mark(real), f"{_prefix(real)}{message}"))
    return problems


def _drop_missing_explained_by_misspelling(problems: list[Located], errors: list[Any], resolved: list[_Resolved],
                                          model: type[BaseModel], doc: MarkedDocument) -> list[Located]:
    """``sitee: x`` gives both "unknown key 'sitee' (did you mean 'site'?)" and "missing required
    key 'site'"; the second says nothing new, so it goes."""
    misspelt: set[tuple[PathKey, str]] = set()
    for error, res in zip(errors, resolved, strict=True):
        if error["type"] == "extra_forbidden" and res.real:
            parent = res.real[:-1]
            allowed = sorted({k for m in _models_at(model, parent, doc.data) for k in _field_keys(m)})
            misspelt.update((parent, c) for c in get_close_matches(str(res.real[-1]), allowed, n=1,
                                                                   cutoff=KEY_CUTOFF))
    if not misspelt:
        return problems
    explained = {_prefix(parent) + missing_key(key) for parent, key in misspelt}
    return [p for p in problems if p.message not in explained]
