"""`mos-agent catalog`: DCAT JSON-LD that RDF tools read, no secrets or addresses in it, the unit
mapping, and observations read back from a real VictoriaMetrics."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from rdflib import BNode, Graph, Literal, Namespace, URIRef

# the module, not its names: pytest probes test-module globals, which rdflib's closed namespaces warn about
from rdflib import namespace as ns

from mos_agent import units
from mos_agent.batch import ReadingBatch
from mos_agent.catalog.jsonld import CATEGORY_LABELS_KO, MOS_NS, STAGE_LABELS_KO, iso_duration, xsd_type_for
from mos_agent.cli import main as cli_main
from mos_agent.config.loader import load_config
from mos_agent.driver_api import build_series_table
from mos_agent.localservers import free_port
from mos_agent.normalise import Normaliser
from mos_agent.taxonomy import DEFAULT_STAGES, RECORD_CATEGORIES, Quality
from tests.support.servers import StoreReader, VictoriaMetrics

# rdflib's own JSON-LD parser still builds a ConjunctiveGraph internally
pytestmark = pytest.mark.filterwarnings("ignore:ConjunctiveGraph is deprecated:DeprecationWarning")

MOS = Namespace(MOS_NS)
DQV = Namespace("http://www.w3.org/ns/dqv#")
ISA_95_URI = URIRef("https://webstore.iec.ch/publication/6675")

# Every one of these is in the configuration; none may appear in the catalogue.
SECRETS = {
    "sink token": "tok-SECRET-4242",
    "token file content": "tokfile-SECRET-9191",
    "sink host": "10.99.88.77",
    "sink port": "18086",
    "org": "secret-org-name",
    "bucket": "secret-bucket-name",
    "health port": "19751",
    "modbus host": "10.23.45.67",
    "modbus port": "15021",
    "modbus address": "hr:4711",
    "modbus address number": "4711",
    "coil address": "co:4731",
    "opc ua endpoint host": "cnc-host.plant.local",
    "opc ua port": "48410",
    "opc ua endpoint path": "secret-ua-path",
    "opc ua node id": "ns=2;s=SecretSpindleNode",
    "opc ua node name": "SecretSpindleNode",
    "opc ua browse folder": "ns=3;s=SecretAxesFolder",
    "opc ua user": "opc-user-name",
    "opc ua password": "pw-OPC-secret",
    "mqtt host": "10.11.12.13",
    "mqtt port": "18883",
    "mqtt user": "mqtt-user-name",
    "mqtt password": "pw-MQTT-secret",
    "mqtt topic": "secret-topic",
    "mqtt json path": "temperature_secret_key",
    "client id": "secret-client-id",
}


def write_plant(root: Path, *, catalog: bool = True, extra_devices: dict[str, str] | None = None) -> Path:
    """An agent file with three devices (Modbus, OPC UA, MQTT) full of addresses and secrets."""
    (root / "devices").mkdir(parents=True, exist_ok=True)
    (root / "secrets").mkdir(exist_ok=True)
    (root / "secrets" / "influx.token").write_text(SECRETS["token file content"] + "\n")
    (root / "secrets" / "opc.password").write_text(SECRETS["opc ua password"] + "\n")
    (root / "secrets" / "mqtt.password").write_text(SECRETS["mqtt password"] + "\n")
    catalog_section = """
catalog:
  publisher: ACME Automotive Parts
  contact: data-office@acme.example
  license: https://acme.example/data-licence
  policy: Shared only under a signed data-use agreement through the innovation data centre.
  title: {en: "ACME Changwon line", ko: "ACME 창원 라인"}
  base_uri: https://data.acme.example/mos/
""" if catalog else ""
    agent = root / "agent.yaml"
    agent.write_text(f"""
agent:
  id: gw-test-01
  enterprise: acme
  site: changwon
  state_dir: {root / "state"}
  health: 127.0.0.1:{SECRETS["health port"]}
