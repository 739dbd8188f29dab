"""A contract sink in store and forward: through a data-centre outage the windows it releases are
whole and released once, checked against the raw data a plain sink delivered to a second store;
a contract sink no contract names receives nothing; the plain sink receives everything."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path

import pytest

from mos_agent.config.models import AgentConfig
from mos_agent.sharing.contracts import Contract
from mos_agent.sinks.forward import StoreAndForward
from tests.support.samples import sample_chunks
from tests.support.servers import FaultProxy, StoreReader, VictoriaMetrics, running
from tests.support.waiting import wait_until

MS = 1_000_000
CHUNKS, PER_CHUNK, SERIES = 24, 1000, 10  # 24,000 points, one a millisecond, over 24 s of acquisition


def window_contract(start_ms: int, end_ms: int) -> Contract:
    return Contract(id="dc-1s", title=None, consumer="MDCG", sink="datacentre", valid_from_ns=start_ms * MS,
                    valid_to_ns=end_ms * MS, datasets=("press-*",), categories=frozenset({"process"}),
                    resolution_ns=1000 * MS, pseudonymise=False, path=Path("dc.yaml"))


def test_windows_survive_an_outage_whole_and_once(tmp_path: Path, victoria: VictoriaMetrics,
                                                  store: StoreReader) -> None:
    # acquired an hour ago, on a whole second: the windows are closed as soon as the rows are read
    start_ms = (time.time_ns() // MS - 3_600_000) // 1000 * 1000
    valid_from, valid_to = start_ms + 2_500, start_ms + 17_250  # starts and ends mid-window
    with running(VictoriaMetrics.start(tmp_path / "dc-vm", extra_args=["-dedup.minScrapeInterval=0s"])) as dc_vm:
        datacentre = StoreReader(dc_vm.url)
        proxy = FaultProxy(dc_vm.port)
        config = AgentConfig.model_validate({
            "agent": {"id": "gw", "site": "plant", "state_dir": str(tmp_path / "state")},
            "sinks": [{"type": "influxdb", "name": "plant", "url": victoria.url, "bucket": "b", "token": "t",
                       "flush_interval": "100ms"},
                      {"type": "influxdb", "name": "datacentre", "share": "contracts", "bucket": "b", "token": "t",
                       "url": f"http://127.0.0.1:{proxy.port}", "flush_interval": "100ms",
                       "max_retry_delay": "500ms"},
                      {"type": "influxdb", "name": "nobody", "share": "contracts", "url": dc_vm.url, "bucket": "b",
                       "token": "t", "flush_interval": "100ms"}]})
        forward = StoreAndForward(config, tmp_path / "state", logging.getLogger("test.sharing"),
                                  contracts=[window_contract(valid_from, valid_to)])
        proxy.cut()
        forward.start()
        try:
            chunks = list(sample_chunks(CHUNKS, PER_CHUNK, series=SERIES, start_ms=start_ms))
            for body, points in chunks:
                forward.append([body], [points])
            assert store.wait_for_count(CHUNKS * PER_CHUNK, '{__name__="process_value"}') == CHUNKS * PER_CHUNK

            def sink(name: str):
                return next(s for s in forward.status().sinks if s.name == name)

            wait_until(lambda: sink("datacentre").retried > 0, what="the data centre sink retrying")
            assert datacentre.count() == 0
            wait_until(lambda: sink("nobody").lag_points == 0, what="the sink no contract names passing every row")
            assert sink("nobody").sent_points == 0
            proxy.heal()
            windows = (valid_to // 1000 - valid_from // 1000 + 1) * SERIES
            wait_until(lambda: sink("datacentre").sent_points >= windows, timeout=60,
                       what=f"{windows} windows released")
        finally:
            forward.stop(5)
            proxy.close()

        released = defaultdict(dict)
        for series in datacentre.export():
            field = series["metric"]["__name__"].removeprefix("process_")
            for ts, value in zip(series["timestamps"], series["values"], strict=True):
                assert (ts, field) not in released[series["metric"]["tag"]], "a window was released twice"
                released[series["metric"]["tag"]][(ts, field)] = value
        expected: dict[tuple[str, int], list[float]] = defaultdict(list)
        for series in store.export('{__name__="process_value"}'):
            for ts, value in zip(series["timestamps"], series["values"], strict=True):
                if valid_from <= ts <= valid_to:
                    expected[(series["metric"]["tag"], ts - ts % 1000)].append(value)
        assert len(expected) == windows
        for (tag, window), values in expected.items():
            got = released[tag]
            assert got[(window, "count")] == len(values)
            assert got[(window, "min")] == min(values) and got[(window, "max")] == max(values)
            assert got[(window, "value")] == pytest.approx(sum(values) / len(values), rel=1e-12)
        assert sum(len(v) for v in released.values()) == 4 * windows  # nothing else


def raw_contract(cid: str) -> Contract:
    return Contract(id=cid, title=None, consumer="MDCG", sink="datacentre", valid_from_ns=0, valid_to_ns=2**62,
                    datasets=("press-*",), categories=frozenset({"process"}), resolution_ns=None,
                    pseudonymise=False, path=Path(f"{cid}.yaml"))


def test_new_contracts_take_effect_without_a_restart(tmp_path: Path, victoria: VictoriaMetrics,
                                                     store: StoreReader) -> None:
    config = AgentConfig.model_validate({
        "agent": {"id": "gw", "site": "plant", "state_dir": str(tmp_path / "state")},
        "sinks": [{"type": "influxdb", "name": "datacentre", "share": "contracts", "url": victoria.url,
                   "bucket": "b", "token": "t", "flush_interval": "100ms"}]})
    forward = StoreAndForward(config, tmp_path / "state", logging.getLogger("test.sharing"))
    forward.start()
    try:
        start_ms = time.time_ns() // MS - 3_600_000
        before = list(sample_chunks(2, PER_CHUNK, start_ms=start_ms, device="press-01"))
        for body, points in before:
            forward.append([body], [points])
        wait_until(lambda: forward.status().sinks[0].lag_points == 0, what="rows passed under no contract")
        assert forward.replace_contracts([raw_contract("new")]) == ["datacentre"]
        assert forward.replace_contracts([raw_contract("new")]) == []  # unchanged: left running
        after = list(sample_chunks(2, PER_CHUNK, start_ms=start_ms + 10_000, device="press-02"))
        for body, points in after:
            forward.append([body], [points])
        assert store.wait_for_count(2 * PER_CHUNK, '{__name__="process_value"}') == 2 * PER_CHUNK
        assert {s["metric"]["equipment"] for s in store.export('{__name__="process_value"}')} == {"press-02"}
    finally:
        forward.stop(5)
