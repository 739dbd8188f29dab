"""What a sink is: something that accepts a payload of encoded line protocol, synchronously.

A sink's ``write`` is called from its own worker thread (see :mod:`mos_agent.sinks.runner`), so
it may block on I/O. It either returns (the whole body is stored) or raises one of the exceptions
below, which tell the runner what to do with the batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mos_agent.buffer import BatchKind
from mos_agent.payload import Payload
from mos_agent.status import SinkStats

if TYPE_CHECKING:
    from mos_agent.config.models import AgentSection
    from mos_agent.series import SeriesSpec

DeviceStates = Callable[[], Mapping[str, str]]
"""Device name → the agent's state of it (``running``, ``down``, …); callable from any thread."""


@dataclass(slots=True)
class SinkContext:
    """What a sink may need of the agent beyond its own configuration section: the agent section,
    the configured series of every device (a Sparkplug sink announces them in its births) and the
    devices' states (a Sparkplug sink publishes a DDEATH for a device that is down)."""

    agent: AgentSection
    series: Sequence[SeriesSpec] = field(default_factory=list)
    device_states: DeviceStates | None = None


class SinkError(Exception):
    """Base of the outcomes a sink reports. Messages must never contain a secret."""


class SinkRetryable(SinkError):
    """A transient failure (network, 429, 5xx): the same batch is retried later, with backoff.
    ``retry_after`` is the server's wish in seconds (Retry-After), if it said one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SinkTooLarge(SinkError):
    """The body is too large for the sink (413 or the sink's configured limit): the runner splits
    it at line boundaries and sends the halves."""


class SinkRejected(SinkError):
    """The sink refuses this data as malformed (400-class): retrying the same bytes cannot help,
    so the offending lines go to the dead-letter table and delivery continues."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SinkAuthError(SinkError):
    """The sink refuses our credentials (401/403): reported loudly, data is kept and retried
    slowly until someone fixes the token."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Sink(ABC):
    """A destination. ``name`` is the sink's cursor identity in the buffer, ``type`` its kind."""

    name: str
    type: str
    # Request body bytes the store accepted (as sent: compressed if the sink compresses); a sink
    # that sends no bodies (a local file) leaves it 0.
    sent_bytes: int = 0

    @abstractmethod
    def write(self, payload: Payload, kind: BatchKind = BatchKind.LIVE) -> None:
        """Store ``payload`` (``payload.points`` lines of line protocol, each ending in a newline;
        ``payload.gzipped`` costs nothing, ``payload.plain`` a decompression) or raise a
        :class:`SinkError`. ``kind`` says whether it is fresh data or backlog replayed after an
        outage. Called from the sink's worker thread only."""

    def fill_status(self, stats: SinkStats) -> None:  # noqa: B027 - optional: most sinks add nothing
        """Add the sink's own part to its status (called from any thread)."""

    def redact(self, text: str) -> str:
        """``text`` with any secret this sink holds removed; the runner passes every message it
        logs or shows in status through this, whatever raised it."""
        return text

    def close(self) -> None:  # noqa: B027 - optional for sinks holding nothing
        """Release connections; called once from the worker thread when it ends."""
