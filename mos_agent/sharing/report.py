"""Per contract: status, datasets, points released and last release — for ``mos-agent sharing``
and the agent's ``/status``. Totals come from the ledger's audit, so they include earlier runs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mos_agent.catalog.jsonld import datetime_from_ns, rfc3339
from mos_agent.config.models import DeviceBase
from mos_agent.sharing.contracts import Contract, describe_categories
from mos_agent.sharing.ledger import contract_totals
from mos_agent.status import ContractStats


def _iso(ns: int | None) -> str | None:
    return None if ns is None else rfc3339(datetime_from_ns(ns))


def contract_report(contracts: Sequence[Contract], devices: Sequence[DeviceBase], state_dir: Path,
                    now_ns: int | None = None) -> list[dict[str, Any]]:
    now_ns = time.time_ns() if now_ns is None else now_ns
    totals = contract_totals(state_dir, [c.id for c in contracts])
    report = []
    for contract in contracts:
        released = totals[contract.id]
        report.append({
            "id": contract.id,
            "file": str(contract.path),
            "consumer": contract.consumer,
            "sink": contract.sink,
            "status": contract.status(now_ns).value,
            "valid_from": _iso(contract.valid_from_ns),
            "valid_to": _iso(contract.valid_to_ns),
            "datasets": [d.name for d in contract.released_devices(devices)],
            "dataset_patterns": list(contract.datasets),
            "categories": describe_categories(contract),
            "resolution": contract.resolution,
            "pseudonymise": contract.pseudonymise,
            "points_released": released.points,
            "points_by_dataset": dict(sorted(released.datasets.items())),
            "released_period": {"from": _iso(released.first_ns), "to": _iso(released.last_ns)}
            if released.points else None,
            "last_release": _iso(released.last_release_ns),
        })
    return report


def contract_stats(contracts: Sequence[Contract], devices: Sequence[DeviceBase], state_dir: Path,
                   now_ns: int | None = None) -> list[ContractStats]:
    """The contracts' part of the agent's status report."""
    return [ContractStats(id=e["id"], consumer=e["consumer"], sink=e["sink"], status=e["status"],
                          valid_from=e["valid_from"], valid_to=e["valid_to"], datasets=e["datasets"],
                          resolution=e["resolution"], points_released=e["points_released"],
                          last_release=e["last_release"])
            for e in contract_report(contracts, devices, state_dir, now_ns)]
