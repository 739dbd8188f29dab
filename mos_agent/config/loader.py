"""Loads the agent file and every device file, and reports every mistake with its location.

Nothing stops at the first problem: the agent file, each device file and the cross-checks
(duplicate device and tag names, secret files) all run, and every problem comes back as
``PATH:LINE:COL: message`` in one :class:`ConfigErrors`. Turning pydantic's errors into located,
readable problems is :mod:`mos_agent.config.validation`'s job.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import gc
import glob
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from mos_agent import registry
from mos_agent.config import profiles as profiling
from mos_agent.config.models import AgentConfig, DeviceBase
from mos_agent.config.profiles import Profile, ProfileInfo, SourceView
from mos_agent.config.validation import VALUE_CUTOFF, describe_input, hint_after, missing_key, pydantic_problems
from mos_agent.config.yamlmarks import Mark, MarkedDocument, PathKey, describe_path, load_yaml
from mos_agent.i18n import _
from mos_agent.secrets import is_secret_file_key, is_secret_key
from mos_agent.taxonomy import DEFAULT_STAGES

if TYPE_CHECKING:
    from mos_agent.sharing.contracts import Contract

DEFAULT_DEVICES_GLOB = "devices/*.yaml"

# Keys whose value names a file the agent reads (relative paths are taken from the folder of the
# file that names them, and the file must be readable when the configuration is checked).
_INPUT_FILE_KEYS = frozenset({
    "ca", "ca_file", "certificate", "client_certificate", "server_certificate", "private_key",
})
# A secret is one line of printable text: a control character in it (a second line, a CR from a
# Windows editor) ends up in an HTTP header or a login packet, and in the error that follows.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Problem:
    path: Path
    line: int  # 1-based; 0 when the problem concerns the file as a whole
    col: int
    message: str

    def __str__(self) -> str:
        if self.line <= 0:
            return f"{self.path}: {self.message}"
        return f"{self.path}:{self.line}:{self.col}: {self.message}"


class ConfigErrors(Exception):
    """Every problem found in a configuration, sorted by file (agent file first) and line."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass
class LoadedConfig:
    path: Path
    agent: AgentConfig
    devices: list[DeviceBase]
    device_files: dict[str, Path]
    contracts: list[Contract] = field(default_factory=list)  # sharing contracts (mos_agent.sharing)
    profiles: dict[str, ProfileInfo] = field(default_factory=dict)  # by profile name


def read_secret(value: str | None, file: Path | str | None) -> str | None:
    """The secret itself: the file's content without surrounding whitespace when a file is
    given (a trailing newline from ``echo`` is not part of a token), else ``value``."""
    if file is not None:
        return Path(file).read_text(encoding="utf-8").strip()
    return value


# ---------------------------------------------------------------- public entry points


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a configuration is built. Loading allocates millions of
    objects that all live on (nodes, marks, models), so the collector's full passes find nothing
    and walk everything loaded so far each time: with it running the load grows super-linearly
    (10× the tags took 15× the time), without it linearly and twice as fast."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_config(path: Path) -> LoadedConfig:
    """Read and validate the agent file and every device file it names.

    Raises :class:`ConfigErrors` with every problem found in any of the files."""
    with collector_paused():
        return _load_config(Path(path))


def _load_config(path: Path) -> LoadedConfig:
    collector = _Collector(path)
    doc = collector.read(path)
    agent: AgentConfig | None = None
    stages: Sequence[str] | None = DEFAULT_STAGES
    device_patterns: list[tuple[str, PathKey]] = []
    default_devices = True

    if doc is None:
        stages = None
    elif doc.data is None and doc.problems:
        stages = None  # unparseable: device files are still checked, but not their stage
    else:
        data = doc.data
        named = _NamedValues()
        if isinstance(data, dict):
            named = _resolve_file_paths(data, path.parent)
            _resolve_state_dir(data, path.parent)
            stages = _raw_stages(data)
            device_patterns, default_devices = _raw_device_patterns(data)
        agent = collector.validate(path, doc, AgentConfig, data)
        if agent is not None:
            stages = agent.agent.stages
        collector.check_files(path, doc, named)

    device_paths = _device_files(path, doc, device_patterns, default_devices, collector)
    # The marks of the files are not kept: at 50,000 tags they are ~110 MB the running agent would
    # carry for nothing.
    profiles: dict[str, Profile] = {}
    devices, device_files, device_names = _load_devices(device_paths, stages, collector, profiles)
    contracts: list[Contract] = []
    if agent is not None and doc is not None:
        from mos_agent.sharing.contracts import load_contracts

        # a device file with a mistake still names its equipment: contracts are checked against
        # every name, so that one mistake is not reported a second time as an unknown dataset
        contracts = load_contracts(path, doc, agent, devices, collector, device_names)

    if collector.problems or agent is None:
        raise ConfigErrors(collector.sorted())
    return LoadedConfig(path, agent, devices, device_files, contracts=contracts, profiles=_profile_infos(profiles))


