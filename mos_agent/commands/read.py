"""``mos-agent read -c FILE DEVICE``: connect once, read every tag, print a table. Nothing is
buffered or sent."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mos_agent.batch import ReadingBatch
from mos_agent.cli import UsageError
from mos_agent.config.loader import load_config
from mos_agent.driver_api import DriverContext
from mos_agent.normalise import Normaliser
from mos_agent.registry import load_driver
from mos_agent.taxonomy import QUALITY_NAMES
from mos_agent.text import repaired


async def _discard(batch: ReadingBatch) -> None:
    """``read`` never buffers: a driver that emits during read_once has it dropped here."""


def read_rows(config_path: Path, device_name: str) -> list[dict]:
    loaded = load_config(config_path)
    devices = {d.name: d for d in loaded.devices}
    if device_name not in devices:
        raise UsageError(f"no device {device_name!r} in {config_path} (devices: {', '.join(sorted(devices))})")
    device = devices[device_name]
    driver_cls = load_driver(device.driver)
    ctx = DriverContext(loaded.agent.agent, device, _discard)
    batch = asyncio.run(driver_cls(ctx).read_once())
    rows = Normaliser(ctx.series).normalised(batch)
    out = []
    for row in range(len(batch)):
        spec = ctx.series.specs[int(batch.series[row])]
        text = (batch.texts or {}).get(row)
        value = rows.values[row]
        out.append({
            "tag": spec.tag,
            "asset": spec.asset_path,
            # repaired: text that is not valid Unicode would fail printing (stored the same way)
            "value": repaired(text) if text is not None else (None if value != value else float(value)),
            "unit": spec.unit,
            "quality": QUALITY_NAMES[int(rows.quality[row])],
            "quality_code": int(rows.codes[row]),
            "category": spec.category,
            "kind": spec.kind,
            "time": datetime.fromtimestamp(int(batch.timestamps[row]) / 1e9, UTC).isoformat(),
        })
    return out


def main(args: argparse.Namespace) -> int:
    rows = read_rows(Path(args.config), args.device)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    table = Table(title=f"{args.device}: {len(rows)} readings")
    for column in ("asset", "tag", "value", "unit", "quality", "code", "category", "kind", "source time"):
        table.add_column(column, justify="right" if column in ("value", "code") else "left")
    for r in rows:
        value = r["value"]
        shown = f"{value:.6g}" if isinstance(value, float) else ("—" if value is None else str(value))
        style = {"good": "", "uncertain": "yellow", "bad": "red"}[r["quality"]]
        table.add_row(r["asset"], r["tag"], shown, r["unit"] or "", r["quality"], str(r["quality_code"]), r["category"],
                      r["kind"], r["time"], style=style)
    Console().print(table)
    bad = sum(r["quality"] == "bad" for r in rows)
    return 1 if rows and bad == len(rows) else 0
