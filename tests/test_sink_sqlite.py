"""The local history sink and ``mos-agent query``: readings written through the buffer come back
with their values, texts, quality and codes; retention and resends behave."""

from __future__ import annotations

import json
import logging
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mos_agent.batch import ReadingBatch
from mos_agent.cli import main as cli_main
from mos_agent.config.loader import load_config
from mos_agent.config.models import SqliteSinkConfig
from mos_agent.lineprotocol import series_prefix
from mos_agent.normalise import Normaliser
from mos_agent.payload import Payload
from mos_agent.series import SeriesSpec, SeriesTable, make_asset
from mos_agent.sinks.base import SinkRejected
from mos_agent.sinks.forward import StoreAndForward
from mos_agent.sinks.sqlite import SqliteHistorySink
from mos_agent.taxonomy import CollectorCode, Quality

PROGRAM = 'P-100 "rev, 2" = final\\draft'


def _write_config(tmp_path: Path, retention: str = "1d") -> Path:
    config = tmp_path / "agent.yaml"
    config.write_text(
        "agent:\n  id: gw\n  site: plant\n"
        f"  state_dir: {tmp_path / 'state'}\n  health: 'off'\n"
        "devices: []\n"
        f"sinks:\n  - type: sqlite\n    retention: {retention}\n    flush_interval: 50ms\n")
    return config


def _normaliser() -> Normaliser:
    table = SeriesTable()
    asset = make_asset({"site": "plant", "area": "stamping", "line": "line-1", "equipment": "press-01"})
    table.add(SeriesSpec(asset=asset, tag="oil temp", category="process", kind="sample", stage="forming",
                         unit="Cel"))
    table.add(SeriesSpec(asset=asset, tag="program", category="production", kind="event", stage="forming",
                         data_type="string"))
    table.add(SeriesSpec(asset=asset, tag="pressure", category="process", kind="sample", stage="forming",
                         unit="bar"))
    return Normaliser(table)


def _readings(now_ns: int) -> bytes:
    """Six readings: two good temperatures, a program name (text), a bad pressure read (timeout),
    an uncertain temperature, a good pressure."""
    batch = ReadingBatch.build(
        series=[0, 0, 1, 2, 0, 2],
        values=[41.5, 42.25, np.nan, np.nan, 43.0, 180.5],
        timestamps=[now_ns - 5_000_000_000 + i * 1_000_000_000 for i in range(6)],
        quality=[Quality.GOOD, Quality.GOOD, Quality.GOOD, Quality.BAD, Quality.UNCERTAIN, Quality.GOOD],
        codes=[0, 0, 0, CollectorCode.TIMEOUT, 7, 0],
        texts={2: PROGRAM},
    )
    chunk = _normaliser().process(batch)
    assert chunk.points == 6
    return chunk.body


def _run_store(config_path: Path, bodies: list[bytes]) -> StoreAndForward:
    loaded = load_config(config_path)
    store = StoreAndForward(loaded.agent, Path(loaded.agent.agent.state_dir), logging.getLogger("test.hist"))
    store.start()
    try:
        for body in bodies:
            store.append([body], [body.count(b"\n")])
        deadline = time.monotonic() + 30
        while store.status().sinks[0].lag_points and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.status().sinks[0].lag_points == 0
    finally:
        store.stop(5)
    return store


def test_readings_round_trip_through_the_history_and_query(tmp_path: Path, capsys) -> None:
    config = _write_config(tmp_path)
    now = time.time_ns()
    _run_store(config, [_readings(now)])

    assert cli_main(["query", "-c", str(config), "press-01", "--json", "--since", "1h"]) == 0
    rows = json.loads(capsys.readouterr().out)
    got = [(r["tag"], r["value"], r["text"], r["quality"], r["quality_code"], r["measurement"], r["unit"])
           for r in rows]
    assert got == [
        ("oil temp", 41.5, None, "good", 0, "process", "Cel"),
        ("oil temp", 42.25, None, "good", 0, "process", "Cel"),
        ("program", None, PROGRAM, "good", 0, "production", ""),
        ("pressure", None, None, "bad", int(CollectorCode.TIMEOUT), "process", "bar"),
        ("oil temp", 43.0, None, "uncertain", 7, "process", "Cel"),
        ("pressure", 180.5, None, "good", 0, "process", "bar"),
    ]
    assert [r["ts_ns"] for r in rows] == [now - 5_000_000_000 + i * 1_000_000_000 for i in range(6)]
    assert {r["area"] for r in rows} == {"stamping"} and {r["equipment"] for r in rows} == {"press-01"}

    # one tag (with a space in its name), newest two only
    assert cli_main(["query", "-c", str(config), "press-01", "oil temp", "--json", "--limit", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["value"], r["quality"]) for r in rows] == [(42.25, "good"), (43.0, "uncertain")]

    # the table shows the same readings
    assert cli_main(["query", "-c", str(config), "press-01"]) == 0
    table = capsys.readouterr().out
    for text in ("oil temp", "41.5", "program", "bad", str(int(CollectorCode.TIMEOUT)), "180.5", "uncertain"):
        assert text in table
    assert "P-100" in table


