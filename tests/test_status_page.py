"""The operator's status page in a real browser (Debian's chromium driven by Playwright) against the
agent running for real with the Modbus simulators: values with their units, live updates without
navigation, a device fault (its simulator stopped) shown within seconds, Korean for a Korean
browser, no request leaving the agent's origin, read-only routes, and the bearer token off
loopback (the page's sign-in, 401 without it, `mos-agent status` sending it).

Screenshots of each state are written under the test's temp folder (``screenshots/``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from mos_agent.commands.demo import DEMO_TIMEZONE, demo_shifts
from mos_agent.health import HealthServer
from mos_agent.localservers import free_port
from mos_agent.status import AgentInfo, DeviceState, DeviceStats, StatusReport
from tests.support.servers import VictoriaMetrics, running
from tests.support.simulators import start_modbus_sim
from tests.support.waiting import wait_until
from tests.test_service import AgentProcess, write_device

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "page-token-5f0c1e9a"

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (./setup.sh test installs it)")]


@dataclass
class RunningAgent:
    process: AgentProcess
    health: str
    config: Path
    sims: dict[str, subprocess.Popen]

    @property
    def origin(self) -> str:
        return f"http://{self.health}"

    def status(self, token: str | None = None) -> dict[str, Any]:
        return json.loads(http(f"{self.origin}/status", token)[1])


def http(url: str, token: str | None = None, method: str = "GET") -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def start_agent(workdir: Path, host: str, *, token_file: Path | None = None, store_url: str | None = None,
                devices: tuple[str, ...] = ("press-01", "press-02")) -> RunningAgent:
    workdir.mkdir(parents=True, exist_ok=True)
    sims = {}
    for name in devices:
        sims[name], device = start_modbus_sim(workdir, name)
        write_device(workdir, device)
    health = f"{host}:{free_port()}"
    agent: dict[str, Any] = {"id": "gw-page", "site": "changwon", "state_dir": str(workdir / "state"),
                             "health": health, "shutdown_timeout": "5s"}
    if token_file is not None:
        agent["health_token_file"] = str(token_file)
    sinks = [{"type": "influxdb", "url": store_url, "org": "mdcg", "bucket": "factory", "token": "store-token-1234",
              "flush_interval": "500ms"}] if store_url else []
    sharing: dict[str, Any] = {}
    if store_url:  # and a data centre receiving press-01 under a contract
        sinks.append({**sinks[0], "name": "datacentre", "share": "contracts", "bucket": "shared"})
        (workdir / "contracts").mkdir(exist_ok=True)
        (workdir / "contracts" / "mdcg-test-001.yaml").write_text(yaml.safe_dump({
            "id": "mdcg-test-001", "title": {"en": "Press line data", "ko": "프레스 라인 데이터"},
            "consumer": "MDCG innovation data centre", "sink": "datacentre",
            "valid": {"from": "2020-01-01", "to": "2099-12-31"}, "datasets": ["press-01"], "resolution": "raw"},
            allow_unicode=True))
        sharing = {"sharing": {"contracts": "contracts/*.yaml"}}
    config = workdir / "agent.yaml"
    # a shift from now on, so the presses' kpi: blocks (from the simulator's device file) give KPI tiles
    agent["timezone"] = DEMO_TIMEZONE
    config.write_text(yaml.safe_dump({"agent": agent, "devices": "devices/*.yaml", "sinks": sinks,
                                      "shifts": demo_shifts(datetime.now(ZoneInfo(DEMO_TIMEZONE))),
                                      "kpi": {"interval": "1s"}, **sharing}))
    process = AgentProcess(config, workdir / "agent.log")
    running_agent = RunningAgent(process, health, config, sims)
    token = TOKEN if token_file else None
    wait_until(lambda: _flowing(running_agent, token), 60, what=process.text)
    return running_agent


def _flowing(agent: RunningAgent, token: str | None) -> bool:
    try:
        status = agent.status(token)
    except (OSError, ValueError):
        return False
    return bool(status["devices"]) and all(d["points_read"] > 0 for d in status["devices"])


def stop_agent(agent: RunningAgent) -> None:
    agent.process.stop()
    for sim in agent.sims.values():
        sim.terminate()
        try:
            sim.wait(5)
        except subprocess.TimeoutExpired:
            sim.kill()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    workdir = tmp_path_factory.mktemp("page-agent")
    with running(VictoriaMetrics.start(workdir / "vm")) as victoria:
        started = start_agent(workdir, "127.0.0.1", store_url=victoria.url)
        try:
            yield started
        finally:
            stop_agent(started)


class RecordedPage:
    """A page with every request it makes and every navigation of its main frame recorded."""

    def __init__(self, browser: Any, locale: str = "en-US") -> None:
        self.context = browser.new_context(locale=locale, viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.navigations: list[str] = []
        self.errors: list[str] = []  # console errors and uncaught exceptions (a CSP violation shows here)
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("framenavigated",
                     lambda frame: self.navigations.append(frame.url) if frame == self.page.main_frame else None)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def recorded(browser: Any) -> Iterator[RecordedPage]:
    page = RecordedPage(browser)
    yield page
    page.close()


def value_cell(page: Any, device: str, tag: str) -> Any:
    return page.locator(f'.device[data-device="{device}"] tr[data-tag="{tag}"] td.value')


def test_values_with_units_update_live_from_the_agents_origin_only(agent: RunningAgent, recorded: RecordedPage,
                                                                   screenshots: Path) -> None:
    page = recorded.page
    page.goto(agent.origin + "/")
    pressure = value_cell(page, "press-01", "hydraulic_pressure")
    pressure.wait_for(timeout=30_000)
    assert pressure.locator(".unit").inner_text() == "bar"
    assert value_cell(page, "press-01", "oil_temperature").locator(".unit").inner_text() == "°C"
    assert page.locator("#agent-id").inner_text() == "gw-page"
    sinks = page.locator("#sinks tbody tr")
    assert sinks.count() == 2 and "datacentre" in sinks.nth(1).inner_text()
    # the contract and what it released so far
    contract = page.locator("#contracts tbody tr")
    wait_until(lambda: contract.count() == 1 and "mdcg-test-001" in contract.inner_text()
               and int(contract.locator("td.num").inner_text().replace(",", "")) > 0, 60, what="the contract")
    assert "active" in contract.inner_text() and "press-01" in contract.inner_text()
    # the agent's own ISO 22400 KPIs of the shift so far, one tile a press
    wait_until(lambda: page.locator("#kpis .tile").count() == 2, 60, what="the KPI tiles")
    tile = page.locator("#kpis .tile").first.inner_text()
    assert "press-01" in tile and "OEE" in tile and "availability" in tile and "day" in tile
    # the sparkline grows from the history sampled while the page looks
    wait_until(lambda: page.locator('.device[data-device="press-01"] tr[data-tag="hydraulic_pressure"] '
                                    "svg.spark polyline").count() == 1, 30, what="a sparkline")
    page.screenshot(path=str(screenshots / "overview-en.png"), full_page=True)
    # the heartbeat register counts every second (past the overview's first ten values: searched
    # for): the page shows each new value without navigating
    page.fill("#filter-text", "heartbeat")
    heartbeat = value_cell(page, "press-01", "heartbeat")
    heartbeat.wait_for(timeout=30_000)
    first = heartbeat.inner_text()
    wait_until(lambda: heartbeat.inner_text() != first, 30, what=f"the heartbeat to change from {first}")
    assert recorded.navigations == [agent.origin + "/"]
    # every request went to the agent itself: no CDN, no font, no analytics
    assert recorded.requests and all(url.startswith(agent.origin + "/") for url in recorded.requests), \
        recorded.requests
    assert {url.removeprefix(agent.origin).split("?")[0] for url in recorded.requests} >= {
        "/", "/assets/app.js", "/assets/app.css", "/status", "/values"}
    assert recorded.errors == []


def test_filters_and_the_device_page(agent: RunningAgent, recorded: RecordedPage, screenshots: Path) -> None:
    page = recorded.page
    page.goto(agent.origin + "/")
    value_cell(page, "press-01", "hydraulic_pressure").wait_for(timeout=30_000)
    page.select_option("#filter-category", "energy")
    wait_until(lambda: page.locator('.device[data-device="press-01"] tr[data-tag="hydraulic_pressure"]').count() == 0
               and value_cell(page, "press-01", "active_power").count() == 1, 30, what="the energy filter")
    page.select_option("#filter-category", "")
    page.fill("#filter-text", "temperature")
    wait_until(lambda: page.locator('.device[data-device="press-01"] tr[data-tag]').all_inner_texts() != [] and all(
        "temperature" in row.split()[0]
        for row in page.locator('.device[data-device="press-01"] tr[data-tag]').all_inner_texts()), 30,
               what="the text filter")
    page.fill("#filter-text", "")
    # the device page shows every value of one device (the overview the first ten)
    page.click('.device[data-device="press-02"] .head a[href="/devices/press-02"]')
    wait_until(lambda: page.locator(".device").count() == 1 and
               page.locator('.device[data-device="press-02"] tr[data-tag]').count() > 10, 30, what="the device page")
    assert page.url == agent.origin + "/devices/press-02"
    assert page.locator("#devices-title").inner_text() == "press-02"
    page.screenshot(path=str(screenshots / "device-en.png"), full_page=True)
    # the same address loads directly too
    page.goto(agent.origin + "/devices/press-01")
    page.locator('.device[data-device="press-01"]').wait_for(timeout=30_000)
    assert page.locator(".device").count() == 1


def test_korean_for_a_korean_browser_and_the_switch_to_english(agent: RunningAgent, browser: Any,
                                                               screenshots: Path) -> None:
    recorded = RecordedPage(browser, locale="ko-KR")
    try:
        page = recorded.page
        page.goto(agent.origin + "/")
        value_cell(page, "press-01", "hydraulic_pressure").wait_for(timeout=30_000)
        assert page.locator("html").get_attribute("lang") == "ko"
        # every label has its Korean text, and every labelled element shows one
        assert page.evaluate("Object.keys(TEXT.en).filter((k) => !(k in TEXT.ko))") == []
        assert page.evaluate("[...document.querySelectorAll('[data-i18n]')].filter((e) => !e.textContent.trim())"
                             ".map((e) => e.dataset.i18n)") == []
        assert page.locator("#devices-title").inner_text() == "설비"
        assert page.locator("footer").inner_text().startswith("읽기 전용")
        row = page.locator('.device[data-device="press-01"] tr[data-tag="hydraulic_pressure"]').inner_text()
        assert "공정 변수" in row and "성형" in row and "양호" in row  # category, stage, quality
        assert page.locator('.device[data-device="press-01"] .state').inner_text() == "가동"
        page.screenshot(path=str(screenshots / "overview-ko.png"), full_page=True)
        page.click("#lang")
        wait_until(lambda: page.locator("#devices-title").inner_text() == "Devices", 10, what="English")
    finally:
        recorded.close()


def test_a_device_fault_shows_within_seconds(agent: RunningAgent, recorded: RecordedPage, screenshots: Path) -> None:
    page = recorded.page
    page.goto(agent.origin + "/")
    device = page.locator('.device[data-device="press-02"]')
    device.locator("td.value").first.wait_for(timeout=30_000)
    assert device.get_attribute("data-state") == "running"
    sim = agent.sims["press-02"]
    sim.terminate()
    sim.wait(10)
    stopped = time.monotonic()
    # generous for a loaded machine; the page itself polls every 2 s
    wait_until(lambda: device.get_attribute("data-state") in ("down", "degraded"), 30, what="the fault on the page")
    shown_after = time.monotonic() - stopped
    wait_until(lambda: device.locator(".q-bad").count() > 0, 30, what="bad-quality values")
    assert device.locator(".head .error").inner_text() != ""
    assert value_cell(page, "press-01", "hydraulic_pressure").count() == 1  # the other device keeps flowing
    page.screenshot(path=str(screenshots / "fault-en.png"), full_page=True)
    print(f"fault shown {shown_after:.1f}s after the simulator stopped")


def test_only_reads_are_served(agent: RunningAgent) -> None:
    for path in ("/status", "/values", "/", "/healthz", "/metrics"):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            assert http(agent.origin + path, method=method)[0] == 405, (method, path)
    code, body, headers = http(agent.origin + "/")
    assert "<script src=\"/assets/app.js\"" in body
    assert code == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert http(agent.origin + "/assets/app.js")[2]["Content-Type"] == "text/javascript; charset=utf-8"
    assert http(agent.origin + "/assets/nothing.js")[0] == 404
    assert http(agent.origin + "/values?quality=grey")[0] == 400


def test_off_loopback_the_token_is_asked_for(tmp_path: Path, browser: Any, screenshots: Path) -> None:
    """Bound to 127.0.0.2 with a token: every data endpoint answers 401 without it; the page shell
    loads and offers the sign-in; `mos-agent status` sends the token named in the agent file."""
    token_file = tmp_path / "health.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    agent = start_agent(tmp_path / "agent", "127.0.0.2", token_file=token_file, devices=("press-01",))
    try:
        for path in ("/status", "/values", "/metrics"):
            assert http(agent.origin + path)[0] == 401, path
            assert http(agent.origin + path, token="wrong-token-123")[0] == 401, path
            assert http(agent.origin + path, token=TOKEN)[0] == 200, path
        assert http(agent.origin + "/healthz")[0] == 200
        assert http(agent.origin + "/")[0] == 200  # the shell carries no data
        assert TOKEN not in agent.process.text()

        mos_agent = shutil.which("mos-agent", path=str(Path(sys.executable).parent))
        assert mos_agent is not None
        ok = subprocess.run([mos_agent, "status", "-c", str(agent.config), "--json"], capture_output=True, text=True,
                            timeout=30)
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["agent"]["id"] == "gw-page"
        table = subprocess.run([mos_agent, "status", "--url", agent.health, "--token-file", str(token_file)],
                               capture_output=True, text=True, timeout=30, env={**os.environ, "COLUMNS": "200"})
        assert table.returncode == 0, table.stderr
        assert "press-01" in table.stdout and "GB free" in table.stdout  # the disk headroom, as on the page
        refused = subprocess.run([mos_agent, "status", "--url", agent.health], capture_output=True, text=True,
                                 timeout=30)
        assert refused.returncode == 1 and "bearer token" in refused.stderr

        recorded = RecordedPage(browser)
        try:
            page = recorded.page
            page.goto(agent.origin + "/")
            page.locator("#signin").wait_for(state="visible", timeout=30_000)
            assert page.locator("#main").is_hidden()
            page.fill("#token", "wrong-token-123")
            page.click("#signin-form button[type=submit]")
            page.locator("#signin-error").wait_for(state="visible", timeout=30_000)
            page.screenshot(path=str(screenshots / "signin-refused-en.png"), full_page=True)
            page.fill("#token", TOKEN)
            page.click("#signin-form button[type=submit]")
            value_cell(page, "press-01", "hydraulic_pressure").wait_for(timeout=30_000)
            assert page.locator("#signin").is_hidden()
            # the token stays for the session: a reload needs no new sign-in
            page.reload()
            value_cell(page, "press-01", "hydraulic_pressure").wait_for(timeout=30_000)
            page.screenshot(path=str(screenshots / "signed-in-en.png"), full_page=True)
        finally:
            recorded.close()
    finally:
        stop_agent(agent)


@dataclass(slots=True)
class ReportWithKpiAndContracts(StatusReport):
    """The status report with the KPI and contract sections in the shape those features report
    (``kpi``: per equipment the running shift's figures; ``contracts``: what each released)."""

    kpi: list[dict[str, Any]] = field(default_factory=list)
    contracts: list[dict[str, Any]] = field(default_factory=list)


class FixedReport:
    def __init__(self, report: StatusReport) -> None:
        self.report = report

    def status(self) -> StatusReport:
        self.report.time = time.time()
        return self.report

    def health(self) -> tuple[bool, list[str]]:
        return True, []


@contextlib.contextmanager
def health_server_thread(source: FixedReport) -> Iterator[str]:
    """A real health server on its own event loop in a thread; yields its origin."""
    port = free_port()
    loop = asyncio.new_event_loop()
    server = HealthServer(source, f"127.0.0.1:{port}")
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_kpi_tiles_and_contracts(browser: Any, screenshots: Path) -> None:
    current = {"shift": "day", "start": 0.0, "end": 0.0, "at": 0.0, "final": False,
               "kpi": {"oee": 71.25, "availability": 90.0, "effectiveness": 82.5, "quality_rate": 95.96}}
    report = ReportWithKpiAndContracts(
        agent=AgentInfo(id="gw-kpi", site="changwon", version="0.1.0", ready=True),
        devices=[DeviceStats(name="press-01", driver="modbus", state=DeviceState.RUNNING)],
        kpi=[{"equipment": "press-01", "asset": "changwon/stamping/press-01", "device": "press-01",
              "current": current, "last_complete": None, "completed": []},
             {"equipment": "press-02", "device": "press-02", "current": None}],  # no shift running
        contracts=[{"id": "mdcg-2026-017", "consumer": "MDCG innovation data centre", "sink": "datacentre",
                    "status": "active", "datasets": ["press-01", "cnc-*"], "points_released": 123456,
                    "last_release": "2026-12-02T01:30:00Z"}])
    with health_server_thread(FixedReport(report)) as origin:
        for locale, oee_label, status_word in (("en-US", "OEE 71.3 %", "active"),
                                               ("ko-KR", "설비종합효율 71.3 %", "유효")):
            recorded = RecordedPage(browser, locale=locale)
            try:
                page = recorded.page
                page.goto(origin + "/")
                page.locator("#kpis .tile").first.wait_for(timeout=30_000)
                tiles = page.locator("#kpis .tile")
                assert tiles.count() == 1  # press-02 has no shift running
                assert oee_label in tiles.inner_text() and "press-01" in tiles.inner_text()
                contracts = page.locator("#contracts tbody tr")
                assert contracts.count() == 1
                row = contracts.inner_text()
                assert "mdcg-2026-017" in row and status_word in row and "press-01, cnc-*" in row
                assert "123,456" in row or "123.456" in row
                assert "2026" in row
                page.screenshot(path=str(screenshots / f"kpi-contracts-{locale}.png"), full_page=True)
            finally:
                recorded.close()
