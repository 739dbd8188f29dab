"""Device profiles: one file with what every machine of a model has, many short device files.

A profile file holds any device-level key but ``name`` (driver, poll interval, tags, and every
block a driver or the agent adds to a device) under its own name (``profile: press-v2``). A
device file names its profile by path, relative to itself, and the two merge into the device the
models validate:

- a top-level key of the device file replaces the profile's key of that name (a default);
- ``tags`` merge by name: a device tag replaces the profile's tag of its name in place, new
  names come after the profile's tags, and ``exclude`` drops profile tags the machine lacks.

The merge keeps where every part came from, so a mistake is reported in the file that holds it:
a :class:`SourceView` shows the merged device as one file sees it (that file's marks and tag
indices) and names the paths that belong to the other file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from mos_agent.config.yamlmarks import Located, Mark, MarkedDocument, Marks, PathKey, describe_path

PROFILE_KEY = "profile"
EXCLUDE_KEY = "exclude"
TAGS_KEY = "tags"
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# a profile's name that looks like a file names another profile: profiles do not nest
_LOOKS_LIKE_FILE = re.compile(r"[/\\]|\.ya?ml$", re.IGNORECASE)
_LEADING_TAG = re.compile(r"^tags\[(\d+)\]")
_DEVICES_NAMED = 5  # a problem in a profile names this many devices using it, then counts the rest


@dataclass
class Profile:
    """One profile file as read once for every device that uses it."""

    path: Path
    doc: MarkedDocument | None
    name: str | None = None
    digest: str = ""
    sound: bool = False  # read without a mistake of its own (model errors come per device)
    devices: list[str] = field(default_factory=list)
    # each problem of the file once, with the devices it concerns (empty: the file as a whole)
    problems: dict[Located, list[str]] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return self.name is not None and self.doc is not None and isinstance(self.doc.data, dict)

    @property
    def defaults(self) -> dict[str, Any]:
        assert self.doc is not None
        return self.doc.data

    def report(self, where: Mark | tuple[int, int], message: str, device: str | None = None) -> None:
        users = self.problems.setdefault(Located(where[0], where[1], message), [])
        if device is not None and device not in users:
            users.append(device)

    def located_problems(self) -> Iterator[Located]:
        """Every problem once, naming the devices it concerns (all users for the file's own)."""
        for located, users in self.problems.items():
            named = users or self.devices
            if not named:
                yield located
                continue
            shown = ", ".join(named[:_DEVICES_NAMED])
            if len(named) > _DEVICES_NAMED:
                shown += f" and {len(named) - _DEVICES_NAMED} more"
            yield located._replace(message=f"{located.message} (used by {shown})")


@dataclass(frozen=True, slots=True)
class ProfileInfo:
    """What the running agent keeps of a profile: the catalogue names it, a reload compares it."""

    name: str
    path: Path
    digest: str
    devices: tuple[str, ...]


def profile_rules(doc: MarkedDocument) -> tuple[str | None, list[Located]]:
    """The profile's name and the mistakes in the shape of a profile file (not a device's)."""
    data = doc.data
    if not isinstance(data, dict):
        what = "nothing" if data is None else "a list" if isinstance(data, list) else "a single value"
        return None, [Located(1, 1, f"a profile must be a mapping of keys, got {what}")]
    problems: list[Located] = []
    name = data.get(PROFILE_KEY)
    if PROFILE_KEY not in data:
        problems.append(Located(1, 1, "missing required key 'profile' (the name of this profile, like press-v2)"))
    elif not isinstance(name, str) or not is_profile_name(name):
        where = doc.value_mark((PROFILE_KEY,))
        if isinstance(name, str) and _LOOKS_LIKE_FILE.search(name):
            message = ("profile: profiles may not nest: in a profile file 'profile' is this profile's name "
                       f"(like press-v2), not another profile file ({name!r})")
        else:
            message = (f"profile: {name!r} is not a profile name: use letters, digits, '_', '-' and '.', "
                       "like press-v2")
        problems.append(Located(*where, message))
        name = None
    if "name" in data:
        problems.append(Located(*doc.key_mark(("name",)), "name: a profile names no device: each device file "
                                                           "has its own name"))
    if EXCLUDE_KEY in data:
        problems.append(Located(*doc.key_mark((EXCLUDE_KEY,)), "exclude: only a device file excludes tags of "
                                                                "its profile"))
    tags = data.get(TAGS_KEY)
    if TAGS_KEY in data and not isinstance(tags, list):
        problems.append(Located(*doc.value_mark((TAGS_KEY,)), "tags: expected a list of tags"))
    return (name if not problems else None), problems


def is_profile_name(text: str) -> bool:
    return bool(_PROFILE_NAME.match(text)) and not _LOOKS_LIKE_FILE.search(text)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _tag_name(tag: Any) -> str | None:
    name = tag.get("name") if isinstance(tag, dict) else None
    return name if isinstance(name, str) else None


# ---------------------------------------------------------------- merging


DEVICE, PROFILE = "device", "profile"


@dataclass
class MergedDevice:
    """A device file merged with its profile, and where each part came from."""

    data: dict[str, Any]
    from_profile: frozenset[str]  # top-level keys taken from the profile
    tag_sources: list[tuple[str, int]]  # per merged tag: (DEVICE or PROFILE, index in that file's tags)

    def device_index(self, device_tag: int) -> int | None:
        """The merged index of the device file's tag ``device_tag``."""
        for merged, source in enumerate(self.tag_sources):
            if source == (DEVICE, device_tag):
                return merged
        return None


def merge(profile: Profile, device: dict[str, Any], device_doc: MarkedDocument, profile_path: str
          ) -> tuple[MergedDevice, list[Located]]:
    """The device as the models validate it, and the mistakes in the device file's ``exclude``.
    ``profile_path`` replaces the device's ``profile:`` (the resolved file)."""
    defaults = profile.defaults
    problems: list[Located] = []
    data = {key: value for key, value in defaults.items() if key not in (PROFILE_KEY, TAGS_KEY)}
    from_profile = frozenset(key for key in data if key not in device)
    data.update((key, value) for key, value in device.items() if key != TAGS_KEY)
    data[PROFILE_KEY] = profile_path

    profile_tags = defaults.get(TAGS_KEY)
    profile_tags = profile_tags if isinstance(profile_tags, list) else []
    device_tags = device.get(TAGS_KEY)
    device_tags = device_tags if isinstance(device_tags, list) else []
    device_named: dict[str, int] = {}
    for index, tag in enumerate(device_tags):
        name = _tag_name(tag)
        if name is not None:
            device_named.setdefault(name, index)
    profile_names = [name for name in map(_tag_name, profile_tags) if name is not None]

    excluded: set[str] = set()
    exclude = device.get(EXCLUDE_KEY)
    if isinstance(exclude, list):
        known = set(profile_names)
        for index, name in enumerate(exclude):
            if not isinstance(name, str):
                continue  # the model reports the type
            where = device_doc.value_mark((EXCLUDE_KEY, index))
            if name not in known:
                close = get_close_matches(name, profile_names, n=1, cutoff=0.7)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(Located(*where, f"exclude[{index}]: profile {profile.name} has no tag {name!r}{hint}"))
            elif name in device_named:
                problems.append(Located(*where, f"exclude[{index}]: {name!r} is excluded and also listed in this "
                                                f"file's tags (tags[{device_named[name]}]): keep one"))
            excluded.add(name)

    tags: list[Any] = []
    sources: list[tuple[str, int]] = []
    replaced: set[int] = set()
    seen: set[str] = set()
    for index, tag in enumerate(profile_tags):
        name = _tag_name(tag)
        if name is not None:
            if name in excluded or name in seen:  # a repeated profile name is reported in the profile
                continue
            seen.add(name)
            if name in device_named:
                replaced.add(device_named[name])
                tags.append(device_tags[device_named[name]])
                sources.append((DEVICE, device_named[name]))
                continue
        tags.append(tag)
        sources.append((PROFILE, index))
    for index, tag in enumerate(device_tags):
        if index not in replaced:
            tags.append(tag)
            sources.append((DEVICE, index))
    if TAGS_KEY in defaults or TAGS_KEY in device:
        data[TAGS_KEY] = tags if isinstance(device.get(TAGS_KEY, []), list) else device[TAGS_KEY]
    return MergedDevice(data, from_profile, sources), problems


# ---------------------------------------------------------------- one file's view of the merged device


class SourceView(MarkedDocument):
    """The merged device as one of its two files sees it, for the pydantic error translation: its
    marks are that file's (at that file's tag indices), and paths from the other file are not in
    them. The device file owns the device as a whole and its ``tags`` list."""

    def __init__(self, merged: MergedDevice, doc: MarkedDocument, side: str, fallback: Mark) -> None:
        # fallback: where a path the device owns but only the profile writes points (its profile:)
        super().__init__(merged.data, _SourceMarks(self, doc, Marks(fallback, fallback)), [])
        self.merged = merged
        self.side = side

    def _owner(self, path: PathKey) -> tuple[str, PathKey]:
        if not path or path == (TAGS_KEY,):
            return DEVICE, path
        if path[0] == TAGS_KEY and isinstance(path[1], int) and path[1] < len(self.merged.tag_sources):
            side, index = self.merged.tag_sources[path[1]]
            return side, (TAGS_KEY, index, *path[2:])
        return (PROFILE if path[0] in self.merged.from_profile else DEVICE), path

    def source_path(self, path: PathKey) -> PathKey | None:
        side, source = self._owner(path)
        return source if side == self.side else None

    def foreign_paths(self) -> set[PathKey]:
        """Every path of the merged data that belongs to the other file (its errors are not ours)."""
        return {path for path in _paths(self.data) if self.source_path(path) is None}

    def message(self, text: str) -> str:
        """A message as this file's reader counts: ``tags[7]`` of the merged list is ``tags[2]`` here."""
        found = _LEADING_TAG.match(text)
        if found is None:
            return text
        source = self.source_path((TAGS_KEY, int(found.group(1))))
        if source is None:
            return text
        return describe_path(source[:2]) + text[found.end():]


class _SourceMarks(Mapping[PathKey, Marks]):
    """A merged path's marks in the file the view belongs to."""

    def __init__(self, view: SourceView, doc: MarkedDocument, fallback: Marks) -> None:
        self.view = view
        self.doc = doc
        self.fallback = fallback

    def __getitem__(self, path: PathKey) -> Marks:
        source = self.view.source_path(path)
        if source is None:
            raise KeyError(path)
        return self.doc.marks.get(source, self.fallback)

    def __iter__(self) -> Iterator[PathKey]:
        return (path for path in _paths(self.view.data) if self.view.source_path(path) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _paths(data: Any, prefix: PathKey = ()) -> Iterator[PathKey]:
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _paths(value, (*prefix, index))
