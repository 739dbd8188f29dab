"""Runs every benchmark in one go and prints one table: each figure next to its reference measured
in the same run, the SPEC target and whether it is met. Writes bench/results/summary.json.

    ./setup.sh bench            # full run, ≤ 10 minutes on a 2-core machine
    ./setup.sh bench --quick    # ≤ 2 minutes
    python bench/run.py --only agent,buffer

Each bench is its own script (``bench/bench_<name>.py [--quick]``) writing
``bench/results/<name>.json``; an adapter per bench turns that file into table rows
``{bench, name, load, value, unit, reference, reference_value, target, ok}``. A bench's console
output goes to ``bench/results/<name>.log``. Benches run one after the other, never side by side:
they share the two cores, and a figure is only worth its reference when nothing else competes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from measure import add_only_option, chosen

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# Component figures first, the end-to-end agent scenarios last.
BENCHES = ("buffer", "sharing", "exactly_once", "modbus", "opcua", "mqtt", "mqtt_sink", "sparkplug_in", "kpi",
           "config", "agent", "page", "light")
# Seconds a bench may take before it is stopped (its figures are then missing from the table).
TIME_LIMITS = {
    True: {"buffer": 40, "sharing": 30, "exactly_once": 30, "modbus": 40, "opcua": 60, "mqtt": 40, "mqtt_sink": 60,
           "sparkplug_in": 60, "kpi": 150, "config": 60, "agent": 150, "page": 90, "light": 90},
    False: {"buffer": 120, "sharing": 60, "exactly_once": 60, "modbus": 120, "opcua": 150, "mqtt": 120,
            "mqtt_sink": 150, "sparkplug_in": 120, "kpi": 240, "config": 300, "agent": 540, "page": 240,
            "light": 200},
}

Row = dict[str, Any]


# ---------------------------------------------------------------- adapters: bench JSON → rows


def _row(bench: str, f: dict[str, Any], load: str = "") -> Row:
    """One figure in the table's shape; absent keys stay empty rather than failing the run."""
    ok = f.get("ok")
    return {
        "bench": bench,
        "name": str(f.get("name", "?")),
        "load": str(f.get("load") or load),
        "value": f.get("value"),
        "unit": str(f.get("unit") or ""),
        "reference": f.get("reference") or "",
        "reference_value": f.get("reference_value"),
        "target": str(f.get("target") or ""),
        "ok": ok if isinstance(ok, bool) else None,
    }


def _figures(data: dict[str, Any]) -> list[dict[str, Any]]:
    figures = data.get("figures", [])
    return [f for f in figures if isinstance(f, dict)] if isinstance(figures, list) else []


def adapt_buffer(data: dict[str, Any]) -> list[Row]:
    d = data.get("details", {})
    load = ""
    if d.get("chunk_points"):
        load = (f"chunks of {d['chunk_points']:,} points, {d.get('group_commit_chunks', '?')} a commit, "
                f"sink batches of {d.get('batch_size', '?'):,}")
    rows = []
    for f in _figures(data):
        extra = load
        if "live" in str(f.get("name", "")) or "multiple" in str(f.get("name", "")):
            drain = d.get("drain_with_live", {})
            if drain.get("backlog_points"):
                extra = (f"backlog {drain['backlog_points']:,} points beside "
                         f"{drain.get('live_points_appended', 0):,} live points")
        rows.append(_row("buffer", f, extra))
    return rows


def adapt_sharing(data: dict[str, Any]) -> list[Row]:
    d = data.get("details", {})
    load = ""
    if d.get("rows"):
        load = (f"{d['rows']} buffer rows of {d.get('chunk_points', '?'):,} points over {d.get('series', '?'):,} "
                f"series, one core")
    return [_row("sharing", f, load) for f in _figures(data)]


def adapt_modbus(data: dict[str, Any]) -> list[Row]:
    d = data.get("details", {})
    load = ""
    if d.get("devices"):
        load = (f"{d['devices']} devices × {d.get('registers_per_device', '?'):,} registers, reads of "
                f"{d.get('block', '?')}, {d.get('window_seconds', '?')}s window; driver + normaliser in-process")
    return [_row("modbus", f, load) for f in _figures(data)]