devices: devices/*.yaml
sinks:
  - type: influxdb
    url: http://{SECRETS["sink host"]}:{SECRETS["sink port"]}
    org: {SECRETS["org"]}
    bucket: {SECRETS["bucket"]}
    token: ${{MOS_CATALOG_TEST_TOKEN}}
  - type: influxdb
    name: second
    url: http://{SECRETS["sink host"]}:{SECRETS["sink port"]}
    bucket: {SECRETS["bucket"]}
    token_file: {root / "secrets" / "influx.token"}
{catalog_section}""")
    (root / "devices" / "press-01.yaml").write_text(f"""
name: press-01
driver: modbus
asset: {{area: stamping, line: line-1, cell: cell-2}}
stage: forming
title: {{en: "Stamping press 1", ko: "프레스 1호기"}}
description: {{en: "800 t servo press", ko: "800톤 서보 프레스"}}
connection: {{host: {SECRETS["modbus host"]}, port: {SECRETS["modbus port"]}, unit_id: 7, timeout: 1s}}
poll_interval: 500ms
tags:
  - {{name: hydraulic_pressure, address: "{SECRETS["modbus address"]}", type: float32, scale: 0.1, unit: bar,
     category: process}}
  - {{name: stroke_count, address: "hr:4721", type: uint32, category: production}}
  - {{name: running, address: "{SECRETS["coil address"]}", type: bool, category: equipment_state}}
""")
    (root / "devices" / "cnc-01.yaml").write_text(f"""
name: cnc-01
driver: opcua
asset: {{area: machining, line: line-1}}
stage: machining
connection:
  endpoint: opc.tcp://{SECRETS["opc ua endpoint host"]}:{SECRETS["opc ua port"]}/{SECRETS["opc ua endpoint path"]}
  username: {SECRETS["opc ua user"]}
  password_file: {root / "secrets" / "opc.password"}
  allow_plaintext_password: true
mode: poll
poll_interval: 250ms
tags:
  - {{name: spindle_speed, node: "{SECRETS["opc ua node id"]}", unit: /min, category: process}}
  - {{name: spindle_load, node: "ns=2;s=Load", unit: "%", category: process, description: "spindle motor load"}}
  - {{name: program, node: "ns=2;s=Program", type: enum, category: production}}
browse:
  - {{node: "{SECRETS["opc ua browse folder"]}", depth: 2, category: maintenance, prefix: axes, unit: Cel}}
""")
    (root / "devices" / "env-sensors.yaml").write_text(f"""
name: env-sensors
driver: mqtt
asset: {{area: utilities}}
stage: utility
poll_interval: 5s
connection:
  host: {SECRETS["mqtt host"]}
  port: {SECRETS["mqtt port"]}
  client_id: {SECRETS["client id"]}
  username: {SECRETS["mqtt user"]}
  password_file: {root / "secrets" / "mqtt.password"}
tags:
  - {{name: temperature, topic: "acme/{SECRETS["mqtt topic"]}/{{equipment}}/env",
     json: $.{SECRETS["mqtt json path"]}, unit: Cel, category: environment}}
  - {{name: status, topic: "acme/{SECRETS["mqtt topic"]}/status", type: string, category: maintenance}}
""")
    for name, text in (extra_devices or {}).items():
        (root / "devices" / f"{name}.yaml").write_text(text)
    return agent


@pytest.fixture
def plant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MOS_CATALOG_TEST_TOKEN", SECRETS["sink token"])
    return write_plant(tmp_path / "plant")


def run_catalog(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_main(["catalog", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def catalogue_graph(capsys: pytest.CaptureFixture[str], config: Path, *extra: str) -> tuple[Graph, str]:
    code, out, err = run_catalog(capsys, "-c", str(config), *extra)
    assert code == 0, err
    json.loads(out)  # plain JSON first: a JSON-LD error message would hide a JSON syntax error
    return Graph().parse(data=out, format="json-ld"), out


def datasets_by_identifier(graph: Graph) -> dict[str, URIRef]:
    return {str(graph.value(ds, ns.DCTERMS.identifier)): ds for ds in graph.subjects(ns.RDF.type, ns.DCAT.Dataset)}


def test_catalogue_is_a_dcat_catalogue_with_one_dataset_per_device(plant: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    graph, _ = catalogue_graph(capsys, plant)

    catalogs = list(graph.subjects(ns.RDF.type, ns.DCAT.Catalog))
    assert catalogs == [URIRef("https://data.acme.example/mos/catalog/gw-test-01")]
    catalog = catalogs[0]
    assert Literal("ACME 창원 라인", lang="ko") in set(graph.objects(catalog, ns.DCTERMS.title))
    assert (catalog, ns.DCTERMS.issued, None) in graph
    publisher = graph.value(catalog, ns.DCTERMS.publisher)
    assert graph.value(publisher, URIRef("http://xmlns.com/foaf/0.1/name")) == Literal("ACME Automotive Parts")
    contact = graph.value(catalog, ns.DCAT.contactPoint)
    assert graph.value(contact, URIRef("http://www.w3.org/2006/vcard/ns#hasEmail")) == \
        URIRef("mailto:data-office@acme.example")
    assert graph.value(catalog, ns.DCTERMS.license) == URIRef("https://acme.example/data-licence")
    rights_text = " ".join(str(o) for o in graph.objects(graph.value(catalog, ns.DCTERMS.accessRights), None))
    assert "only under a contract" in rights_text
    assert "signed data-use agreement" in rights_text

    datasets = datasets_by_identifier(graph)
    assert set(datasets) == {
        "acme/changwon/stamping/line-1/cell-2/press-01",
        "acme/changwon/machining/line-1/cnc-01",
        "acme/changwon/utilities/env-sensors",
    }
    assert set(graph.objects(catalog, ns.DCAT.dataset)) == set(datasets.values())
    press = datasets["acme/changwon/stamping/line-1/cell-2/press-01"]
    assert press == URIRef("https://data.acme.example/mos/dataset/acme/changwon/stamping/line-1/cell-2/press-01")

    titles = set(graph.objects(press, ns.DCTERMS.title))
    assert Literal("프레스 1호기", lang="ko") in titles
    assert Literal("Stamping press 1", lang="en") in titles
    assert Literal("800톤 서보 프레스", lang="ko") in set(graph.objects(press, ns.DCTERMS.description))
    # no title configured: a generated English one
    assert set(graph.objects(datasets["acme/changwon/machining/line-1/cnc-01"], ns.DCTERMS.title)) == {
        Literal("cnc-01 (machining, machining/line-1)", lang="en")}

    assert graph.value(press, MOS.assetPath) == Literal("acme/changwon/stamping/line-1/cell-2/press-01")
    assert graph.value(press, MOS.stage) == Literal("forming")
    for level, name in (("enterprise", "acme"), ("site", "changwon"), ("area", "stamping"), ("line", "line-1"),
                        ("cell", "cell-2"), ("equipment", "press-01")):
        assert graph.value(press, MOS[level]) == Literal(name)
    keywords = {str(k) for k in graph.objects(press, ns.DCAT.keyword)}
    assert {"forming", "성형", "process", "production", "equipment_state", "Modbus", "stamping"} <= keywords

    themes = set(graph.objects(press, ns.DCAT.theme))
    assert themes == {MOS["category-process"], MOS["category-production"], MOS["category-equipment_state"]}
    for theme in themes:
        assert (theme, ns.RDF.type, ns.SKOS.Concept) in graph
        assert (theme, ns.SKOS.inScheme, MOS.categories) in graph
        assert {lit.language for lit in graph.objects(theme, ns.SKOS.prefLabel)} == {"en", "ko"}
    assert (catalog, ns.DCAT.themeTaxonomy, MOS.categories) in graph

    resolutions = {ident: graph.value(ds, ns.DCAT.temporalResolution) for ident, ds in datasets.items()}
    assert resolutions == {
        "acme/changwon/stamping/line-1/cell-2/press-01": Literal("PT0.5S", datatype=ns.XSD.duration),
        "acme/changwon/machining/line-1/cnc-01": Literal("PT0.25S", datatype=ns.XSD.duration),
        "acme/changwon/utilities/env-sensors": Literal("PT5S", datatype=ns.XSD.duration),
    }

    for ds in datasets.values():
        assert ISA_95_URI in set(graph.objects(ds, ns.DCTERMS.conformsTo))
        assert len(set(graph.objects(ds, ns.DCTERMS.conformsTo))) == 2  # ISA-95 and the protocol
        for standard in graph.objects(ds, ns.DCTERMS.conformsTo):
            assert (standard, ns.RDF.type, ns.DCTERMS.Standard) in graph
            assert graph.value(standard, ns.DCTERMS.title) is not None
    protocol_titles = {
        ident: " ".join(str(graph.value(s, ns.DCTERMS.title)) for s in graph.objects(ds, ns.DCTERMS.conformsTo)
                        if s != ISA_95_URI)
        for ident, ds in datasets.items()
    }
    assert "62541" in protocol_titles["acme/changwon/machining/line-1/cnc-01"]
    assert "MODBUS" in protocol_titles["acme/changwon/stamping/line-1/cell-2/press-01"].upper()
    assert "20922" in protocol_titles["acme/changwon/utilities/env-sensors"]


def _variables(graph: Graph, dataset: URIRef) -> dict[str, URIRef]:
    return {str(graph.value(v, MOS.tagName)): v for v in graph.objects(dataset, MOS.variable)}


def test_variables_carry_category_kind_unit_and_data_type(plant: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph, _ = catalogue_graph(capsys, plant)
    datasets = datasets_by_identifier(graph)

    press = _variables(graph, datasets["acme/changwon/stamping/line-1/cell-2/press-01"])
    assert set(press) == {"hydraulic_pressure", "stroke_count", "running"}
    pressure = press["hydraulic_pressure"]
    assert (pressure, ns.RDF.type, MOS.Variable) in graph
    assert graph.value(pressure, MOS.category) == MOS["category-process"]
    assert graph.value(pressure, MOS.kind) == Literal("sample")
    assert graph.value(pressure, MOS.ucumCode) == Literal("bar")
    assert graph.value(pressure, MOS.uneceCode) == Literal("BAR")
    assert graph.value(press["running"], MOS.kind) == Literal("event")  # equipment_state's default kind
    assert graph.value(press["running"], MOS.uneceCode) is None  # no unit configured

    # The data type is the driver's own (tag.data_type()), mapped to XML Schema.
    plant_config = load_config(plant)
    by_name = {d.name: d for d in plant_config.devices}
    for device_name, ident in (("press-01", "acme/changwon/stamping/line-1/cell-2/press-01"),
                               ("cnc-01", "acme/changwon/machining/line-1/cnc-01"),
                               ("env-sensors", "acme/changwon/utilities/env-sensors")):
        variables = _variables(graph, datasets[ident])
        for tag in by_name[device_name].tags:
            node = variables[tag.name]
            assert graph.value(node, MOS.dataType) == Literal(tag.data_type())
            expected = xsd_type_for(tag.data_type())
            assert expected is not None, tag.data_type()
            assert graph.value(node, MOS.valueType) == ns.XSD[expected.removeprefix("xsd:")]

    # The browse folder's variables are discovered at connect time: published as a template.
    cnc_ds = datasets["acme/changwon/machining/line-1/cnc-01"]
    (template,) = graph.objects(cnc_ds, MOS.discoveredVariables)
    assert graph.value(template, MOS.category) == MOS["category-maintenance"]
    assert graph.value(template, MOS.namePrefix) == Literal("axes")
    assert graph.value(template, MOS.uneceCode) == Literal("CEL")
    assert MOS["category-maintenance"] in set(graph.objects(cnc_ds, ns.DCAT.theme))

    env = _variables(graph, datasets["acme/changwon/utilities/env-sensors"])
    assert graph.value(env["status"], MOS.field) == Literal("text")
    assert graph.value(env["temperature"], MOS.field) == Literal("value")
    cnc = _variables(graph, datasets["acme/changwon/machining/line-1/cnc-01"])
    assert graph.value(cnc["spindle_load"], ns.DCTERMS.description) == Literal("spindle motor load")


def test_no_secret_or_address_reaches_the_catalogue(plant: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_catalog(capsys, "-c", str(plant))
    assert code == 0, err
    leaked = {what: value for what, value in SECRETS.items() if value in out}
    assert leaked == {}
    # no file path of any kind: the config directory holds the state dir, secrets and device files
    assert str(plant.parent) not in out
    assert "/" + plant.parent.name not in out
    assert ".yaml" not in out and "opc.tcp" not in out and "password" not in out.lower()


def test_every_unit_in_the_table_is_mapped_to_its_unece_code(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    all_units = list(units.UNITS.values())
    tags = "\n".join(
        f'  - {{name: "t{i}", topic: "plant/u/{i}", unit: "{unit.ucum}", category: process}}'
        for i, unit in enumerate(all_units))
    root = tmp_path / "units"
    (root / "devices").mkdir(parents=True)
    (root / "devices" / "all-units.yaml").write_text(
        "name: all-units\ndriver: mqtt\nasset: {area: lab}\nstage: inspection\n"
        "connection: {host: 127.0.0.1}\ntags:\n" + tags + "\n")
    (root / "agent.yaml").write_text(
        f"agent: {{id: gw-units, site: lab-site, state_dir: {root / 'state'}}}\ndevices: devices/*.yaml\n")
    graph, _ = catalogue_graph(capsys, root / "agent.yaml")

    (dataset,) = graph.subjects(ns.RDF.type, ns.DCAT.Dataset)
    variables = _variables(graph, dataset)
    mapping = {str(graph.value(v, MOS.ucumCode)): str(graph.value(v, MOS.uneceCode)) for v in variables.values()}
    assert mapping == {unit.ucum: unit.unece for unit in all_units}
    assert len(variables) == len(all_units)


def test_no_catalog_section_still_gives_a_complete_catalogue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MOS_CATALOG_TEST_TOKEN", SECRETS["sink token"])
    config = write_plant(tmp_path / "bare", catalog=False, extra_devices={"spare": """
name: spare-press
driver: modbus
enabled: false
asset: {area: stamping}
stage: forming
connection: {host: 127.0.0.1, port: 502}
tags:
  - {name: pressure, address: "hr:0", type: float32, category: process}
"""})
    graph, _ = catalogue_graph(capsys, config)
    (catalog,) = graph.subjects(ns.RDF.type, ns.DCAT.Catalog)
    assert str(catalog).startswith("urn:mos-agent:")
    assert graph.value(graph.value(catalog, ns.DCTERMS.publisher), URIRef("http://xmlns.com/foaf/0.1/name")) == \
        Literal("acme")
    assert any(lit.language == "en" for lit in graph.objects(catalog, ns.DCTERMS.title))
    assert (catalog, ns.DCTERMS.accessRights, None) in graph
    # the disabled device is not published
    assert "acme/changwon/stamping/spare-press" not in datasets_by_identifier(graph)
    assert len(datasets_by_identifier(graph)) == 3


def test_configuration_errors_exit_2_with_located_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MOS_CATALOG_TEST_TOKEN", SECRETS["sink token"])
    config = write_plant(tmp_path / "broken", extra_devices={"bad": """
name: bad-device
driver: modbus
asset: {area: stamping}
stage: forming
connection: {host: 127.0.0.1, port: 502}
tags:
  - {name: pressure, address: "hr:0", type: float32, category: proces}
"""})
    code, out, err = run_catalog(capsys, "-c", str(config))
    assert code == 2
    assert out == ""
    assert "bad.yaml:" in err and "proces" in err


def test_bad_since_is_a_usage_error(plant: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_catalog(capsys, "-c", str(plant), "--store-url", "http://127.0.0.1:1", "--since", "soon")
    assert code == 2
    assert out == "" and len(err.strip().splitlines()) == 1


def test_unreachable_store_fails_with_one_line(plant: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    code, out, err = run_catalog(capsys, "-c", str(plant), "--store-url", f"http://store-user:pw-STORE@127.0.0.1:{port}")
    assert code == 1
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert f"127.0.0.1:{port}" in err
    assert "pw-STORE" not in err and "store-user" not in err


# ---------------------------------------------------------------- observations from a real store


def _write(url: str, body: bytes) -> None:
    with InfluxDBClient(url=url, token="unused", org="unused") as client:
        client.write_api(write_options=SYNCHRONOUS).write(bucket="factory", record=body,
                                                          write_precision=WritePrecision.NS)


def test_store_observations_count_points_and_quality_shares(plant: Path, victoria: VictoriaMetrics,
                                                            store: StoreReader,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    loaded = load_config(plant)
    press = next(d for d in loaded.devices if d.name == "press-01")
    table = build_series_table(loaded.agent.agent, press)
    normaliser = Normaliser(table)

    # 3 tags × 20 polls, 500 ms apart, ending a minute ago: 48 good, 6 uncertain, 6 bad readings.
    polls = 20
    start_ms = (time.time_ns() // 1_000_000) - 60_000 - polls * 500
    series, values, stamps, quality = [], [], [], []
    for poll in range(polls):
        for tag in range(3):
            series.append(tag)
            values.append(float(poll * 10 + tag))  # always moving: nothing is held back by a deadband
            stamps.append((start_ms + poll * 500) * 1_000_000)
            quality.append(Quality.BAD if poll in (3, 4) else Quality.UNCERTAIN if poll in (7, 8) else Quality.GOOD)
    batch = ReadingBatch.build(series, values, stamps, quality, [1001 if q == Quality.BAD else 0 for q in quality],
                               source_time=True)
    chunk = normaliser.process(batch)
    assert chunk.points == 60
    # Older points outside the --since window must not be counted.
    # Source times: without them the normaliser keeps each series' acquisition times increasing.
    old = normaliser.process(ReadingBatch.build([0, 1], [1.0, 2.0], (start_ms - 7_200_000) * 1_000_000,
                                                source_time=True))
    assert old.points == 2
    _write(victoria.url, chunk.body + old.body)
    # one row a point: good and uncertain ones by their value (code 0 is not written), bad ones by
    # their code
    assert store.wait_for_count(62, '{__name__=~".+_value|.+_quality_code"}') == 62

    graph, _ = catalogue_graph(capsys, plant, "--store-url", victoria.url, "--since", "1h")
    datasets = datasets_by_identifier(graph)
    press_ds = datasets["acme/changwon/stamping/line-1/cell-2/press-01"]

    measurements = {graph.value(m, DQV.isMeasurementOf): graph.value(m, DQV.value)
                    for m in graph.objects(press_ds, DQV.hasQualityMeasurement)}
    assert measurements[MOS.pointCount] == Literal(60, datatype=ns.XSD.integer)
    assert float(measurements[MOS.goodShare].toPython()) == pytest.approx(48 / 60, abs=1e-6)
    assert float(measurements[MOS.uncertainShare].toPython()) == pytest.approx(6 / 60, abs=1e-6)
    assert float(measurements[MOS.badShare].toPython()) == pytest.approx(6 / 60, abs=1e-6)
    assert measurements[MOS.goodShare].datatype == ns.XSD.decimal

    period = graph.value(press_ds, ns.DCTERMS.temporal)
    assert isinstance(period, BNode)
    start = graph.value(period, ns.DCAT.startDate)
    end = graph.value(period, ns.DCAT.endDate)
    assert start.datatype == ns.XSD.dateTime and end.datatype == ns.XSD.dateTime
    assert round(start.toPython().timestamp() * 1000) == start_ms
    assert round(end.toPython().timestamp() * 1000) == start_ms + (polls - 1) * 500
    assert graph.value(press_ds, MOS.observationWindow) == Literal("PT1H", datatype=ns.XSD.duration)

    # A device with nothing in the store: a count of zero, no time range, no shares.
    cnc = datasets["acme/changwon/machining/line-1/cnc-01"]
    cnc_measurements = {graph.value(m, DQV.isMeasurementOf): graph.value(m, DQV.value)
                        for m in graph.objects(cnc, DQV.hasQualityMeasurement)}
    assert cnc_measurements == {MOS.pointCount: Literal(0, datatype=ns.XSD.integer)}
    assert graph.value(cnc, ns.DCTERMS.temporal) is None

    # A wider window takes in the two older points.
    graph, out = catalogue_graph(capsys, plant, "--store-url", victoria.url, "--since", "3h")
    press_ds = datasets_by_identifier(graph)["acme/changwon/stamping/line-1/cell-2/press-01"]
    counts = {graph.value(m, DQV.isMeasurementOf): graph.value(m, DQV.value)
              for m in graph.objects(press_ds, DQV.hasQualityMeasurement)}
    assert counts[MOS.pointCount] == Literal(62, datatype=ns.XSD.integer)
    assert victoria.url not in out and str(victoria.port) not in out


def test_store_behind_basic_auth(plant: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = VictoriaMetrics.start(tmp_path / "vm-auth",
                                   extra_args=["-httpAuth.username=reader", "-httpAuth.password=pw-VM-secret"])
    try:
        code, out, err = run_catalog(capsys, "-c", str(plant), "--store-url", server.url)
        assert code == 1 and "401" in err and out == ""
        graph, out = catalogue_graph(capsys, plant, "--store-url",
                                     f"http://reader:pw-VM-secret@127.0.0.1:{server.port}")
        assert "pw-VM-secret" not in out
        (press_ds,) = [ds for ident, ds in datasets_by_identifier(graph).items() if ident.endswith("press-01")]
        assert (press_ds, DQV.hasQualityMeasurement, None) in graph
    finally:
        server.stop()


# ---------------------------------------------------------------- helpers


@pytest.mark.parametrize(("seconds", "expected"), [
    (0.5, "PT0.5S"), (1.0, "PT1S"), (0.1, "PT0.1S"), (0.001, "PT0.001S"), (90, "PT1M30S"), (3600, "PT1H"),
    (86400, "P1D"), (30 * 86400, "P30D"), (93784.25, "P1DT2H3M4.25S"), (0.1 * 3, "PT0.3S"),
])
def test_iso_durations(seconds: float, expected: str) -> None:
    assert iso_duration(seconds) == expected


def test_korean_labels_cover_the_taxonomy() -> None:
    assert set(CATEGORY_LABELS_KO) == set(RECORD_CATEGORIES)
    assert set(STAGE_LABELS_KO) == set(DEFAULT_STAGES)
