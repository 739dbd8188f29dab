"""The series table: prefixes built from shared parts are byte for byte what ``series_prefix``
writes for each series, and the arrays grow geometrically."""

from __future__ import annotations

import numpy as np

from mos_agent.lineprotocol import series_prefix
from mos_agent.series import SeriesSpec, SeriesTable, make_asset
from mos_agent.taxonomy import QUALITY_NAMES
from mos_agent.text import is_readable, repaired


def _reference(spec: SeriesSpec, quality: str) -> str:
    levels = spec.asset_levels
    return series_prefix(spec.category, [
        ("site", levels.get("site")), ("area", levels.get("area")), ("line", levels.get("line")),
        ("cell", levels.get("cell")), ("equipment", levels.get("equipment")), ("tag", spec.tag),
        ("stage", spec.stage), ("kind", spec.kind), ("unit", spec.unit), ("quality", quality)])


def test_prefixes_are_what_series_prefix_writes() -> None:
    assets = [
        make_asset({"enterprise": "acme", "site": "changwon", "area": "stamping", "line": "line-1",
                    "cell": "cell 2", "equipment": "press-01"}),
        make_asset({"site": "s", "area": "a,b", "equipment": "x=y"}),
        make_asset({"site": "s", "equipment": "e"}),
        make_asset({}),
    ]
    variants = [(asset, tag, category, kind, stage, unit)
                for asset in assets
                for tag in ("pressure", "with space", "comma,equals=", "trailing\\", "온도")
                for category, kind in (("process", "sample"), ("equipment_state", "event"))
                for stage, unit in (("forming", "bar"), ("welding", None), ("utility", "m/s2"), ("forming", "%"))]
    # one series per asset and tag name: each variant's name gets its number
    specs = [SeriesSpec(asset=asset, tag=f"{tag} {i}", category=category, kind=kind, stage=stage, unit=unit)
             for i, (asset, tag, category, kind, stage, unit) in enumerate(variants)]
    table = SeriesTable()
    for spec in specs:
        table.add(spec)
    assert len(table) == len(specs)
    for q, quality in enumerate(QUALITY_NAMES):
        assert table.prefixes[q] == [_reference(spec, quality) for spec in specs]


def test_lone_surrogates_are_replaced_wherever_they_are() -> None:
    """A name taken from a device may hold an undecodable byte (a lone surrogate): the prefix has
    U+FFFD there, in the tag name or in the asset, and the rest as series_prefix writes it."""
    specs = [SeriesSpec(asset=make_asset({"site": "s", "equipment": equipment}), tag=tag, category="process",
                        kind="sample", stage="forming", unit=unit)
             for equipment in ("press-01", "pr\udcffess")
             for tag, unit in (("plain", "bar"), ("bad\udc80 name", None), ("", "%"))]
    table = SeriesTable()
    assert table.add_many([*specs, specs[0]]) == [*range(len(specs)), 0]
    for q, quality in enumerate(QUALITY_NAMES):
        assert table.prefixes[q] == [repaired(_reference(spec, quality)) for spec in specs]
    assert all(is_readable(prefix) for prefix in table.prefixes[0])


def test_arrays_grow_geometrically_and_keep_their_values() -> None:
    table = SeriesTable()
    capacities = set()
    for i in range(5000):
        table.add(SeriesSpec(asset=(("site", "s"),), tag=f"t{i}", category="process", kind="sample",
                             stage="forming", scale=float(i), range=(0.0, float(i)) if i % 2 else None))
        capacities.add(len(table.scale))
    # 64, 128, …, 8192: eight copies for 5,000 series, not 78
    assert sorted(capacities) == [64 * 2**k for k in range(8)]
    assert np.array_equal(table.scale[:5000], np.arange(5000, dtype=float))
    assert np.isinf(table.range_high[0]) and table.range_high[4999] == 4999.0
    assert np.isnan(table.last_value[:5000]).all() and (table.last_quality[:5000] == -1).all()
    assert table.find((("site", "s"),), "t4321") == 4321
