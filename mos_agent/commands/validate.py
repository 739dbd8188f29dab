"""``mos-agent validate -c FILE``: check the agent file and every device file.

Each problem is one ``PATH:LINE:COL: message`` line on stderr and the exit code is 2; a clean
configuration prints what it would run (devices, the profiles they share, tags, expected points/s,
sinks) and exits 0.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from mos_agent.cli import UsageError
from mos_agent.config.loader import LoadedConfig, load_config
from mos_agent.config.models import InfluxSinkConfig, MqttSinkConfig, SinkConfig, SqliteSinkConfig
from mos_agent.i18n import _
from mos_agent.kpi.calendar import system_timezone
from mos_agent.registry import load_driver
from mos_agent.sinks.sqlite import history_path
from mos_agent.taxonomy import CATEGORIES


def _destination(sink: SinkConfig, state_dir: Path) -> str:
    if isinstance(sink, InfluxSinkConfig):
        return sink.url
    if isinstance(sink, SqliteSinkConfig):
        return str(history_path(sink, state_dir))
    if isinstance(sink, MqttSinkConfig):
        return f"{sink.url} ({sink.format})"
    return sink.type


def summary(loaded: LoadedConfig) -> str:
    agent = loaded.agent
    devices = loaded.devices
    per_driver = Counter(d.driver for d in devices)
    per_category = Counter(tag.category for d in devices for tag in d.tags)
    enabled = [d for d in devices if d.enabled]
    rate = sum(load_driver(d.driver).expected_points_per_second(d) for d in enabled)
    tags = sum(len(d.tags) for d in devices)

    lines = [f"{loaded.path}: OK"]
    site = "/".join(x for x in (agent.agent.enterprise, agent.agent.site) if x)
    lines.append(f"agent      {agent.agent.id} at {site}")
    drivers = ", ".join(f"{n} {name}" for name, n in sorted(per_driver.items()))
    disabled = len(devices) - len(enabled)
    lines.append(f"devices    {len(devices)}" + (f" ({drivers})" if drivers else "")
                 + (f", {disabled} disabled" if disabled else ""))
    if loaded.profiles:
        on_each = ", ".join(f"{name}: {len(info.devices)} device{'' if len(info.devices) == 1 else 's'}"
                            for name, info in sorted(loaded.profiles.items()))
        lines.append(f"profiles   {len(loaded.profiles)} ({on_each})")
    categories = ", ".join(f"{per_category[c]} {c}" for c in CATEGORIES if per_category[c])
    lines.append(f"tags       {tags}" + (f" ({categories})" if categories else ""))
    lines.append(f"expected   {rate:,.1f} points/s")
    if agent.sinks:
        for sink in agent.sinks:
            where = _destination(sink, agent.agent.state_dir)
            shared = " (only what contracts release)" if sink.share == "contracts" else ""
            lines.append(f"sink       {sink.name or sink.type} ({sink.type}) → {where}{shared}")
    else:
        lines.append("sink       none (readings stay in the local buffer)")
    for contract in loaded.contracts:
        datasets = ", ".join(d.name for d in contract.released_devices(devices))
        lines.append(f"contract   {contract.id} → {contract.sink}: {contract.resolution} of {datasets}"
                     + (", pseudonymised" if contract.pseudonymise else ""))
    lines.append(f"buffer     {agent.buffer.max_size / 2**20:,.0f} MiB in {agent.agent.state_dir}, "
                 f"overflow {agent.buffer.overflow}")
    with_kpi = [d.name for d in enabled if d.kpi is not None]
    if with_kpi or agent.shifts:
        shifts = ", ".join(f"{s.name} {s.rule().describe()}" for s in agent.shifts) or \
            "none: nothing is planned, no KPI is computed"
        lines.append(f"kpi        {len(with_kpi)} equipment ({', '.join(with_kpi) or 'none'}), every "
                     f"{agent.kpi.interval:g}s; shifts {shifts} ({agent.agent.timezone or system_timezone()})")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    path = Path(args.config)
    if not path.exists():
        raise UsageError(_("agent file {path} not found").format(path=path))
    if path.is_dir():
        raise UsageError(_("{path} is a folder; give the agent file (-c FOLDER/agent.yaml)").format(path=path))
    loaded = load_config(path)
    print(summary(loaded))
    return 0
