"""``mos-agent kpi``: the ISO 22400-2 KPIs of a running agent per equipment — the current shift to
date and the last complete shift — as a table or JSON (the ``kpi`` part of ``/status``)."""

from __future__ import annotations

import argparse
import json
from datetime import datetime

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from mos_agent.commands.status import ask_agent
from mos_agent.i18n import _
from mos_agent.kpi.figures import RATIOS, TIMES
from mos_agent.status import KpiFigures, KpiStats, StatusReport

# table columns: KPI name in the status JSON, and how it is shown
_RATIO_COLUMNS = (("oee", "OEE"), ("availability", "A"), ("effectiveness", "E"), ("quality_rate", "Q"))
_TIME_COLUMNS = (("apt", "APT"), ("adot", "ADOT"), ("adet", "ADET"), ("aust", "AUST"), ("pdot", "PDOT"),
                 ("unknown", "?"))
_QUANTITY_COLUMNS = (("pq", "PQ"), ("gq", "GQ"), ("sq", "SQ"))
_WIDE = 150  # console columns the wide table needs


def _percent(value: float) -> str:
    return f"{value:.1f}%"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    minutes = seconds / 60
    return f"{minutes:.0f}m" if minutes < 600 else f"{minutes / 60:.1f}h"


def _period(figures: KpiFigures) -> str:
    start = datetime.fromtimestamp(figures.start).astimezone()
    until = datetime.fromtimestamp(figures.at).astimezone()
    return f"{start:%m-%d %H:%M}–{until:%H:%M}"


def kpi_view(equipment: list[KpiStats], width: int = 160) -> RenderableType:
    """The current shift to date and the last complete shift of every equipment: one wide table
    with a row per equipment and shift when the console is wide enough, else a narrow table per
    equipment with a row per KPI."""
    caption = _("A availability = APT/PBT · E effectiveness = ideal cycle time × PQ / APT · "
                "Q quality rate = GQ/PQ · ? = planned time without a usable state")
    title = _("KPIs per equipment and shift (ISO 22400-2)")
    periods = [(_("current"), "current"), (_("last complete"), "last_complete")]
    columns = (*_RATIO_COLUMNS, *_TIME_COLUMNS, *_QUANTITY_COLUMNS)
    if width < _WIDE:
        tables: list[RenderableType] = []
        for item in equipment:
            shown = [(label, getattr(item, attr)) for label, attr in periods if getattr(item, attr) is not None]
            table = Table(title=f"{title}: {item.equipment}", title_justify="left")
            table.add_column("")
            for label, _figures in shown:
                table.add_column(label, justify="right")
            table.add_row(_("shift"), *(f.shift for _label, f in shown))
            table.add_row(_("period"), *(_period(f) for _label, f in shown))
            for key, heading in columns:
                table.add_row(heading, *(_cell(key, f.kpi.get(key)) for _label, f in shown))
            tables.append(table)
        return Group(*tables, Text(caption, style="dim"))
    table = Table(title=title, title_justify="left", caption=caption)
    for heading in (_("equipment"), _("shift"), _("period")):
        table.add_column(heading, no_wrap=True)
    for _key, heading in columns:
        table.add_column(heading, justify="right", no_wrap=True)
    for item in equipment:
        rows = [(label, getattr(item, attr)) for label, attr in periods if getattr(item, attr) is not None]
        for label, figures in rows:
            table.add_row(item.equipment, f"{figures.shift} ({label})", _period(figures),
                          *(_cell(key, figures.kpi.get(key)) for key, _h in columns))
        if not rows:
            table.add_row(item.equipment, _("outside every shift"), *[""] * (len(table.columns) - 2))
    return table


def _cell(key: str, value: float | None) -> str:
    if value is None:
        return "—"
    if key in RATIOS:
        return _percent(value)
    if key in TIMES:
        return _duration(value)
    return f"{value:.0f}"


def main(args: argparse.Namespace) -> int:
    status = ask_agent("kpi", args)
    if status is None:
        return 1
    if args.json:
        print(json.dumps({"kpi": status.get("kpi", [])}, indent=2, ensure_ascii=False))
        return 0
    equipment = StatusReport.from_dict(status).kpi
    console = Console()
    if equipment:
        console.print(kpi_view(equipment, console.width))
    else:
        console.print(_("no equipment with KPIs (add a kpi: block to a device file and shifts: to the agent file)"))
    return 0
