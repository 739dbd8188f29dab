"""Device profiles: a profile file's keys are the defaults of every device naming it, tags merge by
name, and each mistake is reported in the file that holds it (the profile's once, with the devices
it concerns). Reload with a changed profile is in test_service.py; the mistakes `validate` reports
are also in validate_cases/profile-*."""

from __future__ import annotations

from pathlib import Path

import pytest

from mos_agent import cli
from mos_agent.catalog import build_catalog
from mos_agent.config.loader import ConfigErrors, load_config, load_device_file

PROFILE = """\
# what every press of this model has
profile: press-v2
driver: modbus
poll_interval: 500ms
connection: {host: 10.0.0.1, port: 502, timeout: 2s}
tags:
  - {name: hydraulic_pressure, address: "hr:0", type: float32, scale: 0.1, unit: bar, category: process}
  - {name: stroke_count, address: "hr:10", type: uint32, category: production}
  - {name: running, address: "co:0", type: bool, category: equipment_state}
"""

PRESS_03 = """\
name: press-03
profile: ../profiles/press-v2.yaml   # relative to this file
asset: {area: stamping, line: line-1, cell: cell-3}
stage: forming
connection: {host: 10.0.0.13, port: 502, unit_id: 1}
tags:
  - {name: hydraulic_pressure, address: "hr:0", type: float32, scale: 0.01, unit: bar, category: process}
  - {name: oil_temperature, address: "hr:20", type: int16, scale: 0.1, unit: Cel, category: process}
exclude: [running]
"""

PRESS_04 = """\
name: press-04
profile: ../profiles/press-v2.yaml
asset: {area: stamping, line: line-1, cell: cell-4}
stage: forming
"""


def _plant(tmp_path: Path, profile: str = PROFILE, **devices: str) -> Path:
    (tmp_path / "devices").mkdir()
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "press-v2.yaml").write_text(profile)
    for name, text in (devices or {"press-03": PRESS_03, "press-04": PRESS_04}).items():
        (tmp_path / "devices" / f"{name}.yaml").write_text(text)
    agent = tmp_path / "agent.yaml"
    agent.write_text(f"agent: {{id: gw, enterprise: acme, site: changwon, state_dir: {tmp_path / 'state'}}}\n")
    return agent


def _problems(agent: Path) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        load_config(agent)
    return [str(p).replace(f"{agent.parent}/", "") for p in caught.value.problems]


def test_merge_replaces_adds_excludes_and_device_keys_override(tmp_path: Path) -> None:
    loaded = load_config(_plant(tmp_path))
    press_03, press_04 = loaded.devices
    # replaced in place, the profile's next tag, then the device's own; 'running' excluded
    assert [(t.name, t.scale) for t in press_03.tags] == [
        ("hydraulic_pressure", 0.01), ("stroke_count", 1.0), ("oil_temperature", 0.1)]
    assert [(t.name, t.scale) for t in press_04.tags] == [
        ("hydraulic_pressure", 0.1), ("stroke_count", 1.0), ("running", 1.0)]
    # a device's key replaces the profile's key as a whole; keys it does not write are the profile's
    assert (press_03.connection.host, press_03.connection.unit_id, press_03.connection.timeout) == (
        "10.0.0.13", 1, 1.0)
    assert (press_04.connection.host, press_04.connection.timeout) == ("10.0.0.1", 2.0)
    assert press_03.poll_interval == press_04.poll_interval == 0.5
    assert press_03.driver == "modbus" and press_03.exclude == ["running"]
    assert press_03.profile == tmp_path / "profiles" / "press-v2.yaml"
    info = loaded.profiles["press-v2"]
    assert (info.path, info.devices) == (tmp_path / "profiles" / "press-v2.yaml", ("press-03", "press-04"))