def test_query_names_the_known_devices_and_tags_on_a_mistake(tmp_path: Path, capsys) -> None:
    config = _write_config(tmp_path)
    _run_store(config, [_readings(time.time_ns())])
    assert cli_main(["query", "-c", str(config), "press-99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown device 'press-99'" in err[0] and "press-01" in err[0]
    assert cli_main(["query", "-c", str(config), "press-01", "oil_temp"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no tag 'oil_temp'" in err[0] and "oil temp" in err[0] and "pressure" in err[0]


def test_query_without_a_sqlite_sink_says_so(tmp_path: Path, capsys) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(f"agent:\n  id: gw\n  site: plant\n  state_dir: {tmp_path}\ndevices: []\n")
    assert cli_main(["query", "-c", str(config), "press-01"]) == 2
    assert "no 'type: sqlite' sink" in capsys.readouterr().err


def test_resends_overwrite_and_retention_removes_old_points(tmp_path: Path) -> None:
    config = _write_config(tmp_path, retention="1d")
    now = time.time_ns()
    fresh = _readings(now)
    old = _readings(now - 3 * 86400 * 10**9)
    _run_store(config, [old, fresh, fresh])  # fresh twice: a resend after a crash
    conn = sqlite3.connect(tmp_path / "state" / "history.sqlite")
    try:
        count, oldest = conn.execute("SELECT count(*), min(ts_ns) FROM points").fetchone()
        series = conn.execute("SELECT count(*) FROM series").fetchone()[0]
    finally:
        conn.close()
    assert count == 6 and oldest >= now - 86400 * 10**9
    assert series == 3  # quality is per point, not a new series


def test_malformed_line_protocol_is_rejected_for_the_dead_letter_path(tmp_path: Path) -> None:
    config = load_config(_write_config(tmp_path)).agent.sinks[0]
    sink = SqliteHistorySink("sqlite", config, tmp_path)
    try:
        with pytest.raises(SinkRejected, match="line 2"):
            sink.write(Payload(2, plain=b"process,tag=a value=1 1\nprocess,tag=b value=\n"))
        sink.write(Payload(1, plain=b"process,equipment=e,tag=a value=1 1\n"))
    finally:
        sink.close()


@settings(max_examples=200, deadline=None)
@given(tag=st.text(min_size=1, max_size=20), equipment=st.from_regex(r"[a-z0-9_-]{1,12}", fullmatch=True),
       quality=st.sampled_from(["good", "uncertain", "bad"]), value=st.floats(allow_nan=False, allow_infinity=False),
       code=st.integers(-2**31, 2**31), ts=st.integers(0, 2**62))
def test_fast_path_and_general_parser_store_the_same_row(tag: str, equipment: str, quality: str, value: float,
                                                          code: int, ts: int) -> None:
    prefix = series_prefix("process", [("equipment", equipment), ("tag", tag), ("quality", quality)])
    line = f"{prefix}value={value!r},quality_code={code}i {ts}".encode()
    with tempfile.TemporaryDirectory() as state:
        sink = SqliteHistorySink("sqlite", SqliteSinkConfig(type="sqlite", retention=86400.0), Path(state))
        try:
            fast = sink._rows(line + b"\n")
            general = [sink._general_row(line, 0)]
            assert fast == general
            series_id, stored_ts, stored_value, text, stored_quality, stored_code = fast[0]
            assert (stored_ts, stored_value, text, stored_quality, stored_code) == (ts, value, None, quality, code)
            row = sink._conn.execute("SELECT equipment, tag FROM series WHERE id = ?", (series_id,)).fetchone()
            assert row == (equipment, tag)
        finally:
            sink.close()


def test_a_history_without_the_series_time_key_is_rebuilt_with_it(tmp_path: Path) -> None:
    """A ``points`` table without its key held every resend; on opening it is rebuilt with one row
    per (series, time) — the one written last — and later resends overwrite."""
    path = tmp_path / "history.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE series (id INTEGER PRIMARY KEY, measurement TEXT NOT NULL DEFAULT '',
            site TEXT NOT NULL DEFAULT '', area TEXT NOT NULL DEFAULT '', line TEXT NOT NULL DEFAULT '',
            cell TEXT NOT NULL DEFAULT '', equipment TEXT NOT NULL DEFAULT '', tag TEXT NOT NULL DEFAULT '',
            stage TEXT NOT NULL DEFAULT '', kind TEXT NOT NULL DEFAULT '', unit TEXT NOT NULL DEFAULT '',
            labels TEXT NOT NULL DEFAULT '{}');
        CREATE TABLE points (series_id INTEGER NOT NULL, ts_ns INTEGER NOT NULL, value REAL, text TEXT,
            quality TEXT, quality_code INTEGER);
        INSERT INTO series(id, measurement, equipment, tag) VALUES (1, 'process', 'press-01', 'a');
    """)
    t1, t2 = time.time_ns() - 2000, time.time_ns() - 1000
    conn.executemany("INSERT INTO points VALUES (1, ?, ?, NULL, 'good', 0)",
                     [(t1, 1.0), (t1, 2.0), (t2, 3.0), (t2, 3.0)])
    conn.commit()
    conn.close()
    sink = SqliteHistorySink("sqlite", SqliteSinkConfig(type="sqlite", path=path, retention=86400.0), tmp_path)
    try:
        sink.write(Payload(1, plain=f"process,equipment=press-01,tag=a,quality=good value=4.0 {t2}\n".encode()))
        rows = sink._conn.execute("SELECT ts_ns, value FROM points ORDER BY ts_ns").fetchall()
        key = [c[1] for c in sink._conn.execute("PRAGMA table_info(points)") if c[5]]
    finally:
        sink.close()
    assert rows == [(t1, 2.0), (t2, 4.0)]
    assert key == ["series_id", "ts_ns"]
