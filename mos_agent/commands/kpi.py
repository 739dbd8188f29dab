"""``mos-agent kpi``: the ISO 22400-2 KPIs of a running agent per equipment — the current shift to
date and the last complete shift — as a table or JSON (the ``kpi`` part of ``/status``)."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
from datetime import datetime

from rich.console import Console
from rich.table import Table

from mos_agent.commands.status import _health_address, fetch_status
from mos_agent.i18n import _
from mos_agent.status import KpiFigures, KpiStats, StatusReport

# table columns: KPI name in the status JSON, and how it is shown
_RATIO_COLUMNS = (("oee", "OEE"), ("availability", "A"), ("effectiveness", "E"), ("quality_rate", "Q"))
_TIME_COLUMNS = (("apt", "APT"), ("adot", "ADOT"), ("adet", "ADET"), ("aust", "AUST"), ("pdot", "PDOT"),
                 ("unknown", "?"))
_QUANTITY_COLUMNS = (("pq", "PQ"), ("gq", "GQ"), ("sq", "SQ"))


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}%"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f}s"
    minutes = seconds / 60
    return f"{minutes:.0f}m" if minutes < 600 else f"{minutes / 60:.1f}h"


def _period(figures: KpiFigures) -> str:
    start = datetime.fromtimestamp(figures.start).astimezone()
    until = datetime.fromtimestamp(figures.at).astimezone()
    return f"{start:%m-%d %H:%M}–{until:%H:%M}"


def kpi_table(equipment: list[KpiStats]) -> Table:
    """One row per equipment and shift: the current shift to date, then the last complete one."""
    table = Table(title=_("KPIs per equipment and shift (ISO 22400-2)"), title_justify="left",
                  caption=_("A availability = APT/PBT · E effectiveness = ideal cycle time × PQ / APT · "
                            "Q quality rate = GQ/PQ · ? = planned time without a usable state"))
    for heading in (_("equipment"), _("shift"), _("period")):
        table.add_column(heading, no_wrap=True)
    for _key, heading in (*_RATIO_COLUMNS, *_TIME_COLUMNS, *_QUANTITY_COLUMNS):
        table.add_column(heading, justify="right", no_wrap=True)
    blank = [""] * (len(_RATIO_COLUMNS) + len(_TIME_COLUMNS) + len(_QUANTITY_COLUMNS))
    for item in equipment:
        shown = False
        for label, figures in ((_("current"), item.current), (_("last complete"), item.last_complete)):
            if figures is None:
                continue
            shown = True
            values = figures.kpi
            table.add_row(item.equipment, f"{figures.shift} ({label})", _period(figures),
                          *(_percent(values.get(k)) for k, _h in _RATIO_COLUMNS),
                          *(_duration(values.get(k)) for k, _h in _TIME_COLUMNS),
                          *(f"{values[k]:.0f}" if k in values else "—" for k, _h in _QUANTITY_COLUMNS))
        if not shown:
            table.add_row(item.equipment, _("outside every shift"), "", *blank)
    return table


def main(args: argparse.Namespace) -> int:
    address = _health_address(args)
    try:
        status = fetch_status(address)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print("mos-agent kpi: " + _("no agent answers on {address} ({reason}); is it running with health on?")
              .format(address=address, reason=reason), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"kpi": status.get("kpi", [])}, indent=2, ensure_ascii=False))
        return 0
    equipment = StatusReport.from_dict(status).kpi
    console = Console()
    if equipment:
        console.print(kpi_table(equipment))
    else:
        console.print(_("no equipment with KPIs (add a kpi: block to a device file and shifts: to the agent file)"))
    return 0
