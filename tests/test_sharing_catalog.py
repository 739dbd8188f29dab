"""The catalogue's ODRL policies, parsed with rdflib: an offer without permission where no
contract covers a dataset, the contract's agreement where one does; ``catalog --for`` shows the
consumer's view with the pseudonyms the released data carry; ``mos-agent sharing`` reports."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rdflib import Graph, Literal, Namespace
from rdflib import namespace as ns

from mos_agent.cli import main as cli_main
from mos_agent.sharing.ledger import AuditEntry, Ledger
from mos_agent.sharing.pseudonyms import Pseudonymiser, load_or_create_key

pytestmark = pytest.mark.filterwarnings("ignore:ConjunctiveGraph is deprecated:DeprecationWarning")

ODRL = Namespace("http://www.w3.org/ns/odrl/2/")
FOAF = Namespace("http://xmlns.com/foaf/0.1/")
MOS = Namespace("https://w3id.org/mos-agent/ns#")
REAL_NAMES = ("gw-sharing-07", "yeosu", "stampingshop", "machinehall", "dryhall", "pressline", "cellnorth",
              "press-01", "cnc-01", "cnc-02", "dryer-01")

DEVICE = """\
name: {name}
driver: modbus
asset: {{area: {area}, line: {line}{cell}}}
stage: {stage}
title: {{en: "{name} in {area}"}}
connection: {{host: 127.0.0.1, port: 5020, unit_id: 1}}
tags:
  - {{name: pressure, address: "hr:0", type: float32, unit: bar, category: process, description: "{name} oil"}}
  - {{name: strokes, address: "hr:2", type: uint32, category: production}}
  - {{name: power, address: "hr:4", type: float32, unit: kW, category: energy}}
"""


def write_plant(root: Path) -> Path:
    (root / "devices").mkdir(parents=True)
    (root / "contracts").mkdir()
    for name, area, line, cell, stage in (("press-01", "stampingshop", "pressline", "cellnorth", "forming"),
                                          ("cnc-01", "machinehall", "pressline", "", "machining"),
                                          ("cnc-02", "machinehall", "pressline", "", "machining"),
                                          ("dryer-01", "dryhall", "pressline", "", "painting")):
        (root / "devices" / f"{name}.yaml").write_text(DEVICE.format(
            name=name, area=area, line=line, cell=f", cell: {cell}" if cell else "", stage=stage))
    (root / "contracts" / "mdcg.yaml").write_text("""\
id: mdcg-2026-017
title: {ko: 프레스 라인 생산 데이터, en: Press line production data}
consumer: MDCG innovation data centre
sink: datacentre
valid: {from: "2026-12-01T00:00:00+09:00", to: "2099-11-30T23:59:59+09:00"}
datasets: [press-01, "cnc-*"]
categories: [production, quality, energy, equipment_state, kpi]
resolution: 1m
pseudonymise: true
""")
    (root / "contracts" / "later.yaml").write_text("""\
id: later-2098
consumer: University lab
sink: datacentre
valid: {from: 2098-01-01, to: 2098-12-31}
datasets: [cnc-02]
""")
    (root / "contracts" / "old.yaml").write_text("""\
id: old-2020
consumer: Former partner
sink: datacentre
valid: {from: 2020-01-01, to: 2020-12-31}
datasets: [dryer-01, press-01]
""")
    agent = root / "agent.yaml"
    agent.write_text(f"""\
agent:
  id: gw-sharing-07
  enterprise: acme
  site: yeosu
  state_dir: {root / "state"}
sinks:
  - {{type: influxdb, name: datacentre, share: contracts, url: "http://127.0.0.1:1", bucket: shared}}
