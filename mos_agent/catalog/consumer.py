"""The catalogue as one contract's consumer may see it (``mos-agent catalog --for CONTRACT``)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mos_agent.catalog.jsonld import build_catalog
from mos_agent.config.loader import LoadedConfig
from mos_agent.config.models import CatalogSection

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mos_agent.driver_api import Driver
    from mos_agent.sharing.contracts import Contract
    from mos_agent.sharing.pseudonyms import Pseudonymiser


def build_consumer_catalog(loaded: LoadedConfig, contract: Contract, pseudonymiser: Pseudonymiser | None, *,
                           drivers: Mapping[str, type[Driver]] | None = None,
                           now: datetime | None = None) -> dict[str, Any]:
    """The catalogue as ``contract``'s consumer may see it: the datasets it releases, their
    variables in the released categories, its agreement only — and, if it pseudonymises, the
    pseudonyms the released data carry instead of the site, asset and gateway names (free-text
    titles and descriptions, which may name them, are left out)."""
    released = contract.released_devices([d for d in loaded.devices if d.enabled])
    agent = loaded.agent.agent
    devices = []
    device_files: dict[str, Path] = {}
    agreements: dict[str, list[Contract]] = {}
    for device in released:
        update: dict[str, Any] = {"tags": [t for t in device.tags if t.category in contract.categories]}
        browse = getattr(device, "browse", None)  # drivers that discover variables (OPC UA)
        if browse:
            update["browse"] = [e for e in browse if getattr(e, "category", None) in contract.categories]
        if contract.pseudonymise:
            assert pseudonymiser is not None
            names = pseudonymiser.levels({"site": agent.site, "area": device.asset.area, "line": device.asset.line,
                                          "cell": device.asset.cell, "equipment": device.name})
            update.update(
                name=names["equipment"], title=None, description=None,
                asset=device.asset.model_copy(update={k: names.get(k) for k in ("area", "line", "cell")}),
                tags=[t.model_copy(update={"description": None}) for t in update["tags"]])
        view = device.model_copy(update=update)
        devices.append(view)
        agreements[view.name] = [contract]
        if device.name in loaded.device_files:
            device_files[view.name] = loaded.device_files[device.name]
    config = loaded.agent
    if contract.pseudonymise:
        assert pseudonymiser is not None
        site = pseudonymiser.levels({"site": agent.site})["site"]
        catalog_cfg = config.catalog
        update_catalog: dict[str, str | None] = {"title": None, "description": None}
        if catalog_cfg is None or not catalog_cfg.publisher:
            # the publisher would default to the enterprise or the site name
            update_catalog["publisher"] = agent.enterprise or site
        config = config.model_copy(update={
            "agent": agent.model_copy(update={"site": site, "id": pseudonymiser.pseudonym(f"agent={agent.id}")}),
            "catalog": (catalog_cfg.model_copy(update=update_catalog) if catalog_cfg is not None
                        else CatalogSection.model_validate(update_catalog)),
        })
    view_loaded = LoadedConfig(loaded.path, config, devices, device_files, [contract])
    return build_catalog(view_loaded, None, drivers=drivers, now=now, agreements=agreements)
