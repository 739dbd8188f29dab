"""Sharing end to end: ``mos-agent run`` reading two simulated presses into a plant store (a sink
without ``share``) and a data-centre store (``share: contracts``), with a raw pseudonymising
contract that expires during the test and a windowed contract that starts during it, and a
``kill -9`` in the middle.

Checked against the plant store, which holds every reading: the data centre got exactly the raw
readings acquired within the first contract's validity, under pseudonyms only; every window of
the second is the mean/min/max/count of the good readings the plant store holds for it, starting
at the contract's start, released once; the audit counts what was released."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from mos_agent.sharing.pseudonyms import Pseudonymiser, load_or_create_key
from tests.support.servers import StoreReader, VictoriaMetrics, running
from tests.support.simulators import start_modbus_sim

BIN = Path(sys.executable).parent
S = 1_000_000_000
WINDOW_S = 2
REAL_NAMES = ("changwon", "stamping", "line-1", "cell-2", "press-01", "machining", "cnc-01", "gw-share")

pytestmark = pytest.mark.slow


def start_sim(tmp_path: Path, name: str, area: str) -> tuple[subprocess.Popen, dict]:
    proc, device = start_modbus_sim(tmp_path, name)
    device["asset"]["area"] = area
    device["poll_interval"] = "200ms"
    return proc, device


def iso(ns: int) -> str:
    seconds, rest = divmod(ns, S)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1000).isoformat()


def start_agent(config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "mos-agent"), "run", "-c", str(config)], stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, env={**os.environ, "MOS_AGENT_LANG": "en"})


def samples(reader: StoreReader, selector: str) -> dict[tuple, list[tuple[int, float]]]:
    """Series (labels without the quality) → (ms, value) samples."""
    out: dict[tuple, list[tuple[int, float]]] = defaultdict(list)
    for series in reader.export(selector):
        metric = series["metric"]
        key = tuple(sorted((k, v) for k, v in metric.items() if k != "quality"))
        out[key] += list(zip(series["timestamps"], series["values"], strict=True))
    return out


def test_contract_sink_releases_exactly_what_the_contracts_say(tmp_path: Path) -> None:
    with running(VictoriaMetrics.start(tmp_path / "plant-vm")) as plant_vm, \
            running(VictoriaMetrics.start(tmp_path / "dc-vm", extra_args=["-dedup.minScrapeInterval=0s"])) as dc_vm:
        # the data centre store keeps every point it gets: a window released twice would show twice
        plant, datacentre = StoreReader(plant_vm.url), StoreReader(dc_vm.url)
        sims = [start_sim(tmp_path, "press-01", "stamping"), start_sim(tmp_path, "cnc-01", "machining")]
        try:
            (tmp_path / "devices").mkdir()
            (tmp_path / "contracts").mkdir()
            for _, device in sims:
                (tmp_path / "devices" / f"{device['name']}.yaml").write_text(yaml.safe_dump(device, sort_keys=False))
            # whole milliseconds, as the store keeps them, so its samples say on which side a reading is
            t0 = time.time_ns() // 1_000_000 * 1_000_000
            raw_end = t0 + 18 * S
            windows_start = t0 + 6 * S + 300_000_000  # mid-window
            (tmp_path / "contracts" / "raw.yaml").write_text(yaml.safe_dump({
                "id": "raw-press", "consumer": "MDCG", "sink": "datacentre",
                "valid": {"from": iso(t0 - 3600 * S), "to": iso(raw_end)}, "datasets": ["press-*"],
                "categories": ["process", "energy"], "resolution": "raw", "pseudonymise": True}))
            (tmp_path / "contracts" / "windows.yaml").write_text(yaml.safe_dump({
                "id": "cnc-windows", "consumer": "MDCG", "sink": "datacentre",
                "valid": {"from": iso(windows_start), "to": "2099-12-31"}, "datasets": ["cnc-*"],
                "categories": ["process"], "resolution": f"{WINDOW_S}s"}))
            config = tmp_path / "agent.yaml"
            config.write_text(yaml.safe_dump({
                "agent": {"id": "gw-share", "site": "changwon", "state_dir": str(tmp_path / "state"), "health": "off"},
                "devices": "devices/*.yaml",
                "sinks": [{"type": "influxdb", "name": "plant", "url": plant_vm.url, "bucket": "b", "token": "t",
                           "flush_interval": "200ms"},
                          {"type": "influxdb", "name": "datacentre", "share": "contracts", "url": dc_vm.url,
                           "bucket": "b", "token": "t", "flush_interval": "200ms"}],
                "sharing": {"contracts": "contracts/*.yaml"}}))
            log = tmp_path / "agent.log"
            agent = start_agent(config, log)
            try:
                time.sleep(max(0.0, (t0 + 9 * S - time.time_ns()) / S))
                killed_ms = time.time_ns() // 1_000_000
                agent.send_signal(signal.SIGKILL)  # mid-stream, windows open
                agent.wait(10)
                agent = start_agent(config, log)
                time.sleep(max(0.0, (t0 + 28 * S - time.time_ns()) / S))
            finally:
                agent.send_signal(signal.SIGTERM)
                assert agent.wait(30) == 0, log.read_text()[-3000:]
            stopped = time.time_ns()
        finally:
            for proc, _ in sims:
                proc.terminate()
                proc.wait(10)

        key = load_or_create_key(tmp_path / "state")
        names = Pseudonymiser(key).levels({"site": "changwon", "area": "stamping", "line": "line-1",
                                           "cell": "cell-2", "equipment": "press-01"})
        all_released = datacentre.export()
        assert all_released, (tmp_path / "agent.log").read_text()[-3000:]
        pseudonymised = [s for s in all_released if s["metric"].get("equipment") != "cnc-01"]
        assert pseudonymised
        for series in pseudonymised:  # never a real name under a pseudonymising contract
            for label, value in series["metric"].items():
                assert not any(name in value for name in REAL_NAMES), (label, value)

        # ---- raw, pseudonymised, expired during the test
        ms_end = raw_end // 1_000_000
        dc_raw = samples(datacentre, f'{{equipment="{names["equipment"]}"}}')
        plant_press = samples(plant, '{equipment="press-01",__name__=~"(process|energy)_.*"}')
        pseudonymised_keys = {}
        for key_labels in plant_press:
            labels = dict(key_labels)
            labels.update(names)
            pseudonymised_keys[key_labels] = tuple(sorted(labels.items()))
        # the data centre holds the series the plant had before the end, under their pseudonyms
        assert set(dc_raw) == {pseudonymised_keys[k] for k, points in plant_press.items()
                               if any(ts < ms_end for ts, _ in points)}
        for key_labels, points in plant_press.items():
            got = set(dc_raw.get(pseudonymised_keys[key_labels], []))
            # every reading before the end instant, nothing after it (the end's own millisecond
            # holds the end itself and later nanoseconds: the store cannot tell them apart)
            assert {p for p in got if p[0] < ms_end} == {p for p in points if p[0] < ms_end}
            assert all(p[0] <= ms_end for p in got)
        assert max(ts for pts in plant_press.values() for ts, _ in pts) > ms_end + 5000  # the plant kept going

        # ---- windows of good samples, starting at the contract's start, released once
        dc_windows = datacentre.export('{equipment="cnc-01"}')
        assert {s["metric"]["__name__"] for s in dc_windows} == {"process_value", "process_min", "process_max",
                                                                 "process_count"}
        by_field: dict[str, dict[tuple, list[tuple[int, float]]]] = {}
        for series in dc_windows:
            field = series["metric"]["__name__"].removeprefix("process_")
            key_labels = tuple(sorted((k, v) for k, v in series["metric"].items() if k != "__name__"))
            by_field.setdefault(field, {})[key_labels] = list(zip(series["timestamps"], series["values"],
                                                                  strict=True))
        raw_cnc = plant.export('{equipment="cnc-01",__name__="process_value",quality="good"}')
        window_ms = WINDOW_S * 1000
        start_ms = windows_start // 1_000_000
        checked = 0
        for series in raw_cnc:
            key_labels = tuple(sorted((k, v) for k, v in series["metric"].items() if k != "__name__"))
            expected: dict[int, list[float]] = defaultdict(list)
            for ts, value in zip(series["timestamps"], series["values"], strict=True):
                if ts * 1_000_000 >= windows_start:
                    expected[ts - ts % window_ms].append(value)
            counts = by_field["count"].get(key_labels, [])
            released_starts = [ts for ts, _ in counts]
            # Once each — except the windows of the one release the kill may have caught between the
            # store accepting it and the ledger recording it: those are sent again, identically.
            repeated = {ts for ts in released_starts if released_starts.count(ts) > 1}
            assert all(killed_ms - 10_000 <= ts <= killed_ms for ts in repeated), \
                f"windows released twice: {sorted(repeated)} (killed at {killed_ms})"
            for name in ("value", "min", "max", "count"):
                for ts in repeated:
                    assert len({v for t, v in by_field[name][key_labels] if t == ts}) == 1
            # from the window holding the start (or, had the agent come up later, its first data)
            assert min(released_starts) == min(expected) >= start_ms - start_ms % window_ms
            complete = [w for w in expected if w + window_ms < (stopped // 1_000_000) - 6000]
            assert complete and set(complete) <= set(released_starts), log.read_text()[-3000:]
            fields = {name: dict(by_field[name][key_labels]) for name in ("value", "min", "max", "count")}
            for window in released_starts:
                values = expected[window]
                assert fields["count"][window] == len(values), (window, log.read_text()[-3000:])
                assert fields["min"][window] == min(values) and fields["max"][window] == max(values)
                assert fields["value"][window] == pytest.approx(sum(values) / len(values), rel=1e-9)
                checked += 1
        assert checked > 20

        # ---- the audit and the report
        report = subprocess.run([str(BIN / "mos-agent"), "sharing", "-c", str(config), "--json"],
                                capture_output=True, text=True, check=True)
        contracts = {c["id"]: c for c in json.loads(report.stdout)["contracts"]}
        assert contracts["raw-press"]["status"] == "expired"
        assert contracts["cnc-windows"]["status"] == "active"
        # a point is a line: its value and quality_code fields are two series in the store
        assert contracts["raw-press"]["points_released"] == sum(
            len(set(p)) for k, p in dc_raw.items() if dict(k)["__name__"].endswith("_value"))
        assert contracts["cnc-windows"]["points_released"] == sum(
            len({ts for ts, _ in v}) for v in by_field["count"].values())
        assert contracts["cnc-windows"]["datasets"] == ["cnc-01"]
