"""The release stage on a simulated clock: validity (start, expiry mid-window), overlapping
contracts for one sink, dataset globs and categories, epoch-aligned windows checked against the
raw data, late readings, pseudonyms, and a restart that neither loses nor repeats a window."""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from mos_agent.lineprotocol import parse_lines, series_prefix
from mos_agent.sharing.contracts import Contract
from mos_agent.sharing.ledger import Ledger, contract_totals
from mos_agent.sharing.pseudonyms import KEY_FILE, Pseudonymiser, load_or_create_key
from mos_agent.sharing.release import LATE_ALLOWANCE, ReleaseStage

S = 1_000_000_000
T0 = 1_796_083_200 * S  # 2026-12-01T00:00:00Z, a multiple of every window length used here
COMMIT = 0.2
GRACE = int((COMMIT + LATE_ALLOWANCE) * S)
REAL_NAMES = ("changwon", "stamping", "line-1", "cell-2", "press-01", "cnc-01", "cnc-02")


def contract(cid: str, *, start: int = T0, end: int = T0 + 3600 * S, datasets: tuple[str, ...] = ("press-01",),
             categories: tuple[str, ...] = ("process", "production", "energy", "kpi"),
             resolution_s: float | None = None, pseudonymise: bool = False, sink: str = "datacentre") -> Contract:
    return Contract(id=cid, title=None, consumer="MDCG", sink=sink, valid_from_ns=start, valid_to_ns=end,
                    datasets=datasets, categories=frozenset(categories),
                    resolution_ns=None if resolution_s is None else int(resolution_s * S),
                    pseudonymise=pseudonymise, path=Path(f"{cid}.yaml"))


def line(ts: int, value: float | None = None, *, equipment: str = "press-01", tag: str = "pressure",
         category: str = "process", quality: str = "good", text: str | None = None) -> bytes:
    prefix = series_prefix(category, [("site", "changwon"), ("area", "stamping"), ("line", "line-1"),
                                      ("cell", "cell-2"), ("equipment", equipment), ("tag", tag),
                                      ("stage", "forming"), ("kind", "sample"), ("unit", "bar"),
                                      ("quality", quality)])
    if text is not None:
        fields = f'text="{text}",quality_code=0i'
    elif value is None:
        fields = "quality_code=1001i"
    else:
        fields = f"value={value!r},quality_code=0i"
    return f"{prefix}{fields} {ts}".encode()


def body(lines: list[bytes]) -> bytes:
    return b"\n".join(lines) + b"\n"


def released(stage_output) -> list[tuple[str, dict[str, str], dict, int]]:
    if stage_output is None or stage_output.payload is None:
        return []
    return [(m, t, f, ts) for m, t, f, ts in parse_lines(stage_output.payload.plain)]


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = Ledger(tmp_path)
    yield led
    led.close()


def make_stage(ledger: Ledger, contracts: list[Contract], key: bytes | None = None) -> ReleaseStage:
    return ReleaseStage("datacentre", contracts, ledger, Pseudonymiser(key) if key else None, commit_interval=COMMIT)


# ---------------------------------------------------------------- raw releases and validity


def test_raw_release_keeps_exactly_the_readings_acquired_within_the_validity(ledger: Ledger) -> None:
    stage = make_stage(ledger, [contract("c1", start=T0 + 10 * S, end=T0 + 20 * S)])
    lines = [line(T0 + i * S, float(i)) for i in range(31)]
    out = stage.process(1, 1, body(lines), T0 + 31 * S)
    times = [ts for *_, ts in released(out)]
    assert times == [T0 + i * S for i in range(10, 21)]  # both ends of the validity included
    stage.commit(out)
    totals = contract_totals(ledger.path.parent, ["c1"])["c1"]
    assert totals.points == 11 and totals.first_ns == T0 + 10 * S and totals.last_ns == T0 + 20 * S
    assert totals.datasets == {"press-01": 11}


def test_globs_and_categories_select_what_is_released(ledger: Ledger) -> None:
    stage = make_stage(ledger, [contract("c1", datasets=("cnc-*",), categories=("energy", "kpi"))])
    lines = [line(T0 + S, 1.0, equipment="cnc-01", category="energy"),
             line(T0 + S, 2.0, equipment="cnc-02", category="kpi"),
             line(T0 + S, 3.0, equipment="cnc-01", category="process"),  # category not released
             line(T0 + S, 4.0, equipment="press-01", category="energy"),  # not matched by the glob
             line(T0 + S, 5.0, equipment="xcnc-01", category="energy")]
    got = {(t["equipment"], m) for m, t, _, _ in released(stage.process(1, 1, body(lines), T0 + 2 * S))}
    assert got == {("cnc-01", "energy"), ("cnc-02", "kpi")}


