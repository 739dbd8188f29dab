"""The Grafana dashboard in dashboards/ asks VictoriaMetrics' Prometheus API what it shows: every
panel's query, with the template variables substituted as Grafana would (each variable's own query
run first; "All" and one chosen asset path; a repeated panel once per category), returns data
from a VictoriaMetrics fed by the agent running for real with the Modbus simulators. One simulator
is stopped on the way, so bad readings and stale series exist too. The presses' KPIs are the agent's
own (a shift calendar starting with the test; measurement ``kpi``, field ``value``)."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from mos_agent.commands.demo import DEMO_TIMEZONE, demo_shifts
from mos_agent.localservers import free_port
from tests.support.servers import StoreReader, VictoriaMetrics
from tests.support.simulators import start_modbus_sim
from tests.support.waiting import wait_until
from tests.test_service import AgentProcess, write_device

DASHBOARD = Path(__file__).resolve().parent.parent / "dashboards" / "mos-agent-taxonomy.json"
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")

pytestmark = pytest.mark.slow


def prometheus(store: str, path: str, **params: str) -> Any:
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{store}/api/v1/{path}?{query}", timeout=30) as r:
        answer = json.loads(r.read())
    assert answer["status"] == "success", answer
    return answer["data"]


def substitute(text: str, values: dict[str, list[str]]) -> str:
    """Grafana's interpolation for a Prometheus data source: a multi-value or "All" variable
    becomes a regex alternation."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"the query uses ${name}, which the dashboard does not define")
        chosen = values[name]
        return chosen[0] if len(chosen) == 1 else "(" + "|".join(re.escape(v) for v in chosen) + ")"

    return VARIABLE.sub(value, text)


def resolve_variables(dashboard: dict[str, Any], store: str, pick: dict[str, str] | None) -> dict[str, list[str]]:
    """Each variable in order, as Grafana resolves them: ``label_values(selector, label)`` asks
    the store (after the variables before it), a custom variable takes its smallest option. With
    ``pick`` a query variable takes the value named there or else its first one (one asset path),
    without it "All" (``.*``); the category always takes every value (it repeats a panel)."""
    values: dict[str, list[str]] = {}
    for var in dashboard["templating"]["list"]:
        name = var["name"]
        if var["type"] == "datasource":
            continue
        if var["type"] == "custom":
            values[name] = [var["options"][0]["value"]]
            continue
        definition = var["definition"]
        match = re.fullmatch(r"label_values\((.*), (\w+)\)", definition)
        assert match, definition
        selector, label = substitute(match.group(1), values), match.group(2)
        found = prometheus(store, f"label/{label}/values", **{"match[]": selector})
        if var.get("regex"):
            pattern = re.compile(var["regex"].strip("/"))
            found = sorted({m.group(1) for v in found if (m := pattern.fullmatch(v))})
        assert found, f"variable {name}: {definition} finds nothing"
        if name == "category":
            values[name] = found
        elif pick is not None:
            assert pick.get(name, found[0]) in found, (name, found)
            values[name] = [pick.get(name, found[0])]
        else:
            values[name] = [var["allValue"]]
    return values


def panel_queries(dashboard: dict[str, Any], values: dict[str, list[str]]) -> list[tuple[str, str, str]]:
    """(panel title, panel type, query) for every target; a repeated panel once per value."""
    queries = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        repeated = panel.get("repeat")
        repeats = [{**values, repeated: [v]} for v in values[repeated]] if repeated else [values]
        for chosen in repeats:
            for target in panel["targets"]:
                queries.append((substitute(panel["title"], chosen), panel["type"], substitute(target["expr"], chosen)))
    return queries


