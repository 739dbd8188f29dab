"""``mos-agent demo``: the demo plant on loopback — a stamping press (Modbus), a CNC machining
centre (OPC UA), environment/energy sensors (MQTT) and an assembly line's Sparkplug B edge node
(MQTT) from the bundled simulators, an agent with the local ``sqlite`` history as its store, and a
live terminal view with the press's ISO 22400 KPIs (OEE) in a two-shift calendar that starts with
the demo. Needs nothing beyond the installation: the MQTT broker is Mosquitto where installed, else
an embedded amqtt broker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from mos_agent.child_process import die_with_parent
from mos_agent.cli import UsageError
from mos_agent.commands.kpi import kpi_view
from mos_agent.config.loader import load_config
from mos_agent.config.models import parse_duration
from mos_agent.localservers import Mosquitto, free_port, wait_for_port
from mos_agent.logs import setup_logging
from mos_agent.pipeline import Agent
from mos_agent.taxonomy import QUALITY_NAMES

DEMO_TIMEZONE = "Asia/Seoul"


def demo_shifts(now: datetime) -> list[dict[str, str]]:
    """Two 12-hour shifts, the pattern of Korean plants, the first starting now: the KPIs of a shift
    count from its start, so a demo joining a shift in the middle would show its unobserved hours
    as unknown time and an OEE near 0. (The press's device file from the simulator carries its
    kpi: block.)"""
    start = now.replace(microsecond=0)
    night = start + timedelta(hours=12)
    return [{"name": "day", "start": f"{start:%H:%M:%S}", "end": f"{night:%H:%M:%S}"},
            {"name": "night", "start": f"{night:%H:%M:%S}", "end": f"{start:%H:%M:%S}"}]


class DemoPlant:
    """Starts and stops the simulators and the broker, and writes the agent's files."""

    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        self.workdir = workdir
        self.args = args
        self.processes: list[subprocess.Popen] = []
        self.broker: Any = None
        self.log = (workdir / "simulators.log").open("ab")

    def _sim(self, *argv: str) -> subprocess.Popen:
        # own session: a Ctrl-C in the terminal reaches the demo, which stops them in order; the
        # kernel stops them if the demo dies without that chance (SIGKILL)
        proc = subprocess.Popen([sys.executable, "-m", "simulators.cli", *argv], stdout=self.log,
                                stderr=self.log, stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=die_with_parent())
        self.processes.append(proc)
        return proc

    def _device_file(self, *argv: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "simulators.cli", *argv], capture_output=True, text=True,
                             check=True, timeout=30)
        return yaml.safe_load(out.stdout)

    async def _start_broker(self) -> int:
        if Mosquitto.installed():
            self.broker = Mosquitto.start(self.workdir / "mosquitto")
            return self.broker.port
        try:
            from amqtt.broker import Broker
        except ImportError as exc:
            raise UsageError("the demo needs an MQTT broker: install Debian's mosquitto, "
                             "or pip install 'mos-agent[demo-broker]'") from exc
        port = free_port()
        self.broker = Broker({"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                              "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                                          {"allow_anonymous": True}}})
        await self.broker.start()
        return port

    async def start(self) -> Path:
        devices = self.workdir / "devices"
        devices.mkdir(parents=True, exist_ok=True)

        modbus_port = free_port()
        self._sim("modbus", "--port", str(modbus_port))
        press = self._device_file("modbus", "--port", str(modbus_port), "--print-device-file", "--name", "press-01")

        opcua_port = free_port()
        self._sim("opcua", "--port", str(opcua_port))

        mqtt_port = await self._start_broker()
        self._sim("mqtt", "--port", str(mqtt_port), "--rate", "12", "--devices", "4")
        sensors = self._device_file("mqtt", "--port", str(mqtt_port), "--print-device-file")
        sensors["name"] = "plant-sensors"
        sensors["connection"]["client_id"] = f"mos-agent-demo-{os.getpid()}"
        # a PLC gateway already speaking Sparkplug B: its births name the metrics
        self._sim("mqtt", "--sparkplug", "--port", str(mqtt_port), "--rate", "4")
        edge_node = self._device_file("mqtt", "--sparkplug", "--port", str(mqtt_port), "--print-device-file")
        if not isinstance(self.broker, Mosquitto):
            for device in (sensors, edge_node):
                device["connection"]["protocol"] = "3.1.1"  # amqtt speaks MQTT 3.1.1 only

        wait_for_port(modbus_port)
        wait_for_port(opcua_port, timeout=30)
        cnc = self._device_file("opcua", "--port", str(opcua_port), "--print-device-file")
        cnc["name"] = "cnc-01"

        for name, device in (("press-01", press), ("cnc-01", cnc), ("plant-sensors", sensors),
                             (edge_node["name"], edge_node)):
            (devices / f"{name}.yaml").write_text(yaml.safe_dump(device, sort_keys=False, allow_unicode=True))

        sinks: list[dict] = [{"type": "sqlite", "retention": "1d"}]
        if self.args.influx_url:
            sink = {"type": "influxdb", "url": self.args.influx_url, "org": self.args.influx_org,
                    "bucket": self.args.influx_bucket, "flush_interval": "1s"}
            if self.args.influx_token_file:
                sink["token_file"] = str(Path(self.args.influx_token_file).resolve())
            sinks.append(sink)
        agent = {
            "agent": {"id": "gw-demo", "enterprise": "acme", "site": "changwon", "timezone": DEMO_TIMEZONE,
                      "state_dir": str(self.workdir / "state"), "health": f"127.0.0.1:{free_port()}"},
            "devices": "devices/*.yaml",
            "buffer": {"max_size": "256MiB", "overflow": "drop_oldest"},
            "sinks": sinks,
            "shifts": demo_shifts(datetime.now(ZoneInfo(DEMO_TIMEZONE))),
            "kpi": {"interval": "10s"},
        }
        path = self.workdir / "agent.yaml"
        path.write_text(yaml.safe_dump(agent, sort_keys=False))
        return path

    async def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if isinstance(self.broker, Mosquitto):
            self.broker.stop()
        elif self.broker is not None:
            await self.broker.shutdown()
        self.log.close()


