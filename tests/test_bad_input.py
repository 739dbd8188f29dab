"""One bad reading becomes a bad-quality row or a repaired one, never a failed batch: text that is
not valid Unicode, rows the normaliser cannot encode, names a device hands over, and source times
outside the plausible window."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from mos_agent.batch import ReadingBatch, SourceTimeWindow
from mos_agent.config.models import AgentSection
from mos_agent.normalise import Normaliser
from mos_agent.pipeline import normalise_isolating
from mos_agent.series import SeriesSpec, SeriesTable, make_asset
from mos_agent.taxonomy import ASSET_NAME, CollectorCode, Quality, asset_name_for, shortened_name
from mos_agent.text import check_encoding, decoded, repaired

ASSET = make_asset({"site": "changwon", "area": "stamping", "equipment": "press-01"})
EUC_KR_BYTES = "온도 센서".encode("cp949")
# what asyncua hands over for an OPC UA String holding those bytes
AS_ASYNCUA_DECODES = EUC_KR_BYTES.decode("utf-8", "surrogateescape")


def table_of(*names: str, deadband: float = 0.0) -> SeriesTable:
    table = SeriesTable()
    for name in names:
        table.add(SeriesSpec(asset=ASSET, tag=name, category="process", kind="sample", stage="forming",
                             deadband=deadband, data_type="string" if name.startswith("label") else "float"))
    return table


class Reports:
    def __init__(self) -> None:
        self.seen: dict[str, int] = {}
        self.messages: list[str] = []

    def __call__(self, kind: str, message: str, count: int = 1) -> None:
        self.seen[kind] = self.seen.get(kind, 0) + count
        self.messages.append(message)


# ---------------------------------------------------------------- text


def test_bytes_in_a_legacy_code_page_are_read_back_losslessly() -> None:
    assert decoded(AS_ASYNCUA_DECODES, "cp949") == "온도 센서"
    assert decoded("plain ascii", "cp949") == "plain ascii"
    # a lone surrogate that stands for no byte (a JSON "\ud800" escape) cannot be decoded again
    assert decoded("a\ud800b", "cp949") == "a\ufffdb"


def test_undeclared_undecodable_bytes_become_replacement_characters() -> None:
    # each undecodable byte is one U+FFFD (C2 B5 happens to be valid UTF-8: µ)
    assert repaired(AS_ASYNCUA_DECODES) == "\ufffdµ\ufffd \ufffd\ufffd\ufffd\ufffd"
    assert repaired("온도") == "온도"


def test_encoding_names_are_checked_with_a_suggestion() -> None:
    assert check_encoding("EUC-KR") == "euc_kr"
    with pytest.raises(ValueError, match="did you mean 'cp949'"):
        check_encoding("cp-949")
    with pytest.raises(ValueError, match="unknown text encoding 'base64'"):
        check_encoding("base64")  # a bytes-to-bytes codec, not a text encoding


def test_text_with_lone_surrogates_is_stored_repaired_and_flagged_not_failed() -> None:
    reports = Reports()
    norm = Normaliser(table_of("label", "pressure"), report=reports)
    batch = ReadingBatch.build([0, 1, 0], [np.nan, 180.5, np.nan], [1, 2, 3],
                               texts={0: AS_ASYNCUA_DECODES, 2: "json \ud800 escape"})
    chunk = norm.process(batch)
    assert chunk.points == 3
    lines = chunk.body.decode("utf-8").splitlines()
    assert "quality=uncertain" in lines[0] and 'text="\ufffd' in lines[0] and "quality_code=1006i 1" in lines[0]
    assert "quality=good value=180.5 2" in lines[1]  # code 0 is not written
    assert 'text="json \ufffd escape",quality_code=1006i 3' in lines[2]
    assert norm.counts.text_repaired == 2 and reports.seen == {"text": 2}
    assert norm.table.last_text[0] == "json \ufffd escape"


def test_a_series_name_from_a_device_cannot_make_its_readings_unencodable() -> None:
    table = table_of(f"folder.{AS_ASYNCUA_DECODES}")
    chunk = Normaliser(table).process(ReadingBatch.build([0], [1.0], [5]))
    assert "\ufffd" in chunk.body.decode("utf-8")


# ---------------------------------------------------------------- isolation


def test_a_row_that_cannot_be_encoded_becomes_a_bad_row_and_its_neighbours_are_kept() -> None:
    reports = Reports()
    norm = Normaliser(table_of("a", "b", "c", "d"), report=reports)
    batch = ReadingBatch.build([0, 1, 2, 3], [1.0, 2.0, 3.0, 4.0], [10, 11, 12, 13])
    batch.quality[2] = 9  # a driver bug: no such quality class
    callbacks: list[int] = []
    batch.on_committed.append(lambda: callbacks.append(1))
    with pytest.raises(IndexError):
        Normaliser(table_of("a", "b", "c", "d")).process(batch)  # what the pipeline used to hit

    chunk = normalise_isolating(norm, batch, reports)
    lines = chunk.body.decode().splitlines()
    assert chunk.points == 4 and len(lines) == 4
    assert [line.split(",tag=")[1].split(",")[0] for line in lines] == ["a", "b", "c", "d"]
    assert "quality=bad quality_code=1006i 12" in lines[2]
    assert "value=4.0" in lines[3]
    assert reports.seen == {"normalise": 1} and "IndexError" in reports.messages[0]
    assert chunk.newest_ns == 13 and len(chunk.on_committed) == 1


def test_a_row_of_an_unknown_series_is_left_out_and_counted() -> None:
    reports = Reports()
    norm = Normaliser(table_of("a", "b"), report=reports)
    chunk = normalise_isolating(norm, ReadingBatch.build([0, 7, 1], [1.0, 2.0, 3.0], [1, 2, 3]), reports)
    assert chunk.points == 2 and reports.seen == {"normalise": 1}
    assert "left out" in reports.messages[0]


def test_isolation_does_not_let_the_failed_attempts_deadband_drop_readings() -> None:
    norm = Normaliser(table_of("a", "b", deadband=5.0), report=Reports())
    batch = ReadingBatch.build([0, 1], [100.0, 200.0], [1, 2])
    batch.quality[1] = 9
    chunk = normalise_isolating(norm, batch, Reports())
    assert chunk.points == 2
    assert "value=100.0" in chunk.body.decode()


def test_select_keeps_texts_and_source_times_with_their_rows() -> None:
    batch = ReadingBatch.build([0, 1, 2], [np.nan, 1.0, np.nan], [1, 2, 3], texts={0: "x", 2: "z"},
                               source_time=[True, False, True])
    part = batch.select(np.array([2, 1]))
    assert part.series.tolist() == [2, 1] and part.texts == {0: "z"}
    assert part.source_time is not None and part.source_time.tolist() == [True, False]


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("raw", ["온도계1", "습도계1", "Press01", "ENV.02", "a" * 300, "plant floor #2", "\udcbf"])
def test_asset_names_for_source_names_are_valid_stable_and_distinct(raw: str) -> None:
    name = asset_name_for(raw)
    assert ASSET_NAME.match(name) and len(name) <= 60
    assert asset_name_for(raw) == name
    assert name != raw


def test_asset_names_never_merge_equipment() -> None:
    raws = ["온도계1", "습도계1", "Press01", "press01", "press_01", "press-01", "PRESS01", "ENV.02", "env_02"]
    assert len({asset_name_for(raw) for raw in raws}) == len(raws)
    assert asset_name_for("press-01") == "press-01"  # a valid name stays as it is
    # the same on every run (not Python's salted hash): a fixed value
    assert asset_name_for("온도계1") == "1-b7059d5d73"


def test_long_names_are_shortened_deterministically_keeping_their_end() -> None:
    long_a = "Plant." + "VeryLongFolderName." * 15 + "Spindle.Speed"
    long_b = "Plant." + "VeryLongFolderName." * 15 + "Spindle.Load"
    a, b = shortened_name(long_a, 200), shortened_name(long_b, 200)
    assert len(a) == len(b) == 200 and a != b
    assert a.endswith("Spindle.Speed") and a.startswith("Plant.")
    assert shortened_name(long_a, 200) == a
    assert shortened_name("short", 200) == "short"


# ---------------------------------------------------------------- source times


def test_the_source_time_window_is_configurable_and_checked() -> None:
    window = AgentSection(id="gw", site="s").source_time.window()
    arrival = 1_750_000_000 * 10**9
    assert window.accepts(arrival, arrival)
    assert not window.accepts(631_152_000 * 10**9 - 1, arrival)  # before 1990
    assert not window.accepts(arrival + 86_401 * 10**9, arrival)
    assert not window.accepts(10**20, arrival)  # beyond int64 nanoseconds
    narrow = AgentSection(id="gw", site="s", source_time={"earliest": "2020-01-01", "max_ahead": "5s"})
    assert narrow.source_time.window() == SourceTimeWindow(1_577_836_800 * 10**9, 5 * 10**9)
    with pytest.raises(ValidationError, match="max_ahead must be at most a year"):
        AgentSection(id="gw", site="s", source_time={"max_ahead": "400d"})


def test_collector_codes_are_distinct() -> None:
    codes = [int(code) for code in CollectorCode]
    assert len(set(codes)) == len(codes) and CollectorCode.SOURCE_TIME_REPLACED == 1009
    assert Quality.UNCERTAIN == 1


def test_the_kpi_feed_sees_an_isolated_batch_once_and_cannot_cost_readings() -> None:
    seen: list[int] = []
    norm = Normaliser(table_of("a", "b", "c", "d"), report=Reports())
    norm.observer = lambda batch, rows: seen.append(len(batch))
    batch = ReadingBatch.build([0, 1, 2, 3], [1.0, 2.0, 3.0, 4.0], [10, 11, 12, 13])
    batch.quality[2] = 9
    assert normalise_isolating(norm, batch, Reports()).points == 4
    assert sum(seen) == 4  # each row once: the failed first attempt fed nothing

    def broken(batch: ReadingBatch, rows: object) -> None:
        raise RuntimeError("feed bug")

    reports = Reports()
    norm = Normaliser(table_of("a"), report=reports)
    norm.observer = broken
    chunk = normalise_isolating(norm, ReadingBatch.build([0], [1.0], [5]), reports)
    assert "quality=good value=1.0" in chunk.body.decode() and reports.seen == {"observer": 1}