def load_device_file(path: Path, stages: Sequence[str] | None = None) -> DeviceBase:
    """Validate one device file (and its profile)."""
    with collector_paused():
        return _load_device_file(Path(path), stages)


def _load_device_file(path: Path, stages: Sequence[str] | None) -> DeviceBase:
    collector = _Collector(path)
    profiles: dict[str, Profile] = {}
    device, _doc = _load_device(path, DEFAULT_STAGES if stages is None else stages, collector, profiles)
    _report_profiles(profiles, collector)
    if collector.problems or device is None:
        raise ConfigErrors(collector.sorted())
    return device


# ---------------------------------------------------------------- collecting problems


class _Collector:
    def __init__(self, agent_path: Path) -> None:
        self.agent_path = agent_path
        self.problems: list[Problem] = []

    def add(self, path: Path, where: Mark | tuple[int, int], message: str) -> None:
        self.problems.append(Problem(path, where[0], where[1], message))

    def sorted(self) -> list[Problem]:
        unique = dict.fromkeys(self.problems)
        return sorted(unique, key=lambda p: (p.path != self.agent_path, str(p.path), p.line, p.col))

    def read(self, path: Path) -> MarkedDocument | None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self.add(path, (0, 0), _("no such file"))
            return None
        except UnicodeDecodeError as exc:
            self.add(path, (0, 0), _("not UTF-8 text ({reason} at byte {position})").format(reason=exc.reason,
                                                                                          position=exc.start))
            return None
        except OSError as exc:
            self.add(path, (0, 0), _("cannot read: {reason}").format(reason=exc.strerror or exc))
            return None
        doc = load_yaml(text)
        for located in doc.problems:
            self.add(path, (located.line, located.col), located.message)
        return doc

    def validate(self, path: Path, doc: MarkedDocument, model: type[BaseModel], data: Any,
                 context: dict[str, Any] | None = None, ignore: set[PathKey] | None = None) -> Any:
        """``model.model_validate(data)`` with every error added as a located problem; None on
        failure. Errors whose real path is in ``ignore`` are dropped (a located check already
        reported them)."""
        if data is None:
            self.add(path, (1, 1), _("the file is empty"))
            return None
        if not isinstance(data, dict):
            self.add(path, (1, 1), _("the file must be a mapping of keys, got {value}").format(
                value=describe_input(data)))
            return None
        try:
            return model.model_validate(data, context=context)
        except ValidationError as exc:
            for located in pydantic_problems(exc, doc, model, ignore or set()):
                self.add(path, (located.line, located.col), located.message)
            return None

    def check_files(self, path: Path, doc: MarkedDocument, named: _NamedValues) -> None:
        """Every file a configuration names for reading must be readable now, not at 3 a.m.; a
        secret (in a file or written in place) must be one line. Secrets are never shown.
        ``named`` is what :func:`_resolve_file_paths` found in the file."""
        for key_path, file_path in named.files:
            where = describe_path(key_path)
            try:
                content = Path(file_path).read_bytes()
            except OSError as exc:
                self.add(path, doc.value_mark(key_path), f"{where}: " + _("cannot read {file}: {reason}").format(
                    file=file_path, reason=exc.strerror or exc))
                continue
            if not is_secret_file_key(key_path[-1]):
                continue
            secret = content.decode("utf-8", "replace").strip()
            lines = len(secret.splitlines())
            if not secret:
                problem = _("{file} is empty").format(file=file_path)
            elif lines > 1:
                problem = _("{file} holds {lines} lines, and a secret is one line (its content is not shown)")
            elif _CONTROL.search(secret):
                problem = _("{file} holds a control character, which no secret has (its content is not shown)")
            else:
                continue
            self.add(path, doc.value_mark(key_path), f"{where}: " + problem.format(file=file_path, lines=lines))
        for key_path, secret in named.secrets:
            lines = len(secret.splitlines())
            if lines > 1:
                problem = _("the value holds {lines} lines, and a secret is one line (it is not shown)")
            elif _CONTROL.search(secret):
                problem = _("the value holds a control character, which no secret has (it is not shown)")
            else:
                continue
            self.add(path, doc.value_mark(key_path), f"{describe_path(key_path)}: " + problem.format(lines=lines))