def test_overlapping_contracts_release_a_reading_once_per_form_and_audit_each(ledger: Ledger) -> None:
    wide = contract("wide", datasets=("press-*", "cnc-*"), end=T0 + 100 * S)
    narrow = contract("narrow", datasets=("press-01",), start=T0 + 50 * S, end=T0 + 200 * S)
    windows = contract("windows", datasets=("press-01",), resolution_s=60)
    stage = make_stage(ledger, [wide, narrow, windows])
    lines = [line(T0 + i * S, float(i)) for i in range(0, 200, 10)]
    out = stage.process(1, 1, body(lines), T0 + 300 * S)
    rest = stage.due(T0 + 3600 * S)  # the series fell silent: its last window closes
    raw = [ts for _, _, f, ts in released(out) if "count" not in f]
    aggregated = [(ts, f["count"]) for _, _, f, ts in released(out) + released(rest) if "count" in f]
    # the union of the two raw contracts' validity, each reading once
    assert raw == [T0 + i * S for i in range(0, 200, 10)]
    assert aggregated == [(T0, 6), (T0 + 60 * S, 6), (T0 + 120 * S, 6), (T0 + 180 * S, 2)]
    stage.commit(out)
    stage.commit(rest)
    totals = contract_totals(ledger.path.parent, ["wide", "narrow", "windows"])
    assert totals["wide"].points == 11  # 0..100 s
    assert totals["narrow"].points == 15  # 50..190 s
    assert totals["windows"].points == 4


def test_contract_starting_later_releases_from_its_start_only(ledger: Ledger) -> None:
    stage = make_stage(ledger, [contract("later", start=T0 + 15 * S, resolution_s=10)])
    lines = [line(T0 + i * S, float(i)) for i in range(30)]
    out = stage.process(1, 1, body(lines), T0 + 60 * S)
    windows = {ts: f for _, _, f, ts in released(out) + released(stage.due(T0 + 3600 * S))}
    assert sorted(windows) == [T0 + 10 * S, T0 + 20 * S]  # nothing of the window before the start
    assert windows[T0 + 10 * S]["count"] == 5 and windows[T0 + 10 * S]["min"] == 15.0
    assert windows[T0 + 20 * S]["count"] == 10


def test_expiry_mid_window_releases_that_window_with_the_readings_before_the_end_only(ledger: Ledger) -> None:
    stage = make_stage(ledger, [contract("ends", end=T0 + 25 * S, resolution_s=10)])
    lines = [line(T0 + i * S, float(i)) for i in range(50)]
    first = stage.process(1, 1, body(lines[:22]), T0 + 22 * S)
    assert [ts for *_, ts in released(first)] == [T0]  # [10, 20) still within the grace
    stage.commit(first)
    second = stage.process(2, 2, body(lines[22:]), T0 + 50 * S)
    windows = {ts: f for _, _, f, ts in released(second)}
    assert sorted(windows) == [T0 + 10 * S, T0 + 20 * S]
    assert windows[T0 + 20 * S]["count"] == 6 and windows[T0 + 20 * S]["max"] == 25.0
    # the clock alone releases nothing more: there is nothing after the end
    assert stage.due(T0 + 3600 * S) is None


def test_windows_close_by_the_rows_read_or_by_the_clock_and_late_readings_are_counted(ledger: Ledger) -> None:
    stage = make_stage(ledger, [contract("c1", resolution_s=10)])
    out = stage.process(1, 1, body([line(T0 + i * S, float(i)) for i in range(10)]), T0 + 10 * S)
    assert out.payload is None  # [0, 10) is within its grace
    assert stage.due(T0 + 10 * S + GRACE - 1) is None
    closed = stage.due(T0 + 10 * S + GRACE)
    assert [(ts, f["count"]) for _, _, f, ts in released(closed)] == [(T0, 10)]
    stage.commit(closed)
    late = stage.process(2, 2, body([line(T0 + 5 * S, 99.0), line(T0 + 12 * S, 12.0)]), T0 + 13 * S)
    assert late.payload is None and stage.late_points == 1


