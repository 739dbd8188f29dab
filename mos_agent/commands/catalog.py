"""``mos-agent catalog -c FILE [--store-url URL --since 30d | --for CONTRACT]``: print the
metadata-only catalogue as JSON-LD; with ``--for``, as that contract's consumer may see it.

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
from mos_agent.catalog.consumer import build_consumer_catalog
from mos_agent.cli import UsageError
from mos_agent.config.loader import LoadedConfig, load_config
from mos_agent.config.models import parse_duration
from mos_agent.i18n import _
from mos_agent.registry import load_driver


def main(args: argparse.Namespace) -> int:
    try:
        since = parse_duration(args.since)
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from None
    if args.store_url and not args.store_url.startswith(("http://", "https://")):
        raise UsageError(f"--store-url must start with http:// or https://, got {args.store_url!r}")
    for_contract = getattr(args, "for_contract", None)
    if for_contract and args.store_url:
        raise UsageError(_("--for and --store-url cannot be combined (observations carry the real names)"))
    loaded = load_config(Path(args.config))
    drivers = {device.driver: load_driver(device.driver) for device in loaded.devices}
    if for_contract:
        return _print_for(loaded, for_contract, drivers)
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


def _print_for(loaded: LoadedConfig, contract_id: str, drivers: dict) -> int:
    from mos_agent.sharing.contracts import contract_by_id
    from mos_agent.sharing.pseudonyms import Pseudonymiser, load_or_create_key

    contract = contract_by_id(loaded.contracts, contract_id)
    if contract is None:
        known = ", ".join(c.id for c in loaded.contracts) or "-"
        raise UsageError(_("--for: no contract {contract} (contracts: {known})").format(contract=repr(contract_id),
                                                                                       known=known))
    pseudonymiser = None
    if contract.pseudonymise:
        # the agent's own key, so the names here are the ones in the released data
        pseudonymiser = Pseudonymiser(load_or_create_key(loaded.agent.agent.state_dir))
    document = build_consumer_catalog(loaded, contract, pseudonymiser, drivers=drivers)
    print(json.dumps(document, ensure_ascii=False, indent=2))
    return 0
