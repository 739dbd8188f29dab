"""``mos-agent`` command line. Each command lives in ``mos_agent/commands/<name>.py`` with a
``main(args) -> int``; this module only parses arguments and maps failures to exit codes
(0 ok, 2 bad configuration or usage, 1 anything else), one line per problem on stderr."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from mos_agent import __version__
from mos_agent.i18n import _

DEFAULT_CONFIG = "/etc/mos-agent/agent.yaml"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A user mistake: reported as one line on stderr, exit 2."""


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", default=os.environ.get("MOS_AGENT_CONFIG", DEFAULT_CONFIG),
                   help=_("agent file (default: $MOS_AGENT_CONFIG or {default})").format(default=DEFAULT_CONFIG))


def _running_agent_args(p: argparse.ArgumentParser) -> None:
    """How a command reaches a running agent: its health address, agent file and token."""
    p.add_argument("--url", default=None, help=_("health address (default: from the agent file, or 127.0.0.1:9750)"))
    _config_arg(p)
    p.add_argument("--token-file", default=None,
                   help=_("bearer token for the health port (default: the agent file's agent.health_token_file)"))
    p.add_argument("--json", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mos-agent",
        description=_("Edge manufacturing-operations agent: OPC UA, Modbus and MQTT into a structured "
                      "manufacturing-data taxonomy, buffered on disk, sent to a time-series store."))
    parser.add_argument("--version", action="version", version=f"mos-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help=_("run in the foreground (what systemd starts)"))
    _config_arg(p)

    p = sub.add_parser("validate", help=_("check the agent and device files"))
    _config_arg(p)

    p = sub.add_parser("browse", help=_("walk an OPC UA server and print device-file YAML"))
    p.add_argument("endpoint", help=_("opc.tcp://host:port/path"))
    p.add_argument("--node", default="i=85", help=_("node to start from (default: Objects, i=85)"))
    p.add_argument("--depth", type=int, default=5, help=_("how many levels to descend (default 5)"))
    p.add_argument("--name", default=None, help=_("device name for the generated file"))
    p.add_argument("--username", default=None)
    p.add_argument("--password-file", default=None)
    p.add_argument("--profile", default=None, metavar="NAME",
                   help=_("write a profile NAME (the tags) plus a short device file naming it, into --dir"))
    p.add_argument("--dir", default=".", help=_("with --profile: the folder holding profiles/ and devices/ "
                                                "(default: the current folder)"))
    p.add_argument("--allow-plaintext-password", action="store_true",
                   help=_("send the password although browse uses no message security (trusted networks only)"))

    p = sub.add_parser("read", help=_("read every tag of one device once and print a table"))
    _config_arg(p)
    p.add_argument("device", help=_("device name"))
    p.add_argument("--json", action="store_true", help=_("print JSON instead of a table"))

    p = sub.add_parser("status", help=_("ask a running agent for its state"))
    _running_agent_args(p)

    p = sub.add_parser("kpi", help=_("ISO 22400 KPIs per equipment: current and last complete shift"))
    _running_agent_args(p)

    p = sub.add_parser("query", help=_("read back the local sqlite history"))
    _config_arg(p)
    p.add_argument("device")
    p.add_argument("tag", nargs="?")
    p.add_argument("--since", default="10m", help=_("how far back (default 10m)"))
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("catalog", help=_("print the metadata-only catalogue as JSON-LD"))
    _config_arg(p)
    p.add_argument("--store-url", default=None, help=_("add observed time range and counts from this store"))
    p.add_argument("--since", default="30d", help=_("with --store-url: how far back to look (default 30d)"))
    p.add_argument("--for", dest="for_contract", default=None, metavar="CONTRACT",
                   help=_("the catalogue as this contract's consumer may see it (its datasets, pseudonyms if it "
                          "says so)"))

    p = sub.add_parser("sharing", help=_("per sharing contract: status, datasets, points released, last release"))
    _config_arg(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("demo", help=_("simulators + agent + local store with a live view"))
    p.add_argument("--duration", default=None, help=_("stop after this long (e.g. 30s); default: until Ctrl-C"))
    p.add_argument("--influx-url", default=None, help=_("also write to this InfluxDB-API store"))
    p.add_argument("--influx-org", default="mdcg")
    p.add_argument("--influx-bucket", default="factory")
    p.add_argument("--influx-token-file", default=None)
    p.add_argument("--state-dir", default=None, help=_("where the demo keeps its buffer (default: a temp dir)"))
    p.add_argument("--no-live", action="store_true", help=_("print a summary line instead of the live view"))

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(f"mos_agent.commands.{args.command}")
    from mos_agent.config.loader import ConfigErrors

    try:
        return int(module.main(args) or 0)
    except ConfigErrors as exc:  # every command that reads the configuration reports it the same way
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"mos-agent {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # anything else: one line, not a traceback, unless debugging
        if os.environ.get("MOS_AGENT_DEBUG"):
            raise
        print(f"mos-agent {args.command}: " + _("error: {kind}: {detail}").format(kind=type(exc).__name__, detail=exc),
              file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    # run as `python -m mos_agent.cli`: the commands raise mos_agent.cli.UsageError, not this
    # module's second copy of it, so the installed module's main must catch it
    from mos_agent import cli

    sys.exit(cli.main())
