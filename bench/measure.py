"""What every bench measures the same way: CPU seconds of this or another process, a block of
free loopback ports for simulators serving one device a port, and the results file."""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mos_agent.localservers import free_port

T = TypeVar("T")

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> float:
    """User + system CPU of this process, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of another process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_cpu_seconds_exact(pid: int) -> float:
    """On-CPU time of another process's live threads from the scheduler (nanoseconds, where
    ``/proc/<pid>/stat`` counts 10 ms ticks): at a few milliseconds of CPU a second, ticks are
    too coarse. Threads that already ended are not in it."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # the thread ended meanwhile
    return total / 1e9


def process_memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(rest.split()[0]) / 1024, 1)
    return out


def free_port_block(n: int) -> int:
    """A first port such that ``n`` consecutive ports are free."""
    for _ in range(500):
        base = free_port()
        if base + n >= 65535:
            continue
        ok = True
        for port in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError(f"no block of {n} free ports")


def write_results(name: str, *, quick: bool, seconds: float, figures: list[Any], failures: dict[str, str],
                  details: dict[str, Any]) -> Path:
    """``bench/results/<name>.json``, in the shape ``bench/run.py`` reads, with the machine's state."""
    out = {"quick": quick, "seconds": round(seconds, 1), "figures": figures, "failures": failures,
           "details": details, "machine": {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg()}}
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    path = results / f"{name}.json"
    path.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    return path


def add_only_option(parser: argparse.ArgumentParser, choices: Sequence[str]) -> None:
    """``--only a,b``: the subset of a bench's scenarios (or of the benches) to run; all by default."""
    parser.add_argument("--only", default=",".join(choices), help="comma-separated subset of " + ", ".join(choices))


def chosen(parser: argparse.ArgumentParser, only: str, choices: Sequence[str], what: str = "scenario(s)") -> list[str]:
    """What ``--only`` names, in its order; an unknown name is a usage error."""
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in choices]
    if unknown:
        parser.error(f"unknown {what}: {', '.join(unknown)}")
    return names


def attempt(failures: dict[str, str], name: str, run: Callable[[], T], log: Callable[[str], None],
            what: str | None = None) -> T | None:
    """``run()``, or ``None`` with its failure recorded under ``name`` and logged: one scenario
    failing must not cost the others' figures."""
    try:
        return run()
    except Exception as exc:
        failures[name] = f"{type(exc).__name__}: {exc}"
        log(f"{what or name} FAILED: {failures[name]}")
        return None
