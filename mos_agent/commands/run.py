"""``mos-agent run -c FILE``: the agent in the foreground, as systemd starts it."""

from __future__ import annotations

import argparse
from pathlib import Path

from mos_agent.config.loader import load_config
from mos_agent.logs import setup_logging
from mos_agent.pipeline import Agent


def main(args: argparse.Namespace) -> int:
    import asyncio

    loaded = load_config(Path(args.config))
    setup_logging(loaded.agent.agent.log_level)
    asyncio.run(Agent(loaded).run_until_stopped())
    return 0
