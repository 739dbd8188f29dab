"""Finds drivers through the ``mos_agent.drivers`` entry-point group, so a third party can ship
a driver as its own package; the core never imports a protocol library by name."""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from mos_agent.driver_api import Driver

GROUP = "mos_agent.drivers"


class UnknownDriver(LookupError):
    pass


@cache
def driver_names() -> tuple[str, ...]:
    return tuple(sorted({ep.name for ep in entry_points(group=GROUP)}))


@cache
def load_driver(name: str) -> type[Driver]:
    for ep in entry_points(group=GROUP):
        if ep.name == name:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Driver)):
                raise UnknownDriver(f"entry point {name!r} does not name a mos_agent Driver class")
            return cls
    raise UnknownDriver(name)
