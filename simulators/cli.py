"""``mos-sim``: the bundled PLC simulators. Each lives in ``simulators/<protocol>.py`` with a
``main(argv) -> int``; ``all`` runs the three together."""

from __future__ import annotations

import importlib
import sys

PROTOCOLS = ("modbus", "opcua", "mqtt")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in (*PROTOCOLS, "all"):
        print("usage: mos-sim modbus|opcua|mqtt|all [options]  (mos-sim PROTOCOL --help for options)",
              file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    which, rest = argv[0], argv[1:]
    module = importlib.import_module("simulators.all" if which == "all" else f"simulators.{which}")
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
