"""``mos-agent browse ENDPOINT [--node ID] [--depth N] [--name NAME]``: walk an OPC UA server and
print a device file (YAML) for the variables found. With ``--profile NAME [--dir DIR]`` it writes
``DIR/profiles/NAME.yaml`` (the variables: what every machine of this model has) and
``DIR/devices/<device>.yaml`` (this machine, naming the profile) instead, and never overwrites.

The OPC UA driver does the work (loaded through the driver registry like every driver, so the
core never imports a protocol library). Bad arguments exit 2; a server that cannot be reached or
browsed exits 1 with one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import yaml

from mos_agent.cli import UsageError
from mos_agent.config.loader import read_secret
from mos_agent.config.profiles import is_profile_name
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
    browse = getattr(driver, "browse_profile" if args.profile else "browse", None)
    if browse is None:
        print("mos-agent browse: the installed OPC UA driver cannot browse", file=sys.stderr)
        return 1
    if args.profile:
        if not is_profile_name(args.profile):
            raise UsageError(f"--profile {args.profile!r}: use letters, digits, '_', '-' and '.', like cnc-5axis")
        profile_file = Path(args.dir) / "profiles" / f"{args.profile}.yaml"
        if profile_file.exists():
            raise UsageError(f"{profile_file} exists: choose another --profile name or remove it")
    try:
        if args.profile:
            profile_text, text = asyncio.run(browse(args.endpoint, args.profile, args.node, args.depth, args.name,
                                                    args.username, password,
                                                    allow_plaintext_password=args.allow_plaintext_password))
        else:
            text = asyncio.run(browse(args.endpoint, args.node, args.depth, args.name, args.username, password,
                                      allow_plaintext_password=args.allow_plaintext_password))
    except ValueError as exc:  # the driver checks endpoint and node syntax before connecting
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        print(f"mos-agent browse: {exc}", file=sys.stderr)
        return 1
    if not args.profile:
        sys.stdout.write(text)
        return 0
    device_file = Path(args.dir) / "devices" / f"{yaml.safe_load(text)['name']}.yaml"
    if device_file.exists():
        raise UsageError(f"{device_file} exists: give another --name or remove it")
    for path, content in ((profile_file, profile_text), (device_file, text)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        print(f"wrote {path}")
    return 0
