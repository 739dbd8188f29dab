"""Walking an OPC UA server's address space: ``mos-agent browse`` (a device file for the variables
found) and the driver's ``browse:`` entries (every variable under a folder, at connect time).

The walk follows hierarchical references (Organizes, HasComponent, …) down from a node, level by
level with one Browse request per level, and leaves properties out (they describe a variable, they
are not data). For each variable it reads DataType, ValueRank and Description, and the
``EngineeringUnits`` (EUInformation, mapped to UCUM through its UnitId) and ``EURange``
properties of analog items.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from asyncua import Client, ua
from pydantic import ValidationError

from drivers.opcua import client as uac
from drivers.opcua.decode import status_name
from mos_agent import units
from mos_agent.config.models import TAG_NAME_MAX
from mos_agent.taxonomy import shortened_name
from mos_agent.text import decoded, repaired

OBJECTS = ua.NodeId(ua.ObjectIds.ObjectsFolder)
ROOT = ua.NodeId(ua.ObjectIds.RootFolder)
_OBJECT_OR_VARIABLE = int(ua.NodeClass.Object) | int(ua.NodeClass.Variable)

# The kinds a device file's tag `type` can say; bytes and structures are left out of the file.
READABLE_KINDS = ("number", "bool", "string", "enum", "auto")


@dataclass(slots=True)
class Found:
    """A variable found under the browse root."""

    path: tuple[str, ...]  # browse names below the root
    node_id: ua.NodeId
    kind: str = "auto"  # number bool string enum struct bytes auto
    data_type: ua.NodeId | None = None
    type_name: str = ""
    value_rank: int = -1
    unit: str | None = None  # UCUM code from EUInformation, when the table has it
    unit_label: str | None = None  # EUInformation.DisplayName, for the comment when unmapped
    eu_range: tuple[float, float] | None = None
    description: str | None = None

    @property
    def name(self) -> str:
        return ".".join(self.path)


async def walk(client: Client, root: ua.NodeId, depth: int, limit: int = 10_000) -> tuple[list[Found], bool]:
    """Every variable down to ``depth`` levels below ``root``; True second when ``limit`` cut it."""
    # Below Objects, namespace 0 is the server's own object with its diagnostics: not machine data.
    skip_ns0 = root in (OBJECTS, ROOT)
    visited = {root}
    level: list[tuple[ua.NodeId, tuple[str, ...]]] = [(root, ())]
    found: list[Found] = []
    truncated = False
    for _ in range(depth):
        if not level or truncated:
            break
        answers = await uac.browse(client, [node for node, _ in level], ua.ObjectIds.HierarchicalReferences,
                                   _OBJECT_OR_VARIABLE)
        next_level: list[tuple[ua.NodeId, tuple[str, ...]]] = []
        for (_, path), refs in zip(level, answers, strict=True):
            for ref in refs:
                if ref.ReferenceTypeId == ua.NodeId(ua.ObjectIds.HasProperty):
                    continue
                target = uac.plain(ref.NodeId)
                if target in visited or (skip_ns0 and target.NamespaceIndex == 0):
                    continue
                visited.add(target)
                child = (*path, ref.BrowseName.Name or target.to_string())
                if ref.NodeClass == ua.NodeClass.Variable:
                    if len(found) >= limit:
                        truncated = True
                        break
                    found.append(Found(child, target))
                next_level.append((target, child))
        level = next_level
    if found:
        await describe(client, found)
    return found, truncated


async def describe(client: Client, found: Sequence[Found]) -> None:
    """Fills in data type, rank, description, unit and range of found variables."""
    nodes = [f.node_id for f in found]
    data_types, ranks, descriptions, props = await asyncio.gather(
        uac.read(client, nodes, ua.AttributeIds.DataType),
        uac.read(client, nodes, ua.AttributeIds.ValueRank),
        uac.read(client, nodes, ua.AttributeIds.Description),
        uac.browse(client, nodes, ua.ObjectIds.HasProperty, int(ua.NodeClass.Variable)),
    )
    types: list[ua.NodeId | None] = []
    for f, dv_type, dv_rank, dv_desc in zip(found, data_types, ranks, descriptions, strict=True):
        type_id = dv_type.Value.Value if dv_type.Value is not None else None
        types.append(type_id if isinstance(type_id, ua.NodeId) else None)
        rank = dv_rank.Value.Value if dv_rank.Value is not None else None
        f.value_rank = int(rank) if isinstance(rank, int) else -1
        text = dv_desc.Value.Value if dv_desc.Value is not None else None
        # many servers fill Description with the browse name; that describes nothing
        if isinstance(text, ua.LocalizedText) and text.Text and text.Text != f.path[-1]:
            f.description = text.Text
    registry = uac.DataTypes(client)
    present = [t for t in types if t is not None]
    kinds = await registry.kinds_of(present)
    names = await registry.names_of(present)
    for f, t in zip(found, types, strict=True):
        if t is not None:
            f.data_type = t
            f.kind = kinds.get(t, "auto")
            f.type_name = names.get(t, "")

    wanted: list[tuple[Found, str, ua.NodeId]] = []
    for f, refs in zip(found, props, strict=True):
        for ref in refs:
            if ref.BrowseName.Name in ("EngineeringUnits", "EURange"):
                wanted.append((f, ref.BrowseName.Name, uac.plain(ref.NodeId)))
    if wanted:
        values = await uac.read(client, [node for _, _, node in wanted])
        for (f, name, _), dv in zip(wanted, values, strict=True):
            value = dv.Value.Value if dv.Value is not None else None
            if name == "EngineeringUnits" and isinstance(value, ua.EUInformation):
                unit = units.from_opcua_unit_id(value.UnitId)
                f.unit = unit.ucum if unit else None
                f.unit_label = value.DisplayName.Text if value.DisplayName else None
            elif name == "EURange" and isinstance(value, ua.Range) and value.Low < value.High:
                f.eu_range = (float(value.Low), float(value.High))


def tag_name_for(path: Sequence[str], prefix: str | None = None, encoding: str | None = None) -> str:
    """The tag name of a variable found by browsing: its browse path joined with '.', after
    ``prefix``. Browse names in a legacy code page are read in ``encoding`` (else undecodable
    bytes become U+FFFD); a name over the tag name limit is shortened with a hash of the whole
    (deep folders with long names are common), so every generated name validates."""
    joined = ".".join(path)
    name = decoded(joined, encoding) if encoding else repaired(joined)
    return shortened_name(f"{prefix}.{name}" if prefix else name, TAG_NAME_MAX)


# ---------------------------------------------------------------- category guess

_CATEGORY_PATTERNS: tuple[tuple[str, str], ...] = (
    ("maintenance", r"^(alarms?|faults?|errors?|warnings?|wear|maintenance|service|diagnos\w*|lubric\w*|"
                    r"tool_?life|health)$"),
    ("equipment_state", r"^(state|states|mode|modes|status|running|idle|ready|door|estop|emergency|enabled|"
                        r"currentstate|execution)$"),
    ("production", r"^(counts?|counters?|parts?|programs?|programname|orders?|cycle|cycletime|jobs?|good|"
                   r"rejects?|scrap|output|production)$"),
    ("energy", r"^(power|energy|current|voltage|kwh|electric\w*|activepower)$"),
    ("environment", r"^(ambient|humidity|room|environment|dust|particles?)$"),
    ("quality", r"^(quality|inspection|measured|measurement|deviation|tolerance|roughness|gauge)$"),
    ("material", r"^(material|lot|batch|coil|stock|consumption)$"),
)
_CATEGORY_WORDS = tuple((category, re.compile(pattern)) for category, pattern in _CATEGORY_PATTERNS)
_ENERGY_UNITS = frozenset({"W", "kW", "MW", "kV.A", "W.h", "kW.h", "MW.h", "J", "kJ", "MJ", "A", "kA", "V"})
_PROBLEM = re.compile(r"^(alarms?|faults?|errors?|warnings?)$")


def _words(text: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def guess_category(name: str, unit: str | None) -> str:
    """A first guess from the variable's name, its folders and its unit; ``process`` when
    nothing fits. Anything under an alarm or fault folder is maintenance; otherwise the variable's
    own name decides before its folders do."""
    parts = [p for p in re.split(r"[./]", name) if p]
    all_words = [w for p in parts for w in _words(p)]
    if any(_PROBLEM.match(w) for w in all_words):
        return "maintenance"
    if unit in _ENERGY_UNITS:
        return "energy"
    for part in reversed(parts):
        words = _words(part)
        joined = "".join(words)
        for category, pattern in _CATEGORY_WORDS:
            if pattern.match(joined) or any(pattern.match(w) for w in words):
                return category
    return "process"


# ---------------------------------------------------------------- device-file YAML

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-\[\]/ ]*$")


def _scalar(text: str) -> str:
    """A YAML scalar: plain when unambiguous, else double-quoted (JSON strings are valid YAML)."""
    if _PLAIN.match(text) and text.strip() == text and text.lower() not in ("true", "false", "null", "yes",
                                                                          "no", "on", "off", "none", "~"):
        return text
    return json.dumps(text, ensure_ascii=False)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def device_name(name: str | None, endpoint: str, root_name: str | None) -> str:
    raw = name or root_name or (urlsplit(endpoint).hostname or "opcua-device")
    cleaned = re.sub(r"[^a-z0-9_-]+", "-", raw.lower()).strip("-")
    return cleaned or "opcua-device"


def to_yaml(found: Sequence[Found], endpoint: str, node: str, depth: int, name: str,
            username: str | None = None, truncated: bool = False) -> str:
    readable = [f for f in found if f.kind in READABLE_KINDS]
    out = [
        f"# Device file written by `mos-agent browse {endpoint} --node {node} --depth {depth}` on {_stamp()}:",
        f"# {len(readable)} variables. Set the asset and stage, and check each tag's category.",
        *_device_lines(name, endpoint, username),
        *_reading_lines(),
        *_tag_lines(found, truncated),
    ]
    return "\n".join(out) + "\n"


def to_profile_yaml(found: Sequence[Found], endpoint: str, node: str, depth: int, name: str, profile: str,
                    username: str | None = None, truncated: bool = False) -> tuple[str, str]:
    """A profile with the variables found (what every machine of this model has) and a short
    device file for this machine naming it as ``../profiles/<profile>.yaml``."""
    readable = [f for f in found if f.kind in READABLE_KINDS]
    command = f"mos-agent browse {endpoint} --node {node} --depth {depth} --profile {profile}"
    profile_text = [
        f"# Profile written by `{command}` on {_stamp()}:",
        f"# {len(readable)} variables of one machine model. Check each tag's category; a device file names",
        f"# this profile with `profile: ../profiles/{profile}.yaml` and writes its own asset, stage and connection.",
        f"profile: {profile}",
        "driver: opcua",
        *_reading_lines(),
        *_tag_lines(found, truncated),
    ]
    device_text = [
        f"# Device file written by `{command}` on {_stamp()}:",
        f"# its tags are in profile {profile}. Set the asset and stage.",
        *_device_lines(name, endpoint, username, profile),
    ]
    return "\n".join(profile_text) + "\n", "\n".join(device_text) + "\n"


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _device_lines(name: str, endpoint: str, username: str | None, profile: str | None = None) -> list[str]:
    out = [f"name: {name}"]
    out.append(f"profile: ../profiles/{profile}.yaml" if profile else "driver: opcua")
    out += [
        "asset: {area: unassigned}   # placeholder: the ISA-95 area (and line, cell) of this equipment",
        "stage: machining            # placeholder: the process stage (agent.stages)",
        "connection:",
        f"  endpoint: {_scalar(endpoint)}",
    ]
    if username:
        out.append(f"  username: {_scalar(username)}")
        out.append(f"  # password_file: /etc/mos-agent/{name}.password")
    out.append("  # security: {policy: Basic256Sha256, mode: SignAndEncrypt}")
    return out


def _reading_lines() -> list[str]:
    return ["mode: subscribe", "subscription: {publishing_interval: 500ms}"]


def _tag_lines(found: Sequence[Found], truncated: bool) -> list[str]:
    readable = [f for f in found if f.kind in READABLE_KINDS]
    skipped = [f for f in found if f.kind not in READABLE_KINDS]
    out = ["tags:" if readable else "tags: []   # every variable found is a structure or ByteString"]
    used: dict[str, int] = {}
    for f in readable:
        tag_name = tag_name_for(f.path)
        if tag_name in used:  # two variables of one browse path (different reference types)
            used[tag_name] += 1
            tag_name = tag_name_for([f"{tag_name}_{used[tag_name]}"])
        else:
            used[tag_name] = 1
        fields = [f"name: {_scalar(tag_name)}", f"node: {json.dumps(f.node_id.to_string())}"]
        fields.append(f"type: {f.kind}")
        if f.unit:
            fields.append(f"unit: {_scalar(f.unit)}")
        if f.eu_range and f.kind == "number":
            fields.append(f"range: [{_number(f.eu_range[0])}, {_number(f.eu_range[1])}]")
        fields.append(f"category: {guess_category(f.name, f.unit)}")
        if f.description:
            fields.append(f"description: {json.dumps(repaired(f.description), ensure_ascii=False)}")
        notes = [f.type_name + ("[]" if f.value_rank >= 0 else "") if f.type_name else ""]
        if f.unit_label and not f.unit:
            notes.append(f"unit {f.unit_label!r} has no UCUM code in the unit table")
        note = "; ".join(n for n in notes if n)
        out.append(f"  - {{{', '.join(fields)}}}" + (f"   # {note}" if note else ""))
    for f in skipped:
        why = "a structure: configure its fields" if f.kind == "struct" else "a ByteString: no reading in it"
        out.append(f"  # left out {repaired(f.name)} ({f.node_id.to_string()}): {f.type_name or f.kind}, {why}")
    if truncated:
        out.append(f"  # stopped after {len(found)} variables: browse a narrower --node")
    return out


async def browse_to_yaml(endpoint: str, node: str = "i=85", depth: int = 5, name: str | None = None,
                         username: str | None = None, password: str | None = None,
                         timeout: float = 10.0, allow_plaintext_password: bool = False) -> str:
    """Connect (no message security), walk from ``node`` and return a device file as YAML.

    Raises ValueError for a bad endpoint, node id or depth (before connecting) and
    :class:`~drivers.opcua.client.ConnectFailed` when the server cannot be reached or browsed."""
    walked = await _walk_server(endpoint, node, depth, name, username, password, timeout, allow_plaintext_password)
    return to_yaml(*walked)


async def browse_to_profile(endpoint: str, profile: str, node: str = "i=85", depth: int = 5, name: str | None = None,
                            username: str | None = None, password: str | None = None,
                            timeout: float = 10.0, allow_plaintext_password: bool = False) -> tuple[str, str]:
    """Like :func:`browse_to_yaml`, as a profile named ``profile`` and a short device file naming it."""
    found, endpoint, node, depth, name, username, truncated = await _walk_server(
        endpoint, node, depth, name, username, password, timeout, allow_plaintext_password)
    return to_profile_yaml(found, endpoint, node, depth, name, profile, username, truncated)


async def _walk_server(endpoint: str, node: str, depth: int, name: str | None, username: str | None,
                       password: str | None, timeout: float, allow_plaintext_password: bool
                       ) -> tuple[list[Found], str, str, int, str, str | None, bool]:
    """What was found under ``node``, with the arguments :func:`to_yaml` takes.

    Raises ValueError for a bad endpoint, node id or depth (before connecting) and
    :class:`~drivers.opcua.client.ConnectFailed` when the server cannot be reached or browsed."""
    from drivers.opcua.config import OpcUaConnection, check_node_id

    node = check_node_id(node)
    if depth < 1:
        raise ValueError(f"depth must be 1 or more, got {depth}")
    if password is not None and not allow_plaintext_password:
        raise ValueError("browse uses no message security, so the password would cross the network in clear "
                         "text: add --allow-plaintext-password on a network you trust")
    try:
        conn = OpcUaConnection(endpoint=endpoint, timeout=timeout, username=username, password=password,
                               allow_plaintext_password=allow_plaintext_password)
    except ValidationError as exc:
        raise ValueError("; ".join(err["msg"].removeprefix("Value error, ") for err in exc.errors())) from None
    client = await uac.open_client(conn, None, None, "browse")
    try:
        namespaces = await uac.namespace_array(client)
        root = uac.parse_node_id(node, namespaces)
        names = await uac.read(client, [root], ua.AttributeIds.BrowseName)
        status = names[0].StatusCode
        if status is not None and not status.is_good():
            raise uac.ConnectFailed("browse", f"{conn.endpoint}: node {node}: {status_name(status.value)}")
        found, truncated = await walk(client, root, depth)
    except ValueError as exc:  # from the server's side (an unknown namespace URI): not a usage error
        raise uac.ConnectFailed("browse", f"{conn.endpoint}: {exc}") from exc
    finally:
        await uac.close_client(client)
    if not found:
        raise uac.ConnectFailed("browse", f"{conn.endpoint}: no variables under {node} within {depth} "
                                          "levels (browse deeper with --depth, or from another --node)")
    if root not in (OBJECTS, ROOT):
        root_name = names[0].Value.Value.Name
    else:  # one machine object under Objects names the device
        tops = {f.path[0] for f in found if len(f.path) > 1}
        root_name = tops.pop() if len(tops) == 1 else None
    return found, conn.endpoint, node, depth, device_name(name, conn.endpoint, root_name), username, truncated
