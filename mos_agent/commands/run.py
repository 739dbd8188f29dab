"""``mos-agent run -c FILE``: the agent in the foreground, as systemd starts it."""

from __future__ import annotations

import argparse
from pathlib import Path

from mos_agent.pipeline import run_agent


def main(args: argparse.Namespace) -> int:
    return run_agent(Path(args.config))