def adapt_opcua(data: dict[str, Any]) -> list[Row]:
    load = ""
    if data.get("nodes"):
        load = f"{data['nodes']:,} nodes, {data.get('seconds_per_measurement', '?')}s per measurement"
    return [_row("opcua", f, load) for f in _figures(data)]


def adapt_mqtt(data: dict[str, Any]) -> list[Row]:
    d = data.get("details", {})
    load = ""
    if d.get("messages"):
        load = f"{d['messages']:,} QoS 1 messages ({d.get('points', 0):,} points) from {d.get('devices', '?')} devices"
    return [_row("mqtt", f, load) for f in _figures(data)]


def adapt_exactly_once(data: dict[str, Any]) -> list[Row]:
    rounds = data.get("details", {}).get("rounds")
    load = f"in-process, best of {rounds} rounds" if rounds else ""
    return [_row("exactly_once", f, load) for f in _figures(data)]


def adapt_mqtt_sink(data: dict[str, Any]) -> list[Row]:
    return [_row("mqtt_sink", f) for f in _figures(data)]


def adapt_sparkplug_in(data: dict[str, Any]) -> list[Row]:
    return [_row("sparkplug_in", f) for f in _figures(data)]


def adapt_kpi(data: dict[str, Any]) -> list[Row]:
    return [_row("kpi", f) for f in _figures(data)]


def adapt_agent(data: dict[str, Any]) -> list[Row]:
    return [_row("agent", f) for f in _figures(data)]


def adapt_page(data: dict[str, Any]) -> list[Row]:
    return [_row("page", f) for f in _figures(data)]


def adapt_config(data: dict[str, Any]) -> list[Row]:
    return [_row("config", f) for f in _figures(data)]


def adapt_light(data: dict[str, Any]) -> list[Row]:
    return [_row("light", f) for f in _figures(data)]


ADAPTERS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "buffer": adapt_buffer, "sharing": adapt_sharing, "exactly_once": adapt_exactly_once, "modbus": adapt_modbus,
    "opcua": adapt_opcua, "mqtt": adapt_mqtt, "mqtt_sink": adapt_mqtt_sink, "sparkplug_in": adapt_sparkplug_in,
    "kpi": adapt_kpi, "config": adapt_config, "agent": adapt_agent, "page": adapt_page, "light": adapt_light,
}


# ---------------------------------------------------------------- running


def run_one(name: str, quick: bool) -> dict[str, Any]:
    """Run ``bench_<name>.py`` in its own process group, bounded in time; returns what happened
    and the JSON it wrote in this run (a results file older than the run does not count)."""
    script = HERE / f"bench_{name}.py"
    out = RESULTS / f"{name}.json"
    log_path = RESULTS / f"{name}.log"
    info: dict[str, Any] = {"name": name, "seconds": 0.0, "exit": None, "error": None, "data": None}
    if not script.exists():
        info["error"] = f"{script.name} does not exist"
        return info
    limit = TIME_LIMITS[quick].get(name, 120)
    cmd = [sys.executable, str(script), *(["--quick"] if quick else [])]
    started_wall, started = time.time(), time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=HERE.parent, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            info["exit"] = proc.wait(limit)
        except subprocess.TimeoutExpired:
            # the bench's whole process group: simulators and servers it started go with it
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            info["error"] = f"stopped after its time limit of {limit}s"
    info["seconds"] = round(time.monotonic() - started, 1)
    if out.exists() and out.stat().st_mtime >= started_wall:
        try:
            info["data"] = json.loads(out.read_text())
        except ValueError as exc:
            info["error"] = f"{out.name} is not JSON: {exc}"
    elif info["error"] is None:
        info["error"] = f"exit {info['exit']} without writing {out.name}"
    if info["exit"] not in (0, None) and info["error"] is None:
        info["error"] = f"exit {info['exit']}"
    return info


