"""``mos-agent sharing -c FILE [--json]``: what each sharing contract has released (read from the
audit in ``state_dir``; works beside a running agent or without one)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from mos_agent.config.loader import load_config
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
        console.print("no sharing contracts configured (agent file: sharing.contracts)")
        return 0
    for entry in report:
        style = _STATUS_STYLE.get(entry["status"], "")
        console.print(f"[bold]{escape(entry['id'])}[/bold]  [{style}]{entry['status']}[/{style}]  "
                      f"to sink {escape(entry['sink'])} for {escape(entry['consumer'])}")
        form = "raw readings" if entry["resolution"] == "raw" else f"{entry['resolution']} windows"
        form += " of " + ", ".join(entry["categories"])
        if entry["pseudonymise"]:
            form += ", pseudonymised"
        by_dataset = ", ".join(f"{name} {points:,}" for name, points in entry["points_by_dataset"].items())
        released = f"{entry['points_released']:,} points" + (f" ({by_dataset})" if by_dataset else "")
        for label, value in (("valid", f"{entry['valid_from']} – {entry['valid_to']}"),
                             ("datasets", ", ".join(entry["datasets"])), ("releases", form),
                             ("released", released), ("last release", entry["last_release"] or "never")):
            console.print(f"  {label:<13}{escape(value)}", soft_wrap=True)
    return 0
