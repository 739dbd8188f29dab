"""Fixed costs: with nothing to do, nothing wakes up on a timer. A sink runner sleeps until the
buffer signals an append (it does not poll an empty buffer), rates are worked out when the status
is asked for — and the data promises hold all the same: what is appended is delivered within
``flush_interval``."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from mos_agent.buffer import SinkCursor
from mos_agent.config.models import AgentConfig
from mos_agent.pipeline import RateMeter
from mos_agent.sinks.forward import StoreAndForward
from tests.support.samples import sample_chunks
from tests.support.waiting import wait_until


def test_an_idle_sink_runner_does_not_look_at_the_buffer_until_an_append(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    looks: list[float] = []
    pending_live = SinkCursor.pending_live

    def counted(self: SinkCursor):  # type: ignore[no-untyped-def]
        looks.append(time.monotonic())
        return pending_live(self)

    monkeypatch.setattr(SinkCursor, "pending_live", counted)
    config = AgentConfig.model_validate({
        "agent": {"id": "gw", "site": "plant", "state_dir": str(tmp_path / "state")},
        "sinks": [{"type": "sqlite", "flush_interval": "200ms"}]})
    store = StoreAndForward(config, tmp_path / "state", logging.getLogger("test.idle"))
    store.start()
    try:
        wait_until(lambda: looks, what="the runner's first look at the buffer")
        time.sleep(0.3)  # it settles: nothing pending, it sleeps
        settled = len(looks)
        time.sleep(2.5)  # the runner used to look every second
        assert len(looks) == settled, f"{len(looks) - settled} looks at an idle buffer"

        (body, points), = sample_chunks(1, 100, start_ms=int(time.time() * 1000))
        appended = time.monotonic()
        store.append([body], [points])
        wait_until(lambda: store.status().sinks[0].sent_points == points, what="the appended points delivered")
        # woken by the append, sent once the rows were flush_interval old, then asleep again
        assert time.monotonic() - appended >= 0.2
        assert any(t >= appended for t in looks)
        time.sleep(0.3)
        delivered = len(looks)
        time.sleep(1.5)
        assert len(looks) == delivered
    finally:
        store.stop(1.0)


def test_rates_are_worked_out_when_asked() -> None:
    meter = RateMeter(window=10.0, now=100.0)
    # asked at first: the rate since the meter was made
    assert meter.rate(50, now=105.0) == pytest.approx(10.0)
    assert meter.rate(150, now=110.0) == pytest.approx(15.0)
    # asked often: over the last window (at least), not since the start
    for second in range(111, 131):
        meter.rate(150 + (second - 110) * 100, now=float(second))
    assert meter.rate(2250, now=131.0) == pytest.approx(100.0, rel=0.05)
    # the samples kept stay bounded by the window, however often it is asked
    assert len(meter.samples) <= 12
