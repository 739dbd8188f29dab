"""Waiting for a condition instead of sleeping and asserting: poll until the predicate returns
something truthy, return that, or fail the test after a generous timeout (the machine may be
loaded). ``what`` names the condition in the failure; a callable is asked only then (e.g. for a
log's tail)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
Description = str | Callable[[], str]

DEFAULT_TIMEOUT = 30.0
POLL_INTERVAL = 0.05


def _timed_out(timeout: float, what: Description) -> AssertionError:
    text = what() if callable(what) else what
    return AssertionError(f"timed out after {timeout:g}s waiting for {text}")


def wait_until(predicate: Callable[[], T], timeout: float = DEFAULT_TIMEOUT, what: Description = "condition",
               interval: float = POLL_INTERVAL) -> T:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what)
        time.sleep(interval)
    return value


async def wait_until_async(predicate: Callable[[], T], timeout: float = DEFAULT_TIMEOUT,
                           what: Description = "condition", interval: float = POLL_INTERVAL) -> T:
    """:func:`wait_until` for a test's event loop: the loop keeps running while it waits."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what)
        await asyncio.sleep(interval)
    return value
