"""The store the tests run is set up as the README tells users to set theirs up: VictoriaMetrics
keeps a point written twice twice unless started with the de-duplication flag, and with it keeps
one — the setting the README names, in both languages."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

from tests.support.servers import DEDUP_FLAG, StoreReader, VictoriaMetrics, running

REPO = Path(__file__).resolve().parent.parent


def write_twice(url: str) -> None:
    line = f"process,equipment=press-01,tag=pressure value=182.4 {(time.time_ns() // 10**9 - 60) * 10**9}".encode()
    for _ in range(2):  # a batch sent again after a crash
        request = urllib.request.Request(f"{url}/api/v2/write?org=o&bucket=b", data=line, method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass


def test_the_readme_names_the_flag_the_tests_start_the_store_with() -> None:
    for readme in ("README.md", "README.ko.md"):
        text = (REPO / readme).read_text(encoding="utf-8")
        assert f"`{DEDUP_FLAG}`" in text, readme
        assert "precision: ms" in text, readme


def test_a_point_written_twice_is_one_point_with_the_flag_and_two_without(tmp_path: Path,
                                                                           victoria: VictoriaMetrics,
                                                                           store: StoreReader) -> None:
    write_twice(victoria.url)
    with running(VictoriaMetrics.start(tmp_path / "vm-as-installed", dedup=False)) as plain:
        write_twice(plain.url)
        assert StoreReader(plain.url).wait_for_count(2, '{__name__="process_value"}') == 2
    assert store.wait_for_count(1, '{__name__="process_value"}') == 1
    assert store.count('{__name__="process_value"}') == 1
