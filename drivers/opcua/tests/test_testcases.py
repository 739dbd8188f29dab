"""Runs every folder in drivers/opcua/testcases/:

* ``invalid-*``: a device file and the validation error it must raise (location and message);
* ``valid-*``: a device file and the values its model must resolve to;
* ``browse-*``: a node and depth to browse on the CNC simulator, and the tags (or error) the
  generated device file must have.

Also checks that sample.yaml validates and reads every tag of the simulator with good quality."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from drivers.opcua import OpcUaDriver
from drivers.opcua.browse import browse_to_yaml
from drivers.opcua.client import ConnectFailed
from drivers.opcua.config import OpcUaDevice
from mos_agent.taxonomy import DEFAULT_STAGES
from simulators.opcua import CncSimulator

HERE = Path(__file__).resolve().parents[1]
CASES = HERE / "testcases"


def case_dirs(prefix: str) -> list[Path]:
    return sorted(p for p in CASES.iterdir() if p.is_dir() and p.name.startswith(prefix))


def load_device(path: Path) -> OpcUaDevice:
    return OpcUaDevice.model_validate(yaml.safe_load(path.read_text()), context={"stages": list(DEFAULT_STAGES)})


def attribute(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


@pytest.mark.parametrize("case", case_dirs("invalid-"), ids=lambda p: p.name)
def test_invalid_device_file_is_rejected_with_a_precise_message(case: Path) -> None:
    spec = yaml.safe_load((case / "case.yaml").read_text())
    with pytest.raises(ValidationError) as raised:
        load_device(case / "device.yaml")
    problems = [(".".join(str(p) for p in err["loc"]), err["msg"]) for err in raised.value.errors()]
    want = spec["error"]
    assert any(loc == want["loc"] and want["message"] in msg for loc, msg in problems), problems


@pytest.mark.parametrize("case", case_dirs("valid-"), ids=lambda p: p.name)
def test_valid_device_file_resolves_as_expected(case: Path) -> None:
    spec = yaml.safe_load((case / "case.yaml").read_text())
    device = load_device(case / "device.yaml")
    got = {key: attribute(device, key) for key in spec["expect"]}
    got = {k: (str(v) if isinstance(v, Path) else v) for k, v in got.items()}
    assert got == spec["expect"]
    if "intervals" in spec:
        assert [device.tag_interval(t) for t in device.tags] == spec["intervals"]
    if "points_per_second" in spec:
        assert OpcUaDriver.expected_points_per_second(device) == pytest.approx(spec["points_per_second"])


def test_every_testcase_folder_is_complete() -> None:
    assert len(case_dirs("invalid-")) >= 15 and len(case_dirs("valid-")) >= 3 and len(case_dirs("browse-")) >= 4
    for case in CASES.iterdir():
        assert (case / "case.yaml").is_file(), case
        if not case.name.startswith("browse-"):
            assert (case / "device.yaml").is_file(), case


# ---------------------------------------------------------------- against the simulator

@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", case_dirs("browse-"), ids=lambda p: p.name)
async def test_browse_produces_the_expected_device_file(sim: CncSimulator, case: Path) -> None:
    spec = yaml.safe_load((case / "case.yaml").read_text())
    args = spec["browse"]
    if "error" in spec:
        with pytest.raises(ConnectFailed) as raised:
            await browse_to_yaml(sim.endpoint, args["node"], args["depth"], args.get("name"))
        assert spec["error"] in str(raised.value)
        return
    text = await browse_to_yaml(sim.endpoint, args["node"], args["depth"], args.get("name"))
    data = yaml.safe_load(text)
    device = OpcUaDevice.model_validate(data, context={"stages": list(DEFAULT_STAGES)})
    assert device.name == spec["name"]
    tags = {t["name"]: t for t in data["tags"]}
    for want in spec.get("tags", []):
        assert want["name"] in tags, sorted(tags)
        got = tags[want["name"]]
        assert {k: got.get(k) for k in want} == want
    if "tags" in spec and args["node"] != "i=85":
        assert [t["name"] for t in data["tags"]] == [t["name"] for t in spec["tags"]]
    for name in spec.get("present", []):
        assert name in tags, sorted(tags)
    for name in spec.get("absent", []):
        assert not any(name in t for t in tags), name
    for piece in spec.get("text", []):
        assert piece in text


@pytest.mark.asyncio(loop_scope="module")
async def test_sample_device_file_reads_every_tag_of_the_simulator(sim: CncSimulator, tmp_path: Path) -> None:
    from mos_agent.config.models import AgentSection
    from mos_agent.driver_api import DriverContext

    data = yaml.safe_load((HERE / "sample.yaml").read_text())
    data["connection"]["endpoint"] = sim.endpoint
    device = OpcUaDevice.model_validate(data, context={"stages": list(DEFAULT_STAGES)})

    async def discard(batch: object) -> None:
        raise AssertionError("read_once does not emit")

    ctx = DriverContext(AgentSection(id="gw", site="changwon", state_dir=tmp_path), device, discard)
    batch = await OpcUaDriver(ctx).read_once()
    tags = {ctx.series.specs[int(s)].tag for s in batch.series}
    expected = {t.name for t in device.tags if t.name != "axis_temperature"}
    assert expected <= tags and {"axis_temperature[0]", "axis_temperature[2]"} <= tags
    assert (batch.quality == 0).all(), [ctx.series.specs[int(s)].tag for s, q in zip(batch.series, batch.quality,
                                                                                  strict=True) if q]
