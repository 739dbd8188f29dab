"""Contract files as the agent reads them: validity bounds, defaults, status on a given clock.
(Located mistakes are in validate_cases/contract-*.)"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mos_agent.config.loader import load_config
from mos_agent.sharing.contracts import ContractStatus

DEVICE = """\
name: {name}
driver: modbus
asset: {{area: stamping, line: line-1}}
stage: forming
connection: {{host: 127.0.0.1, port: 5020, unit_id: 1}}
tags:
  - {{name: pressure, address: "hr:0", type: float32, category: process}}
"""


def write_config(root: Path, contracts: dict[str, str]) -> Path:
    (root / "devices").mkdir(parents=True)
    (root / "contracts").mkdir()
    for name in ("press-01", "cnc-01", "cnc-02"):
        (root / "devices" / f"{name}.yaml").write_text(DEVICE.format(name=name))
    for name, text in contracts.items():
        (root / "contracts" / f"{name}.yaml").write_text(text)
    (root / "agent.yaml").write_text("""\
agent:
  id: gw-1
  site: changwon
  state_dir: state
sinks:
  - {type: influxdb, name: datacentre, share: contracts, url: "http://127.0.0.1:1", bucket: b}
  - {type: influxdb, url: "http://127.0.0.1:1", bucket: b}
sharing: {contracts: contracts/*.yaml}
""")
    return root / "agent.yaml"


def ns(text: str) -> int:
    moment = datetime.fromisoformat(text)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def test_dates_cover_whole_days_and_date_times_are_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, {
        "spec": """id: mdcg-2026-017
title: {ko: 프레스 라인 생산 데이터, en: Press line production data}
consumer: MDCG innovation data centre
sink: datacentre
valid: {from: 2026-12-01, to: "2027-11-30T23:59:59+09:00"}
datasets: [press-01, "cnc-*"]
categories: [production, quality, energy, equipment_state, kpi]
resolution: 1m
pseudonymise: true
""",
        "dates": """id: dates
consumer: c
sink: datacentre
valid: {from: 2026-12-01, to: 2026-12-31}
datasets: ["cnc-0?"]
"""})
    monkeypatch.setenv("TZ", "Asia/Seoul")  # dates without an offset are the system's local time
    time.tzset()
    try:
        loaded = load_config(path)
    finally:
        monkeypatch.undo()
        time.tzset()
    contracts = {c.id: c for c in loaded.contracts}
    spec = contracts["mdcg-2026-017"]
    assert spec.valid_from_ns == ns("2026-12-01T00:00:00+09:00")  # a date, in the agent's time zone
    assert spec.valid_to_ns == ns("2027-11-30T23:59:59+09:00")
    assert spec.resolution_ns == 60_000_000_000 and spec.pseudonymise
    assert spec.categories == {"production", "quality", "energy", "equipment_state", "kpi"}
    assert [d.name for d in spec.released_devices(loaded.devices)] == ["cnc-01", "cnc-02", "press-01"]
    dates = contracts["dates"]
    assert dates.valid_to_ns == ns("2027-01-01T00:00:00+09:00") - 1  # the whole last day
    assert "kpi" in dates.categories and "process" in dates.categories  # default: every category
    assert dates.resolution_ns is None and not dates.pseudonymise
    assert dates.status(ns("2026-11-30T23:59:59+09:00")) == ContractStatus.PENDING
    assert dates.status(ns("2026-12-31T23:59:59.999999+09:00")) == ContractStatus.ACTIVE
    assert dates.status(ns("2027-01-01T00:00:00+09:00")) == ContractStatus.EXPIRED
    assert datetime.fromtimestamp(dates.valid_from_ns / 1e9, UTC).isoformat() == "2026-11-30T15:00:00+00:00"


REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "configs" / "contracts" / "mdcg-2026-017.yaml"


def test_readme_contract_example_is_the_shipped_file_and_it_validates(tmp_path: Path) -> None:
    for readme in ("README.md", "README.ko.md"):
        assert f"```yaml\n{EXAMPLE.read_text(encoding='utf-8')}```" in (REPO / readme).read_text(encoding="utf-8")
    path = write_config(tmp_path, {"example": EXAMPLE.read_text(encoding="utf-8")})
    (contract,) = load_config(path).contracts
    assert contract.id == "mdcg-2026-017" and contract.resolution == "1m"


def test_sighup_reload_reads_the_contracts_again(tmp_path: Path) -> None:
    import asyncio

    from mos_agent.pipeline import Agent

    contract = """id: {cid}
consumer: c
sink: datacentre
valid: {{from: 2026-12-01, to: 2099-12-31}}
datasets: [press-01]
"""
    path = write_config(tmp_path, {"first": contract.format(cid="first")})
    text = path.read_text().replace("state_dir: state", "state_dir: state\n  health: \"off\"\n  shutdown_timeout: 1s")
    path.write_text(text)

    def contract_ids(agent: Agent) -> list[str]:
        runner = next(r for r in agent.store.runners if r.name == "datacentre")
        return [c.id for c in runner.release.contracts]

    async def scenario() -> tuple[list[str], list[str], list[str]]:
        agent = Agent(load_config(path))
        await agent.start()
        try:
            before = contract_ids(agent)
            (tmp_path / "contracts" / "second.yaml").write_text(contract.format(cid="second"))
            assert await agent.reload()
            after = contract_ids(agent)
            return before, after, [c.id for c in agent.status().contracts]
        finally:
            await agent.stop()

    before, after, reported = asyncio.run(scenario())
    assert before == ["first"]
    assert sorted(after) == sorted(reported) == ["first", "second"]


def test_dates_follow_the_agents_time_zone(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"c": """id: c
consumer: c
sink: datacentre
valid: {from: 2026-12-01, to: "2026-12-31T18:00:00"}
datasets: [press-01]
"""})
    path.write_text(path.read_text().replace("state_dir: state", "state_dir: state\n  timezone: Asia/Seoul"))
    (contract,) = load_config(path).contracts
    assert contract.valid_from_ns == ns("2026-12-01T00:00:00+09:00")
    assert contract.valid_to_ns == ns("2026-12-31T18:00:00+09:00")
