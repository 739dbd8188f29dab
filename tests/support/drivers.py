"""A driver running for the length of a block, in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from mos_agent.driver_api import Driver

DRIVER_STOP_S = 10.0


@contextlib.asynccontextmanager
async def driver_running(driver: Driver) -> AsyncIterator[asyncio.Task[None]]:
    """``driver.run()`` as a task for the block; cancelled at the end. A driver that does not end
    within 10 s of its cancellation fails the test instead of hanging the run."""
    task = asyncio.create_task(driver.run())
    try:
        yield task
    finally:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=DRIVER_STOP_S)
        if not done:
            raise AssertionError(f"{type(driver).__name__} did not stop within {DRIVER_STOP_S:g}s of its "
                                 "cancellation")
        with contextlib.suppress(asyncio.CancelledError):
            task.result()
