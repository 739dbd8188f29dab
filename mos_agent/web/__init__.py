"""The operator's status page: ``index.html``, ``app.js`` and ``app.css``, served as they are from
the package by :mod:`mos_agent.health` (no build step, no external asset: the page works offline).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

ASSETS: dict[str, str] = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "app.css": "text/css",
}


@cache
def asset(name: str) -> tuple[bytes, str]:
    """The file's bytes (read once) and its content type (served with charset=utf-8)."""
    return resources.files(__name__).joinpath(name).read_bytes(), ASSETS[name]
