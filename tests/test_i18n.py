"""Korean for the people who run it: every human-facing message has a Korean translation, the
shipped catalogs are compiled from their sources, and machine-facing output does not change."""

from __future__ import annotations

import json
import os
import re
import shutil
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("babel")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import catalogs  # noqa: E402
from babel.messages.pofile import read_po  # noqa: E402

BIN = Path(sys.executable).parent
KO_PO = catalogs.LOCALE / "ko" / "LC_MESSAGES" / "mos_agent.po"


def _korean_catalog():
    with KO_PO.open("rb") as handle:
        return read_po(handle)


def _untranslated(message) -> bool:
    if message is None or message.fuzzy:
        return True
    strings = message.string if isinstance(message.string, tuple) else (message.string,)
    return not all(strings)  # a plural message needs every form


def test_every_message_in_the_sources_is_translated() -> None:
    template = catalogs.extract()
    korean = _korean_catalog()
    assert len(template) > 0
    missing = [m.id for m in template if m.id and _untranslated(korean.get(m.id))]
    assert not missing, f"untranslated (run scripts/catalogs.py and translate): {missing[:20]}"


def test_shipped_catalog_is_compiled_from_its_source() -> None:
    assert KO_PO.with_suffix(".mo").read_bytes() == catalogs.compiled(KO_PO), \
        "mos_agent.mo is stale: run scripts/catalogs.py"


def test_placeholders_survive_translation() -> None:
    for message in _korean_catalog():
        if not message.id or not message.string:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        wanted = set(re.findall(r"\{[a-z_]*\}", ids[0]))
        for text in strings:
            assert set(re.findall(r"\{[a-z_]*\}", text)) == wanted, (message.id, text)
        if "{" in ids[0]:
            # what the code does with it: .format() with the message's fields (a stray brace in a
            # translation would raise there, in front of the reader)
            fields = {name: "x" for _, name, _, _ in string.Formatter().parse(ids[0]) if name}
            for text in (*ids, *strings):
                text.format(**fields)


