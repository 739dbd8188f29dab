"""Runs every folder in drivers/mqtt/testcases/: a device file plus either messages (topic and
payload) with the readings they must produce, or the validation error the file must raise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from drivers.mqtt.config import MqttDevice
from drivers.mqtt.decode import Decoder, Rows
from drivers.mqtt.driver import subscriptions
from mos_agent.config.models import AgentSection
from mos_agent.driver_api import DriverContext
from mos_agent.taxonomy import DEFAULT_STAGES, QUALITY_NAMES

CASES = Path(__file__).resolve().parents[1] / "testcases"
ARRIVAL_NS = 1_750_000_000_000_000_000
AGENT = AgentSection(id="gw-test", enterprise="acme", site="changwon")


def _without_tag_form(loc: tuple) -> tuple:
    """pydantic names the form of a tag (``topic`` or ``metric``) in the location of its errors;
    the file has no such level (the loader drops it the same way)."""
    if len(loc) > 2 and loc[0] == "tags" and loc[2] in ("by_topic", "by_metric"):
        return (*loc[:2], *loc[3:])
    return loc


def case_dirs(kind: str) -> list[Path]:
    dirs = sorted(p for p in CASES.iterdir() if p.is_dir())
    return [p for p in dirs if p.name.startswith("invalid-") == (kind == "invalid")]


def load_device(case: Path) -> MqttDevice:
    data = yaml.safe_load((case / "device.yaml").read_text())
    return MqttDevice.model_validate(data, context={"stages": list(DEFAULT_STAGES)})


def payload_of(message: dict) -> bytes:
    if "json" in message:
        return json.dumps(message["json"]).encode()
    if "payload_hex" in message:
        return bytes.fromhex(message["payload_hex"])
    return str(message["payload"]).encode()


def expected_time(spec: object) -> int:
    if isinstance(spec, int):
        return spec
    assert isinstance(spec, str) and spec.startswith("arrival"), spec
    return ARRIVAL_NS + int(spec.partition("+")[2] or 0)


async def _discard(batch: object) -> None:
    raise AssertionError("the decoder never emits")


@pytest.mark.parametrize("case", case_dirs("valid"), ids=lambda p: p.name)
def test_messages_decode_to_expected_readings(case: Path) -> None:
    spec = yaml.safe_load((case / "case.yaml").read_text())
    device = load_device(case)
    ctx = DriverContext(AGENT, device, _discard)
    decoder = Decoder(device, lambda i, overrides: ctx.add_series(device.tags[i], asset_overrides=overrides),
                      window=AGENT.source_time.window())
    rows = Rows()
    for message in spec["messages"]:
        decoder.decode(message["topic"], payload_of(message), ARRIVAL_NS, rows)
    batch = rows.to_batch()

    got = []
    for row in range(len(batch)):
        series = ctx.series.specs[int(batch.series[row])]
        text = (batch.texts or {}).get(row)
        value = float(batch.values[row])
        got.append({
            "tag": series.tag,
            "asset": series.asset_path,
            "value": text if text is not None else (None if value != value else value),
            "quality": QUALITY_NAMES[int(batch.quality[row])],
            "code": int(batch.codes[row]),
            "time": int(batch.timestamps[row]),
        })
    expected = spec["expect"]
    assert len(got) == len(expected), f"{len(got)} readings, expected {len(expected)}: {got}"
    for n, (reading, want) in enumerate(zip(got, expected, strict=True)):
        want = {"quality": "good", "code": 0, **want}
        if "value" not in want and want["quality"] == "bad":
            want["value"] = None
        if "time" in want:
            want["time"] = expected_time(want["time"])
        shown = {k: reading[k] for k in want}
        assert shown == want, f"reading {n}"
    errors = {kind: count for kind, (count, _message) in rows.errors.items()}
    assert errors == spec.get("errors", {})
    if "series" in spec:
        assert len(ctx.series) == spec["series"]
    if "filters" in spec:
        assert [topic for topic, _options in subscriptions(device, 1)] == spec["filters"]


@pytest.mark.parametrize("case", case_dirs("invalid"), ids=lambda p: p.name)
def test_invalid_device_file_is_rejected_with_a_precise_message(case: Path) -> None:
    spec = yaml.safe_load((case / "case.yaml").read_text())
    with pytest.raises(ValidationError) as raised:
        load_device(case)
    problems = [(".".join(str(part) for part in _without_tag_form(err["loc"])), err["msg"])
                for err in raised.value.errors()]
    want = spec["error"]
    assert any(loc == want["loc"] and want["message"] in msg for loc, msg in problems), problems


def test_every_testcase_folder_is_complete() -> None:
    dirs = [p for p in CASES.iterdir() if p.is_dir()]
    assert len(case_dirs("valid")) >= 8 and len(case_dirs("invalid")) >= 10
    for case in dirs:
        assert (case / "device.yaml").is_file() and (case / "case.yaml").is_file(), case


def test_sample_device_file_validates_with_the_loader() -> None:
    from mos_agent.config.loader import load_device_file

    device = load_device_file(CASES.parent / "sample.yaml", list(DEFAULT_STAGES))
    assert isinstance(device, MqttDevice)
    assert {tag.template.filter for tag in device.tags} == {
        "acme/changwon/+/+/+/environment", "acme/changwon/+/+/+/energy", "acme/changwon/+/+/+/running"}