def test_profiles_carry_any_device_level_key(tmp_path: Path) -> None:
    """Whatever a driver adds to its devices, a profile may hold it: here OPC UA's mode, poll and
    browse blocks, none of which the profile machinery names."""
    (tmp_path / "devices").mkdir()
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "cnc.yaml").write_text(
        "profile: cnc-5axis\ndriver: opcua\nmode: poll\npoll: {max_nodes_per_read: 100}\n"
        "browse:\n  - {node: \"ns=2;s=Coolant\", category: process}\n")
    (tmp_path / "devices" / "cnc-01.yaml").write_text(
        "name: cnc-01\nprofile: ../profiles/cnc.yaml\nasset: {area: machining}\nstage: machining\n"
        "connection: {endpoint: \"opc.tcp://10.0.0.21:4840\"}\n")
    (tmp_path / "agent.yaml").write_text("agent: {id: gw, site: s}\n")
    device = load_config(tmp_path / "agent.yaml").devices[0]
    assert (device.mode, device.poll.max_nodes_per_read, [b.node for b in device.browse]) == (
        "poll", 100, ["ns=2;s=Coolant"])


def test_mistakes_in_the_profile_are_reported_once_where_they_are(tmp_path: Path) -> None:
    profile = PROFILE.replace("unit: bar", "unit: barr").replace("poll_interval: 500ms", "poll_intervall: 500ms")
    devices = {f"press-{i:02d}": PRESS_04.replace("press-04", f"press-{i:02d}") for i in range(1, 8)}
    problems = _problems(_plant(tmp_path, profile, **devices))
    assert problems == [
        "profiles/press-v2.yaml:4:1: unknown key 'poll_intervall' (did you mean 'poll_interval'?) "
        "(used by press-01, press-02, press-03, press-04, press-05 and 2 more)",
        "profiles/press-v2.yaml:7:82: tags[0].unit: unknown unit 'barr' (expected a UCUM code from the unit "
        "table; did you mean 'bar'?) (used by press-01, press-02, press-03, press-04, press-05 and 2 more)",
    ]


def test_a_profile_mistake_names_only_the_devices_it_reaches(tmp_path: Path) -> None:
    # press-03 replaces the broken tag and excludes nothing broken; press-04 takes the profile's
    profile = PROFILE.replace("unit: bar", "unit: barr")
    assert _problems(_plant(tmp_path, profile)) == [
        "profiles/press-v2.yaml:7:82: tags[0].unit: unknown unit 'barr' (expected a UCUM code from the unit "
        "table; did you mean 'bar'?) (used by press-04)"]


def test_mistakes_in_a_device_are_reported_at_its_own_lines(tmp_path: Path) -> None:
    device = PRESS_03.replace("unit: Cel", "unit: Celsius").replace("[running]", "[runing, stroke_count]")
    device = device.replace("  - {name: oil", "  - {name: stroke_count, address: \"hr:10\", category: productio}\n"
                                               "  - {name: oil")
    problems = _problems(_plant(tmp_path, press_03=device))
    assert problems == [
        "devices/press_03.yaml:8:54: tags[1].category: unknown category 'productio' (expected one of: process, "
        "quality, equipment_state, production, energy, environment, material, maintenance; did you mean "
        "'production'?)",
        "devices/press_03.yaml:9:78: tags[2].unit: unknown unit 'Celsius' (expected a UCUM code from the unit "
        "table; did you mean 'Cel'?)",
        "devices/press_03.yaml:10:11: exclude[0]: profile press-v2 has no tag 'runing' (did you mean 'running'?)",
        "devices/press_03.yaml:10:19: exclude[1]: 'stroke_count' is excluded and also listed in this file's tags "
        "(tags[1]): keep one",
    ]


def test_device_tag_indices_are_the_device_files_when_the_merge_reorders(tmp_path: Path) -> None:
    # the device lists an added tag before a replacing one: merged, the replacement is tags[2] and
    # the added one tags[3]; the messages count as the device file does
    device = PRESS_04 + ("tags:\n  - {name: extra, address: \"hr:30\", category: process, unit: nope}\n"
                         "  - {name: running, address: \"co:1\", type: bool, category: equipment_stat}\n")
    assert [p.split(": ", 2)[:2] for p in _problems(_plant(tmp_path, press_04=device))] == [
        ["devices/press_04.yaml:6:62", "tags[0].unit"], ["devices/press_04.yaml:7:60", "tags[1].category"]]


