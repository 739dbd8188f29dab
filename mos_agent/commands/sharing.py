"""``mos-agent sharing -c FILE [--json]``: what each sharing contract has released (read from the
audit in ``state_dir``; works beside a running agent or without one)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mos_agent.config.loader import load_config
from mos_agent.sharing.report import contract_report

_STATUS_STYLE = {"active": "green", "pending": "yellow", "expired": "red"}


def main(args: argparse.Namespace) -> int:
    loaded = load_config(Path(args.config))
    report = contract_report(loaded.contracts, loaded.devices, loaded.agent.agent.state_dir)
    if args.json:
        print(json.dumps({"contracts": report}, indent=2, ensure_ascii=False))
        return 0
    console = Console()
    if not report:
        console.print("no sharing contracts configured (agent file: sharing.contracts)")
        return 0
    table = Table(title="sharing contracts")
    for column in ("contract", "consumer", "sink", "status", "valid", "datasets", "released", "points",
                   "last release"):
        table.add_column(column)
    for entry in report:
        style = _STATUS_STYLE.get(entry["status"], "")
        released = f"{entry['resolution']}, {', '.join(entry['categories'])}"
        if entry["pseudonymise"]:
            released += ", pseudonymised"
        table.add_row(entry["id"], entry["consumer"], entry["sink"], f"[{style}]{entry['status']}[/{style}]",
                      f"{entry['valid_from']} – {entry['valid_to']}", ", ".join(entry["datasets"]), released,
                      f"{entry['points_released']:,}", entry["last_release"] or "never")
    console.print(table)
    return 0
