"""Store and forward into a real VictoriaMetrics through the InfluxDB v2 write API: outages,
rejected lines, size limits, bad credentials, overflow and backlog draining.

VictoriaMetrics keeps milliseconds and runs with de-duplication here, so every test point has its
own millisecond per series (see ``sample_chunks``) and a point that arrived twice counts once:
"exactly once" is checked as the exact set of values per series."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mos_agent.config.models import AgentConfig
from mos_agent.payload import compress
from mos_agent.sinks.forward import StoreAndForward
from mos_agent.status import SinkStats
from tests.support.samples import sample_chunks
from tests.support.servers import FaultProxy, StoreReader, VictoriaMetrics
from tests.support.waiting import wait_until

TOKEN = "tok-5f3a9c1e-never-log-me"
VALUES = '{__name__="process_value"}'


def _config(state_dir: Path, url: str, buffer: dict | None = None, **sink: object) -> AgentConfig:
    sink_cfg = {"type": "influxdb", "url": url, "org": "mdcg", "bucket": "factory", "token": TOKEN,
                "flush_interval": "100ms", "max_retry_delay": "500ms", **sink}
    return AgentConfig.model_validate({"agent": {"id": "gw", "site": "plant", "state_dir": str(state_dir)},
                                       "buffer": buffer or {}, "sinks": [sink_cfg]})


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[Callable[..., StoreAndForward]]:
    started: list[StoreAndForward] = []

    def make(url: str, *, state_dir: Path | None = None, buffer: dict | None = None,
             **sink: object) -> StoreAndForward:
        state = state_dir or tmp_path / "state"
        store = StoreAndForward(_config(state, url, buffer, **sink), state, logging.getLogger("test.sf"))
        store.start()
        started.append(store)
        return store

    yield make
    for store in started:
        store.stop(0.5)


def _values_by_series(reader: StoreReader, selector: str = VALUES) -> dict[str, list[float]]:
    return {s["metric"]["tag"]: sorted(s["values"]) for s in reader.export(selector)}


def _expected(points: range, series: int = 10) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for g in points:
        out.setdefault(f"t{g % series}", []).append(float(g))
    return out


def _sink(store: StoreAndForward) -> SinkStats:
    return store.status().sinks[0]


def _append_all(store: StoreAndForward, chunks: Iterator[tuple[bytes, int]]) -> int:
    total = 0
    for body, points in chunks:
        store.append([body], [points])
        total += points
    return total


def test_points_appended_during_an_outage_arrive_exactly_once(victoria: VictoriaMetrics, store: StoreReader,
                                                              store_proxy: FaultProxy, make_store) -> None:
    chunks = sample_chunks(30, 1000)
    sf = make_store(f"http://127.0.0.1:{store_proxy.port}", batch_size=2000)
    _append_all(sf, (next(chunks) for _ in range(5)))
    store.wait_for_count(5000, VALUES)
    store_proxy.cut()
    _append_all(sf, (next(chunks) for _ in range(20)))
    wait_until(lambda: _sink(sf).state == "retrying", what="the sink to notice the outage")
    status = _sink(sf)
    assert status.lag_points >= 20000 - 2000  # at most the batch in flight is not counted as lag
    assert status.last_error and TOKEN not in repr(sf.status())
    store_proxy.heal()
    _append_all(sf, chunks)
    wait_until(lambda: _sink(sf).lag_points == 0, what="the sink to catch up")
    assert store.wait_for_count(30000, VALUES) == 30000
    assert _values_by_series(store) == _expected(range(30000))
    status = sf.status()
    assert status.sinks[0].sent_points >= 30000
    assert status.sinks[0].retried >= 1
    assert status.buffer.rows == 0 and status.buffer.points == 0  # delivered rows are deleted


def test_a_line_the_store_rejects_goes_to_dead_letters_and_the_rest_flows(store: StoreReader,
                                                                          victoria: VictoriaMetrics,
                                                                          make_store, caplog) -> None:
    """VictoriaMetrics answers 400 for a line longer than -influx.maxLineSize (256 KiB by
    default) — most malformed lines it just skips with 204. The runner bisects the rejected batch,
    so only that one line is dead-lettered and its neighbours arrive."""
    chunks = list(sample_chunks(3, 1000))
    huge_text = "x" * 300_000
    bad_line = (f'process,site=plant,equipment=press-01,tag=comment,quality=good text="{huge_text}",'
                f"quality_code=0i {time.time_ns()}\n").encode()
    good, bad_neighbours, after = chunks
    # the bad line sits in the middle of a chunk of good lines
    lines = bad_neighbours[0].splitlines(keepends=True)
    poisoned = b"".join(lines[:500]) + bad_line + b"".join(lines[500:])
    sf = make_store(victoria.url, batch_size=5000)
    with caplog.at_level(logging.ERROR, logger="test.sf"):
        sf.append([good[0], poisoned], [1000, 1001])
        wait_until(lambda: _sink(sf).dead_lettered_points == 1, what="the bad line to be dead-lettered")
        sf.append([after[0]], [1000])
        assert store.wait_for_count(3000, VALUES) == 3000
    assert _values_by_series(store) == _expected(range(3000))
    letters = sf.buffer.dead_letters()
    assert len(letters) == 1
    assert letters[0]["points"] == 1 and letters[0]["http_status"] == 400
    assert letters[0]["body"] == bad_line and letters[0]["sink"] == "influxdb"
    assert "too long line" in letters[0]["reason"]
    assert sf.status().buffer.dead_letter_points == 1
    assert len([r for r in caplog.records if "dead-letter" in r.getMessage()]) == 1
    wait_until(lambda: _sink(sf).lag_points == 0, what="the sink to finish")


def test_batches_over_the_request_size_limit_are_split_until_they_fit(store: StoreReader,
                                                                      victoria: VictoriaMetrics,
                                                                      make_store) -> None:
    """VictoriaMetrics 1.79 has no request size limit on its InfluxDB endpoint (-maxInsertRequestSize
    is for Prometheus remote write; it accepted a 4 KB body with a 2 KB limit) and never answers
    413, so the split path runs against the sink's own ``max_request_size`` — the same
    SinkTooLarge a 413 from InfluxDB or a proxy produces. The limit counts the request body as
    sent: gzip is off here, so that is the line protocol itself."""
    limit = 40_000
    sf = make_store(victoria.url, batch_size=5000, max_request_size=limit, gzip=False)
    total = _append_all(sf, sample_chunks(4, 5000))  # 5000-line rows of ~1 MB each
    single_line = (f'process,site=plant,equipment=press-01,tag=comment,quality=good text="{"y" * 50_000}",'
                   f"quality_code=0i {time.time_ns()}\n").encode()
    sf.append([single_line], [1])
    assert store.wait_for_count(total, VALUES) == total
    assert _values_by_series(store) == _expected(range(total))
    wait_until(lambda: _sink(sf).dead_lettered_points == 1, what="the oversize single line")
    (letter,) = sf.buffer.dead_letters()
    assert letter["http_status"] == 413 and letter["body"] == single_line
    status = _sink(sf)
    assert status.sent_points == total and status.lag_points == 0
    # four ~1 MB rows went out as many requests of at most 40 kB each
    assert status.sent_requests >= sum(len(b) for b, _ in sample_chunks(4, 5000)) // limit


def test_wrong_token_is_reported_keeps_data_and_never_shows_the_token(tmp_path: Path, make_store,
                                                                      caplog) -> None:
    server = VictoriaMetrics.start(tmp_path / "vm-auth", extra_args=["-httpAuth.username=mos",
                                                                     "-httpAuth.password=right-password"])
    try:
        with caplog.at_level(logging.DEBUG):
            sf = make_store(server.url)
            total = _append_all(sf, sample_chunks(3, 1000))
            wait_until(lambda: _sink(sf).state == "auth_failed", what="auth_failed")
            status = sf.status()
            sink = status.sinks[0]
            assert "401" in sink.last_error
            assert sink.lag_points == total and status.buffer.points == total
            assert sink.sent_points == 0 and sink.dead_lettered_points == 0
            sf.stop(1)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR and "credentials" in r.getMessage()]
        assert len(errors) == 1  # rate-limited, not one per attempt
        assert TOKEN not in caplog.text
        assert TOKEN not in repr(status)
        assert TOKEN not in repr(sf.runners[0].sink)
    finally:
        server.stop()
    # the data is still on disk for when the token is fixed
    fresh = make_store("http://127.0.0.1:9", state_dir=tmp_path / "state")
    assert fresh.status().buffer.points == total


def test_token_file_is_read_and_network_errors_do_not_show_it(tmp_path: Path, make_store, caplog) -> None:
    token_file = tmp_path / "influx.token"
    token_file.write_text(TOKEN + "\n")
    with caplog.at_level(logging.DEBUG):
        sf = make_store("http://127.0.0.1:9", token=None, token_file=str(token_file))
        assert sf.runners[0].sink._token == TOKEN
        sf.append(*zip(*sample_chunks(1, 100), strict=True))
        wait_until(lambda: _sink(sf).retried >= 2, what="retries against a closed port")
        status = sf.status()
        sf.stop(1)
    assert "127.0.0.1:9" in status.sinks[0].last_error
    assert TOKEN not in caplog.text and TOKEN not in repr(status)


def test_drop_oldest_during_an_outage_delivers_the_newest_and_counts_the_rest(
        store: StoreReader, store_proxy: FaultProxy, make_store, caplog) -> None:
    chunks = list(sample_chunks(30, 1000))
    chunk_bytes = max(len(compress(b)) for b, _ in chunks)  # as stored
    store_proxy.cut()
    with caplog.at_level(logging.WARNING, logger="test.sf"):
        sf = make_store(f"http://127.0.0.1:{store_proxy.port}", batch_size=1000,
                        buffer={"max_size": chunk_bytes * 10, "overflow": "drop_oldest"})
        for body, points in chunks:
            sf.append([body], [points])
        status = sf.status()
        # the batch the sink was retrying when the cap struck (if it had read one) is not dropped:
        # it is sent once the store is back
        assert status.buffer.dropped_points in (19_000, 20_000)
        assert status.buffer.overflow_episodes == 1
        assert status.sinks[0].dropped_points == status.buffer.dropped_points
        store_proxy.heal()
        wait_until(lambda: _sink(sf).lag_points == 0, what="the sink to catch up")
    overflow_lines = [r for r in caplog.records if "buffer full" in r.getMessage()]
    assert len(overflow_lines) == 1
    got = _values_by_series(store)
    newest = _expected(range(20_000, 30_000))
    for tag, values in newest.items():
        assert set(values) <= set(got[tag])
    # exactly what was not delivered counts as dropped
    status = sf.status()
    assert sum(len(v) for v in got.values()) + status.buffer.dropped_points == 30_000
    assert status.sinks[0].dropped_points == status.buffer.dropped_points


def test_live_data_overtakes_a_draining_backlog(victoria: VictoriaMetrics, store: StoreReader,
                                                store_proxy: FaultProxy, make_store) -> None:
    """After an outage the backlog drains in large batches while a chunk appended after recovery
    is delivered between them: it is in the store while the backlog is still draining."""
    sf = make_store(f"http://127.0.0.1:{store_proxy.port}", batch_size=500)
    store_proxy.cut()
    backlog = _append_all(sf, sample_chunks(30, 5000))  # 150k points, 300 batches behind
    wait_until(lambda: _sink(sf).state == "retrying", what="the outage to be noticed")
    store_proxy.delay = 0.02  # a slow link: draining takes a while, so the order is observable
    store_proxy.heal()
    wait_until(lambda: _sink(sf).backlog_points > 0, what="the backlog to be set aside")
    live_selector = '{__name__="process_value",equipment="live-01"}'
    _append_all(sf, sample_chunks(1, 50, device="live-01"))
    seen_backlog_left = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if store.count(live_selector) == 50:
            seen_backlog_left = _sink(sf).backlog_points
            break
        time.sleep(0.05)
    assert seen_backlog_left is not None, "live chunk never arrived"
    assert seen_backlog_left > 0, "the live chunk waited for the whole backlog"
    store_proxy.delay = 0.0
    wait_until(lambda: _sink(sf).lag_points == 0, timeout=60, what="the backlog to drain")
    assert store.wait_for_count(backlog, VALUES + "") >= backlog
    assert _values_by_series(store, '{__name__="process_value",equipment="press-01"}') == \
        _expected(range(backlog))


def test_every_sink_gets_everything_and_rows_wait_for_the_slowest(tmp_path: Path, store: StoreReader,
                                                                  store_proxy: FaultProxy) -> None:
    config = AgentConfig.model_validate({
        "agent": {"id": "gw", "site": "plant", "state_dir": str(tmp_path / "state")},
        "sinks": [{"type": "influxdb", "url": f"http://127.0.0.1:{store_proxy.port}", "org": "mdcg",
                   "bucket": "factory", "token": TOKEN, "flush_interval": "100ms", "max_retry_delay": "500ms"},
                  {"type": "sqlite", "flush_interval": "100ms"}]})
    store_proxy.cut()
    sf = StoreAndForward(config, tmp_path / "state", logging.getLogger("test.sf"))
    sf.start()
    try:
        total = _append_all(sf, sample_chunks(10, 1000))
        wait_until(lambda: {s.name: s for s in sf.status().sinks}["sqlite"].lag_points == 0,
              what="the local history to catch up")
        status = sf.status()
        sinks = {s.name: s for s in status.sinks}
        assert sinks["sqlite"].sent_points == total
        assert sinks["influxdb"].lag_points >= total - 1000
        assert status.buffer.points == total  # kept for the sink that has not got them
        store_proxy.heal()
        wait_until(lambda: sf.status().buffer.points == 0, what="rows to be released once both have them")
        assert _values_by_series(store) == _expected(range(total))
    finally:
        sf.stop(2)


def test_stop_flushes_a_partial_batch_at_once(victoria: VictoriaMetrics, store: StoreReader,
                                              make_store) -> None:
    sf = make_store(victoria.url, flush_interval="30s", batch_size=5000)
    sf.append(*zip(*sample_chunks(1, 100), strict=True))
    started = time.monotonic()
    sf.stop(10)
    assert time.monotonic() - started < 10
    assert store.count(VALUES) == 100


def test_stop_with_the_store_down_returns_within_its_timeout_and_keeps_the_data(
        tmp_path: Path, store_proxy: FaultProxy, make_store) -> None:
    store_proxy.cut()
    sf = make_store(f"http://127.0.0.1:{store_proxy.port}", max_retry_delay="30s")
    sf.append(*zip(*sample_chunks(1, 100), strict=True))
    wait_until(lambda: _sink(sf).retried >= 1, what="a failed attempt")
    started = time.monotonic()
    sf.stop(1.0)
    assert time.monotonic() - started < 1.0 + 2.0
    again = make_store(f"http://127.0.0.1:{store_proxy.port}")
    assert again.status().buffer.points == 100


def test_good_points_are_one_row_in_the_store_unless_the_sink_wants_every_quality_code(
        victoria: VictoriaMetrics, store: StoreReader, make_store, tmp_path: Path) -> None:
    """Line protocol leaves quality_code 0 out, so a store keeping a series per field holds one
    row per good point; a sink set to ``quality_code: always`` writes the code on every line."""
    codes = '{__name__="process_quality_code"}'
    lean = make_store(victoria.url, state_dir=tmp_path / "lean")
    sent = _append_all(lean, sample_chunks(2, 1000, device="lean"))
    assert store.wait_for_count(sent, VALUES) == sent
    wait_until(lambda: _sink(lean).sent_points == sent, what="the lean sink to report its points")
    assert store.count(codes) == 0
    lean_bytes = _sink(lean).sent_bytes
    assert lean_bytes > 0

    full = make_store(victoria.url, state_dir=tmp_path / "full", quality_code="always")
    _append_all(full, sample_chunks(2, 1000, device="full"))
    assert store.wait_for_count(sent, codes) == sent
    assert {s["metric"]["quality"] for s in store.export(codes)} == {"good"}
    assert all(set(s["values"]) == {0.0} for s in store.export(codes))
    wait_until(lambda: _sink(full).sent_points == sent, what="the full sink to report its points")
    # the same points, with a field more on every line
    assert _sink(full).sent_bytes > lean_bytes