def log_tail(name: str, lines: int = 6) -> str:
    path = RESULTS / f"{name}.log"
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").rstrip().splitlines()[-lines:])


def fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform(), "loadavg": [round(x, 2) for x in os.getloadavg()]}


def print_table(rows: list[Row], title: str, caption: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=caption, show_lines=False, expand=False)
    table.add_column("bench", style="bold")
    table.add_column("figure")
    table.add_column("load · duration", max_width=48, overflow="fold")
    table.add_column("agent", justify="right")
    table.add_column("reference (same run)", max_width=44, overflow="fold")
    table.add_column("target")
    table.add_column("met", justify="center")
    for r in rows:
        value = f"{fmt(r['value'])} {r['unit']}".strip()
        ref = ""
        if r["reference"] or r["reference_value"] is not None:
            ref_value = f"{fmt(r['reference_value'])} {r['unit']}".strip() if r["reference_value"] is not None else ""
            ref = f"{ref_value} ({r['reference']})" if r["reference"] and ref_value else (ref_value or r["reference"])
        ok = r["ok"]
        met = "" if ok is None else ("[green]yes[/green]" if ok else "[red]no[/red]")
        table.add_row(r["bench"], r["name"], r["load"], value, ref, r["target"], met)
    Console(width=max(160, Console().width)).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the short version, ≤ 2 minutes")
    add_only_option(parser, BENCHES)
    args = parser.parse_args(argv)
    names = chosen(parser, args.only, BENCHES, "bench(es)")
    RESULTS.mkdir(exist_ok=True)
    at_start = machine()
    started, started_at = time.monotonic(), time.strftime("%Y-%m-%dT%H:%M:%S%z")
    rows: list[Row] = []
    benches: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    mode = "quick" if args.quick else "full"
    print(f"mos-agent benchmarks ({mode}) on {at_start['cpus']} CPUs, load average {at_start['loadavg'][0]}; "
          f"each bench's output goes to bench/results/<bench>.log", flush=True)
    for name in names:
        print(f"  {name:<7} running…", flush=True)
        info = run_one(name, args.quick)
        data = info.pop("data")
        got: list[Row] = []
        if data is not None:
            try:
                got = ADAPTERS[name](data)
            except Exception as exc:  # a bench changing its format must not cost the other figures
                info["error"] = f"cannot read its results: {type(exc).__name__}: {exc}"
        # a bench may report some figures and still note scenarios that failed
        if isinstance(data, dict) and data.get("failures"):
            info["error"] = "; ".join(f"{k}: {v}" for k, v in data["failures"].items())
        rows += got
        benches[name] = {**info, "figures": len(got), "results": data}
        status = f"{len(got)} figures in {info['seconds']:.0f}s"
        if info["error"]:
            failures[name] = info["error"]
            status += f" — [{info['error']}]"
        print(f"  {name:<7} {status}", flush=True)
        if info["error"] and not got:
            tail = log_tail(name)
            if tail:
                print("    " + tail.replace("\n", "\n    "), flush=True)
    total = time.monotonic() - started
    at_end = machine()
    met = [r for r in rows if r["ok"] is True]
    missed = [r for r in rows if r["ok"] is False]
    caption = (f"{len(met)} targets met, {len(missed)} missed; load average {at_start['loadavg'][0]} at the start, "
               f"{at_end['loadavg'][0]} at the end (other work on the box skews CPU figures)")
    print_table(rows, f"mos-agent benchmarks — {mode}, {total:.0f}s, {at_start['cpus']} CPUs", caption)
    if failures:
        for name, error in failures.items():
            print(f"{name}: {error} (see bench/results/{name}.log)")
    summary = {"quick": args.quick, "seconds": round(total, 1), "started": started_at,
               "machine": {**at_start, "loadavg_at_end": at_end["loadavg"]}, "rows": rows,
               "failures": failures, "benches": benches}
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote bench/results/summary.json ({total:.0f}s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
