"""Sharing contracts: the files the agent file's ``sharing.contracts`` glob names, checked against
the rest of the configuration, and the :class:`Contract` the release stage and the catalogue use.

A contract's validity is a closed interval of acquisition times, in nanoseconds since the epoch:
``from`` a date starts at that day's midnight, ``to`` a date ends at the last instant of that day;
dates and date-times without an offset are read in the agent's time zone (``agent.timezone`` when
the agent file sets one, else the system's).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mos_agent.config.models import SHAREABLE_CATEGORIES, AgentConfig, ContractConfig, DeviceBase, LocalizedText
from mos_agent.config.yamlmarks import MarkedDocument, describe_path

if TYPE_CHECKING:
    from mos_agent.config.loader import _Collector

NS = 1_000_000_000


class ContractStatus(StrEnum):
    PENDING = "pending"  # its validity has not started
    ACTIVE = "active"
    EXPIRED = "expired"  # its validity has ended


@dataclass(frozen=True, slots=True)
class Contract:
    id: str
    title: LocalizedText | None
    consumer: str
    sink: str
    valid_from_ns: int  # first instant released
    valid_to_ns: int  # last instant released (inclusive)
    datasets: tuple[str, ...]  # equipment name globs
    categories: frozenset[str]
    resolution_ns: int | None  # None: raw
    pseudonymise: bool
    path: Path

    def covers_equipment(self, equipment: str) -> bool:
        return any(fnmatch.fnmatchcase(equipment, pattern) for pattern in self.datasets)

    def covers_time(self, timestamp_ns: int) -> bool:
        return self.valid_from_ns <= timestamp_ns <= self.valid_to_ns

    def status(self, now_ns: int) -> ContractStatus:
        if now_ns < self.valid_from_ns:
            return ContractStatus.PENDING
        if now_ns > self.valid_to_ns:
            return ContractStatus.EXPIRED
        return ContractStatus.ACTIVE

    @property
    def resolution(self) -> str:
        """``raw`` or the window length in the largest unit that divides it (``1m``, ``90s``)."""
        if self.resolution_ns is None:
            return "raw"
        for unit, ns in (("d", 86400 * NS), ("h", 3600 * NS), ("m", 60 * NS), ("s", NS), ("ms", NS // 1000)):
            if self.resolution_ns % ns == 0:
                return f"{self.resolution_ns // ns}{unit}"
        return f"{self.resolution_ns}ns"

    def released_devices(self, devices: Sequence[DeviceBase]) -> list[DeviceBase]:
        return [d for d in devices if self.covers_equipment(d.name)]


def agent_timezone(config: AgentConfig) -> tzinfo | None:
    """The zone dates without an offset are read in; None: the system's (with its DST rules)."""
    name = getattr(config.agent, "timezone", None)
    if name:
        try:
            return ZoneInfo(str(name))
        except (ZoneInfoNotFoundError, ValueError):
            return None
    return None


def _aware(moment: datetime, zone: tzinfo | None) -> datetime:
    if moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=zone) if zone is not None else moment.astimezone()


def _instant_ns(value: date | datetime, zone: tzinfo | None, *, end: bool) -> int:
    if isinstance(value, datetime):
        moment = _aware(value, zone)
        return int(moment.timestamp()) * NS + moment.microsecond * 1000
    day = value + timedelta(days=1) if end else value
    ns = int(_aware(datetime.combine(day, time()), zone).timestamp()) * NS
    return ns - 1 if end else ns


def make_contract(config: ContractConfig, path: Path, zone: tzinfo | None) -> Contract:
    resolution = config.resolution
    return Contract(
        id=config.id,
        title=config.title,
        consumer=config.consumer,
        sink=config.sink,
        valid_from_ns=_instant_ns(config.valid.start, zone, end=False),
        valid_to_ns=_instant_ns(config.valid.end, zone, end=True),
        datasets=tuple(config.datasets),
        categories=frozenset(config.categories),
        resolution_ns=None if resolution is None else max(1, round(resolution * NS)),
        pseudonymise=config.pseudonymise,
        path=path,
    )


# ---------------------------------------------------------------- loading


