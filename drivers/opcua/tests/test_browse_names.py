"""Tag names made from browse paths: shortened with a hash when over the limit, browse names in a
legacy code page read in the declared encoding, and a device file written by ``browse`` that always
validates — nothing ``validate`` accepts may fail when the driver connects."""

from __future__ import annotations

import yaml
from asyncua import ua

from drivers.opcua.browse import Found, tag_name_for, to_yaml
from drivers.opcua.config import OpcUaDevice, check_node_id
from mos_agent.config.models import TAG_NAME_MAX
from mos_agent.taxonomy import DEFAULT_STAGES

FOLDERS = tuple(f"HydraulicUnitSectionNorthSideCell{i:02d}WithAVeryLongDescriptiveName" for i in range(5))
LEGACY = "온도".encode("cp949").decode("utf-8", "surrogateescape")  # a browse name as asyncua decodes it


def test_a_long_browse_path_is_shortened_deterministically_and_keeps_its_end() -> None:
    name = tag_name_for((*FOLDERS, "Temperature"), prefix="hydraulics")
    assert len(".".join(FOLDERS)) > TAG_NAME_MAX
    assert len(name) == TAG_NAME_MAX and name.startswith("hydraulics.") and name.endswith(".Temperature")
    assert name == tag_name_for((*FOLDERS, "Temperature"), prefix="hydraulics")
    assert name != tag_name_for((*FOLDERS, "Pressure"), prefix="hydraulics")
    assert tag_name_for(("Spindle", "Speed")) == "Spindle.Speed"


def test_browse_names_in_a_legacy_code_page() -> None:
    assert tag_name_for(("Tank", LEGACY), encoding="cp949") == "Tank.온도"
    assert tag_name_for(("Tank", LEGACY)) == "Tank.\ufffdµ\ufffd"  # C2 B5 happens to be valid UTF-8


def test_string_node_ids_may_hold_line_breaks() -> None:
    assert check_node_id(ua.NodeId("Line\nBreak", 2).to_string()) == "ns=2;s=Line\nBreak"


def test_a_device_file_written_by_browse_validates_however_long_or_undecodable_the_names() -> None:
    found = [
        Found((*FOLDERS, "Temperature"), ua.NodeId("Deep.Temperature", 2), kind="number"),
        Found((*FOLDERS, "Temperature"), ua.NodeId("Deep.Temperature.Other", 2), kind="number"),
        Found(("Tank", LEGACY), ua.NodeId("Tank.Legacy", 2), kind="string", description=LEGACY),
    ]
    text = to_yaml(found, "opc.tcp://127.0.0.1:4840", "i=85", 8, "press-01")
    text.encode("utf-8")  # writable as a file
    device = OpcUaDevice.model_validate(yaml.safe_load(text), context={"stages": list(DEFAULT_STAGES)})
    names = [tag.name for tag in device.tags]
    assert len(set(names)) == 3 and all(len(name) <= TAG_NAME_MAX for name in names)