def _format_value(value: float, text: str | None) -> str:
    if text is not None:
        return text
    if value != value:
        return "—"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # counters: every digit matters
    return f"{value:.6g}"


def live_view(agent: Agent, workdir: Path, started: float, width: int = 160) -> Group:
    status = agent.status()
    pipe = status.pipeline
    header = Text.assemble(
        ("mos-agent demo", "bold"), f" · acme/changwon · up {time.monotonic() - started:.0f}s · ",
        (f"{pipe.points_per_s:.0f} points/s", "bold green"), f" committed · {pipe.committed_points} total · ",
        f"buffer {status.buffer.points} points",
        " · sinks: " + ", ".join(f"{s.name} {s.state} (lag {s.lag_points})" for s in status.sinks),
    )
    tables: list[Any] = [header]
    rates = {d.name: d.points_per_s for d in status.devices}
    for runtime in agent.devices.values():
        st = runtime.ctx.status
        series = runtime.ctx.series
        table = Table(title=f"{runtime.config.name} ({runtime.config.driver}, {st.state.value}) · "
                            f"{rates.get(runtime.config.name, 0.0):.0f} points/s", title_justify="left",
                     expand=True)
        for column in ("asset", "tag", "value", "unit", "quality", "category", "age"):
            table.add_column(column, justify="right" if column in ("value", "age") else "left", no_wrap=True)
        now = time.time_ns()
        shown = 0
        for idx, spec in enumerate(series.specs):
            if shown >= 12:
                table.add_row("…", f"{len(series) - shown} more series", "", "", "", "", "")
                break
            last_time = int(series.last_time[idx])
            if not last_time:
                continue
            quality = int(series.last_quality[idx])
            q = QUALITY_NAMES[quality] if quality >= 0 else "—"
            style = {"good": "", "uncertain": "yellow", "bad": "red"}.get(q, "")
            table.add_row("/".join(name for level, name in spec.asset if level in ("area", "line", "equipment")),
                          spec.tag, _format_value(series.last_value[idx], series.last_text.get(idx)),
                          spec.unit or "", q, spec.category, f"{(now - last_time) / 1e9:.1f}s", style=style)
            shown += 1
        if st.last_error:
            table.caption = f"last error: {st.last_error}"
        tables.append(table)
    if status.kpi:
        tables.insert(1, kpi_view(status.kpi, width))
    tables.append(Text(f"files in {workdir} · Ctrl-C stops everything", style="dim"))
    return Group(*tables)


async def run_demo(args: argparse.Namespace) -> int:
    duration = parse_duration(args.duration) if args.duration else None
    workdir = Path(args.state_dir) if args.state_dir else Path(tempfile.mkdtemp(prefix="mos-agent-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    setup_logging("warning", journal=False)
    console = Console()
    plant = DemoPlant(workdir, args)
    console.print(f"starting the demo plant in {workdir} …")
    try:
        config_path = await plant.start()
        agent = Agent(load_config(config_path))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # SIGHUP: the terminal closed; stop as cleanly as on Ctrl-C
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        await agent.start()
        console.print(f"status page: http://{agent.config.agent.health}/", highlight=False)
        started = time.monotonic()
        deadline = started + duration if duration else None

        async def wait_tick(seconds: float) -> bool:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)
            return stop.is_set() or (deadline is not None and time.monotonic() >= deadline)

        if args.no_live or not console.is_terminal:
            while not await wait_tick(2.0):
                s = agent.status()
                states = ", ".join(f"{d.name} {d.state} {d.points_per_s:.0f}/s" for d in s.devices)
                oee = "".join(f"; {k.equipment} {k.current.shift} shift OEE {k.current.kpi['oee']:.1f}%"
                              for k in s.kpi if k.current is not None and "oee" in k.current.kpi)
                print(f"{datetime.now():%H:%M:%S} {s.pipeline.points_per_s:.0f} points/s committed, "
                      f"{s.pipeline.committed_points} total; {states}{oee}", flush=True)
        else:
            with Live(live_view(agent, workdir, started, console.width), console=console, refresh_per_second=2,
                      screen=False) as live:
                while not await wait_tick(0.5):
                    live.update(live_view(agent, workdir, started, console.width))
        await agent.stop()
        status = agent.status()
        console.print(f"demo stopped: {status.pipeline.committed_points} points committed; "
                      f"history in {workdir / 'state' / 'history.sqlite'} "
                      f"(mos-agent query -c {config_path} press-01)")
    finally:
        await plant.stop()
    return 0


def main(args: argparse.Namespace) -> int:
    return asyncio.run(run_demo(args))
