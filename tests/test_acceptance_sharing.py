"""Acceptance of the product contract's "Sharing under contract" (and the ODRL part of the
catalogue): the contract file exactly as written there (names and times adapted), ``validate``'s
located errors, the catalogue's offer and agreement parsed with rdflib, and a running agent with a
plant store and a data-centre store (``share: contracts``) under a pseudonymising, windowed
contract that expires during the test, then ``mos-agent sharing``."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from rdflib import RDF, Graph, Literal, Namespace, URIRef

from mos_agent.config.loader import load_config
from mos_agent.localservers import free_port
from mos_agent.pipeline import Agent
from mos_agent.sharing.pseudonyms import Pseudonymiser
from simulators.modbus import ModbusSimulator, Scenario
from tests.support.servers import StoreReader, VictoriaMetrics, running
from tests.support.waiting import wait_until_async

BIN = Path(sys.executable).parent
ODRL = Namespace("http://www.w3.org/ns/odrl/2/")
FOAF = Namespace("http://xmlns.com/foaf/0.1/")
S = 1_000_000_000

CONTRACT = """\
id: mdcg-2026-017
title: {ko: 프레스 라인 생산 데이터, en: Press line production data}
consumer: MDCG innovation data centre
sink: datacentre                  # the sink that receives what this contract releases
valid: {from: 2026-12-01, to: "2027-11-30T23:59:59+09:00"}   # date or date-time
datasets: [press-01, "cnc-*"]     # equipment names (globs)
categories: [production, quality, energy, equipment_state, kpi]   # default: all
resolution: 1m                    # "raw", or windows aggregated to mean/min/max/count
pseudonymise: true                # asset names replaced by stable keyed pseudonyms
"""

AGENT = """\
agent: {id: gw-changwon-01, site: changwon, state_dir: state, health: "off", timezone: Asia/Seoul}
devices: devices/*.yaml
sinks:
  - {type: influxdb, name: plant, url: "http://127.0.0.1:8086", org: mdcg, bucket: factory, token: t}
  - {type: influxdb, name: datacentre, share: contracts, url: "http://127.0.0.1:8087", org: mdcg, bucket: dc,
     token: t}
sharing:
  contracts: contracts/*.yaml
"""


def _device(name: str, area: str) -> str:
    return textwrap.dedent(f"""\
        name: {name}
        driver: modbus
        asset: {{area: {area}, line: line-1, cell: cell-2}}
        stage: forming
        connection: {{host: 127.0.0.1, port: 1502, unit_id: 1, timeout: 1s}}
        tags:
          - {{name: stroke_count, address: "hr:10", type: uint32, category: production}}
          - {{name: hydraulic_pressure, address: "hr:0", type: float32, unit: bar, category: process}}
        """)


def _write(tmp_path: Path, agent: str = AGENT, contract: str = CONTRACT) -> Path:
    for folder in ("devices", "contracts"):
        (tmp_path / folder).mkdir(exist_ok=True)
    for name, area in (("press-01", "stamping"), ("press-02", "stamping"), ("cnc-01", "machining")):
        (tmp_path / "devices" / f"{name}.yaml").write_text(_device(name, area))
    (tmp_path / "contracts" / "mdcg-2026-017.yaml").write_text(contract)
    (tmp_path / "agent.yaml").write_text(agent)
    return tmp_path / "agent.yaml"


def _mos_agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "mos-agent"), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MOS_AGENT_LANG": "en"})


def test_the_spec_contract_validates_and_the_catalogue_carries_its_agreement(tmp_path: Path) -> None:
    config = _write(tmp_path)
    done = _mos_agent("validate", "-c", str(config))
    assert done.returncode == 0, done.stderr
    (contract,) = load_config(config).contracts
    seoul = ZoneInfo("Asia/Seoul")
    assert contract.valid_from_ns == int(datetime(2026, 12, 1, tzinfo=seoul).timestamp()) * S
    assert contract.valid_to_ns == int(datetime(2027, 11, 30, 14, 59, 59, tzinfo=UTC).timestamp()) * S
    assert contract.resolution_ns == 60 * S and contract.pseudonymise
    assert contract.categories == {"production", "quality", "energy", "equipment_state", "kpi"}

    catalog = _mos_agent("catalog", "-c", str(config))
    assert catalog.returncode == 0, catalog.stderr
    graph = Graph().parse(data=catalog.stdout, format="json-ld")
    datasets = {str(graph.value(d, URIRef("http://purl.org/dc/terms/identifier"))): d
                for d in graph.subjects(RDF.type, URIRef("http://www.w3.org/ns/dcat#Dataset"))}
    assert len(datasets) == 3
    covered = {k: d for k, d in datasets.items() if not k.endswith("press-02")}
    (agreement,) = set(graph.subjects(RDF.type, ODRL.Agreement))
    assert graph.value(agreement, ODRL.uid) == Literal("mdcg-2026-017")
    assert graph.value(graph.value(agreement, ODRL.assignee), FOAF.name) == Literal("MDCG innovation data centre")
    assert graph.value(agreement, ODRL.assigner) is not None
    permission = graph.value(agreement, ODRL.permission)
    assert graph.value(permission, ODRL.action) == ODRL.use
    assert set(graph.objects(permission, ODRL.target)) == set(covered.values())
    bounds = {graph.value(c, ODRL.operator): graph.value(c, ODRL.rightOperand).toPython()
              for c in graph.objects(permission, ODRL.constraint) if graph.value(c, ODRL.leftOperand) == ODRL.dateTime}
    assert bounds == {ODRL.gteq: datetime(2026, 12, 1, tzinfo=seoul),
                      ODRL.lteq: datetime(2027, 11, 30, 23, 59, 59, tzinfo=seoul)}
    for dataset in covered.values():
        assert set(graph.objects(dataset, ODRL.hasPolicy)) == {agreement}
    (offer,) = graph.objects(datasets["changwon/stamping/line-1/cell-2/press-02"], ODRL.hasPolicy)
    assert (offer, RDF.type, ODRL.Offer) in graph
    assert graph.value(offer, ODRL.permission) is None


@pytest.mark.parametrize(("edit", "expected"), [
    (("sink: datacentre", "sink: datacenter"), "contracts/mdcg-2026-017.yaml:4:7: sink: unknown sink 'datacenter'"),
    (('"cnc-*"', '"cnx-*"'), "contracts/mdcg-2026-017.yaml:6:22: datasets[1]: 'cnx-*' matches no device"),
    (('to: "2027-11-30T23:59:59+09:00"', 'to: "2026-11-30T23:59:59+09:00"'),
     "contracts/mdcg-2026-017.yaml:5:31: valid.to: the validity ends"),
    (("kpi]", "kpis]"), "contracts/mdcg-2026-017.yaml:7:60: categories[4]: unknown category 'kpis'"),
    (("resolution: 1m", "resolution: hourly"), "contracts/mdcg-2026-017.yaml:8:13: resolution: bad resolution"),
])
def test_validate_locates_every_contract_mistake(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    assert edit[0] in CONTRACT
    done = _mos_agent("validate", "-c", str(_write(tmp_path, contract=CONTRACT.replace(*edit))))
    assert done.returncode == 2
    assert expected in done.stderr, done.stderr


SCENARIO = {
    "name": "acceptance press",
    "device": {"name": "press-01", "asset": {"area": "stamping", "line": "line-1", "cell": "cell-2"},
               "stage": "forming", "poll_interval": "200ms"},
    "refresh": "50ms",
    "points": [
        {"name": "stroke_count", "address": "hr:10", "type": "uint32", "category": "production",
         "model": {"counter": {"start": 0, "rate": 10}}},
        {"name": "hydraulic_pressure", "address": "hr:0", "type": "float32", "unit": "bar", "category": "process",
         "model": {"sine": {"mean": 100, "amplitude": 5, "period": "7s"}}},
    ],
}
WINDOW_S = 2


@pytest.mark.slow
async def test_an_expiring_contract_releases_pseudonymised_windows(tmp_path: Path, victoria: VictoriaMetrics,
                                                                   store: StoreReader) -> None:
    end = datetime.now(ZoneInfo("Asia/Seoul")).replace(microsecond=0) + timedelta(seconds=12)
    with running(VictoriaMetrics.start(tmp_path / "dc-vm", extra_args=["-dedup.minScrapeInterval=0s"])) as dc_vm:
        datacentre = StoreReader(dc_vm.url)
        async with ModbusSimulator(Scenario.model_validate(SCENARIO), port=free_port()) as sim:
            agent_file = AGENT.replace("http://127.0.0.1:8086", victoria.url).replace("http://127.0.0.1:8087",
                                                                                      dc_vm.url)
            contract = CONTRACT.replace('"2027-11-30T23:59:59+09:00"', f'"{end.isoformat()}"').replace(
                "resolution: 1m", f"resolution: {WINDOW_S}s")
            config = _write(tmp_path, agent_file, contract)
            for name in ("press-02", "cnc-01"):
                (tmp_path / "devices" / f"{name}.yaml").unlink()
            (tmp_path / "devices" / "press-01.yaml").write_text(sim.device_file())
            (tmp_path / "contracts" / "mdcg-2026-017.yaml").write_text(
                contract.replace('"cnc-*"', '"press-*"'))
            agent = Agent(load_config(config))
            await agent.start()
            try:
                await wait_until_async(lambda: time.time() > end.timestamp() + WINDOW_S + 3, timeout=60,
                                       what="past the contract's end")
            finally:
                await agent.stop()
        released = datacentre.export()

    key_file = tmp_path / "state" / "sharing.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    names = Pseudonymiser(key_file.read_bytes()).levels(
        {"site": "changwon", "area": "stamping", "line": "line-1", "cell": "cell-2", "equipment": "press-01"})
    assert released
    end_ms = int(end.timestamp() * 1000)
    fields: dict[str, dict[tuple, dict[int, float]]] = defaultdict(dict)
    for series in released:
        metric = series["metric"]
        assert {k: metric.get(k) for k in names} == names, metric  # every level a pseudonym
        assert not any(real in value for value in metric.values()
                       for real in ("changwon", "stamping", "line-1", "cell-2", "press-01"))
        measurement, field = metric["__name__"].rsplit("_", 1)
        assert measurement == "production" and field in {"value", "min", "max", "count"}, metric
        fields[field][metric["tag"]] = dict(zip(series["timestamps"], series["values"], strict=True))
    assert set(fields) == {"value", "min", "max", "count"}
    windows = fields["count"]["stroke_count"]
    assert all(t % (WINDOW_S * 1000) == 0 and t <= end_ms for t in windows)  # window starts, none after the end

    raw: dict[int, list[float]] = defaultdict(list)
    for series in store.export('{__name__="production_value",tag="stroke_count",equipment="press-01",'
                               'quality="good"}'):
        for t, v in zip(series["timestamps"], series["values"], strict=True):
            raw[t - t % (WINDOW_S * 1000)].append(v)
    checked = 0
    for window, count in windows.items():
        if window + WINDOW_S * 1000 <= end_ms and window > min(windows):  # whole windows inside the validity
            values = raw[window]
            assert count == len(values)
            assert fields["min"]["stroke_count"][window] == min(values)
            assert fields["max"]["stroke_count"][window] == max(values)
            assert fields["value"]["stroke_count"][window] == pytest.approx(sum(values) / len(values))
            checked += 1
    assert checked >= 2

    report = _mos_agent("sharing", "-c", str(config), "--json")
    assert report.returncode == 0, report.stderr
    (entry,) = json.loads(report.stdout)["contracts"]
    assert entry["id"] == "mdcg-2026-017" and entry["status"] == "expired"
    assert entry["datasets"] == ["press-01"]
    assert entry["points_released"] == sum(len(w) for w in fields["count"].values())
    assert entry["last_release"]
    # the audit in state_dir: contract, dataset, points, period
    with sqlite3.connect(tmp_path / "state" / "sharing.sqlite") as ledger:
        audited = ledger.execute("SELECT contract, dataset, SUM(points), MIN(first_ns), MAX(last_ns) FROM releases "
                                 "GROUP BY contract, dataset").fetchall()
    assert [row[:3] for row in audited] == [("mdcg-2026-017", "press-01", entry["points_released"])]
    # a window counts with its whole length
    assert min(windows) * 1_000_000 <= audited[0][3] < audited[0][4] < (end.timestamp() + WINDOW_S) * S
    table = _mos_agent("sharing", "-c", str(config))
    assert table.returncode == 0 and "mdcg-2026-017" in table.stdout and "expired" in table.stdout

    # the consumer's view of the catalogue names the datasets by the pseudonyms the data carry
    view = _mos_agent("catalog", "-c", str(config), "--for", "mdcg-2026-017")
    assert view.returncode == 0, view.stderr
    assert not any(real in view.stdout for real in ("changwon", "stamping", "line-1", "cell-2", "press-01"))
    graph = Graph().parse(data=view.stdout, format="json-ld")
    (dataset,) = graph.subjects(RDF.type, URIRef("http://www.w3.org/ns/dcat#Dataset"))
    assert str(graph.value(dataset, URIRef("http://purl.org/dc/terms/identifier"))) == "/".join(names.values())
