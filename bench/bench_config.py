"""What the configuration costs as it grows, each figure beside its reference:

1. curve — ``mos-agent validate`` and ``mos-agent run`` (process start to ``READY=1`` on a
   ``NOTIFY_SOCKET`` the bench binds) with 10 devices and 10 → 100,000 tags (quick: → 10,000),
   beside an empty configuration. Each step is 10× the work, so beyond the empty configuration a
   linear cost grows 10× a step: the ratio is printed beside that expectation.
2. profiles — 500 devices × 40 tags on one profile against the same tags written out in every
   device file: ``load_config`` in this process and ``mos-agent validate``.

The devices point at a closed loopback port: start-up is measured, not acquisition.

    python bench/bench_config.py [--quick]     # ≤ 4 min (quick ≤ 40 s); writes bench/results/config.json
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent_process import AGENT_BIN, stop_process
from measure import add_only_option, chosen, process_cpu_seconds

from mos_agent.config.loader import load_config

HERE = Path(__file__).resolve().parent
DEVICES = 10
STEPS_FULL = (10, 100, 1_000, 10_000, 100_000)
STEPS_QUICK = (10, 100, 1_000, 10_000)
SCENARIOS = ("curve", "profiles")
PROFILE_DEVICES = 500
PROFILE_TAGS = 40
TYPES = ("uint16", "int16", "float32", "uint32")
# a growth ratio of differences smaller than this is start-up noise, not cost
NOISE_S = 0.25


def log(message: str) -> None:
    print(f"[config] {message}", flush=True)


def figure(name: str, value: Any, unit: str, *, reference: str | None = None, reference_value: Any = None,
           target: str = "", ok: bool | None = None, load: str = "") -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit, "reference": reference, "reference_value": reference_value,
            "target": target, "ok": ok, "load": load}


# ---------------------------------------------------------------- configurations


def _tag_line(i: int) -> str:
    kind = TYPES[i % len(TYPES)]
    return (f'  - {{name: tag_{i:06d}, address: "hr:{(i * 2) % 60000}", type: {kind}, scale: 0.1, unit: bar, '
            f"category: process}}\n")


def _agent_file(folder: Path) -> Path:
    (folder / "devices").mkdir(parents=True, exist_ok=True)
    agent = folder / "agent.yaml"
    # the default devices glob (devices/*.yaml): an empty folder is the empty configuration
    agent.write_text(f"agent: {{id: bench, site: changwon, state_dir: {folder / 'state'}, health: 'off'}}\n")
    return agent


def _device_head(name: str, port: int) -> str:
    return (f"name: {name}\ndriver: modbus\nasset: {{area: bench}}\nstage: forming\npoll_interval: 1s\n"
            f"connection: {{host: 127.0.0.1, port: {port}, timeout: 1s}}\n")


def write_tags(folder: Path, tags: int, port: int) -> Path:
    """``tags`` tags over ten device files (none for 0: the empty configuration)."""
    agent = _agent_file(folder)
    if tags:
        per = -(-tags // DEVICES)
        for d in range(DEVICES):
            body = "".join(_tag_line(i) for i in range(d * per, min(tags, (d + 1) * per)))
            (folder / "devices" / f"d{d:02d}.yaml").write_text(_device_head(f"d{d:02d}", port) + "tags:\n" + body)
    return agent


def write_fleet(folder: Path, with_profile: bool, port: int) -> Path:
    agent = _agent_file(folder)
    tags = "tags:\n" + "".join(_tag_line(i) for i in range(PROFILE_TAGS))
    if with_profile:
        (folder / "profiles").mkdir()
        (folder / "profiles" / "press.yaml").write_text("profile: press\ndriver: modbus\npoll_interval: 1s\n" + tags)
    for d in range(PROFILE_DEVICES):
        name = f"press-{d:03d}"
        if with_profile:
            text = (f"name: {name}\nprofile: ../profiles/press.yaml\nasset: {{area: bench}}\nstage: forming\n"
                    f"connection: {{host: 127.0.0.1, port: {port}, unit_id: {d % 247 + 1}, timeout: 1s}}\n")
        else:
            text = _device_head(name, port) + tags
        (folder / "devices" / f"{name}.yaml").write_text(text)
    return agent


# ---------------------------------------------------------------- measurements


def validate_seconds(agent: Path) -> tuple[float, float]:
    """Wall and CPU seconds of ``mos-agent validate`` (the CPU figure is the one that holds up on
    a machine shared with other work)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = subprocess.run([str(AGENT_BIN), "validate", "-c", str(agent)], capture_output=True, text=True)
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"validate failed: {result.stderr[-800:]}")
    return elapsed, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def ready_seconds(agent: Path, workdir: Path) -> tuple[float, float]:
    """Wall and CPU seconds from process start to READY=1, then a clean stop."""
    path = str(workdir / "notify.sock")
    with contextlib.suppress(OSError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(0.2)
    log_file = (workdir / "agent.log").open("ab")
    started = time.monotonic()
    proc = subprocess.Popen([str(AGENT_BIN), "run", "-c", str(agent)], stdout=log_file, stderr=subprocess.STDOUT,
                            env={**os.environ, "NOTIFY_SOCKET": path})
    try:
        deadline = started + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"agent exited ({proc.returncode}): "
                                   f"{(workdir / 'agent.log').read_text(errors='replace')[-800:]}")
            try:
                data = listener.recv(4096)
            except TimeoutError:
                continue
            if "READY=1" in data.decode(errors="replace").splitlines():
                return time.monotonic() - started, process_cpu_seconds(proc.pid)
        raise TimeoutError("no READY=1 within 120 s")
    finally:
        stop_process(proc)
        listener.close()
        log_file.close()
        with contextlib.suppress(OSError):
            os.unlink(path)


