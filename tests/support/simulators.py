"""The bundled PLC simulators as separate processes, the way the agent meets real equipment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from mos_agent.localservers import free_port, wait_for_port


def start_modbus_sim(tmp_path: Path, name: str) -> tuple[subprocess.Popen, dict[str, Any]]:
    """``mos-sim modbus`` on a free port (output in ``sim-<name>.log``) and its device file."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "simulators.cli", "modbus", "--port", str(port)],
                            stdout=(tmp_path / f"sim-{name}.log").open("wb"), stderr=subprocess.STDOUT)
    out = subprocess.run([sys.executable, "-m", "simulators.cli", "modbus", "--port", str(port),
                          "--print-device-file", "--name", name], capture_output=True, text=True, check=True)
    wait_for_port(port)
    return proc, yaml.safe_load(out.stdout)
