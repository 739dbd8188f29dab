"""``mos-agent browse ENDPOINT [--node ID] [--depth N] [--name NAME]``: walk an OPC UA server and
print a device file (YAML) for the variables found.

The OPC UA driver does the work (loaded through the driver registry like every driver, so the
core never imports a protocol library). Bad arguments exit 2; a server that cannot be reached or
browsed exits 1 with one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from mos_agent.cli import UsageError
from mos_agent.config.loader import read_secret
from mos_agent.registry import UnknownDriver, load_driver


def main(args: argparse.Namespace) -> int:
    if args.depth < 1:
        raise UsageError(f"--depth must be 1 or more, got {args.depth}")
    password = None
    if args.password_file:
        if not args.username:
            raise UsageError("--password-file needs --username")
        try:
            password = read_secret(None, Path(args.password_file))
        except OSError as exc:
            raise UsageError(f"--password-file: cannot read {args.password_file}: {exc.strerror or exc}") from None
    try:
        driver = load_driver("opcua")
    except UnknownDriver:
        print("mos-agent browse: the OPC UA driver is not installed", file=sys.stderr)
        return 1
    browse = getattr(driver, "browse", None)
    if browse is None:
        print("mos-agent browse: the installed OPC UA driver cannot browse", file=sys.stderr)
        return 1
    try:
        text = asyncio.run(browse(args.endpoint, args.node, args.depth, args.name, args.username, password,
                                  allow_plaintext_password=args.allow_plaintext_password))
    except ValueError as exc:  # the driver checks endpoint and node syntax before connecting
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        print(f"mos-agent browse: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0
