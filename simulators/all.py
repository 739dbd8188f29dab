"""``mos-sim all``: the whole demo plant at once — the stamping press (Modbus), the CNC machining
centre (OPC UA), the plant's environment and energy sensors (MQTT) and an assembly line's Sparkplug B
edge node ``node-7`` (MQTT, same broker) — each in its own process, stopped together on Ctrl-C or
SIGTERM. ``--devices-dir DIR`` writes a matching device file for each, ready for an agent's
``devices:`` glob."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path


def _run(*argv: str, capture: bool = False) -> subprocess.Popen | str:
    cmd = [sys.executable, "-m", "simulators.cli", *argv]
    if capture:
        return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    return subprocess.Popen(cmd)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mos-sim all", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modbus-port", type=int, default=5020)
    p.add_argument("--opcua-port", type=int, default=4840)
    p.add_argument("--mqtt-host", default="127.0.0.1", help="MQTT broker (default 127.0.0.1)")
    p.add_argument("--mqtt-port", type=int, default=1883)
    p.add_argument("--mqtt-rate", default="10", help="MQTT messages per second (default 10)")
    p.add_argument("--devices-dir", type=Path,
                   help="write press-01.yaml, cnc-01.yaml, plant-sensors.yaml and node-7.yaml here")
    args = p.parse_args(argv)

    parts = {
        "press-01": ["modbus", "--port", str(args.modbus_port)],
        "cnc-01": ["opcua", "--port", str(args.opcua_port)],
        "plant-sensors": ["mqtt", "--host", args.mqtt_host, "--port", str(args.mqtt_port), "--rate", args.mqtt_rate],
        "node-7": ["mqtt", "--sparkplug", "--host", args.mqtt_host, "--port", str(args.mqtt_port)],
    }
    if args.devices_dir:
        args.devices_dir.mkdir(parents=True, exist_ok=True)
        for name, part in parts.items():
            extra = ["--name", name] if part[0] == "modbus" else []
            text = _run(*part, "--print-device-file", *extra, capture=True)
            (args.devices_dir / f"{name}.yaml").write_text(str(text))
        print(f"device files written to {args.devices_dir}", file=sys.stderr)

    procs = [_run(*part) for part in parts.values()]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    while not stopping:
        for proc in procs:
            assert isinstance(proc, subprocess.Popen) and isinstance(proc.args, list)
            if proc.poll() is not None:
                print(f"mos-sim all: {' '.join(map(str, proc.args[3:]))} exited with {proc.returncode}",
                      file=sys.stderr)
                stopping, status = True, 1
        time.sleep(0.5)
    for proc in procs:
        assert isinstance(proc, subprocess.Popen)
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        assert isinstance(proc, subprocess.Popen)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return status
