"""Runs every benchmark in one go and prints one table: each figure next to its reference measured
in the same run, and the SPEC target. Writes bench/results/summary.json.

    ./setup.sh bench            # full run, ≤ 10 minutes on a 2-core machine
    ./setup.sh bench --quick    # ≤ 2 minutes
    python bench/run.py --only agent,buffer
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# Order matters a little: the end-to-end agent scenarios last, after the component figures.
BENCHES = ("buffer", "modbus", "opcua", "mqtt", "agent")


def run_one(name: str, quick: bool) -> dict | None:
    script = HERE / f"bench_{name}.py"
    if not script.exists():
        print(f"[{name}] missing {script.name}", file=sys.stderr)
        return None
    started = time.monotonic()
    cmd = [sys.executable, str(script), *(["--quick"] if quick else [])]
    print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
    result = subprocess.run(cmd, cwd=HERE.parent)
    took = time.monotonic() - started
    out = RESULTS / f"{name}.json"
    if result.returncode != 0 or not out.exists():
        print(f"[{name}] failed (exit {result.returncode}) after {took:.0f}s", file=sys.stderr)
        return None
    data = json.loads(out.read_text())
    data["_seconds"] = round(took, 1)
    return data


def figures(data: dict) -> list[dict]:
    """Each bench writes {"figures": [{"name", "value", "unit", "reference", "reference_value",
    "target", "ok"}...]}."""
    return list(data.get("figures", []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=",".join(BENCHES))
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    summary: dict[str, dict] = {}
    started = time.monotonic()
    for name in args.only.split(","):
        data = run_one(name.strip(), args.quick)
        if data is not None:
            summary[name] = data
    total = time.monotonic() - started

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"mos-agent benchmarks ({'quick' if args.quick else 'full'}, {total:.0f}s)")
    for column in ("bench", "figure", "agent", "reference (same run)", "target", "ok"):
        table.add_column(column)
    for name, data in summary.items():
        for f in figures(data):
            ref = f.get("reference")
            ref_text = f"{f.get('reference_value', '')} {f.get('unit', '')} ({ref})" if ref else ""
            ok = f.get("ok")
            table.add_row(name, f["name"], f"{f['value']} {f.get('unit', '')}", ref_text, f.get("target", ""),
                          "" if ok is None else ("yes" if ok else "[red]no[/red]"))
    Console().print(table)
    (RESULTS / "summary.json").write_text(json.dumps({"quick": args.quick, "seconds": round(total, 1),
                                                      "benches": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