# ---------------------------------------------------------------- agent file helpers


def _raw_stages(data: dict[Any, Any]) -> Sequence[str] | None:
    """The stage list as written, for checking device files even when the agent file has other
    mistakes; None when it is unusable (then device stages are not checked)."""
    section = data.get("agent")
    if not isinstance(section, dict) or "stages" not in section:
        return DEFAULT_STAGES
    stages = section["stages"]
    if isinstance(stages, list) and all(isinstance(s, str) for s in stages):
        return stages
    return None


def _raw_device_patterns(data: dict[Any, Any]) -> tuple[list[tuple[str, PathKey]], bool]:
    if "devices" not in data:
        return [(DEFAULT_DEVICES_GLOB, ())], True
    value = data["devices"]
    if isinstance(value, str):
        return [(value, ("devices",))], False
    if isinstance(value, list):
        return [(v, ("devices", i)) for i, v in enumerate(value) if isinstance(v, str)], False
    return [], False  # wrong type: the model reports it


class _KeyKind(enum.Enum):
    INPUT_FILE = "input file"
    SECRET = "secret"
    OTHER = "other"


@functools.lru_cache(maxsize=1024)
def _key_kind(key: Any) -> _KeyKind:
    """What a key's value is (a file has few distinct keys and asks for each value's)."""
    if isinstance(key, str) and (key in _INPUT_FILE_KEYS or key.endswith("_file")):
        return _KeyKind.INPUT_FILE
    return _KeyKind.SECRET if is_secret_key(key) else _KeyKind.OTHER


_CONTAINERS = (dict, list)


@functools.lru_cache(maxsize=1024)
def _plain_keys(keys: tuple[Any, ...]) -> bool:
    """Whether none of a mapping's keys names an input file or a secret (a tag's keys, a hundred
    thousand times in a large configuration)."""
    return all(_key_kind(key) is _KeyKind.OTHER for key in keys)


@dataclass
class _NamedValues:
    files: list[tuple[PathKey, str]] = field(default_factory=list)  # input files, made absolute
    secrets: list[tuple[PathKey, str]] = field(default_factory=list)  # secrets written in place


def _resolve_file_paths(data: Any, base: Path, path: PathKey = (), named: _NamedValues | None = None
                        ) -> _NamedValues:
    """Make relative input-file paths absolute against ``base`` (the folder of the file that
    names them), so the running agent does not depend on its working directory; returns where
    the input files and the secrets written in place are. (One walk over every value: a scalar
    costs a type check.)"""
    named = _NamedValues() if named is None else named
    if isinstance(data, dict):
        if _plain_keys(tuple(data)):
            for key, value in data.items():
                if isinstance(value, _CONTAINERS):
                    _resolve_file_paths(value, base, (*path, key), named)
            return named
        for key, value in data.items():
            kind = _key_kind(key)
            if kind is _KeyKind.INPUT_FILE:
                if isinstance(value, str) and value and "${" not in value:
                    expanded = os.path.expanduser(value)
                    data[key] = expanded if os.path.isabs(expanded) else os.path.normpath(base / expanded)
                    named.files.append(((*path, key), data[key]))
            elif isinstance(value, str):
                if kind is _KeyKind.SECRET:
                    named.secrets.append(((*path, key), value))
            elif isinstance(value, dict | list):
                _resolve_file_paths(value, base, (*path, key), named)
    elif isinstance(data, list):
        for index, item in enumerate(data):
            if isinstance(item, dict) and _plain_keys(tuple(item)):
                # a mapping of plain keys (a tag): only what it holds can name a file
                for key, value in item.items():
                    if isinstance(value, _CONTAINERS):
                        _resolve_file_paths(value, base, (*path, index, key), named)
            elif isinstance(item, _CONTAINERS):
                _resolve_file_paths(item, base, (*path, index), named)
    return named


