"""Store and forward: the on-disk buffer plus one :class:`~mos_agent.sinks.runner.SinkRunner` (a
worker thread) per configured sink, started, observed and stopped together.

The buffer (:mod:`mos_agent.buffer`) is storage only; this module is what ties it to the sinks:
it names the sinks, gives each a cursor, supervises their runners and reports their lag.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mos_agent.buffer import Buffer
from mos_agent.config.models import AgentConfig, SinkConfig
from mos_agent.sharing.contracts import Contract
from mos_agent.sharing.ledger import Ledger
from mos_agent.sharing.pseudonyms import Pseudonymiser, load_or_create_key
from mos_agent.sharing.release import ReleaseStage
from mos_agent.sharing.runner import ContractSinkRunner
from mos_agent.sinks import build_sink, sink_names
from mos_agent.sinks.base import Sink, SinkContext
from mos_agent.sinks.runner import SinkRunner
from mos_agent.status import SinkStats, StoreStats

# Buffer rows hold at most this many points (fewer when a sink's batch is smaller), so a row is
# about one sink batch.
MAX_ROW_POINTS = 5000


class StoreAndForward:
    """The on-disk buffer plus one worker thread per configured sink.

    ``append`` is durable on return; every sink receives everything appended (at least once —
    after a crash the batch in flight is sent again, which overwrites identical points).
    """

    def __init__(self, config: AgentConfig, state_dir: Path, logger: logging.Logger | None = None,
                 context: SinkContext | None = None, contracts: Sequence[Contract] = ()) -> None:
        self.config = config
        self.context = context or SinkContext(config.agent)
        self.contracts = list(contracts)  # what the share: contracts sinks release
        self.ledger: Ledger | None = None
        self.state_dir = Path(state_dir)
        self.log = logger or logging.getLogger("mos_agent.buffer")
        row_points = min(MAX_ROW_POINTS, *(s.batch_size for s in config.sinks)) if config.sinks else MAX_ROW_POINTS
        self.buffer = Buffer(self.state_dir, config.buffer.max_size, config.buffer.overflow, self.log,
                             row_points=row_points, min_free_space=config.buffer.min_free_space)
        self.runners: list[SinkRunner] = []
        self._configs: dict[str, SinkConfig] = {}
        self.send_observers: list[Callable[[str, float], None]] = []  # (sink name, seconds) per write
        self._started = False

    def start(self) -> None:
        self.buffer.open()
        configs = list(self.config.sinks)
        names = sink_names(configs)
        sinks: list[tuple[Sink, SinkConfig]] = []
        try:
            for name, cfg in zip(names, configs, strict=True):
                sinks.append((build_sink(name, cfg, self.state_dir, self.context), cfg))
            self.buffer.register_sinks(names)
        except BaseException:
            for sink, _ in sinks:
                with contextlib.suppress(Exception):
                    sink.close()
            self.buffer.close()
            raise
        if not configs:
            self.log.warning("no sinks configured: readings are buffered on disk (up to %d bytes, then %s) "
                             "but sent nowhere", self.buffer.max_size, self.buffer.overflow)
        self.runners = [self._runner(sink, cfg) for sink, cfg in sinks]
        self._configs = {sink.name: cfg for sink, cfg in sinks}
        for runner in self.runners:
            runner.start()
        self._started = True
        stats = self.buffer.stats()
        self.log.info("buffer %s: %d points (%d bytes) waiting; sinks: %s", self.buffer.path, stats.points,
                      stats.bytes, ", ".join(names) or "none")

    def _runner(self, sink: Sink, cfg: SinkConfig) -> SinkRunner:
        options: dict[str, Any] = dict(batch_size=cfg.batch_size, flush_interval=cfg.flush_interval,
                                       max_retry_delay=cfg.max_retry_delay, logger=self.log,
                                       on_send=self._observe_send)
        if cfg.share == "contracts":
            # the release stage exists only here: sinks without share take the plain runner
            return ContractSinkRunner(sink, self.buffer, release=self._release_stage(sink.name), **options)
        return SinkRunner(sink, self.buffer, **options)

    def replace_contracts(self, contracts: Sequence[Contract], timeout: float = 10.0) -> list[str]:
        """Take new contracts (SIGHUP): each contract sink whose contracts changed stops — after
        releasing what is due and checkpointing its open windows — and starts again with the new
        ones, resuming from its ledger. Returns the sinks restarted. Call it from a worker thread."""
        self.contracts = list(contracts)
        restarted = []
        for index, runner in enumerate(self.runners):
            if not isinstance(runner, ContractSinkRunner):
                continue
            mine = [c for c in self.contracts if c.sink == runner.name]
            if mine == runner.release.contracts:
                continue
            runner.request_stop(time.monotonic() + timeout)
            runner.join(timeout + 1.0)
            if runner.is_alive():
                runner.abort()
                runner.join(2.0)
            if runner.is_alive():
                # two workers on one cursor would release twice: keep the old contracts until a restart
                self.log.error("sink %s is busy in a write; its new contracts take effect at the next restart",
                               runner.name)
                continue
            cfg = self._configs[runner.name]
            self.runners[index] = replacement = self._runner(build_sink(runner.name, cfg, self.state_dir,
                                                                                  self.context), cfg)
            replacement.start()
            restarted.append(runner.name)
        return restarted

    def _release_stage(self, sink: str) -> ReleaseStage:
        if self.ledger is None:
            self.ledger = Ledger(self.state_dir)
        mine = [c for c in self.contracts if c.sink == sink]
        pseudonymiser = None
        if any(c.pseudonymise for c in mine):
            pseudonymiser = Pseudonymiser(load_or_create_key(self.state_dir))
        self.log.info("sink %s shares under contract: %s", sink,
                      ", ".join(f"{c.id} ({c.status(time.time_ns())}, {c.resolution})" for c in mine)
                      or "no contract names it, so it receives nothing")
        return ReleaseStage(sink, mine, self.ledger, pseudonymiser, commit_interval=self.config.buffer.commit_interval)

    def _observe_send(self, sink: str, seconds: float) -> None:
        for observer in self.send_observers:
            with contextlib.suppress(Exception):
                observer(sink, seconds)

    def append(self, bodies: Sequence[bytes], points: Sequence[int]) -> int:
        """Durably store encoded chunks in one transaction; returns once committed, with the
        number of points stored (fewer than given only if the overflow policy dropped some)."""
        return self.buffer.append(bodies, points)

    def stop(self, timeout: float = 10.0) -> None:
        """Give the sinks up to ``timeout`` seconds to deliver what is pending (flushing partial
        batches now), then stop them and close the buffer. Undelivered data stays buffered.
        Returns within ``timeout`` + 3 s even if a sink is stuck in a network call."""
        if not self._started:
            self.buffer.close()
            return
        deadline = time.monotonic() + max(0.0, timeout)
        for runner in self.runners:
            runner.request_stop(deadline)
        for runner in self.runners:
            runner.join(max(0.0, deadline - time.monotonic()) + 1.0)
        for runner in self.runners:
            runner.abort()
        for runner in self.runners:
            if runner.is_alive():
                runner.join(2.0)
        # a write blocked in the network cannot be interrupted; its batch is sent again next start
        stuck = [r.name for r in self.runners if r.is_alive()]
        if stuck:
            self.log.warning("sink(s) %s still busy at shutdown; their undelivered data stays buffered",
                             ", ".join(stuck))
        self._started = False
        # A runner stuck in a network call keeps its own connection; the writer's is closed here.
        self.buffer.close()
        if self.ledger is not None:
            self.ledger.close()

    def status(self) -> StoreStats:
        return StoreStats(buffer=self.buffer.stats(), sinks=[self._sink_stats(runner) for runner in self.runners])

    def _sink_stats(self, runner: SinkRunner) -> SinkStats:
        now = time.time_ns()

        def age(created_ns: int | None) -> float:
            return round(max(0.0, (now - created_ns) / 1e9), 3) if created_ns else 0.0

        lag = self.buffer.sink_lag(runner.name)
        stats = runner.status()
        stats.lag_points = lag.points
        stats.lag_seconds = age(lag.oldest_ns)
        stats.live_lag_points = lag.live_points
        stats.live_lag_seconds = age(lag.live_oldest_ns)
        stats.backlog_points = lag.backlog_points
        stats.dropped_points = self.buffer.dropped_points_by_sink.get(runner.name, 0)
        return stats
