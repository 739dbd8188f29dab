"""``mos-agent status``: ask a running agent over its health endpoint and render its status report
(:class:`mos_agent.status.StatusReport`, read back from the ``/status`` JSON) as tables."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mos_agent.cli import UsageError
from mos_agent.config.loader import read_secret
from mos_agent.status import StatusReport

DEFAULT_HEALTH = "127.0.0.1:9750"


def _agent_section(config: str) -> dict[str, Any]:
    """The agent file's ``agent:`` section as written, or {} when there is none to read (the status
    command must work without a configuration, with ``--url``)."""
    try:
        import yaml

        data = yaml.safe_load(Path(config).read_text())
        section = (data or {}).get("agent", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return section if isinstance(section, dict) else {}


def _health_address(args: argparse.Namespace) -> str:
    if args.url:
        return args.url
    address = _agent_section(args.config).get("health", DEFAULT_HEALTH)
    return DEFAULT_HEALTH if address == "off" or not isinstance(address, str) else address


def token(args: argparse.Namespace) -> str | None:
    """The bearer token: ``--token-file``, else the agent file's ``agent.health_token_file``
    (relative to the agent file, as the agent reads it)."""
    file = args.token_file
    if file is None:
        configured = _agent_section(args.config).get("health_token_file")
        if not isinstance(configured, str):
            return None
        file = Path(configured).expanduser()
        if not file.is_absolute():
            file = Path(args.config).parent / file
    try:
        return read_secret(None, file)
    except OSError as exc:
        raise UsageError(f"cannot read the token file {file}: {exc.strerror or exc}") from None


def refusal(command: str, address: str, exc: urllib.error.HTTPError) -> str:
    """The one line a command prints when the health port answers with an error."""
    if exc.code == 401:
        return (f"mos-agent {command}: the agent on {address} asks for its bearer token and did not accept what "
                "was sent: give --token-file, or -c the agent file naming agent.health_token_file")
    return f"mos-agent {command}: the agent on {address} answered HTTP {exc.code}"


def fetch_status(address: str, timeout: float = 5.0, token: str | None = None) -> dict[str, Any]:
    url = address if address.startswith("http") else f"http://{address}"
    request = urllib.request.Request(f"{url.rstrip('/')}/status")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _skipped(points: int, polls: int) -> str:
    """Readings lost to poll overruns, with the polls they were in."""
    return f"{points} ({polls} poll{'s' if polls != 1 else ''})" if polls else "0"


def render(status: StatusReport, console: Console) -> None:
    agent = status.agent
    console.print(f"[bold]{agent.id}[/bold] site {agent.site} · mos-agent {agent.version} · "
                  f"up {_age(agent.uptime_s)} · {status.pipeline.points_per_s:.0f} points/s committed")
    devices = Table(title="devices")
    for column in ("device", "driver", "state", "points/s", "series", "bad", "skipped", "last value", "last error"):
        devices.add_column(column)
    now = status.time or time.time()
    for d in status.devices:
        style = {"running": "green", "degraded": "yellow", "down": "red"}.get(d.state, "")
        last = now - d.last_value_time if d.last_value_time else None
        devices.add_row(d.name, d.driver, f"[{style}]{d.state}[/{style}]" if style else d.state,
                        f"{d.points_per_s:.0f}", str(d.series), str(d.points_bad),
                        _skipped(d.skipped_points, d.skipped_polls),
                        f"{_age(last)} ago" if last is not None else "—", d.last_error or "")
    console.print(devices)
    for d in status.devices:
        if d.sparkplug is not None:
            p = d.sparkplug
            line = (f"{d.name}: Sparkplug B {p.group_id}/{p.edge_node}, {p.edge_nodes_online} edge node(s) online, "
                    f"{p.births} births, {p.deaths} deaths, {p.metrics} metrics stored, "
                    f"{p.rebirth_requests} rebirth requests ({p.seq_gaps} seq gaps, {p.unknown_aliases} unknown "
                    f"aliases, {p.data_before_birth} data before birth), {p.dropped_points} values unnamed")
            if p.unmatched_metrics:
                shown = ", ".join(p.unmatched_examples[:5])
                more = "…" if p.unmatched_metrics > 5 else ""
                line += (f"; {p.unmatched_metrics} metrics match no pattern ({shown}{more}), "
                         f"{p.ignored_points} values ignored")
            console.print(line, markup=False, highlight=False)
    buf = status.buffer
    disk = (f", disk {buf.disk_free_bytes / 1e9:.1f} of {buf.disk_total_bytes / 1e9:.1f} GB free"
            if buf.disk_total_bytes else "")
    console.print(f"buffer: {buf.points} points, {buf.bytes / 1e6:.1f} MB, "
                  f"oldest {_age(buf.oldest_age_s)}, dropped {buf.dropped_points}{disk}")
    if buf.disk_full:
        console.print(f"[red]buffer disk full[/red] ({buf.disk_full_reason}): dropping data by the overflow "
                      f"policy {buf.overflow}", markup=True, highlight=False)
    sinks = Table(title="sinks")
    for column in ("sink", "type", "state", "lag points", "lag", "sent", "retried", "dead-lettered", "last error"):
        sinks.add_column(column)
    for s in status.sinks:
        sinks.add_row(s.name, s.type, s.state, str(s.lag_points), _age(s.lag_seconds), str(s.sent_points),
                      str(s.retried), str(s.dead_lettered_points), s.last_error or "")
    console.print(sinks)
    for s in status.sinks:
        if s.mqtt is not None:
            m = s.mqtt
            line = (f"{s.name}: {m.format} → {m.broker}, {'connected' if m.connected else 'not connected'}, "
                    f"{m.messages_published} messages")
            if m.format == "sparkplug":
                line += f", edge node {m.group_id}/{m.edge_node_id}, bdSeq {m.bd_seq}, {m.births} births"
                if m.primary_host_online is not None:
                    line += f", primary host {'online' if m.primary_host_online else 'offline'}"
            console.print(line)
    if status.contracts:
        contracts = Table(title="sharing contracts")
        for column in ("contract", "consumer", "sink", "status", "datasets", "resolution", "released", "last release"):
            contracts.add_column(column)
        for c in status.contracts:
            contracts.add_row(c.id, c.consumer, c.sink, c.status, ", ".join(c.datasets), c.resolution,
                              str(c.points_released), c.last_release or "never")
        console.print(contracts)


def main(args: argparse.Namespace) -> int:
    address = _health_address(args)
    try:
        data = fetch_status(address, token=token(args))
    except urllib.error.HTTPError as exc:
        print(refusal("status", address, exc), file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"mos-agent status: no agent answers on {address} ({reason}); is it running with health on?",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        render(StatusReport.from_dict(data), Console())
    return 0
