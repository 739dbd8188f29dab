"""``mos-agent validate -c FILE``: check the agent file and every device file.

Each problem is one ``PATH:LINE:COL: message`` line on stderr and the exit code is 2; a clean
configuration prints what it would run (devices, the profiles they share, tags, expected points/s,
sinks) and exits 0.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from rich.cells import cell_len

from mos_agent.cli import UsageError
from mos_agent.commands.words import pad
from mos_agent.config.loader import LoadedConfig, load_config
from mos_agent.config.models import InfluxSinkConfig, MqttSinkConfig, SinkConfig, SqliteSinkConfig
from mos_agent.i18n import _, ngettext
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

    labels = {"agent": _("agent"), "devices": _("devices"), "profiles": _("profiles"),
              "tags": _("tags"), "expected": _("expected"),
              "sink": _("sink"), "contract": _("contract"), "buffer": _("buffer"), "kpi": _("kpi")}
    width = max(11, *(cell_len(label) + 1 for label in labels.values()))

    def line(key: str, text: str) -> str:
        return pad(labels[key], width) + text

    lines = [_("{path}: OK").format(path=loaded.path)]
    site = "/".join(x for x in (agent.agent.enterprise, agent.agent.site) if x)
    lines.append(line("agent", _("{id} at {site}").format(id=agent.agent.id, site=site)))
    drivers = ", ".join(f"{n} {name}" for name, n in sorted(per_driver.items()))
    disabled = len(devices) - len(enabled)
    lines.append(line("devices", f"{len(devices)}" + (f" ({drivers})" if drivers else "")
                      + (", " + _("{count} disabled").format(count=disabled) if disabled else "")))
    if loaded.profiles:
        on_each = ", ".join(f"{name}: " + ngettext("{count} device", "{count} devices", len(info.devices)).format(
            count=len(info.devices)) for name, info in sorted(loaded.profiles.items()))
        lines.append(line("profiles", f"{len(loaded.profiles)} ({on_each})"))
    categories = ", ".join(f"{per_category[c]} {c}" for c in CATEGORIES if per_category[c])
    lines.append(line("tags", f"{tags}" + (f" ({categories})" if categories else "")))
    lines.append(line("expected", _("{rate} points/s").format(rate=f"{rate:,.1f}")))
    if agent.sinks:
        for sink in agent.sinks:
            where = _destination(sink, agent.agent.state_dir)
            shared = " " + _("(only what contracts release)") if sink.share == "contracts" else ""
            lines.append(line("sink", f"{sink.name or sink.type} ({sink.type}) → {where}{shared}"))
    else:
        lines.append(line("sink", _("none (readings stay in the local buffer)")))
    for contract in loaded.contracts:
        datasets = ", ".join(d.name for d in contract.released_devices(devices))
        lines.append(line("contract", _("{id} → {sink}: {resolution} of {datasets}").format(
            id=contract.id, sink=contract.sink, resolution=contract.resolution, datasets=datasets)
            + (", " + _("pseudonymised") if contract.pseudonymise else "")))
    lines.append(line("buffer", _("{size} MiB in {folder}, overflow {policy}").format(
        size=f"{agent.buffer.max_size / 2**20:,.0f}", folder=agent.agent.state_dir, policy=agent.buffer.overflow)))
    with_kpi = [d.name for d in enabled if d.kpi is not None]
    if with_kpi or agent.shifts:
        shifts = ", ".join(f"{s.name} {s.rule().describe()}" for s in agent.shifts) or \
            _("none: nothing is planned, no KPI is computed")
        lines.append(line("kpi", _("{count} equipment ({names}), every {interval}s; shifts {shifts} ({zone})").format(
            count=len(with_kpi), names=", ".join(with_kpi) or _("none"), interval=f"{agent.kpi.interval:g}",
            shifts=shifts, zone=agent.agent.timezone or system_timezone())))
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
