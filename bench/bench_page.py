"""What the status page costs the agent: ``mos-agent run`` at 100,000 points/s (10 bulk Modbus
devices × 1,000 registers every 100 ms, the agent bench's set-up: simulators in their own process,
VictoriaMetrics as the store), its CPU measured over windows with nobody looking and windows with
one browser's worth of requests — the page's own polling: ``/status`` and ``/values`` every 2 s
(the overview asks for the first 10 values a device; the device page for up to 500 of one device),
after loading ``/`` and its two assets once. Windows alternate (idle, page, idle, page, …) so a
drift of the machine's load falls on both sides. The figure is the difference of the mean CPU
shares, in % of one core; the target is at most 1 %.

    python bench/bench_page.py [--quick]

Under other load the difference of two CPU shares is noisy; the second figure is the agent's own
account of the CPU its answers took (``Server-Timing: cpu;dur=…`` on ``/status`` and ``/values``),
per polling interval.
``--quick`` ≈ 60 s (3 pairs of 6 s windows, overview only); full ≈ 3.5 minutes (5 pairs of 12 s
windows, overview and device page). Writes bench/results/page.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_agent import TAGS_PER_DEVICE, World, bulk_devices, figure, world  # noqa: E402

DEVICES = 10  # × 1,000 registers every 100 ms = 100,000 points/s
POLL_S = 2.0  # the page's polling interval (app.js POLL_MS)
RESULTS = HERE / "results"


def log(message: str) -> None:
    print(f"[page] {message}", flush=True)


class PageClient:
    """One open browser tab, as far as the agent can tell: the shell and assets once, then
    ``/status`` and ``/values`` every ``POLL_S`` seconds, in a thread."""

    def __init__(self, health: str, values_query: str) -> None:
        self.base = f"http://{health}"
        self.values_query = values_query
        self.stop_event = threading.Event()
        self.polls = 0
        self.bytes = 0
        self.server_cpu_ms = 0.0  # the agent's own account of the CPU its answers took (Server-Timing)
        self.seconds: list[float] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _get(self, path: str) -> None:
        with urllib.request.urlopen(self.base + path, timeout=10) as r:
            self.bytes += len(r.read())
            timing = r.headers.get("Server-Timing", "")
        if timing.startswith("cpu;dur="):
            self.server_cpu_ms += float(timing.removeprefix("cpu;dur="))

    def _run(self) -> None:
        for path in ("/", "/assets/app.js", "/assets/app.css"):
            self._get(path)
        while not self.stop_event.is_set():
            started = time.monotonic()
            self._get("/status")
            self._get(self.values_query)
            self.seconds.append(time.monotonic() - started)
            self.polls += 1
            self.stop_event.wait(max(0.0, POLL_S - (time.monotonic() - started)))

    def __enter__(self) -> PageClient:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(15)


def committed(health: str) -> int:
    with urllib.request.urlopen(f"http://{health}/status", timeout=10) as r:
        return int(json.loads(r.read())["pipeline"]["committed_points"])


def cpu_window(agent: Any, seconds: float) -> tuple[float, float]:
    """(CPU share of the agent, committed points/s) over one window."""
    c0, t0, p0 = agent.cpu(), time.monotonic(), committed(agent.health)
    time.sleep(seconds)
    c1, t1, p1 = agent.cpu(), time.monotonic(), committed(agent.health)
    return (c1 - c0) / (t1 - t0), (p1 - p0) / (t1 - t0)


def measure(w: World, view: str, values_query: str, pairs: int, window: float) -> dict[str, Any]:
    devices = bulk_devices("page", w.ports(DEVICES), "100ms")
    agent = w.start_agent(f"page-{view}", devices)
    idle: list[float] = []
    watched: list[float] = []
    rates: list[float] = []
    client_stats: dict[str, Any] = {}
    try:
        agent.wait_flowing()
        time.sleep(2.0 if w.quick else 5.0)
        for pair in range(pairs):
            share, rate = cpu_window(agent, window)
            idle.append(share)
            rates.append(rate)
            with PageClient(agent.health, values_query) as client:
                time.sleep(0.5)  # the shell and assets are loaded once, outside the window
                share, rate = cpu_window(agent, window)
            watched.append(share)
            rates.append(rate)
            client_stats = {"polls": client.polls, "bytes_per_poll": round(client.bytes / max(1, client.polls)),
                            "agent_cpu_ms_per_poll": round(client.server_cpu_ms / max(1, client.polls), 2),
                            "poll_round_trip_ms_median": round(statistics.median(client.seconds) * 1000, 1)
                            if client.seconds else None}
            log(f"{view} pair {pair + 1}/{pairs}: agent CPU {idle[-1] * 100:.1f} % idle, {share * 100:.1f} % "
                f"with the page; {rate:,.0f} points/s committed")
    finally:
        agent.stop()
    return {
        "view": view, "values_query": values_query, "window_s": window, "pairs": pairs,
        "cpu_idle_pct": [round(x * 100, 2) for x in idle], "cpu_page_pct": [round(x * 100, 2) for x in watched],
        "cpu_difference_pct": round((statistics.mean(watched) - statistics.mean(idle)) * 100, 2),
        "committed_per_s_min": round(min(rates)), **client_stats,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 pairs of 6 s windows, overview only (≈ 60 s)")
    args = parser.parse_args(argv)
    pairs, window = (3, 6.0) if args.quick else (5, 12.0)
    views = {"overview": "/values?limit=10"}
    if not args.quick:
        views["device page"] = "/values?limit=500&device=page-00"
    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    figures: list[dict[str, Any]] = []
    load = (f"{DEVICES * TAGS_PER_DEVICE * 10:,} points/s offered "
            f"({DEVICES} devices × {TAGS_PER_DEVICE:,} registers / 100 ms)")
    with world(args.quick) as w:
        for view, query in views.items():
            log(f"{view}: {pairs} pairs of {window:g}s windows at {load}")
            run = measure(w, view, query, pairs, window)
            runs.append(run)
            figures.append(figure(f"status page ({view}) polling: agent CPU added", run["cpu_difference_pct"],
                                  "% of a core", reference="agent CPU with nobody looking",
                                  reference_value=round(statistics.mean(run["cpu_idle_pct"]), 1),
                                  target="≤ 1 %", ok=run["cpu_difference_pct"] <= 1.0,
                                  load=f"{load}; one client polling /status and {query} every {POLL_S:g} s"))
            # steadier than a difference of two CPU shares on a busy machine: the agent's own
            # account of the CPU its answers to the page took (Server-Timing; HTTP parsing and
            # writing not included — /healthz's round trip shows that part)
            share = round(run["agent_cpu_ms_per_poll"] / (POLL_S * 1000) * 100, 3)
            figures.append(figure(f"status page ({view}): CPU of the agent's answers per poll interval", share,
                                  "% of a core", reference="bytes a poll", reference_value=run["bytes_per_poll"],
                                  target="≤ 1 %", ok=share <= 1.0, load=load))
    out = {"quick": args.quick, "seconds": round(time.monotonic() - started, 1), "figures": figures, "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "page.json").write_text(json.dumps(out, indent=2))
    for f in figures:
        log(f"{f['name']}: {f['value']} {f['unit']} ({f['reference']}: {f['reference_value']}), target {f['target']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