@pytest.fixture
def fed_store(tmp_path: Path, victoria: VictoriaMetrics) -> Iterator[str]:
    """VictoriaMetrics with a few minutes' worth of the agent's data: two presses, one of which
    stopped answering more than the dashboard's shortest staleness ago."""
    sims: list[subprocess.Popen] = []
    for name in ("press-01", "press-02"):
        sim, device = start_modbus_sim(tmp_path, name)
        sims.append(sim)
        device["poll_interval"] = "250ms"
        write_device(tmp_path, device)
    health = f"127.0.0.1:{free_port()}"
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({
        "agent": {"id": "gw-dash", "site": "changwon", "state_dir": str(tmp_path / "state"), "health": health,
                  "timezone": DEMO_TIMEZONE},
        "devices": "devices/*.yaml",
        # a shift from now on: the presses' kpi: blocks (from the simulator's device file) emit KPIs
        "shifts": demo_shifts(datetime.now(ZoneInfo(DEMO_TIMEZONE))), "kpi": {"interval": "1s"},
        "sinks": [{"type": "influxdb", "url": victoria.url, "org": "mdcg", "bucket": "factory",
                   "token": "store-token-1234", "flush_interval": "200ms"}]}))
    agent = AgentProcess(config, tmp_path / "agent.log")
    reader = StoreReader(victoria.url)
    try:
        wait_until(lambda: all(reader.count(f'{{__name__="kpi_value", tag="oee", equipment="{name}"}}') > 0
                               for name in ("press-01", "press-02")), 60, what=agent.text)
        sims[1].terminate()  # press-02 stops answering: bad readings from now on, its values go stale
        sims[1].wait(10)
        stopped = time.monotonic()
        # the shortest staleness the dashboard offers is 30 s
        wait_until(lambda: time.monotonic() - stopped > 35, 60)
        reader.flush()
        yield victoria.url
    finally:
        agent.stop()
        for sim in sims:
            sim.terminate()
            sim.wait(10)


def test_every_panel_query_returns_data(fed_store: str) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    # "All", then one asset path: the stopped press's (the healthy one has no bad reading and no
    # stale series to show)
    for pick in (None, {"equipment": "press-02"}):
        values = resolve_variables(dashboard, fed_store, pick)
        assert set(values["category"]) >= {"process", "production", "equipment_state", "energy", "maintenance"}
        if pick:
            assert (values["site"], values["area"], values["line"]) == (["changwon"], ["stamping"], ["line-1"])
        queries = panel_queries(dashboard, values)
        assert len(queries) > len(values["category"])
        now = time.time()
        empty = []
        for title, kind, expr in queries:
            if kind == "timeseries":
                data = prometheus(fed_store, "query_range", query=expr, start=str(now - 300), end=str(now), step="15")
            else:
                data = prometheus(fed_store, "query", query=expr, time=str(now))
            if not data["result"]:
                empty.append(f"{title}: {expr}")
        assert empty == [], f"with {values}"

    values = resolve_variables(dashboard, fed_store, None)
    queries = {title: expr for title, _, expr in panel_queries(dashboard, values)}
    # OEE per equipment and shift: the latest figure of each
    (oee,) = [q for title, q in queries.items() if title.startswith("OEE per equipment")]
    # at a moment a few seconds back, whose records have all reached the store (the agent goes on
    # writing KPIs while the test runs)
    at = round(time.time()) - 5
    result = prometheus(fed_store, "query", query=oee, time=str(at))["result"]
    figures = {(r["metric"]["equipment"], r["metric"]["shift"]): float(r["value"][1]) for r in result}
    # the newest OEE record of each equipment at that moment, as the agent wrote it
    newest: dict[tuple[str, str], tuple[int, float]] = {}
    for series in StoreReader(fed_store).export('{__name__="kpi_value", tag="oee"}'):
        key = (series["metric"]["equipment"], series["metric"]["shift"])
        samples = [(ms, v) for ms, v in zip(series["timestamps"], series["values"], strict=True) if ms <= at * 1000]
        ms, value = max(samples)
        if key not in newest or ms > newest[key][0]:
            newest[key] = (ms, value)
    assert figures == {key: value for key, (_, value) in newest.items()}
    assert set(figures) == {("press-01", "day"), ("press-02", "day")}
    # stale series: those of the stopped press only
    (stale,) = [q for title, q in queries.items() if title.startswith("Stale series (")]
    result = prometheus(fed_store, "query", query=stale)["result"]
    assert result and {r["metric"]["equipment"] for r in result} == {"press-02"}