def test_profiles_do_not_nest_and_name_no_device(tmp_path: Path) -> None:
    profile = "profile: ../profiles/base.yaml\nname: press\n" + PROFILE.split("\n", 2)[2]
    problems = _problems(_plant(tmp_path, profile))
    assert problems[0].startswith("profiles/press-v2.yaml:1:10: profile: profiles may not nest")
    assert problems[1] == ("profiles/press-v2.yaml:2:1: name: a profile names no device: each device file has its "
                           "own name (used by press-03, press-04)")
    assert len(problems) == 2


def test_exclude_needs_a_profile(tmp_path: Path) -> None:
    device = "name: press-09\ndriver: modbus\nasset: {area: a}\nstage: forming\nconnection: {host: h}\n" \
             "tags: [{name: running, address: \"co:0\", category: equipment_state}]\nexclude: [running]\n"
    assert _problems(_plant(tmp_path, press_09=device)) == [
        "devices/press_09.yaml:7:1: exclude: leaves out tags of a profile, and this file names no profile"]


def test_a_profile_that_cannot_be_read_is_the_device_files_mistake(tmp_path: Path) -> None:
    agent = _plant(tmp_path, press_04=PRESS_04.replace("press-v2.yaml", "press-v9.yaml"), press_03=PRESS_03)
    assert _problems(agent) == [
        "devices/press_04.yaml:2:10: profile: cannot read profiles/press-v9.yaml: no such file"]


def test_a_broken_profile_is_one_problem_for_all_its_devices(tmp_path: Path) -> None:
    assert _problems(_plant(tmp_path, PROFILE + "tags: [\n")) == [
        "profiles/press-v2.yaml:11:1: YAML syntax error: did not find expected node content (while parsing a "
        "flow node at line 11, column 1) (used by press-03, press-04)"]


def test_load_device_file_follows_the_profile(tmp_path: Path) -> None:
    _plant(tmp_path)
    device = load_device_file(tmp_path / "devices" / "press-04.yaml")
    assert [t.name for t in device.tags] == ["hydraulic_pressure", "stroke_count", "running"]
    (tmp_path / "profiles" / "press-v2.yaml").write_text(PROFILE.replace("category: production", "category: x"))
    with pytest.raises(ConfigErrors) as caught:
        load_device_file(tmp_path / "devices" / "press-04.yaml")
    assert [(p.path.name, p.line) for p in caught.value.problems] == [("press-v2.yaml", 8)]


def test_validate_counts_profiles_and_their_devices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", "-c", str(_plant(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "devices    2 (2 modbus)" in out
    assert "profiles   1 (press-v2: 2 devices)" in out
    assert "tags       6 (" in out


def test_catalogue_says_which_datasets_share_a_profile(tmp_path: Path) -> None:
    agent = _plant(tmp_path, press_03=PRESS_03, press_04=PRESS_04,
                   press_09="name: press-09\ndriver: modbus\nasset: {area: stamping}\nstage: forming\n"
                            "connection: {host: 10.0.0.19}\n"
                            "tags: [{name: running, address: \"co:0\", category: equipment_state}]\n")
    catalog = build_catalog(load_config(agent))
    datasets = {d["mos:equipment"]: d for d in catalog["@graph"][0]["dcat:dataset"]}
    profile_node = {"@id": "urn:mos-agent:profile/press-v2", "@type": ["dct:Standard", "mos:DeviceProfile"],
                    "dct:identifier": "press-v2", "dct:title": "Device profile press-v2"}
    assert profile_node in datasets["press-03"]["dct:conformsTo"]
    assert profile_node in datasets["press-04"]["dct:conformsTo"]
    assert "press-v2" in datasets["press-04"]["dcat:keyword"]
    assert all(c.get("@type") != ["dct:Standard", "mos:DeviceProfile"] for c in datasets["press-09"]["dct:conformsTo"])
    assert "profiles" not in str(catalog)  # the profile's file is not published