sharing: {{contracts: contracts/*.yaml}}
""")
    return agent


def catalogue(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[Graph, str]:
    code = cli_main(["catalog", *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    json.loads(out)
    return Graph().parse(data=out, format="json-ld"), out


def policies(graph: Graph) -> dict[str, list]:
    return {str(graph.value(ds, ns.DCTERMS.identifier)): list(graph.objects(ds, ODRL.hasPolicy))
            for ds in graph.subjects(ns.RDF.type, ns.DCAT.Dataset)}


def test_datasets_carry_an_offer_or_their_contracts_agreement(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    graph, _ = catalogue(capsys, "-c", str(write_plant(tmp_path)))
    by_dataset = policies(graph)
    assert set(by_dataset) == {"acme/yeosu/stampingshop/pressline/cellnorth/press-01",
                               "acme/yeosu/machinehall/pressline/cnc-01", "acme/yeosu/machinehall/pressline/cnc-02",
                               "acme/yeosu/dryhall/pressline/dryer-01"}

    # no contract covers the dryer (its only one expired): an offer that permits nothing
    (offer,) = by_dataset["acme/yeosu/dryhall/pressline/dryer-01"]
    assert (offer, ns.RDF.type, ODRL.Offer) in graph
    assert graph.value(offer, ODRL.permission) is None

    (agreement,) = by_dataset["acme/yeosu/stampingshop/pressline/cellnorth/press-01"]
    assert (agreement, ns.RDF.type, ODRL.Agreement) in graph
    assert graph.value(agreement, ODRL.uid) == Literal("mdcg-2026-017")
    publisher = graph.value(next(graph.subjects(ns.RDF.type, ns.DCAT.Catalog)), ns.DCTERMS.publisher)
    assert graph.value(agreement, ODRL.assigner) == publisher
    assert graph.value(graph.value(agreement, ODRL.assignee), FOAF.name) == Literal("MDCG innovation data centre")
    permission = graph.value(agreement, ODRL.permission)
    assert graph.value(permission, ODRL.action) == ODRL.use
    targets = set(graph.objects(permission, ODRL.target))
    assert len(targets) == 3 and all((t, ns.RDF.type, ns.DCAT.Dataset) in graph for t in targets)
    bounds = {}
    for constraint in graph.objects(permission, ODRL.constraint):
        assert graph.value(constraint, ODRL.leftOperand) == ODRL.dateTime
        right = graph.value(constraint, ODRL.rightOperand)
        assert right.datatype == ns.XSD.dateTime
        bounds[graph.value(constraint, ODRL.operator)] = right.toPython()
    assert bounds == {ODRL.gteq: datetime(2026, 11, 30, 15, 0, tzinfo=UTC),
                      ODRL.lteq: datetime(2099, 11, 30, 14, 59, 59, tzinfo=UTC)}
    categories = {str(c).removeprefix(str(MOS) + "category-") for c in graph.objects(permission, MOS.releasedCategory)}
    assert categories == {"production", "quality", "energy", "equipment_state", "kpi"}
    assert str(graph.value(permission, MOS.resolution)) == "PT1M"

    # overlapping: cnc-02 carries the active and the pending contract's agreements
    uids = {str(graph.value(p, ODRL.uid)) for p in by_dataset["acme/yeosu/machinehall/pressline/cnc-02"]}
    assert uids == {"mdcg-2026-017", "later-2098"}


def test_catalogue_for_a_contract_is_the_consumers_view_with_pseudonyms(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    agent = write_plant(tmp_path)
    graph, text = catalogue(capsys, "-c", str(agent), "--for", "mdcg-2026-017")
    for name in REAL_NAMES:
        assert name not in text, name
    key = load_or_create_key(tmp_path / "state")  # the agent's key, made by the catalogue on first use
    pseudonyms = Pseudonymiser(key).levels({"site": "yeosu", "area": "stampingshop", "line": "pressline",
                                            "cell": "cellnorth", "equipment": "press-01"})
    by_dataset = policies(graph)
    assert len(by_dataset) == 3  # only what the contract releases
    press = f"acme/{'/'.join(pseudonyms[k] for k in ('site', 'area', 'line', 'cell', 'equipment'))}"
    (agreement,) = by_dataset[press]
    assert graph.value(agreement, ODRL.uid) == Literal("mdcg-2026-017")
    assert len(list(graph.subjects(ns.RDF.type, ODRL.Agreement))) == 1  # no other consumer's contract
    variables = {str(graph.value(v, MOS.tagName)) for v in graph.subjects(ns.RDF.type, MOS.Variable)}
    assert variables == {"strokes", "power"}  # process is not released


def test_catalogue_for_an_unknown_contract_is_a_usage_error(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["catalog", "-c", str(write_plant(tmp_path)), "--for", "mdcg-2026-18"])
    assert code == 2
    assert "mdcg-2026-18" in capsys.readouterr().err


def test_sharing_command_reports_status_datasets_and_releases(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    agent = write_plant(tmp_path)
    ledger = Ledger(tmp_path / "state")
    released_at = 1_796_083_200_000_000_000
    ledger.record("datacentre", audit={("mdcg-2026-017", "press-01"): AuditEntry(40, released_at - 60 * 10**9,
                                                                                released_at - 1),
                                       ("mdcg-2026-017", "cnc-01"): AuditEntry(2, released_at - 60 * 10**9,
                                                                              released_at - 1)},
                  closed_before={}, processed_row=7, checkpoint=None, now_ns=released_at)
    ledger.close()
    assert cli_main(["sharing", "-c", str(agent), "--json"]) == 0
    report = {c["id"]: c for c in json.loads(capsys.readouterr().out)["contracts"]}
    assert {k: report[k]["status"] for k in report} == {"mdcg-2026-017": "active", "later-2098": "pending",
                                                       "old-2020": "expired"}
    active = report["mdcg-2026-017"]
    assert active["datasets"] == ["cnc-01", "cnc-02", "press-01"]
    assert active["points_released"] == 42 and active["points_by_dataset"] == {"cnc-01": 2, "press-01": 40}
    assert active["last_release"] == "2026-12-01T00:00:00.000Z"
    assert report["later-2098"]["points_released"] == 0 and report["later-2098"]["last_release"] is None
    assert cli_main(["sharing", "-c", str(agent)]) == 0
    table = capsys.readouterr().out
    assert "mdcg-2026-017" in table and "expired" in table and "42" in table
