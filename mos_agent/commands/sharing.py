"""``mos-agent sharing -c FILE [--json]``: what each sharing contract has released (read from the
audit in ``state_dir``; works beside a running agent or without one)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mos_agent.config.loader import load_config
from mos_agent.i18n import _
from mos_agent.sharing.report import contract_report

_STATUS_STYLE = {"active": "green", "pending": "yellow", "expired": "red"}


def main(args: argparse.Namespace) -> int:
    loaded = load_config(Path(args.config))
    report = contract_report(loaded.contracts, loaded.devices, loaded.agent.agent.state_dir)
    if args.json:
        print(json.dumps({"contracts": report}, indent=2, ensure_ascii=False))
        return 0
    console = Console(highlight=False)
    if not report:
        console.print(_("no sharing contracts configured (agent file: sharing.contracts)"))
        return 0
    labels = [_("valid"), _("datasets"), _("releases"), _("released"), _("last release")]
    for entry in report:
        style = _STATUS_STYLE.get(entry["status"], "")
        console.print(f"[bold]{escape(entry['id'])}[/bold]  [{style}]{entry['status']}[/{style}]  "
                      + escape(_("to sink {sink} for {consumer}").format(sink=entry["sink"],
                                                                         consumer=entry["consumer"])))
        categories = ", ".join(entry["categories"])
        if entry["resolution"] == "raw":
            form = _("raw readings of {categories}").format(categories=categories)
        else:
            form = _("{resolution} windows of {categories}").format(resolution=entry["resolution"],
                                                                    categories=categories)
        if entry["pseudonymise"]:
            form += ", " + _("pseudonymised")
        by_dataset = ", ".join(f"{name} {points:,}" for name, points in entry["points_by_dataset"].items())
        released = _("{points} points").format(points=f"{entry['points_released']:,}")
        if by_dataset:
            released += f" ({by_dataset})"
        values = [f"{entry['valid_from']} – {entry['valid_to']}", ", ".join(entry["datasets"]), form, released,
                  entry["last_release"] or _("never")]
        grid = Table.grid(padding=(0, 2))  # aligns Korean labels too (wide characters)
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")
        for label, value in zip(labels, values, strict=True):
            grid.add_row(f"  {label}", escape(value))
        console.print(grid)
    return 0