def _resolve_state_dir(data: dict[Any, Any], base: Path) -> None:
    """A relative ``state_dir`` is relative to the agent file, like the devices glob."""
    section = data.get("agent")
    if isinstance(section, dict) and isinstance(section.get("state_dir"), str):
        expanded = os.path.expanduser(section["state_dir"])
        if expanded and not os.path.isabs(expanded):
            section["state_dir"] = os.path.normpath(base / expanded)




def _device_files(agent_path: Path, doc: MarkedDocument | None, patterns: list[tuple[str, PathKey]],
                  default: bool, collector: _Collector) -> list[Path]:
    if doc is not None and doc.data is None and doc.problems:
        # The agent file did not parse: still check the device files where they usually are.
        patterns, default = [(DEFAULT_DEVICES_GLOB, ())], True
    return files_matching(agent_path, doc, patterns, collector, report_no_match=not default)


def files_matching(agent_path: Path, doc: MarkedDocument | None, patterns: list[tuple[str, PathKey]],
                   collector: _Collector, *, report_no_match: bool = True) -> list[Path]:
    """The files the agent file's glob patterns (relative to it) name, each once and never the
    agent file itself; an empty pattern, or one matching nothing, is a located problem."""
    base = agent_path.parent
    agent_real = os.path.realpath(agent_path)
    files: list[Path] = []
    seen: set[str] = set()
    for pattern, key_path in patterns:
        if not pattern.strip():
            if doc is not None:
                collector.add(agent_path, doc.value_mark(key_path), f"{describe_path(key_path)}: " + _("empty pattern"))
            continue
        expanded = os.path.expanduser(pattern)
        full = expanded if os.path.isabs(expanded) else str(base / expanded)
        matched = sorted(Path(m) for m in glob.glob(full) if os.path.isfile(m))
        if not matched and report_no_match and doc is not None:
            collector.add(agent_path, doc.value_mark(key_path),
                          f"{describe_path(key_path)}: " + _("no file matches {pattern}").format(pattern=repr(full)))
        for match in matched:
            real = os.path.realpath(match)
            # "devices: '*.yaml'" next to the agent file must not read the agent file as a device
            if real != agent_real and real not in seen:
                seen.add(real)
                files.append(match)
    return files


# ---------------------------------------------------------------- device files


def _load_devices(paths: list[Path], stages: Sequence[str] | None, collector: _Collector,
                  profiles: dict[str, Profile]) -> tuple[list[DeviceBase], dict[str, Path], list[str]]:
    """The valid devices, their files, and the name of every device file (valid or not)."""
    devices: list[DeviceBase] = []
    device_files: dict[str, Path] = {}
    first_named: dict[str, tuple[Path, Mark]] = {}
    for path in paths:
        device, doc = _load_device(path, stages, collector, profiles)
        if doc is None or not isinstance(doc.data, dict):
            continue
        name = doc.data.get("name")
        if isinstance(name, str):
            where = doc.value_mark(("name",))
            if name in first_named:
                other, other_mark = first_named[name]
                collector.add(path, where, "name: " + _("duplicate device name {name} (also in {place})").format(
                    name=repr(name), place=f"{other}:{other_mark.line}:{other_mark.col}"))
                continue
            first_named[name] = (path, where)
        if device is not None:
            devices.append(device)
            device_files[device.name] = path
    _report_profiles(profiles, collector)
    return devices, device_files, list(first_named)


def _load_device(path: Path, stages: Sequence[str] | None, collector: _Collector, profiles: dict[str, Profile]
                 ) -> tuple[DeviceBase | None, MarkedDocument | None]:
    doc = collector.read(path)
    if doc is None or (doc.data is None and doc.problems):
        return None, doc
    data = doc.data
    if not isinstance(data, dict):
        collector.validate(path, doc, DeviceBase, data)  # reports "empty" / "must be a mapping"
        return None, doc
    collector.check_files(path, doc, _resolve_file_paths(data, path.parent))
    ignore = _check_duplicate_tags(path, doc, collector)
    if stages is None:
        # The agent file's stage list is unusable; stage mistakes would be guesses.
        ignore.add(("stage",))
    context = {"stages": list(stages) if stages is not None else list(DEFAULT_STAGES)}
    if profiling.PROFILE_KEY in data:
        return _load_profiled_device(path, doc, collector, profiles, context, ignore), doc
    if profiling.EXCLUDE_KEY in data:
        collector.add(path, doc.key_mark((profiling.EXCLUDE_KEY,)),
                      "exclude: leaves out tags of a profile, and this file names no profile")
        ignore.add((profiling.EXCLUDE_KEY,))

    driver_cls = _driver_for(path, doc, collector)
    if driver_cls is None:
        return None, doc
    device = collector.validate(path, doc, driver_cls.device_model, data, context=context, ignore=ignore)
    return device, doc