def test_aggregation_matches_the_raw_data(ledger: Ledger) -> None:
    rng = np.random.default_rng(7)
    n = 20_000
    times = np.sort(rng.integers(T0, T0 + 600 * S, n))
    values = rng.normal(100.0, 15.0, n).round(3)
    quality = rng.choice(["good", "good", "good", "bad", "uncertain"], n)
    tags = rng.choice(["p1", "p2", "p3"], n)
    lines = [line(int(t), float(v), tag=str(tag), quality=str(q))
             for t, v, tag, q in zip(times, values, tags, quality, strict=True)]
    stage = make_stage(ledger, [contract("agg", resolution_s=60)])
    got: dict[tuple[str, int], dict] = {}
    for i in range(0, n, 3000):  # in several buffer batches, as the sink reads them
        chunk = lines[i:i + 3000]
        out = stage.process(i, i, body(chunk), int(times[min(i + 2999, n - 1)]))
        got.update({(t["tag"], ts): f for _, t, f, ts in released(out)})
        stage.commit(out)
    got.update({(t["tag"], ts): f for _, t, f, ts in released(stage.due(T0 + 3600 * S))})
    expected: dict[tuple[str, int], list[float]] = defaultdict(list)
    for t, v, tag, q in zip(times, values, tags, quality, strict=True):
        if q == "good":
            expected[(str(tag), int(t) - int(t) % (60 * S))].append(float(v))
    assert set(got) == set(expected)
    for key, samples in expected.items():
        fields = got[key]
        assert fields["count"] == len(samples)
        assert fields["min"] == min(samples) and fields["max"] == max(samples)
        assert fields["value"] == pytest.approx(sum(samples) / len(samples), rel=1e-12)
        assert key[1] % (60 * S) == 0


def test_text_and_failed_reads_do_not_enter_windows_but_travel_raw(ledger: Ledger) -> None:
    stage = make_stage(ledger, [contract("raw"), contract("agg", resolution_s=10)])
    lines = [line(T0 + S, 1.0), line(T0 + 2 * S, None, quality="bad"), line(T0 + 3 * S, text="RUNNING"),
             line(T0 + 20 * S, 2.0)]
    out = released(stage.process(1, 1, body(lines), T0 + 40 * S)) + released(stage.due(T0 + 3600 * S))
    windows = [(ts, f["count"]) for _, _, f, ts in out if "count" in f]
    assert windows == [(T0, 1), (T0 + 20 * S, 1)]
    assert sum(1 for _, _, f, _ in out if "count" not in f) == 4


# ---------------------------------------------------------------- pseudonyms


def test_pseudonym_key_is_made_once_private_and_pseudonyms_survive_a_restart(tmp_path: Path, ledger: Ledger) -> None:
    key = load_or_create_key(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / KEY_FILE).st_mode) == 0o600
    assert load_or_create_key(tmp_path) == key  # read, not made again
    lines = [line(T0 + i * S, float(i), equipment=eq, text="press-01 stopped" if i == 3 else None)
             for i, eq in enumerate(("press-01", "cnc-01", "cnc-02", "press-01"))]
    contracts = [contract("p", datasets=("*",), pseudonymise=True),
                 contract("pw", datasets=("*",), pseudonymise=True, resolution_s=1)]
    first = make_stage(ledger, contracts, key).process(1, 1, body(lines), T0 + 60 * S)
    second = make_stage(ledger, contracts, load_or_create_key(tmp_path)).process(1, 1, body(lines), T0 + 60 * S)
    assert first.payload is not None and second.payload is not None
    assert first.payload.plain == second.payload.plain  # same key, same pseudonyms
    text = first.payload.plain.decode()
    for name in REAL_NAMES:
        assert name not in text, name
    labels = [t for _, t, _, _ in released(first)]
    assert len({t["equipment"] for t in labels}) == 3
    assert all(t["tag"] == "pressure" and len(t["equipment"]) == 16 for t in labels)
    other = Pseudonymiser(b"another key of thirty-two bytes!").levels({"site": "changwon"})
    assert other["site"] not in text  # keyed: another key gives other pseudonyms


def test_key_readable_by_others_is_made_private(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path)
    os.chmod(tmp_path / KEY_FILE, 0o644)
    assert load_or_create_key(tmp_path) == key
    assert stat.S_IMODE(os.stat(tmp_path / KEY_FILE).st_mode) == 0o600


# ---------------------------------------------------------------- restart


