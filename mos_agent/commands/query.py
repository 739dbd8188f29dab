"""``mos-agent query -c FILE DEVICE [TAG] [--since 10m] [--limit N] [--json]``: read back the
local history kept by a ``type: sqlite`` sink (the newest ``--limit`` points, shown oldest first).
Reads the database read-only, so it works beside a running agent."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mos_agent.cli import UsageError
from mos_agent.config.loader import LoadedConfig, load_config
from mos_agent.config.models import SqliteSinkConfig, parse_duration
from mos_agent.sinks import sink_names
from mos_agent.sinks.sqlite import connect_history, history_path

_POINT_COLUMNS = ("ts_ns", "value", "text", "quality", "quality_code")
_COLUMNS = ("ts_ns", "measurement", "site", "area", "line", "cell", "equipment", "tag", "stage", "kind", "unit",
            "value", "text", "quality", "quality_code")
_SELECT = ", ".join(("p." if c in _POINT_COLUMNS else "s.") + c for c in _COLUMNS)


def query_history(path: Path, device: str, tag: str | None, since_s: float, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` points of ``device`` (and ``tag``) within ``since_s``, oldest first."""
    conn = connect_history(path, readonly=True)
    try:
        sql = (f"SELECT {_SELECT} FROM points p JOIN series s ON s.id = p.series_id "
               "WHERE s.equipment = ? AND p.ts_ns >= ?")
        args: list[Any] = [device, time.time_ns() - int(since_s * 1e9)]
        if tag is not None:
            sql += " AND s.tag = ?"
            args.append(tag)
        sql += " ORDER BY p.ts_ns DESC, s.tag LIMIT ?"
        args.append(limit)
        rows = [dict(zip(_COLUMNS, r, strict=True)) for r in conn.execute(sql, args)]
    finally:
        conn.close()
    rows.reverse()
    for row in rows:
        row["time"] = datetime.fromtimestamp(row["ts_ns"] / 1e9).astimezone().isoformat(timespec="milliseconds")
    return rows


def _known(path: Path, column: str, where: str = "", args: tuple = ()) -> list[str]:
    conn = connect_history(path, readonly=True)
    try:
        return [r[0] for r in conn.execute(f"SELECT DISTINCT {column} FROM series {where} ORDER BY 1", args) if r[0]]
    finally:
        conn.close()


def _history_file(loaded: LoadedConfig) -> Path:
    agent = loaded.agent
    sqlite_sinks = [cfg for cfg in agent.sinks if isinstance(cfg, SqliteSinkConfig)]
    if not sqlite_sinks:
        names = ", ".join(sink_names(agent.sinks)) or "none"
        raise UsageError(f"{loaded.path} has no 'type: sqlite' sink, so there is no local history to query "
                         f"(sinks: {names})")
    return history_path(sqlite_sinks[0], Path(agent.agent.state_dir))


def _format_value(row: dict[str, Any]) -> str:
    if row["text"] is not None:
        return row["text"]
    if row["value"] is None:
        return "—"
    return f"{row['value']:.6g}"


def main(args: argparse.Namespace) -> int:
    loaded = load_config(Path(args.config))
    try:
        since = parse_duration(args.since)
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from None
    if args.limit <= 0:
        raise UsageError("--limit must be at least 1")
    path = _history_file(loaded)
    if not path.exists():
        print(f"mos-agent query: no history yet at {path} (has the agent run with its sqlite sink?)",
              file=sys.stderr)
        return 1
    configured = {d.name for d in loaded.devices}
    recorded = set(_known(path, "equipment"))
    if args.device not in configured | recorded:
        known = ", ".join(sorted(configured | recorded)) or "none"
        raise UsageError(f"unknown device {args.device!r} (known devices: {known})")
    if args.tag is not None:
        tags = set(_known(path, "tag", "WHERE equipment = ?", (args.device,)))
        device = next((d for d in loaded.devices if d.name == args.device), None)
        if device is not None:
            tags |= {t.name for t in device.configured_tags()}
        if args.tag not in tags:
            known_tags = ", ".join(sorted(tags)) or "none"
            raise UsageError(f"device {args.device!r} has no tag {args.tag!r} (tags: {known_tags})")

    rows = query_history(path, args.device, args.tag, since, args.limit)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    table = Table(title=f"{args.device} — last {args.since} ({len(rows)} points)")
    for column in ("time", "tag", "value", "unit", "quality", "code", "category"):
        table.add_column(column, justify="right" if column in ("value", "code") else "left")
    for row in rows:
        quality = row["quality"] or ""
        style = {"good": "green", "uncertain": "yellow", "bad": "red"}.get(quality, "")
        table.add_row(row["time"], row["tag"], _format_value(row), row["unit"] or "",
                      f"[{style}]{quality}[/{style}]" if style else quality,
                      "" if row["quality_code"] is None else str(row["quality_code"]), row["measurement"])
    Console().print(table)
    return 0
