"""What exactly-once in the store costs on the hot paths, in-process: CPU time (so other load on
the machine counts less), best of many rounds, each variant and its reference taken in turn:

- the normaliser keeping acquisition times of a series apart at the stores' precision, against
  the same batches marked as source times (nothing to keep apart): a polled block (1,000 series
  once each), an MQTT burst (2,000 messages of one topic, 3 µs apart), MQTT over 100 topics;
- the MQTT driver remembering each QoS 1 message's stored times (message key, ring file write),
  against decoding the same messages alone.

    python bench/bench_exactly_once.py [--quick]    # ≤ 30 s (quick ≤ 10 s); writes bench/results/exactly_once.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from drivers.mqtt.config import MqttDevice  # noqa: E402
from drivers.mqtt.decode import Decoder, Rows  # noqa: E402
from drivers.mqtt.redelivery import RecentMessages, message_key  # noqa: E402
from mos_agent.batch import ReadingBatch  # noqa: E402
from mos_agent.normalise import Normaliser  # noqa: E402
from mos_agent.series import SeriesSpec, SeriesTable, make_asset  # noqa: E402
from mos_agent.taxonomy import DEFAULT_STAGES  # noqa: E402

MS = 1_000_000
NOW = time.time_ns()


def table(series: int) -> SeriesTable:
    result = SeriesTable()
    asset = make_asset({"site": "plant", "area": "stamping", "line": "line-1", "equipment": "press-01"})
    for s in range(series):
        result.add(SeriesSpec(asset=asset, tag=f"t{s}", category="process", kind="sample", stage="forming",
                              unit="bar"))
    return result


def polled_block(i: int, sourced: bool) -> ReadingBatch:
    return ReadingBatch.build(np.arange(1000), np.arange(1000.0) + i, NOW + i * 100 * MS, source_time=sourced)


def burst(i: int, sourced: bool) -> ReadingBatch:
    return ReadingBatch.build(np.zeros(2000, dtype=np.int32), np.arange(2000.0),
                              NOW + i * 100 * MS + 3_000 * np.arange(2000), source_time=sourced)


def many_topics(i: int, sourced: bool) -> ReadingBatch:
    return ReadingBatch.build(np.arange(2000) % 100, np.arange(2000.0) + 0.5,
                              NOW + i * 100 * MS + 3_000 * np.arange(2000), source_time=sourced)


def normaliser_costs(make: Callable[[int, bool], ReadingBatch], series: int, rounds: int) -> dict[str, float]:
    """µs a point of ``Normaliser.process`` over 10 batches, best of ``rounds``: as source times
    (the reference), and as acquisition times kept apart at ns and at ms."""
    variants = {"source": (1, True), "ns": (1, False), "ms": (MS, False)}
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(rounds):
        for name, (resolution, sourced) in variants.items():
            normaliser = Normaliser(table(series), resolution)
            batches = [make(i, sourced) for i in range(10)]
            started = time.process_time()
            for batch in batches:
                normaliser.process(batch)
            best[name] = min(best[name], (time.process_time() - started) / sum(len(b) for b in batches) * 1e6)
    return best


def memory_cost(rounds: int) -> tuple[float, float]:
    """µs a message: decoding 2,000 JSON messages alone, and with their keys remembered."""
    device = MqttDevice.model_validate({
        "name": "press-01", "driver": "mqtt", "asset": {"area": "stamping"}, "stage": "forming",
        "connection": {"host": "127.0.0.1"},
        "tags": [{"name": "count", "topic": "acme/changwon/+/counter", "json": "$.n", "category": "production"}],
    }, context={"stages": list(DEFAULT_STAGES)})
    decoder = Decoder(device, lambda index, overrides: 0)
    topic = "acme/changwon/line-1/counter"
    payloads = [b'{"n": %d, "state": "run"}' % i for i in range(2000)]
    with tempfile.TemporaryDirectory() as state:
        recent = RecentMessages(Path(state) / "recent")
        plain = remembered = float("inf")
        for r in range(rounds):
            started = time.process_time()
            rows = Rows()
            for payload in payloads:
                decoder.decode(topic, payload, NOW, rows)
            rows.to_batch()
            plain = min(plain, time.process_time() - started)

            started = time.process_time()
            rows = Rows()
            for i, payload in enumerate(payloads):
                first = len(rows)
                decoder.decode(topic, payload, NOW, rows)
                rows.remembered.append((message_key(topic, payload, (r * 2000 + i) % 65535 + 1), first, len(rows)))
            recent.remember(rows.remembered, rows.to_batch().timestamps, None)
            remembered = min(remembered, time.process_time() - started)
        recent.close()
    return plain / len(payloads) * 1e6, remembered / len(payloads) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, ≤ 10 s")
    args = parser.parse_args()
    rounds = 8 if args.quick else 40
    started = time.monotonic()
    figures = []
    for name, make, series in (("polled block, 1,000 series once", polled_block, 1000),
                               ("MQTT burst, 2,000 messages of one topic", burst, 1),
                               ("MQTT, 2,000 messages over 100 topics", many_topics, 100)):
        costs = normaliser_costs(make, series, rounds)
        for label in ("ns", "ms"):
            figures.append({"name": f"normaliser, {name}, acquisition times apart at {label}",
                            "value": round(costs[label], 3), "unit": "µs/point",
                            "reference": "same batches as source times (nothing to keep apart)",
                            "reference_value": round(costs["source"], 3), "target": "", "ok": None})
    plain, remembered = memory_cost(rounds)
    figures.append({"name": "MQTT decode + remembering the message for redelivery", "value": round(remembered, 3),
                    "unit": "µs/message", "reference": "decode alone", "reference_value": round(plain, 3),
                    "target": "", "ok": None})
    result = {"quick": args.quick, "seconds": round(time.monotonic() - started, 1), "figures": figures,
              "details": {"rounds": rounds}}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "exactly_once.json").write_text(json.dumps(result, indent=2))
    for f in figures:
        print(f"{f['name']}: {f['value']} {f['unit']} (reference {f['reference_value']}: {f['reference']})")


if __name__ == "__main__":
    main()