def _run(env_lang: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LANG", "LC_ALL", "LC_MESSAGES", "MOS_AGENT_LANG")}
    env.update(env_lang)
    return subprocess.run([str(BIN / "mos-agent"), *args], capture_output=True, text=True,
                          env=env, timeout=60)


def test_one_line_errors_follow_the_locale(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.yaml"
    english = _run({"LANG": "C.UTF-8"}, "validate", "-c", str(missing))
    korean = _run({"LANG": "ko_KR.UTF-8"}, "validate", "-c", str(missing))
    forced = _run({"LANG": "C.UTF-8", "MOS_AGENT_LANG": "ko"}, "validate", "-c", str(missing))
    assert english.returncode == korean.returncode == forced.returncode == 2
    assert "not found" in english.stderr
    assert str(missing) in korean.stderr and "not found" not in korean.stderr
    assert any("\uac00" <= ch <= "\ud7a3" for ch in korean.stderr)
    assert forced.stderr == korean.stderr


def test_an_untranslated_plural_form_counts_as_missing() -> None:
    from babel.messages.catalog import Message

    assert _untranslated(Message(("{count} reading", "{count} readings"), ("",)))
    assert not _untranslated(Message(("{count} reading", "{count} readings"), ("측정값 {count}개",)))
    assert _untranslated(Message("value", "값", flags=["fuzzy"]))


# --------------------------------------------------------------- validate: same places, Korean words

CASES = REPO / "tests" / "validate_cases"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if (p / "expected.txt").exists())
LOCALE_VARIABLES = ("LANG", "LC_ALL", "LC_MESSAGES", "MOS_AGENT_LANG")
# "PATH:LINE:COL: message", or "PATH: message" for a file as a whole (the path has no colon here)
LOCATED = re.compile(r"^(?P<where>[^:]+(?::\d+:\d+)?): (?P<message>.+)$")


def _has_hangul(text: str) -> bool:
    return any("\uac00" <= ch <= "\ud7a3" for ch in text)


def _validate_in(language: str, agent_file: Path, capsys: pytest.CaptureFixture[str],
                 monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    from mos_agent import cli

    monkeypatch.setenv("MOS_AGENT_LANG", language)
    code = cli.main(["validate", "-c", str(agent_file)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def neutral_locale(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for variable in LOCALE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


@pytest.mark.parametrize("case", CASE_NAMES)
def test_validate_in_korean_reports_every_planted_mistake_at_its_place(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], neutral_locale: pytest.MonkeyPatch) -> None:
    neutral_locale.delenv("MOS_TEST_UNSET_TOKEN", raising=False)
    folder = tmp_path / case
    shutil.copytree(CASES / case, folder)
    en_code, _, english = _validate_in("en", folder / "agent.yaml", capsys, neutral_locale)
    ko_code, _, korean = _validate_in("ko", folder / "agent.yaml", capsys, neutral_locale)
    assert en_code == ko_code == 2
    # the English run is the one test_validate checks line by line against expected.txt
    assert english.replace(f"{folder}/", "").splitlines() == (folder / "expected.txt").read_text().splitlines()
    english_lines = [LOCATED.match(line) for line in english.splitlines()]
    korean_lines = [LOCATED.match(line) for line in korean.splitlines()]
    assert all(english_lines) and all(korean_lines), korean
    assert [m["where"] for m in korean_lines] == [m["where"] for m in english_lines]
    for en_line, ko_line in zip(english_lines, korean_lines, strict=True):
        # every message of the corpus has a translation: the words change, names and values stay
        assert ko_line["message"] != en_line["message"] and _has_hangul(ko_line["message"]), ko_line.string
        key_path = en_line["message"].split(": ", 1)[0]
        if re.fullmatch(r"[a-z_]+(\[\d+\]|\.[a-z_]+)*", key_path) and ": " in en_line["message"]:
            assert ko_line["message"].startswith(key_path + ": "), ko_line.string


def test_validate_summary_in_korean(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    neutral_locale: pytest.MonkeyPatch) -> None:
    from rich.cells import cell_len

    neutral_locale.setenv("MOS_INFLUX_TOKEN", "not-a-real-token")
    agent_file = REPO / "configs" / "agent.yaml"
    en_code, english, _ = _validate_in("en", agent_file, capsys, neutral_locale)
    ko_code, korean, _ = _validate_in("ko", agent_file, capsys, neutral_locale)
    assert en_code == ko_code == 0
    assert english.splitlines()[0].endswith(": OK") and english.splitlines()[1].startswith("agent      ")
    in_korean = {"agent": "에이전트", "devices": "설비", "profiles": "프로파일", "contract": "계약", "tags": "태그",
                 "expected": "예상", "sink": "싱크", "buffer": "버퍼", "kpi": "KPI"}
    labels = [line.split()[0] for line in korean.splitlines()[1:]]
    assert labels == [in_korean[line.split()[0]] for line in english.splitlines()[1:]]
    # the values line up in one column whatever the width of the labels (a Hangul syllable is two cells)
    value_columns = set()
    for line in korean.splitlines()[1:]:
        label = line.split()[0]
        value_columns.add(cell_len(line[:len(line) - len(line[len(label):].lstrip())]))
    assert value_columns == {11}
    assert korean.splitlines()[0] == english.splitlines()[0].replace(": OK", ": 정상")
    # the values are the same: only the words around them change
    assert re.findall(r"\d[\d,.]*", korean) == re.findall(r"\d[\d,.]*", english)


def test_log_text_stays_english_whatever_the_locale(tmp_path: Path, neutral_locale: pytest.MonkeyPatch) -> None:
    from mos_agent.config.loader import ConfigErrors, load_config
    from mos_agent.i18n import english

    agent_file = tmp_path / "agent.yaml"
    agent_file.write_text("agent: {id: gw, site: plant, sitee: x}\ndevices: []\n")
    neutral_locale.setenv("LANG", "ko_KR.UTF-8")
    with pytest.raises(ConfigErrors) as korean:
        load_config(agent_file)
    with english(), pytest.raises(ConfigErrors) as logged:
        load_config(agent_file)
    assert _has_hangul(str(korean.value)) and not _has_hangul(str(logged.value))
    assert "unknown key 'sitee' (did you mean 'site'?)" in str(logged.value)
    # the service's output is its journal: the unit keeps it English whatever the system locale
    unit = (REPO / "systemd" / "mos-agent.service").read_text()
    assert "Environment=MOS_AGENT_LANG=en" in unit.splitlines()


# --------------------------------------------------------------- tables against a running agent


def _shape(value: Any) -> Any:
    """The keys of a JSON document (values differ between two reads of a running agent)."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(item) for item in value[:1]]
    return None


@pytest.mark.slow
async def test_tables_speak_korean_and_machine_output_does_not_change(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], neutral_locale: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    import asyncio
    import io
    import time
    from datetime import UTC, datetime, timedelta

    import yaml
    from rich.console import Console

    from mos_agent import cli
    from mos_agent.commands.demo import live_view
    from mos_agent.config.loader import load_config
    from mos_agent.localservers import free_port
    from mos_agent.pipeline import Agent
    from simulators.modbus import ModbusSimulator, Scenario
    from tests.support.waiting import wait_until_async
    from tests.test_kpi_agent import SCENARIO

    neutral_locale.setenv("COLUMNS", "220")

    def run(language: str, *args: str) -> str:
        neutral_locale.setenv("MOS_AGENT_LANG", language)
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        assert code == 0, err
        return out

    now = datetime.now(UTC)
    health = f"127.0.0.1:{free_port()}"
    agent_file = tmp_path / "agent.yaml"
    async with ModbusSimulator(Scenario.model_validate(SCENARIO), port=free_port()) as sim:
        (tmp_path / "devices").mkdir()
        (tmp_path / "devices" / "press-kpi.yaml").write_text(sim.device_file())
        agent_file.write_text(yaml.safe_dump({
            "agent": {"id": "gw", "site": "changwon", "state_dir": str(tmp_path / "state"), "health": health,
                      "timezone": "UTC"},
            "sinks": [{"type": "sqlite", "flush_interval": "200ms"}],
            "shifts": [{"name": "test", "start": f"{now - timedelta(hours=1):%H:%M:%S}",
                        "end": f"{now + timedelta(hours=1):%H:%M:%S}"}],
            "kpi": {"interval": "1s"},
        }))

        # read: one pass over the device, no agent needed
        korean = await asyncio.to_thread(run, "ko", "read", "-c", str(agent_file), "press-kpi")
        english = await asyncio.to_thread(run, "en", "read", "-c", str(agent_file), "press-kpi")
        for word in ("자산", "태그", "값", "단위", "품질", "분류", "원천 시각", "측정값", "양호"):
            assert word in korean, korean
        assert "source time" in english and "good" in english and "source time" not in korean
        ko_rows = json.loads(await asyncio.to_thread(run, "ko", "read", "-c", str(agent_file), "press-kpi", "--json"))
        en_rows = json.loads(await asyncio.to_thread(run, "en", "read", "-c", str(agent_file), "press-kpi", "--json"))
        assert [(r["tag"], r["quality"], r["category"]) for r in ko_rows] == \
            [(r["tag"], r["quality"], r["category"]) for r in en_rows]
        assert {r["quality"] for r in ko_rows} <= {"good", "uncertain", "bad"}

        agent = Agent(load_config(agent_file))
        await agent.start()
        started = time.monotonic()
        try:
            await wait_until_async(lambda: agent.status().kpi and agent.status().kpi[0].current
                                   and "oee" in agent.status().kpi[0].current.kpi, what="an OEE")
            await wait_until_async(lambda: (tmp_path / "state" / "history.sqlite").exists()
                                   and agent.status().sinks[0].sent_points > 0, what="history in the sqlite sink")

            korean = await asyncio.to_thread(run, "ko", "status", "--url", health)
            english = await asyncio.to_thread(run, "en", "status", "--url", health)
            for word in ("설비", "드라이버", "상태", "포인트/초", "시계열", "마지막 오류", "싱크", "지연", "실행 중",
                         "버퍼:"):
                assert word in korean, korean
            assert "last error" in english and "running" in english and "running" not in korean
            ko_json = json.loads(await asyncio.to_thread(run, "ko", "status", "--url", health, "--json"))
            en_json = json.loads(await asyncio.to_thread(run, "en", "status", "--url", health, "--json"))
            assert _shape(ko_json) == _shape(en_json)
            assert ko_json["devices"][0]["state"] == "running" and ko_json["sinks"][0]["type"] == "sqlite"

            korean = await asyncio.to_thread(run, "ko", "kpi", "--url", health)
            english = await asyncio.to_thread(run, "en", "kpi", "--url", health)
            assert "설비·근무조별 KPI" in korean and "근무조" in korean and "진행 중" in korean, korean
            assert "KPIs per equipment and shift" in english and "KPIs per equipment" not in korean
            assert json.loads(await asyncio.to_thread(run, "ko", "kpi", "--url", health, "--json"))["kpi"][0][
                "current"]["shift"] == "test"

            korean = await asyncio.to_thread(run, "ko", "query", "-c", str(agent_file), "press-kpi")
            english = await asyncio.to_thread(run, "en", "query", "-c", str(agent_file), "press-kpi")
            for word in ("최근 10m", "시각", "태그", "값", "품질", "분류", "양호"):
                assert word in korean, korean
            assert "last 10m" in english and "good" in english and "last 10m" not in korean
            ko_rows = json.loads(await asyncio.to_thread(run, "ko", "query", "-c", str(agent_file), "press-kpi",
                                                         "--json", "--limit", "5"))
            assert ko_rows and {r["quality"] for r in ko_rows} <= {"good", "uncertain", "bad"}

            # the demo's live view, rendered from the same running agent
            views = {}
            for language in ("ko", "en"):
                neutral_locale.setenv("MOS_AGENT_LANG", language)
                console = Console(file=io.StringIO(), width=200, record=True)
                console.print(live_view(agent, tmp_path, started, 200))
                views[language] = console.export_text()
            for word in ("초당", "커밋", "자산", "품질", "경과", "Ctrl-C로 모두 멈춥니다", "설비·근무조별 KPI"):
                assert word in views["ko"], views["ko"]
            assert "Ctrl-C stops everything" in views["en"] and "points/s" in views["en"]

            # a reload's problems go to the log, which stays English under a Korean locale
            neutral_locale.setenv("MOS_AGENT_LANG", "ko")
            device_file = tmp_path / "devices" / "press-kpi.yaml"
            device_file.write_text(device_file.read_text().replace("poll_interval:", "poll_intervall:", 1))
            with caplog.at_level("ERROR", logger="mos_agent"):
                assert not await agent.reload()
            rejected = [r.getMessage() for r in caplog.records if "reload rejected" in r.getMessage()]
            assert rejected and any("unknown key 'poll_intervall'" in m for m in rejected), rejected
            assert not any(_has_hangul(m) for m in rejected)
        finally:
            await agent.stop()


def test_command_help_follows_the_locale(neutral_locale: pytest.MonkeyPatch) -> None:
    from mos_agent.cli import build_parser

    neutral_locale.setenv("MOS_AGENT_LANG", "ko")
    korean = build_parser().format_help()
    neutral_locale.setenv("MOS_AGENT_LANG", "en")
    english = build_parser().format_help()
    assert "check the agent and device files" in english
    assert "에이전트 파일과 설비 파일을 검사" in korean and "check the agent and device files" not in korean
    # command names and options are what a person types: they stay
    for command in ("validate", "status", "read", "query", "kpi", "demo"):
        assert command in korean


def _glossary() -> dict[str, str]:
    """English term → Korean term, from the "용어" table of README.ko.md."""
    text = (REPO / "README.ko.md").read_text(encoding="utf-8")
    table = text.split("## 용어", 1)[1]
    terms: dict[str, str] = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("영어", "") and not cells[0].startswith("-"):
            terms[cells[0]] = cells[1]
    return terms


# KPI names of ISO 22400-2 that contain a glossary word but have their own Korean name
_KPI_NAMES = re.compile(r"\bquality rate\b")


def test_the_catalog_uses_the_glossary_terms() -> None:
    glossary = _glossary()
    assert {"equipment", "tag", "quality", "buffer", "sink", "store"} <= set(glossary)
    wrong = []
    for message in _korean_catalog():
        if not message.id or not message.string:
            continue
        english = message.id[0] if isinstance(message.id, tuple) else message.id
        korean = message.string[0] if isinstance(message.string, tuple) else message.string
        # placeholders, option names, configuration as written and KPI names are not the words a
        # translation chooses
        words = _KPI_NAMES.sub("", re.sub(r"\{[^}]*\}|--[a-z-]+|'[^']*'|\bshare: contracts\b", "", english))
        for term, korean_term in glossary.items():
            if re.search(rf"\b{re.escape(term)}s?\b", words) and korean_term not in korean:
                wrong.append((term, korean_term, english, korean))
    assert not wrong, wrong


def test_sharing_report_speaks_korean_and_its_json_does_not_change(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], neutral_locale: pytest.MonkeyPatch) -> None:
    from mos_agent.cli import main as cli_main
    from mos_agent.sharing.ledger import AuditEntry, Ledger
    from tests.test_sharing_catalog import write_plant

    agent = write_plant(tmp_path)
    released_at = 1_796_083_200_000_000_000
    ledger = Ledger(tmp_path / "state")  # the audit the sink keeps, as a running agent writes it
    ledger.record("datacentre", audit={("mdcg-2026-017", "press-01"): AuditEntry(40, released_at - 60 * 10**9,
                                                                                released_at - 1)},
                  closed_before={}, processed_row=7, checkpoint=None, now_ns=released_at)
    ledger.close()
    neutral_locale.setenv("COLUMNS", "200")
    printed = {}
    for language in ("en", "ko"):
        neutral_locale.setenv("MOS_AGENT_LANG", language)
        assert cli_main(["sharing", "-c", str(agent)]) == 0
        table = capsys.readouterr().out
        assert cli_main(["sharing", "-c", str(agent), "--json"]) == 0
        printed[language] = (table, json.loads(capsys.readouterr().out))
    (english, en_json), (korean, ko_json) = printed["en"], printed["ko"]
    assert ko_json == en_json and {c["status"] for c in ko_json["contracts"]} == {"active", "pending", "expired"}
    for word in ("유효 기간", "데이터셋", "공개 형태", "공개량", "마지막 공개", "유효", "시작 전", "만료", "가명 처리"):
        assert word in korean, korean
    assert "expired" in english and "last release" in english
    assert "expired" not in korean and "last release" not in korean
    # names, numbers and times are the same in both
    for same in ("mdcg-2026-017", "press-01", "40", "2026-12-01T00:00:00.000Z"):
        assert same in korean and same in english
