"""Real encoded line protocol, made by the normaliser, to feed the buffer and the sinks."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from mos_agent.batch import ReadingBatch
from mos_agent.normalise import Normaliser
from mos_agent.series import SeriesSpec, SeriesTable, make_asset


def sample_chunks(chunks: int, points_per_chunk: int, *, series: int = 10, start_ms: int | None = None,
                  device: str = "press-01", category: str = "process") -> Iterator[tuple[bytes, int]]:
    """Real encoded line protocol from the Normaliser, as the pipeline hands it to the buffer:
    ``chunks`` bodies of ``points_per_chunk`` lines over ``series`` tags (``t0`` …) of one device.
    Point ``g`` (counting across chunks) has value ``g`` and time ``start_ms + g`` milliseconds, so
    every (series, timestamp) is distinct — the store keeps milliseconds — and each point is
    counted once in a store with de-duplication. Yields ``(body, points)``."""
    if start_ms is None:
        start_ms = time.time_ns() // 1_000_000 - 3_600_000
    table = SeriesTable()
    asset = make_asset({"site": "plant", "area": "stamping", "line": "line-1", "equipment": device})
    for s in range(series):
        table.add(SeriesSpec(asset=asset, tag=f"t{s}", category=category, kind="sample", stage="forming",
                             unit="bar"))
    normaliser = Normaliser(table)
    offsets = np.arange(points_per_chunk, dtype=np.int64)
    for c in range(chunks):
        g = c * points_per_chunk + offsets
        batch = ReadingBatch.build(g % series, g.astype(np.float64), (start_ms + g) * 1_000_000)
        chunk = normaliser.process(batch)
        yield chunk.body, chunk.points
