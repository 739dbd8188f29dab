"""``mos-agent catalog -c FILE [--store-url URL --since 30d]``: print the metadata-only catalogue
as JSON-LD.

With ``--store-url`` the catalogue also says what the store holds per dataset. If the store cannot
be queried the command fails (exit 1, one line on stderr) rather than printing a catalogue without
the observations the user asked for: a catalogue silently missing them could be published as if
the store were empty.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mos_agent.catalog import StoreUnavailable, build_catalog, observe_store
from mos_agent.cli import UsageError
from mos_agent.config.loader import load_config
from mos_agent.config.models import parse_duration
from mos_agent.i18n import _
from mos_agent.registry import load_driver


def main(args: argparse.Namespace) -> int:
    try:
        since = parse_duration(args.since)
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from None
    if args.store_url and not args.store_url.startswith(("http://", "https://")):
        raise UsageError(_("--store-url must start with http:// or https://, got {url}").format(
            url=repr(args.store_url)))
    loaded = load_config(Path(args.config))
    drivers = {device.driver: load_driver(device.driver) for device in loaded.devices}
    observed = None
    if args.store_url:
        try:
            observed = observe_store(args.store_url, loaded, since)
        except StoreUnavailable as exc:
            print(f"mos-agent catalog: {exc}", file=sys.stderr)
            return 1
    document = build_catalog(loaded, observed, drivers=drivers)
    print(json.dumps(document, ensure_ascii=False, indent=2))
    return 0