# ---------------------------------------------------------------- device profiles


def _read_profile(device_path: Path, doc: MarkedDocument, collector: _Collector, profiles: dict[str, Profile]
                  ) -> Profile | None:
    """The profile a device file names (read once however many devices name it); None, with the
    device's mistake reported, when its ``profile:`` cannot be followed."""
    written = doc.data[profiling.PROFILE_KEY]
    where = doc.value_mark((profiling.PROFILE_KEY,))
    if not isinstance(written, str) or not written.strip():
        collector.add(device_path, where, "profile: " + _("expected the path of a profile file, relative to this file"))
        return None
    expanded = os.path.expanduser(written)
    profile_path = Path(expanded if os.path.isabs(expanded) else os.path.normpath(device_path.parent / expanded))
    key = os.path.realpath(profile_path)
    if key in profiles:
        return profiles[key]
    if not profile_path.is_file():
        why = _("a folder") if profile_path.is_dir() else _("no such file")
        collector.add(device_path, where, "profile: " + _("cannot read {file}: {reason}").format(file=profile_path,
                                                                                                reason=why))
        return None
    own = _Collector(profile_path)  # the profile's problems name the devices using it
    profile = Profile(profile_path, own.read(profile_path))
    if profile.doc is not None and profile.doc.data is not None:
        profile.name, shape = profiling.profile_rules(profile.doc)
        own.problems += [Problem(profile_path, *located) for located in shape]
        if isinstance(profile.doc.data, dict):
            own.check_files(profile_path, profile.doc, _resolve_file_paths(profile.doc.data, profile_path.parent))
            _check_duplicate_tags(profile_path, profile.doc, own)
        profile.digest = profiling.digest(repr(profile.doc.data))
    elif profile.doc is not None and not own.problems:
        own.add(profile_path, (1, 1), _("the profile is empty"))
    for problem in own.problems:
        profile.report((problem.line, problem.col), problem.message)
    profile.sound = not own.problems
    if profile.name is not None:
        for other in profiles.values():
            if other.name == profile.name:
                assert other.doc is not None
                seen = other.doc.value_mark((profiling.PROFILE_KEY,))
                profile.report(profile.doc.value_mark((profiling.PROFILE_KEY,)),  # type: ignore[union-attr]
                               "profile: " + _("the name {name} is also the name of {place}; one name, one machine "
                                               "model").format(name=repr(profile.name),
                                                               place=f"{other.path}:{seen.line}:{seen.col}"))
                profile.name = None
                break
    profiles[key] = profile
    return profile


def _load_profiled_device(path: Path, doc: MarkedDocument, collector: _Collector, profiles: dict[str, Profile],
                          context: dict[str, Any], ignore: set[PathKey]) -> DeviceBase | None:
    profile = _read_profile(path, doc, collector, profiles)
    if profile is None:
        return None
    device_name = doc.data.get("name")
    device_name = device_name if isinstance(device_name, str) else str(path)
    profile.devices.append(device_name)
    if not profile.sound or not profile.usable:
        return None  # reported once, at the profile, with the devices using it
    merged, exclude_problems = profiling.merge(profile, doc.data, doc, str(profile.path))
    for located in exclude_problems:
        collector.add(path, located[:2], located.message)
    profile_mark = doc.value_mark((profiling.PROFILE_KEY,))
    device_view = SourceView(merged, doc, profiling.DEVICE, profile_mark)
    assert profile.doc is not None
    profile_view = SourceView(merged, profile.doc, profiling.PROFILE, profile.doc.value_mark((profiling.PROFILE_KEY,)))

    device_driver, profile_driver = doc.data.get("driver"), profile.defaults.get("driver")
    if "driver" in doc.data and "driver" in profile.defaults and device_driver != profile_driver:
        seen = profile.doc.value_mark(("driver",))
        collector.add(path, doc.value_mark(("driver",)), "driver: " + _(
            "{driver} differs from the driver of profile {profile}, {profile_driver} ({place})").format(
            driver=repr(device_driver), profile=profile.name, profile_driver=repr(profile_driver),
            place=f"{profile.path}:{seen.line}:{seen.col}"))
        return None
    if "driver" in merged.from_profile:
        driver_cls = _driver_for(profile.path, profile_view, _ProfileReporter(profile, device_name))
    else:
        driver_cls = _driver_for(path, device_view, collector)
    if driver_cls is None:
        return None

    model = driver_cls.device_model
    try:
        device = model.model_validate(merged.data, context=context)
    except ValidationError as exc:
        # the duplicate-tag report counts the device file's tags; the model sees merged ones
        ignore = {_merged_path(merged, p) for p in ignore}
        for located in pydantic_problems(exc, device_view, model, ignore | device_view.foreign_paths()):
            collector.add(path, located[:2], device_view.message(located.message))
        for located in pydantic_problems(exc, profile_view, model, ignore | profile_view.foreign_paths()):
            profile.report(located[:2], profile_view.message(located.message), device_name)
        return None
    return None if exclude_problems else device


