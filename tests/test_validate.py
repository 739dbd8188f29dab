"""``mos-agent validate``: every kind of mistake is reported at its exact line and column.

Data-driven: each folder in ``validate_cases/`` holds an agent file (plus device files) with
one kind of mistake (``several-mistakes`` has many) and ``expected.txt``, the exact problem lines
with paths relative to the case folder.
"""

from __future__ import annotations

import datetime
import gc
import re
import shutil
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml

from mos_agent import cli
from mos_agent.config import loader
from mos_agent.config.loader import (
    ConfigErrors,
    LoadedConfig,
    Problem,
    load_config,
    load_device_file,
    read_secret,
)
from mos_agent.config.yamlmarks import Mark, MarkedDocument, Marks, expand_env, load_yaml

CASES = Path(__file__).resolve().parent / "validate_cases"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if (p / "expected.txt").exists())
PROBLEM_LINE = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<message>.+)$")


def _copy_case(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(CASES / name, target)
    return target


def _validate(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["validate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_there_are_enough_distinct_cases() -> None:
    assert len(CASE_NAMES) >= 20


@pytest.mark.parametrize("case", CASE_NAMES)
def test_case_reports_every_problem_at_its_place(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOS_TEST_UNSET_TOKEN", raising=False)
    folder = _copy_case(case, tmp_path)
    code, out, err = _validate(["-c", str(folder / "agent.yaml")], capsys)
    expected = (folder / "expected.txt").read_text().splitlines()
    got = err.replace(f"{folder}/", "").splitlines()
    assert code == 2
    assert out == ""
    assert got == expected
    for line in got:
        assert PROBLEM_LINE.match(line), line


def test_several_mistakes_are_all_reported_across_files(tmp_path: Path) -> None:
    folder = _copy_case("several-mistakes", tmp_path)
    with pytest.raises(ConfigErrors) as caught:
        load_config(folder / "agent.yaml")
    files = {p.path.name for p in caught.value.problems}
    assert files == {"agent.yaml", "press-01.yaml", "press-02.yaml", "press-03.yaml"}
    assert len(caught.value.problems) >= 10
    # sorted: agent file first, then by file and line
    keys = [(p.path.name != "agent.yaml", str(p.path), p.line, p.col) for p in caught.value.problems]
    assert keys == sorted(keys)


def test_problem_prints_as_path_line_col() -> None:
    assert str(Problem(Path("a/b.yaml"), 3, 7, "bad")) == "a/b.yaml:3:7: bad"
    assert str(Problem(Path("a/b.yaml"), 0, 0, "no such file")) == "a/b.yaml: no such file"


def test_as_a_subprocess_exit_2_and_one_problem_a_line(tmp_path: Path) -> None:
    folder = _copy_case("several-mistakes", tmp_path)
    executable = shutil.which("mos-agent", path=str(Path(sys.executable).parent)) or "mos-agent"
    result = subprocess.run([executable, "validate", "-c", "agent.yaml"], cwd=folder, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    # run from the case folder with a relative -c, paths come out exactly as in expected.txt
    assert lines == (folder / "expected.txt").read_text().splitlines()
    assert "Traceback" not in result.stderr


def test_missing_agent_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _validate(["-c", str(tmp_path / "nope.yaml")], capsys)
    assert out == ""
    assert code == 2
    assert err.strip() == f"mos-agent validate: agent file {tmp_path / 'nope.yaml'} not found"
    with pytest.raises(ConfigErrors) as caught:
        load_config(tmp_path / "nope.yaml")
    assert [str(p) for p in caught.value.problems] == [f"{tmp_path / 'nope.yaml'}: no such file"]


# ---------------------------------------------------------------- a good configuration

GOOD_AGENT = """\
agent:
  id: gw-changwon-01
  enterprise: acme
  site: changwon
  state_dir: state
  health: 127.0.0.1:9750
devices: devices/*.yaml
buffer:
  max_size: 512MiB
sinks:
  - type: influxdb
    url: ${MOS_TEST_STORE_URL}
    org: mdcg
    bucket: factory
    token_file: secrets/influx.token
    flush_interval: 1s
  - type: sqlite
    retention: 7d
"""

GOOD_MODBUS = """\
name: press-01
driver: modbus
asset: {area: stamping, line: line-1, cell: cell-2}
stage: forming
connection: {host: 127.0.0.1, port: 5020, unit_id: 1, timeout: 1s}
poll_interval: 500ms
tags:
  - {name: hydraulic_pressure, address: "hr:0", type: float32, scale: 0.1, unit: bar, category: process}
  - {name: stroke_count, address: "hr:10", type: uint32, category: production}
  - {name: running, address: "co:0", type: bool, category: equipment_state}
"""

GOOD_MQTT = """\
name: env-sensors
driver: mqtt
asset: {area: utilities}
stage: utility
poll_interval: 5s
connection:
  host: 127.0.0.1
  username: agent
  password_file: ../secrets/mqtt.password
tags:
  - {name: temperature, topic: "plant/{area}/{equipment}/env", json: $.t, unit: Cel, category: environment}
  - {name: humidity, topic: "plant/{area}/{equipment}/env", json: $.h, unit: "%", category: environment}
"""


def _write_good(tmp_path: Path) -> Path:
    (tmp_path / "devices").mkdir()
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "influx.token").write_text("s3cr3t-token\n")
    (tmp_path / "secrets" / "mqtt.password").write_text("  mqtt-pass \n")
    (tmp_path / "agent.yaml").write_text(GOOD_AGENT)
    (tmp_path / "devices" / "press-01.yaml").write_text(GOOD_MODBUS)
    (tmp_path / "devices" / "env.yaml").write_text(GOOD_MQTT)
    return tmp_path / "agent.yaml"


def test_good_configuration_validates_with_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOS_TEST_STORE_URL", "http://127.0.0.1:8086")
    agent_file = _write_good(tmp_path)
    code, out, err = _validate(["-c", str(agent_file)], capsys)
    assert (code, err) == (0, "")
    assert f"{agent_file}: OK" in out
    assert "devices    2 (1 modbus, 1 mqtt)" in out
    assert "tags       5 (1 process, 1 equipment_state, 1 production, 2 environment)" in out
    # 3 tags every 0.5 s + 2 tags every 5 s
    assert "expected   6.4 points/s" in out
    assert "sink       influxdb (influxdb) → http://127.0.0.1:8086" in out
    assert f"sink       sqlite (sqlite) → {tmp_path / 'state' / 'history.sqlite'}" in out


def test_good_configuration_loads_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOS_TEST_STORE_URL", "http://127.0.0.1:8086")
    loaded = load_config(_write_good(tmp_path))
    assert isinstance(loaded, LoadedConfig)
    assert [d.name for d in loaded.devices] == ["env-sensors", "press-01"]  # file order
    assert loaded.device_files == {"env-sensors": tmp_path / "devices" / "env.yaml",
                                   "press-01": tmp_path / "devices" / "press-01.yaml"}
    sink = loaded.agent.sinks[0]
    assert sink.url == "http://127.0.0.1:8086"  # ${VAR} expanded
    # relative paths are taken from the file that names them, not the working directory
    assert Path(sink.token_file) == tmp_path / "secrets" / "influx.token"
    assert loaded.agent.agent.state_dir == tmp_path / "state"
    mqtt = loaded.devices[0]
    assert Path(mqtt.connection.password_file) == tmp_path / "secrets" / "mqtt.password"
    assert read_secret(None, sink.token_file) == "s3cr3t-token"
    assert read_secret(None, mqtt.connection.password_file) == "mqtt-pass"
    assert read_secret("inline", None) == "inline"
    assert read_secret(None, None) is None


def test_load_device_file_for_reload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOS_TEST_STORE_URL", "http://127.0.0.1:8086")
    _write_good(tmp_path)
    device = load_device_file(tmp_path / "devices" / "press-01.yaml", ["forming"])
    assert device.name == "press-01" and len(device.tags) == 3
    with pytest.raises(ConfigErrors) as caught:
        load_device_file(tmp_path / "devices" / "press-01.yaml", ["welding"])
    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'devices' / 'press-01.yaml'}:4:8: stage: unknown stage 'forming' (expected one of: welding)"]


def test_broken_agent_file_still_checks_the_device_files(tmp_path: Path) -> None:
    agent_file = _write_good(tmp_path)
    agent_file.write_text("agent: {id: x, site: y\n")
    (tmp_path / "devices" / "press-01.yaml").write_text(GOOD_MODBUS.replace("unit: bar", "unit: barr"))
    with pytest.raises(ConfigErrors) as caught:
        load_config(agent_file)
    unit_col = GOOD_MODBUS.splitlines()[7].index("unit: bar") + len("unit: ") + 1
    assert [(p.path.name, p.line, p.col) for p in caught.value.problems] == [
        ("agent.yaml", 2, 1), ("press-01.yaml", 8, unit_col)]


def test_ten_thousand_tags_load(tmp_path: Path) -> None:
    """Start-up must stay fast with many tags; the time is printed, not asserted."""
    (tmp_path / "devices").mkdir()
    (tmp_path / "agent.yaml").write_text("agent: {id: gw, site: s}\n")
    for d in range(10):
        tags = "".join(f'  - {{name: t{i}, address: "hr:{i}", category: process, unit: bar}}\n' for i in range(1000))
        (tmp_path / "devices" / f"d{d}.yaml").write_text(
            f"name: d{d}\ndriver: modbus\nasset: {{area: a}}\nstage: forming\n"
            f"connection: {{host: 127.0.0.1}}\ntags:\n{tags}")
    started = time.perf_counter()
    loaded = load_config(tmp_path / "agent.yaml")
    elapsed = time.perf_counter() - started
    assert sum(len(d.tags) for d in loaded.devices) == 10_000
    print(f"10,000 tags loaded and validated in {elapsed:.2f} s")


def test_loading_runs_no_cyclic_collection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Everything a load allocates lives on: a collection during it walks all of it for nothing
    (what made the load super-linear in the tags). The collector is off while files are read and
    validated, and on again afterwards."""
    agent_file = _write_good(tmp_path)
    monkeypatch.setenv("MOS_TEST_STORE_URL", "http://127.0.0.1:8086")
    collector_on: list[bool] = []
    real_load_yaml = loader.load_yaml

    def watched(text: str) -> MarkedDocument:
        collector_on.append(gc.isenabled())
        return real_load_yaml(text)

    monkeypatch.setattr(loader, "load_yaml", watched)
    load_config(agent_file)
    load_device_file(tmp_path / "devices" / "press-01.yaml")
    assert collector_on == [False, False, False, False]  # agent file, two device files, one reload
    assert gc.isenabled()


# ---------------------------------------------------------------- YAML with marks


def test_marks_of_keys_and_values() -> None:
    doc = load_yaml("a: 1\nlist:\n  - {x: 1, y: two}\n  - z: 3\n")
    assert doc.data == {"a": 1, "list": [{"x": 1, "y": "two"}, {"z": 3}]}
    assert doc.marks[("a",)].key == Mark(1, 1) and doc.marks[("a",)].value == Mark(1, 4)
    assert doc.marks[("list", 0)].value == Mark(3, 5)
    assert doc.marks[("list", 0, "y")].key == Mark(3, 12)
    assert doc.marks[("list", 0, "y")].value == Mark(3, 15)
    assert doc.marks[("list", 1)].value == Mark(4, 5)
    assert doc.marks[("list", 1, "z")].value == Mark(4, 8)


def test_environment_expansion() -> None:
    env = {"HOST": "plc-1", "EMPTY": ""}
    assert expand_env("${HOST}:502", env) == ("plc-1:502", [])
    assert expand_env("x${EMPTY}y", env) == ("xy", [])
    assert expand_env("$${HOST}", env) == ("${HOST}", [])
    assert expand_env("${MISSING}", env)[1] == ["environment variable MISSING is not set"]
    assert "bad environment reference" in expand_env("${1x}", env)[1][0]
    doc = load_yaml('url: "http://${HOST}:8086"\nport: ${PORT}\n', env)
    assert doc.data["url"] == "http://plc-1:8086"
    assert [(p.line, p.col, p.message) for p in doc.problems] == [(2, 7, "environment variable PORT is not set")]


def test_merge_keys_anchors_and_duplicates() -> None:
    doc = load_yaml("base: &b {unit: bar, category: process}\ntag:\n  <<: *b\n  unit: kPa\n  name: p\n  name: q\n")
    assert doc.data["tag"] == {"unit": "kPa", "category": "process", "name": "p"}
    # marks are the own key's where it overrides, the anchor's where merged, the first of duplicates
    assert doc.marks[("tag", "unit")] == Marks(Mark(4, 3), Mark(4, 9))
    assert doc.marks[("tag", "category")].value == Mark(1, 32)
    assert doc.marks[("tag", "name")].value == Mark(5, 9)
    assert ("tag", "nope") not in doc.marks and ("tag", "unit", 0) not in doc.marks
    assert [(p.line, p.col) for p in doc.problems] == [(6, 3)]
    assert doc.problems[0].message == "duplicate key 'name' (first at line 5, column 3)"
    doc = load_yaml("1: one\nfalse: nothing\nlist: [a, {b: 2}]\n")
    assert doc.data == {1: "one", False: "nothing", "list": ["a", {"b": 2}]}
    assert doc.marks[(1,)].value == Mark(1, 4) and doc.marks[("list", 1, "b")].value == Mark(3, 15)
    assert sorted(map(str, doc.marks)) == sorted(map(str, [(), (1,), (False,), ("list",), ("list", 0), ("list", 1),
                                                           ("list", 1, "b")]))


def test_scalars_resolve_as_pyyaml_resolves_them() -> None:
    """The loader's own scalar resolution gives PyYAML's types and values, past the point where it
    stops remembering values (1,024 distinct ones) too."""
    plain = ["yes", "No", "on", "OFF", "true", "False", "~", "null", "", "0", "-17", "+3", "0x1f", "0o17", "017",
             "0b101", "1_000", "1:20", "3.5", "-.inf", ".NaN", "1e3", "6.8523015e+5", "2024-01-02",
             "2024-01-02 03:04:05.5", "tag_000001", "hr:12", "bar", "uint16", "~x", "nully", "y", "n"]
    values = [*plain, *(f"{i}" for i in range(1500)), *(f"{i}.5" for i in range(700)), *(f"t{i}" for i in range(900))]
    text = "".join(f"k{i}: {v}\n" for i, v in enumerate(values))
    text += "quoted: ['true', \"1\", '~', \"2024-01-02\"]\n1: int key\n2024-01-02: date key\nnull: null key\n"
    doc = load_yaml(text)
    assert doc.problems == []
    expected = yaml.safe_load(text)
    assert [(type(k), repr(k), type(v), repr(v)) for k, v in doc.data.items()] == \
        [(type(k), repr(k), type(v), repr(v)) for k, v in expected.items()]


def test_duplicate_keys_of_every_kind_are_located() -> None:
    doc = load_yaml("1: a\nx: b\n1: c\n2024-01-02: d\n2024-01-02: e\n")
    assert doc.data == {1: "a", "x": "b", datetime.date(2024, 1, 2): "d"}
    assert [(p.line, p.col, p.message) for p in doc.problems] == [
        (3, 1, "duplicate key 1 (first at line 1, column 1)"),
        (5, 1, "duplicate key datetime.date(2024, 1, 2) (first at line 4, column 1)")]


def test_empty_and_bad_documents() -> None:
    assert load_yaml("").data is None and not load_yaml("").problems
    doc = load_yaml("a: 1\n---\nb: 2\n")
    assert doc.data is None and doc.problems[0][:2] == (2, 1)
    doc = load_yaml("n: !!int x\n")
    assert doc.problems[0][:2] == (1, 4)


# ---------------------------------------------------------------- aliases

BILLION_LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip(["", "a", "b", "c", "d", "e", "f", "g"], "abcdefgh", strict=True))


def test_alias_bomb_is_refused_at_the_key_that_expands_it() -> None:
    tracemalloc.start()
    doc = load_yaml(BILLION_LAUGHS)  # 9**8 values if walked
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20 * 2**20  # stopped at its budget, not hundreds of MB into the expansion
    assert doc.data is None
    assert [(p.line, p.col) for p in doc.problems] == [(5, 1)]
    assert doc.problems[0].message.startswith("e: aliases expand to more than ")
    # refused as a whole: nothing of it is kept
    assert doc.marks == {}


def test_alias_bomb_in_a_device_file_is_refused_on_reload_too(tmp_path: Path) -> None:
    device_file = tmp_path / "press.yaml"
    device_file.write_text(GOOD_MODBUS + BILLION_LAUGHS.replace("h:", "extra:"))
    with pytest.raises(ConfigErrors) as caught:
        load_device_file(device_file)
    assert [(p.line, p.col) for p in caught.value.problems] == [(15, 1)]
    assert "alias bomb" in caught.value.problems[0].message


def test_recursive_aliases_are_located() -> None:
    assert load_yaml("a: 1\nb: &b [1, *b]\n").problems == [
        (2, 4, "recursive alias: the value anchored here contains an alias to itself")]
    assert load_yaml("a: &a\n  x: {y: *a}\n").problems[0][:2] == (1, 4)
    assert load_yaml("a: &a {<<: *a, x: 1}\n").problems == [
        (1, 4, "recursive alias: the mapping anchored here merges itself")]
    assert load_yaml("a: " + "[" * 150 + "]" * 150).problems[0][2] == "nested more than 100 levels deep"


def test_merge_keys_give_what_pyyaml_gives_without_growing() -> None:
    text = ("d: &d {a: 1, b: 2}\ne: &e {b: 3, c: 4}\nx: {<<: [*d, *e], c: 5}\ny: {<<: *e, a: 0}\n"
            "z: &z {<<: *d, q: 1}\nw: {<<: [*z, *e]}\nv: {<<: {m: 1}, n: 2}\nu: {<<: *d, <<: {b: 9}}\n")
    doc = load_yaml(text)
    assert doc.problems == []
    assert doc.data == yaml.safe_load(text)
    assert [list(v) for v in doc.data.values()] == [list(v) for v in yaml.safe_load(text).values()]
    # nine mappings each merging the previous one nine times: PyYAML's flattening keeps 9**8
    # pairs; one pair per key keeps it as small as the result
    levels = ["k0: &k0 {" + ", ".join(f"v{i}: {i}" for i in range(9)) + "}"]
    levels += [f"k{n}: &k{n} {{<<: [{', '.join([f'*k{n - 1}'] * 9)}]}}" for n in range(1, 9)]
    doc = load_yaml("\n".join(levels) + "\n")
    assert doc.problems == []
    assert doc.data["k8"] == {f"v{i}": i for i in range(9)}
    assert load_yaml("a: {<<: [1]}\n").problems == [
        (1, 10, "'<<' merges a mapping or a list of mappings (an alias like *defaults)")]
