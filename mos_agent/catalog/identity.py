"""What a dataset is called: one dataset per device, identified by its ISA-95 asset path
(enterprise/site/area/line/cell/equipment) — the same in the catalogue and in the store's labels."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mos_agent.taxonomy import asset_path

if TYPE_CHECKING:
    from mos_agent.config.loader import LoadedConfig
    from mos_agent.config.models import DeviceBase


def device_levels(agent_enterprise: str | None, agent_site: str, device: DeviceBase) -> dict[str, str | None]:
    return {
        "enterprise": agent_enterprise,
        "site": agent_site,
        "area": device.asset.area,
        "line": device.asset.line,
        "cell": device.asset.cell,
        "equipment": device.name,
    }


def dataset_identifier(loaded: LoadedConfig, device: DeviceBase) -> str:
    """Stable dataset id: the ISA-95 asset path enterprise/site/area/line/cell/equipment."""
    agent = loaded.agent.agent
    return asset_path(device_levels(agent.enterprise, agent.site, device))