def _raw_patterns(data: Any) -> list[tuple[str, tuple[str | int, ...]]]:
    section = data.get("sharing") if isinstance(data, dict) else None
    value = section.get("contracts") if isinstance(section, dict) else None
    if isinstance(value, str):
        return [(value, ("sharing", "contracts"))]
    if isinstance(value, list):
        return [(v, ("sharing", "contracts", i)) for i, v in enumerate(value) if isinstance(v, str)]
    return []


def load_contracts(agent_path: Path, agent_doc: MarkedDocument, agent: AgentConfig,
                   devices: Sequence[DeviceBase], collector: _Collector,
                   device_names: Sequence[str] | None = None) -> list[Contract]:
    """Every contract file the agent file names, each problem added to ``collector`` with its
    location: unknown keys and values, a sink that is not a ``share: contracts`` sink, a dataset
    pattern that matches no device (of ``device_names``, default the names of ``devices``), a
    validity that ends before it starts, a duplicate id."""
    if agent.sharing is None:
        return []
    from mos_agent.sinks import sink_names

    share_sinks = {name for name, cfg in zip(sink_names(agent.sinks), agent.sinks, strict=True)
                   if cfg.share == "contracts"}
    other_sinks = set(sink_names(agent.sinks)) - share_sinks
    device_names = list(device_names) if device_names is not None else [d.name for d in devices]
    zone = agent_timezone(agent)
    contracts: list[Contract] = []
    first_seen: dict[str, tuple[Path, int]] = {}
    for path in _contract_files(agent_path, agent_doc, collector):
        doc = collector.read(path)
        if doc is None or (doc.data is None and doc.problems):
            continue
        config: ContractConfig | None = collector.validate(path, doc, ContractConfig, doc.data)
        if config is None:
            continue
        ok = True

        def problem(key_path: tuple[str | int, ...], message: str, doc: MarkedDocument = doc,
                    path: Path = path) -> None:
            nonlocal ok
            ok = False
            collector.add(path, doc.value_mark(key_path), f"{describe_path(key_path)}: {message}")

        if config.sink not in share_sinks:
            if config.sink in other_sinks:
                problem(("sink",), f"sink {config.sink!r} has no 'share: contracts' (it would receive "
                                   f"everything, not only what contracts release)")
            else:
                from difflib import get_close_matches

                close = get_close_matches(config.sink, sorted(share_sinks), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                known = ", ".join(sorted(share_sinks)) or "none"
                problem(("sink",), f"unknown sink {config.sink!r} (sinks with share: contracts: {known}{hint})")
        for i, pattern in enumerate(config.datasets):
            if not any(fnmatch.fnmatchcase(name, pattern) for name in device_names):
                from difflib import get_close_matches

                close = get_close_matches(pattern, device_names, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problem(("datasets", i), f"{pattern!r} matches no device{hint}")
        contract = make_contract(config, path, zone)
        if contract.valid_to_ns < contract.valid_from_ns:
            problem(("valid", "to"), f"the validity ends ({config.valid.end}) before it starts "
                                     f"({config.valid.start})")
        id_line = doc.value_mark(("id",)).line
        if config.id in first_seen:
            other, line = first_seen[config.id]
            problem(("id",), f"duplicate contract id {config.id!r} (also in {other}:{line})")
        else:
            first_seen[config.id] = (path, id_line)
        if ok:
            contracts.append(contract)
    return contracts


def _contract_files(agent_path: Path, doc: MarkedDocument, collector: _Collector) -> list[Path]:
    from mos_agent.config.loader import files_matching

    # No contract file yet is a valid state, not a mistake: metadata only until a contract exists,
    # and a `share: contracts` sink then receives nothing.
    return files_matching(agent_path, doc, _raw_patterns(doc.data), collector, report_no_match=False)


def contract_by_id(contracts: Sequence[Contract], contract_id: str) -> Contract | None:
    return next((c for c in contracts if c.id == contract_id), None)


def describe_categories(contract: Contract) -> list[str]:
    """The released categories in the taxonomy's order."""
    return [c for c in SHAREABLE_CATEGORIES if c in contract.categories]

