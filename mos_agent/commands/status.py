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
from mos_agent.commands.words import word
from mos_agent.config.loader import read_secret
from mos_agent.i18n import _, ngettext
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
        raise UsageError(_("cannot read the token file {file}: {reason}").format(file=file,
                                                                                 reason=exc.strerror or exc)) from None


def refusal(command: str, address: str, exc: urllib.error.HTTPError) -> str:
    """The one line a command prints when the health port answers with an error."""
    if exc.code == 401:
        return f"mos-agent {command}: " + _("the agent on {address} asks for its bearer token and did not accept what "
                                            "was sent: give --token-file, or -c the agent file naming "
                                            "agent.health_token_file").format(address=address)
    return f"mos-agent {command}: " + _("the agent on {address} answered HTTP {code}").format(address=address,
                                                                                              code=exc.code)


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
    return f"{points} (" + ngettext("{count} poll", "{count} polls", polls).format(count=polls) + ")" if polls else "0"


def render(status: StatusReport, console: Console) -> None:
    agent = status.agent
    console.print(f"[bold]{agent.id}[/bold] " + _("site {site} · mos-agent {version} · up {uptime} · {rate} points/s "
                                                  "committed").format(site=agent.site, version=agent.version,
                                                                      uptime=_age(agent.uptime_s),
                                                                      rate=f"{status.pipeline.points_per_s:.0f}"))
    devices = Table(title=_("devices"))
    for column in (_("device"), _("driver"), _("state"), _("points/s"), _("series"), _("bad"), _("skipped"),
                   _("last value"), _("last error")):
        devices.add_column(column)
    now = status.time or time.time()
    for d in status.devices:
        style = {"running": "green", "degraded": "yellow", "down": "red"}.get(d.state, "")
        last = now - d.last_value_time if d.last_value_time else None
        state = word(d.state)
        devices.add_row(d.name, d.driver, f"[{style}]{state}[/{style}]" if style else state,
                        f"{d.points_per_s:.0f}", str(d.series), str(d.points_bad),
                        _skipped(d.skipped_points, d.skipped_polls),
                        _("{age} ago").format(age=_age(last)) if last is not None else "—", d.last_error or "")
    console.print(devices)
    for d in status.devices:
        if d.sparkplug is not None:
            p = d.sparkplug
            line = f"{d.name}: Sparkplug B {p.group_id}/{p.edge_node}, " + _(
                "{online} edge node(s) online, {births} births, {deaths} deaths, {metrics} metrics stored, "
                "{rebirths} rebirth requests ({gaps} seq gaps, {aliases} unknown aliases, {early} data before "
                "birth), {dropped} values unnamed").format(
                online=p.edge_nodes_online, births=p.births, deaths=p.deaths, metrics=p.metrics,
                rebirths=p.rebirth_requests, gaps=p.seq_gaps, aliases=p.unknown_aliases, early=p.data_before_birth,
                dropped=p.dropped_points)
            if p.unmatched_metrics:
                shown = ", ".join(p.unmatched_examples[:5])
                more = "…" if p.unmatched_metrics > 5 else ""
                line += "; " + _("{count} metrics match no pattern ({examples}), {ignored} values ignored").format(
                    count=p.unmatched_metrics, examples=shown + more, ignored=p.ignored_points)
            console.print(line, markup=False, highlight=False)
    buf = status.buffer
    disk = (", " + _("disk {free} of {total} GB free").format(free=f"{buf.disk_free_bytes / 1e9:.1f}",
                                                               total=f"{buf.disk_total_bytes / 1e9:.1f}")
            if buf.disk_total_bytes else "")
    console.print(_("buffer: {points} points, {megabytes} MB, oldest {age}, dropped {dropped}").format(
        points=buf.points, megabytes=f"{buf.bytes / 1e6:.1f}", age=_age(buf.oldest_age_s), dropped=buf.dropped_points)
        + disk)
    if buf.disk_full:
        console.print("[red]" + _("buffer disk full") + "[/red] " + _("({reason}): dropping data by the overflow "
                                                                     "policy {policy}").format(
            reason=buf.disk_full_reason, policy=buf.overflow), markup=True, highlight=False)
    sinks = Table(title=_("sinks"))
    for column in (_("sink"), _("type"), _("state"), _("lag points"), _("lag"), _("sent"), _("retried"),
                   _("dead-lettered"), _("last error")):
        sinks.add_column(column)
    for s in status.sinks:
        sinks.add_row(s.name, s.type, word(s.state), str(s.lag_points), _age(s.lag_seconds), str(s.sent_points),
                      str(s.retried), str(s.dead_lettered_points), s.last_error or "")
    console.print(sinks)
    for s in status.sinks:
        if s.mqtt is not None:
            m = s.mqtt
            line = f"{s.name}: {m.format} → {m.broker}, " + (_("connected") if m.connected else _("not connected")) \
                + ", " + _("{count} messages").format(count=m.messages_published)
            if m.format == "sparkplug":
                line += ", " + _("edge node {node}, bdSeq {seq}, {births} births").format(
                    node=f"{m.group_id}/{m.edge_node_id}", seq=m.bd_seq, births=m.births)
                if m.primary_host_online is not None:
                    line += ", " + (_("primary host online") if m.primary_host_online else _("primary host offline"))
            console.print(line)
    if status.contracts:
        contracts = Table(title=_("sharing contracts"))
        for column in (_("contract"), _("consumer"), _("sink"), _("status"), _("datasets"), _("resolution"),
                       _("released"), _("last release")):
            contracts.add_column(column)
        for c in status.contracts:
            contracts.add_row(c.id, c.consumer, c.sink, word(c.status), ", ".join(c.datasets), c.resolution,
                              str(c.points_released), c.last_release or _("never"))
        console.print(contracts)


def ask_agent(command: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """The running agent's status for ``command``, or ``None`` after one line on stderr saying
    why there is none (refused, or no agent answering)."""
    address = _health_address(args)
    try:
        return fetch_status(address, token=token(args))
    except urllib.error.HTTPError as exc:
        print(refusal(command, address, exc), file=sys.stderr)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"mos-agent {command}: " + _("no agent answers on {address} ({reason}); is it running with health on?")
              .format(address=address, reason=reason), file=sys.stderr)
    return None


def main(args: argparse.Namespace) -> int:
    data = ask_agent("status", args)
    if data is None:
        return 1
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        render(StatusReport.from_dict(data), Console())
    return 0