def _merged_path(merged: profiling.MergedDevice, device_path: PathKey) -> PathKey:
    if len(device_path) >= 2 and device_path[0] == profiling.TAGS_KEY and isinstance(device_path[1], int):
        index = merged.device_index(device_path[1])
        if index is not None:
            return (profiling.TAGS_KEY, index, *device_path[2:])
    return device_path


class _ProfileReporter:
    """``_Collector.add`` for a profile's problems found while loading one of its devices."""

    def __init__(self, profile: Profile, device_name: str) -> None:
        self.profile = profile
        self.device_name = device_name

    def add(self, path: Path, where: Mark | tuple[int, int], message: str) -> None:
        self.profile.report(where, message, self.device_name)


def _report_profiles(profiles: dict[str, Profile], collector: _Collector) -> None:
    for profile in profiles.values():
        for located in profile.located_problems():
            collector.add(profile.path, located[:2], located.message)


def _profile_infos(profiles: dict[str, Profile]) -> dict[str, ProfileInfo]:
    return {p.name: ProfileInfo(p.name, p.path, p.digest, tuple(p.devices))
            for p in profiles.values() if p.name is not None}


def _driver_for(path: Path, doc: MarkedDocument | SourceView, collector: _Collector | _ProfileReporter) -> Any:
    data = doc.data
    names = registry.driver_names()
    if "driver" not in data:
        collector.add(path, (1, 1), _("{missing} (one of: {names})").format(missing=missing_key("driver"),
                                                                             names=", ".join(names)))
        return None
    name = data["driver"]
    where = doc.value_mark(("driver",))
    if not isinstance(name, str) or name not in names:
        close = get_close_matches(str(name), names, n=1, cutoff=VALUE_CUTOFF)
        collector.add(path, where, "driver: " + _("unknown driver {name} (installed: {names}{hint})").format(
            name=repr(name), names=", ".join(names), hint=hint_after(close)))
        return None
    try:
        return registry.load_driver(name)
    except Exception as exc:  # a broken driver package: say which and why, do not crash validate
        collector.add(path, where, "driver: " + _("driver {name} cannot be loaded: {kind}: {detail}").format(
            name=repr(name), kind=type(exc).__name__, detail=exc))
        return None


def _check_duplicate_tags(path: Path, doc: MarkedDocument, collector: _Collector) -> set[PathKey]:
    """Tag ``i`` of a device is series ``i``: two tags of one name would collapse into one
    series. Returns the paths whose model errors this located report supersedes."""
    tags = doc.data.get("tags")
    if not isinstance(tags, list):
        return set()
    first: dict[str, int] = {}
    superseded: set[PathKey] = set()
    for i, tag in enumerate(tags):
        name = tag.get("name") if isinstance(tag, dict) else None
        if not isinstance(name, str):
            continue
        if name in first:
            seen = doc.value_mark(("tags", first[name], "name"))
            collector.add(path, doc.value_mark(("tags", i, "name")),
                          f"tags[{i}].name: " + _("duplicate tag name {name} (first at line {line})").format(
                              name=repr(name), line=seen.line))
            superseded.add(("tags", i, "name"))
        else:
            first[name] = i
    if superseded:
        # a driver model may check uniqueness too, on the whole list or on the name
        superseded.add(("tags",))
    return superseded