def median_of(repeats: int, measure: Callable[[], tuple[float, float]]) -> tuple[float, float]:
    """Median wall and CPU seconds."""
    runs = [measure() for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def closed_port() -> int:
    """A loopback port nobody listens on: drivers are refused at once and retry in the background."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- 1. the curve


def _ratio(value: float | None) -> str:
    return f"{value:>5.1f}×" if value is not None else f"{'—':>6}"


def scenario_curve(workdir: Path, quick: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    steps = STEPS_QUICK if quick else STEPS_FULL
    repeats = 1 if quick else 3
    port = closed_port()
    rows: list[dict[str, Any]] = []
    for tags in (0, *steps):
        folder = workdir / f"curve-{tags}"
        agent = write_tags(folder, tags, port)
        runs = 1 if tags >= 100_000 else repeats
        validate, validate_cpu = median_of(runs, lambda agent=agent: validate_seconds(agent))
        ready, ready_cpu = median_of(runs, lambda agent=agent, folder=folder: ready_seconds(agent, folder))
        rows.append({"tags": tags, "validate_s": round(validate, 3), "validate_cpu_s": round(validate_cpu, 3),
                     "ready_s": round(ready, 3), "ready_cpu_s": round(ready_cpu, 3)})
        log(f"{tags:>7,} tags: validate {validate:6.2f} s ({validate_cpu:5.2f} s CPU), "
            f"READY=1 after {ready:6.2f} s ({ready_cpu:5.2f} s CPU)")
        shutil.rmtree(folder, ignore_errors=True)

    empty = rows[0]
    log("beyond the empty configuration, each step ×10 the tags (linear: ×10.0)")
    log(f"(a ratio needs {NOISE_S} s of work beyond the empty configuration at the step before; '—' below that)")
    log(f"{'tags':>8} {'validate':>9} {'×':>6} {'CPU ×':>6} {'start-up':>9} {'×':>6} {'CPU ×':>6}   linear ×")
    for previous, row in itertools.pairwise(rows[1:]):
        for key in ("validate_s", "validate_cpu_s", "ready_s", "ready_cpu_s"):
            before = previous[key] - empty[key]
            row[key.replace("_s", "_ratio")] = round((row[key] - empty[key]) / before, 1) if before >= NOISE_S \
                else None
        log(f"{row['tags']:>8,} {row['validate_s']:>8.2f}s {_ratio(row['validate_ratio'])} "
            f"{_ratio(row['validate_cpu_ratio'])} {row['ready_s']:>8.2f}s {_ratio(row['ready_ratio'])} "
            f"{_ratio(row['ready_cpu_ratio'])}   10.0")

    by_tags = {row["tags"]: row for row in rows}
    figures = []
    largest = steps[-1]
    top = by_tags[largest]
    figures.append(figure(f"validate, {largest:,} tags", top["validate_s"], "s", reference="empty configuration",
                          reference_value=empty["validate_s"], load=f"{DEVICES} device files"))
    figures.append(figure(f"validate growth {largest // 10:,} → {largest:,} tags (CPU)", top["validate_cpu_ratio"],
                          "×", reference="linear", reference_value=10.0, target="≈ 10× (linear)",
                          ok=top["validate_cpu_ratio"] is not None and top["validate_cpu_ratio"] <= 13.0,
                          load="beyond the empty configuration"))
    ten_k = by_tags[10_000]
    figures.append(figure("start-up to READY=1, 10,000 tags", ten_k["ready_s"], "s", reference="empty configuration",
                          reference_value=empty["ready_s"], target="≤ empty + 1.5 s",
                          ok=ten_k["ready_s"] <= empty["ready_s"] + 1.5, load=f"{DEVICES} device files"))
    if 100_000 in by_tags:
        hundred_k = by_tags[100_000]
        figures.append(figure("start-up to READY=1, 100,000 tags", hundred_k["ready_s"], "s",
                              reference="empty configuration", reference_value=empty["ready_s"], target="< 10 s",
                              ok=hundred_k["ready_s"] < 10.0, load=f"{DEVICES} device files"))
        figures.append(figure("start-up growth 10,000 → 100,000 tags (CPU)", hundred_k["ready_cpu_ratio"], "×",
                              reference="linear", reference_value=10.0, target="≈ 10× (linear)",
                              ok=hundred_k["ready_cpu_ratio"] is not None and hundred_k["ready_cpu_ratio"] <= 13.0,
                              load="beyond the empty configuration"))
    return figures, {"curve": rows}


# ---------------------------------------------------------------- 2. profiles


def scenario_profiles(workdir: Path, quick: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    repeats = 1 if quick else 3
    port = closed_port()
    results: dict[str, dict[str, float]] = {}
    for with_profile in (False, True):
        label = "profile" if with_profile else "written out"
        folder = workdir / f"fleet-{'profile' if with_profile else 'full'}"
        agent = write_fleet(folder, with_profile, port)
        size = sum(p.stat().st_size for p in folder.rglob("*.yaml"))

        def load(agent: Path = agent) -> tuple[float, float]:
            started, cpu = time.perf_counter(), time.process_time()
            loaded = load_config(agent)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            assert sum(len(d.tags) for d in loaded.devices) == PROFILE_DEVICES * PROFILE_TAGS
            return elapsed, cpu

        validate, validate_cpu = median_of(repeats, lambda agent=agent: validate_seconds(agent))
        results[label] = {"load_s": round(median_of(repeats, load)[0], 3), "validate_s": round(validate, 3),
                          "validate_cpu_s": round(validate_cpu, 3), "yaml_bytes": size}
        log(f"{PROFILE_DEVICES} devices × {PROFILE_TAGS} tags, {label}: load_config {results[label]['load_s']:.2f} s, "
            f"validate {results[label]['validate_s']:.2f} s, {size / 1e6:.2f} MB of YAML")
        shutil.rmtree(folder, ignore_errors=True)
    shared, full = results["profile"], results["written out"]
    fleet = f"{PROFILE_DEVICES} devices × {PROFILE_TAGS} tags"
    figures = [
        figure("load, devices on one profile", shared["load_s"], "s", reference="same tags written out",
               reference_value=full["load_s"], target="≈ written out", ok=shared["load_s"] <= full["load_s"] * 1.25,
               load=f"{fleet}; load_config in-process"),
        figure("validate, devices on one profile", shared["validate_s"], "s", reference="same tags written out",
               reference_value=full["validate_s"], target="≈ written out",
               ok=shared["validate_s"] <= full["validate_s"] * 1.25, load=f"{fleet}; mos-agent validate"),
    ]
    return figures, {"profiles": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 → 10,000 tags, one run a point")
    add_only_option(parser, SCENARIOS)
    args = parser.parse_args(argv)
    wanted = set(chosen(parser, args.only, SCENARIOS))
    workdir = Path(tempfile.mkdtemp(prefix="bench-config-", dir="/var/tmp"))
    figures: list[dict[str, Any]] = []
    details: dict[str, Any] = {"quick": args.quick}
    started = time.monotonic()
    try:
        for name, scenario in zip(SCENARIOS, (scenario_curve, scenario_profiles), strict=True):
            if name in wanted:
                got, more = scenario(workdir, args.quick)
                figures += got
                details.update(more)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    details["seconds"] = round(time.monotonic() - started, 1)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "config.json").write_text(json.dumps({"figures": figures, "details": details}, indent=2))
    log(f"done in {details['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