def test_restart_releases_every_window_once_and_whole(tmp_path: Path) -> None:
    """A crash after windows were released but before the next checkpoint: the stage rebuilt
    from the ledger skips the released windows and completes the open ones from the rows it
    reads again — the union equals an uninterrupted run."""
    contracts = [contract("agg", resolution_s=10)]
    lines = [line(T0 + i * S // 2, float(i)) for i in range(200)]  # 0..99.5 s
    batches = [(r, lines[r * 20:(r + 1) * 20], T0 + (r + 1) * 10 * S) for r in range(10)]

    reference_ledger = Ledger(tmp_path / "reference")
    reference = make_stage(reference_ledger, contracts)
    expected = []
    for row, chunk, created in batches:
        expected += released(reference.process(row + 1, row + 1, body(chunk), created))
    expected += released(reference.due(T0 + 3600 * S))

    led = Ledger(tmp_path / "crash")
    stage = ReleaseStage("datacentre", contracts, led, None, commit_interval=COMMIT, checkpoint_interval=3600)
    got = []
    cursor_row = 0
    for row, chunk, created in batches[:6]:
        out = stage.process(row + 1, row + 1, body(chunk), created)
        got += released(out)
        moved = stage.commit(out, force_checkpoint=row == 2)
        cursor_row = moved if moved is not None else cursor_row
    assert cursor_row == 3  # the cursor waits at the checkpoint
    led.close()

    led = Ledger(tmp_path / "crash")  # kill -9: only the ledger and the buffer cursor remain
    stage = ReleaseStage("datacentre", contracts, led, None, commit_interval=COMMIT, checkpoint_interval=3600)
    start = stage.start_row(cursor_row)
    for row, chunk, created in batches[start:]:
        out = stage.process(row + 1, row + 1, body(chunk), created)
        got += released(out)
        stage.commit(out)
    got += released(stage.due(T0 + 3600 * S))
    led.close()
    assert sorted(got, key=lambda r: r[3]) == sorted(expected, key=lambda r: r[3])
    assert len({ts for *_, ts in got}) == len(got) == 10


def test_readings_buffered_late_but_in_order_close_their_windows_as_they_move(ledger: Ledger) -> None:
    """An hour of readings reaching the buffer only now (a broker's queue after an outage): every
    window is released whole as the readings move past it, none counted late."""
    stage = make_stage(ledger, [contract("backfill", datasets=("*",), resolution_s=10)])
    now = T0 + 3600 * S
    got = []
    for second in range(0, 60, 5):  # rows committed now, each holding 5 s of two series
        rows = [line(T0 + (second + i) * S, float(second + i), equipment=eq) for i in range(5)
                for eq in ("press-01", "cnc-01")]
        got += released(stage.process(second + 1, second + 1, body(rows), now))
    assert stage.late_points == 0
    assert [(t["equipment"], ts, f["count"]) for _, t, f, ts in got] == [
        (eq, T0 + w * S, 10) for w in range(0, 50, 10) for eq in ("press-01", "cnc-01")]  # [50, 60) still open
    last = released(stage.due(now + 10 * S))
    assert [(t["equipment"], ts) for _, t, _, ts in last] == [("press-01", T0 + 50 * S), ("cnc-01", T0 + 50 * S)]


def test_a_series_that_falls_silent_holds_no_window_back(ledger: Ledger) -> None:
    stage = make_stage(ledger, [contract("c", datasets=("*",), resolution_s=10)])
    first = [line(T0 + i * S, 1.0, equipment="cnc-01") for i in range(15)] + \
        [line(T0 + i * S, 2.0, equipment="press-01") for i in range(15)]
    assert released(stage.process(1, 1, body(first), T0 + 15 * S)) != []  # [0, 10) of both
    # press-01 stops; cnc-01 goes on and its windows close once press-01 is silent for the grace
    second = [line(T0 + i * S, 1.0, equipment="cnc-01") for i in range(15, 40)]
    out = released(stage.process(2, 2, body(second), T0 + 40 * S))
    assert sorted((t["equipment"], ts) for _, t, _, ts in out) == [
        ("cnc-01", T0 + 10 * S), ("cnc-01", T0 + 20 * S), ("press-01", T0 + 10 * S)]


def test_contract_status_changes_are_reported_once(ledger: Ledger) -> None:
    import time

    now = time.time_ns()
    stage = make_stage(ledger, [contract("soon", start=now + 10 * S, end=now + 20 * S)])
    assert stage.status_changes(now) == []
    started = stage.status_changes(now + 10 * S)
    assert len(started) == 1 and "soon" in started[0] and "active" in started[0]
    assert stage.status_changes(now + 15 * S) == []
    assert "expired" in stage.status_changes(now + 21 * S)[0]


def test_lines_that_are_not_ours_release_nothing_and_stop_nothing(ledger: Ledger) -> None:
    stage = make_stage(ledger, [contract("raw", datasets=("*",))])
    lines = [b"process,equipment=press-01 value=1 not-a-time", b"garbage", b"process value=1",
             b'process,site=changwon,area=stamping,equipment=press\\ 01,tag=t\\=1,quality=good value=2 ' +
             str(T0).encode(), line(T0 + S, 3.0)]
    got = released(stage.process(1, 1, body(lines), T0 + 2 * S))
    assert [(t["equipment"], f["value"]) for _, t, f, _ in got] == [("press 01", 2.0), ("press-01", 3.0)]
