"""The edge node's DDATA for batches in which plain readings (good numbers, added by column) and
other readings (failed reads, quality changes) meet: what hosts are told must not depend on which
path built a metric. The payloads are decoded with our codec; the session and the independent
decoder are covered in test_sink_mqtt_sparkplug.py."""

from __future__ import annotations

import numpy as np

from mos_agent import sparkplug as sp
from mos_agent.batch import ReadingBatch
from mos_agent.normalise import Normaliser
from mos_agent.series import SeriesSpec, SeriesTable, make_asset
from mos_agent.sinks.mqtt.edge_node import MAX_METRICS_PER_MESSAGE, EdgeNode, configured_metrics
from mos_agent.sinks.mqtt.rows import ReadingParser
from mos_agent.taxonomy import Quality

T0_NS = 1_767_225_600_000_000_000


class Device:
    def __init__(self, name: str, tags: int) -> None:
        asset = make_asset({"site": "changwon", "area": "stamping", "equipment": name})
        self.specs = [SeriesSpec(asset=asset, tag=f"t{i}", category="process", kind="sample", stage="forming",
                                 unit="bar", data_type="float32") for i in range(tags)]
        table = SeriesTable()
        for spec in self.specs:
            table.add(spec)
        self.normaliser = Normaliser(table)

    def body(self, tags: list[int], values: list[float], time_ns: int, quality: Quality = Quality.GOOD,
             code: int = 0) -> bytes:
        batch = ReadingBatch.build(np.array(tags), np.array(values, dtype=np.float64), time_ns, quality, code,
                                   source_time=True)
        return self.normaliser.process(batch).body


def _quality(metric: sp.Metric) -> tuple[object, ...] | None:
    if not metric.HasField("properties"):
        return None
    props = sp.get_properties(metric.properties)
    return props[sp.QUALITY_PROPERTY], props["quality"], props.get("quality_code")


def _data(node: EdgeNode, parser: ReadingParser, body: bytes, historical: bool = False) -> list[tuple[str, sp.Payload]]:
    messages, skipped = node.data(parser.parse(body), historical, lambda device: False)
    assert skipped == 0
    return [(device, payload) for kind, device, payload in messages if kind == sp.MessageType.DDATA]


def test_a_quality_turning_bad_and_back_within_a_batch_is_told_to_hosts() -> None:
    press = Device("press-01", 3)
    node = EdgeNode("plant", "gw-1", configured_metrics(press.specs))
    node.node_birth(0)
    parser = ReadingParser()
    _data(node, parser, press.body([0, 1, 2], [1.0, 2.0, 3.0], T0_NS))  # births; every series plain from now on

    body = (press.body([0, 1, 2], [1.5, 2.5, 3.5], T0_NS + 10**9)
            + press.body([0], [float("nan")], T0_NS + 2 * 10**9, Quality.BAD, code=1002)
            + press.body([0, 1], [4.0, 5.0], T0_NS + 3 * 10**9)
            + press.body([0, 1], [6.0, 7.0], T0_NS + 4 * 10**9))
    [(device, payload)] = _data(node, parser, body)
    assert device == "press-01"
    got = [(m.alias, m.timestamp, None if m.is_null else m.double_value, _quality(m)) for m in payload.metrics]
    t_ms = T0_NS // 10**6
    assert got == [
        (0, t_ms + 1000, 1.5, None), (1, t_ms + 1000, 2.5, None), (2, t_ms + 1000, 3.5, None),
        (0, t_ms + 2000, None, (sp.QUALITY_BAD, "bad", 1002)),  # the failed read: bad, with its code
        (0, t_ms + 3000, 4.0, (sp.QUALITY_GOOD, "good", None)),  # good again: hosts must hear it
        (1, t_ms + 3000, 5.0, None),
        (0, t_ms + 4000, 6.0, None), (1, t_ms + 4000, 7.0, None),
    ]
    # a batch that ends bad: the next one tells hosts the quality is good again
    [(_, payload)] = _data(node, parser, press.body([0, 1, 2], [8.0, 9.0, 10.0], T0_NS + 5 * 10**9)
                           + press.body([2], [float("nan")], T0_NS + 6 * 10**9, Quality.BAD, code=1002))
    assert [(m.alias, _quality(m)) for m in payload.metrics] == [
        (0, None), (1, None), (2, None), (2, (sp.QUALITY_BAD, "bad", 1002))]
    [(_, payload)] = _data(node, parser, press.body([0, 1, 2], [11.0, 12.0, 13.0], T0_NS + 7 * 10**9))
    assert [(m.alias, m.double_value, _quality(m)) for m in payload.metrics] == [
        (0, 11.0, None), (1, 12.0, None), (2, 13.0, (sp.QUALITY_GOOD, "good", None))]
    # and after that, plain readings carry no quality at all
    [(_, payload)] = _data(node, parser, press.body([0, 1, 2], [14.0, 15.0, 16.0], T0_NS + 8 * 10**9))
    assert [(m.alias, m.double_value, _quality(m)) for m in payload.metrics] == [
        (0, 14.0, None), (1, 15.0, None), (2, 16.0, None)]


def test_a_device_with_more_readings_than_a_message_holds_gets_several_in_order() -> None:
    big, small = Device("press-01", MAX_METRICS_PER_MESSAGE), Device("oven-02", 2)
    node = EdgeNode("plant", "gw-1", configured_metrics([*big.specs, *small.specs]))
    node.node_birth(0)
    parser = ReadingParser()
    everything = list(range(MAX_METRICS_PER_MESSAGE))
    _data(node, parser, big.body(everything, [0.0] * len(everything), T0_NS) + small.body([0, 1], [0.0, 0.0], T0_NS))

    half = MAX_METRICS_PER_MESSAGE // 2
    body = (big.body(everything[:half], [float(i) for i in range(half)], T0_NS + 10**9)
            + small.body([0, 1], [1.0, 2.0], T0_NS + 10**9)
            + big.body(everything, [float(i) for i in range(MAX_METRICS_PER_MESSAGE)], T0_NS + 2 * 10**9))
    messages = _data(node, parser, body, historical=True)
    assert [(device, len(payload.metrics)) for device, payload in messages] == [
        ("press-01", MAX_METRICS_PER_MESSAGE), ("oven-02", 2), ("press-01", half)]
    seqs = [payload.seq for _, payload in messages]
    assert seqs == list(range(seqs[0], seqs[0] + 3))
    big_metrics = [m for device, payload in messages if device == "press-01" for m in payload.metrics]
    assert [(m.alias, m.double_value) for m in big_metrics] == (
        [(i, float(i)) for i in range(half)] + [(i, float(i)) for i in range(MAX_METRICS_PER_MESSAGE)])
    every_metric = [m for _, payload in messages for m in payload.metrics]
    assert all(m.is_historical and not m.HasField("datatype") for m in every_metric)
