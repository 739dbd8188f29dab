"""Loads the agent file and every device file, and reports every mistake with its location.

Nothing stops at the first problem: the agent file, each device file and the cross-checks
(duplicate device and tag names, secret files) all run, and every problem comes back as
``PATH:LINE:COL: message`` in one :class:`ConfigErrors`. Turning pydantic's errors into located,
readable problems is :mod:`mos_agent.config.validation`'s job.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from mos_agent import registry
from mos_agent.config.models import AgentConfig, DeviceBase
from mos_agent.config.validation import VALUE_CUTOFF, describe_input, pydantic_problems
from mos_agent.config.yamlmarks import Mark, MarkedDocument, PathKey, describe_path, load_yaml
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


def _is_input_file_key(key: Any) -> bool:
    return isinstance(key, str) and (key in _INPUT_FILE_KEYS or key.endswith("_file"))


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


def read_secret(value: str | None, file: Path | str | None) -> str | None:
    """The secret itself: the file's content without surrounding whitespace when a file is
    given (a trailing newline from ``echo`` is not part of a token), else ``value``."""
    if file is not None:
        return Path(file).read_text(encoding="utf-8").strip()
    return value


# ---------------------------------------------------------------- public entry points


def load_config(path: Path) -> LoadedConfig:
    """Read and validate the agent file and every device file it names.

    Raises :class:`ConfigErrors` with every problem found in any of the files."""
    path = Path(path)
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
        if isinstance(data, dict):
            _resolve_file_paths(data, path.parent)
            _resolve_state_dir(data, path.parent)
            stages = _raw_stages(data)
            device_patterns, default_devices = _raw_device_patterns(data)
        agent = collector.validate(path, doc, AgentConfig, data)
        if agent is not None:
            stages = agent.agent.stages
        collector.check_files(path, doc)

    device_paths = _device_files(path, doc, device_patterns, default_devices, collector)
    # The marks of the files are not kept: at 50,000 tags they are ~110 MB the running agent would
    # carry for nothing.
    devices, device_files = _load_devices(device_paths, stages, collector)
    contracts: list[Contract] = []
    if agent is not None and doc is not None:
        from mos_agent.sharing.contracts import load_contracts

        contracts = load_contracts(path, doc, agent, devices, collector)

    if collector.problems or agent is None:
        raise ConfigErrors(collector.sorted())
    return LoadedConfig(path, agent, devices, device_files, contracts)


def load_device_file(path: Path, stages: Sequence[str] | None = None) -> DeviceBase:
    """Validate one device file (SIGHUP reload re-reads device files one by one)."""
    path = Path(path)
    collector = _Collector(path)
    device, _ = _load_device(path, DEFAULT_STAGES if stages is None else stages, collector)
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
            self.add(path, (0, 0), "no such file")
            return None
        except UnicodeDecodeError as exc:
            self.add(path, (0, 0), f"not UTF-8 text ({exc.reason} at byte {exc.start})")
            return None
        except OSError as exc:
            self.add(path, (0, 0), f"cannot read: {exc.strerror or exc}")
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
            self.add(path, (1, 1), "the file is empty")
            return None
        if not isinstance(data, dict):
            self.add(path, (1, 1), f"the file must be a mapping of keys, got {describe_input(data)}")
            return None
        try:
            return model.model_validate(data, context=context)
        except ValidationError as exc:
            for located in pydantic_problems(exc, doc, model, ignore or set()):
                self.add(path, (located.line, located.col), located.message)
            return None

    def check_files(self, path: Path, doc: MarkedDocument) -> None:
        """Every file a configuration names for reading must be readable now, not at 3 a.m.; a
        secret (in a file or written in place) must be one line. Secrets are never shown."""
        for key_path, file_path in _input_files(doc.data):
            where = describe_path(key_path)
            try:
                content = Path(file_path).read_bytes()
            except OSError as exc:
                self.add(path, doc.value_mark(key_path), f"{where}: cannot read {file_path}: {exc.strerror or exc}")
                continue
            if not is_secret_file_key(key_path[-1]):
                continue
            secret = content.decode("utf-8", "replace").strip()
            if not secret:
                self.add(path, doc.value_mark(key_path), f"{where}: {file_path} is empty")
            elif problem := _secret_shape_problem(secret):
                self.add(path, doc.value_mark(key_path), f"{where}: {file_path} {problem} (its content is not shown)")
        for key_path, secret in _secret_values(doc.data):
            if problem := _secret_shape_problem(secret):
                self.add(path, doc.value_mark(key_path), f"{describe_path(key_path)}: the value {problem} "
                                                         "(it is not shown)")


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


def _resolve_file_paths(data: Any, base: Path) -> None:
    """Make relative input-file paths absolute against ``base`` (the folder of the file that
    names them), so the running agent does not depend on its working directory."""
    if isinstance(data, dict):
        for key, value in data.items():
            if _is_input_file_key(key) and isinstance(value, str) and value and "${" not in value:
                expanded = os.path.expanduser(value)
                data[key] = expanded if os.path.isabs(expanded) else os.path.normpath(base / expanded)
            else:
                _resolve_file_paths(value, base)
    elif isinstance(data, list):
        for item in data:
            _resolve_file_paths(item, base)


def _resolve_state_dir(data: dict[Any, Any], base: Path) -> None:
    """A relative ``state_dir`` is relative to the agent file, like the devices glob."""
    section = data.get("agent")
    if isinstance(section, dict) and isinstance(section.get("state_dir"), str):
        expanded = os.path.expanduser(section["state_dir"])
        if expanded and not os.path.isabs(expanded):
            section["state_dir"] = os.path.normpath(base / expanded)


def _input_files(data: Any, path: PathKey = ()) -> list[tuple[PathKey, str]]:
    found: list[tuple[PathKey, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if _is_input_file_key(key) and isinstance(value, str) and value and "${" not in value:
                found.append(((*path, key), value))
            else:
                found.extend(_input_files(value, (*path, key)))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            found.extend(_input_files(item, (*path, i)))
    return found


def _secret_values(data: Any, path: PathKey = ()) -> list[tuple[PathKey, str]]:
    found: list[tuple[PathKey, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if is_secret_key(key) and isinstance(value, str):
                found.append(((*path, key), value))
            else:
                found.extend(_secret_values(value, (*path, key)))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            found.extend(_secret_values(item, (*path, i)))
    return found


def _secret_shape_problem(secret: str) -> str | None:
    lines = len(secret.splitlines())
    if lines > 1:
        return f"holds {lines} lines, and a secret is one line"
    if _CONTROL.search(secret):
        return "holds a control character, which no secret has"
    return None


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
                collector.add(agent_path, doc.value_mark(key_path), f"{describe_path(key_path)}: empty pattern")
            continue
        expanded = os.path.expanduser(pattern)
        full = expanded if os.path.isabs(expanded) else str(base / expanded)
        matched = sorted(Path(m) for m in glob.glob(full) if os.path.isfile(m))
        if not matched and report_no_match and doc is not None:
            collector.add(agent_path, doc.value_mark(key_path),
                          f"{describe_path(key_path)}: no file matches {full!r}")
        for match in matched:
            real = os.path.realpath(match)
            # "devices: '*.yaml'" next to the agent file must not read the agent file as a device
            if real != agent_real and real not in seen:
                seen.add(real)
                files.append(match)
    return files


# ---------------------------------------------------------------- device files


def _load_devices(paths: list[Path], stages: Sequence[str] | None, collector: _Collector
                  ) -> tuple[list[DeviceBase], dict[str, Path]]:
    devices: list[DeviceBase] = []
    device_files: dict[str, Path] = {}
    first_named: dict[str, tuple[Path, Mark]] = {}
    for path in paths:
        device, doc = _load_device(path, stages, collector)
        if doc is None or not isinstance(doc.data, dict):
            continue
        name = doc.data.get("name")
        if isinstance(name, str):
            where = doc.value_mark(("name",))
            if name in first_named:
                other, other_mark = first_named[name]
                collector.add(path, where, f"name: duplicate device name {name!r} "
                                           f"(also in {other}:{other_mark.line}:{other_mark.col})")
                continue
            first_named[name] = (path, where)
        if device is not None:
            devices.append(device)
            device_files[device.name] = path
    return devices, device_files


def _load_device(path: Path, stages: Sequence[str] | None, collector: _Collector
                 ) -> tuple[DeviceBase | None, MarkedDocument | None]:
    doc = collector.read(path)
    if doc is None or (doc.data is None and doc.problems):
        return None, doc
    data = doc.data
    if not isinstance(data, dict):
        collector.validate(path, doc, DeviceBase, data)  # reports "empty" / "must be a mapping"
        return None, doc
    _resolve_file_paths(data, path.parent)
    collector.check_files(path, doc)
    ignore = _check_duplicate_tags(path, doc, collector)

    driver_cls = _driver_for(path, doc, collector)
    if driver_cls is None:
        return None, doc
    if stages is None:
        # The agent file's stage list is unusable; stage mistakes would be guesses.
        ignore.add(("stage",))
    context = {"stages": list(stages) if stages is not None else list(DEFAULT_STAGES)}
    device = collector.validate(path, doc, driver_cls.device_model, data, context=context, ignore=ignore)
    return device, doc


def _driver_for(path: Path, doc: MarkedDocument, collector: _Collector) -> Any:
    data = doc.data
    names = registry.driver_names()
    if "driver" not in data:
        collector.add(path, (1, 1), f"missing required key 'driver' (one of: {', '.join(names)})")
        return None
    name = data["driver"]
    where = doc.value_mark(("driver",))
    if not isinstance(name, str) or name not in names:
        close = get_close_matches(str(name), names, n=1, cutoff=VALUE_CUTOFF)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        collector.add(path, where, f"driver: unknown driver {name!r} (installed: {', '.join(names)}{hint})")
        return None
    try:
        return registry.load_driver(name)
    except Exception as exc:  # a broken driver package: say which and why, do not crash validate
        collector.add(path, where, f"driver: driver {name!r} cannot be loaded: {type(exc).__name__}: {exc}")
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
                          f"tags[{i}].name: duplicate tag name {name!r} (first at line {seen.line})")
            superseded.add(("tags", i, "name"))
        else:
            first[name] = i
    if superseded:
        # a driver model may check uniqueness too, on the whole list or on the name
        superseded.add(("tags",))
    return superseded
