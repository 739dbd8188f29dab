"""``mos-agent run`` as a real subprocess for the benches: its configuration (device files, one
``influxdb`` sink with the documented defaults) and its /status read over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from measure import process_cpu_seconds, process_memory_mb

REPO = Path(__file__).resolve().parents[1]
AGENT_BIN = Path(sys.executable).parent / "mos-agent"
FLUSH_INTERVAL = 1.0
BATCH_SIZE = 5000


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


class AgentRun:
    """``mos-agent run -c FILE`` as systemd would run it, with its /status read over HTTP."""

    def __init__(self, config: Path, health: str, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.health = health
        self.log_path = log_path
        self.started = time.monotonic()
        cmd = [str(AGENT_BIN)] if AGENT_BIN.exists() else [sys.executable, "-m", "mos_agent.cli"]
        self.proc = subprocess.Popen([*cmd, "run", "-c", str(config)], stdout=log_path.open("ab"),
                                     stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=REPO)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def status(self) -> dict[str, Any] | None:
        try:
            return http_json(f"http://{self.health}/status")
        except (OSError, ValueError):
            return None

    def wait_flowing(self, timeout: float = 60.0) -> dict[str, Any]:
        """Until every device has delivered readings to the buffer."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited ({self.proc.returncode}): {self.tail()}")
            st = self.status()
            if st and st["devices"] and all(d["points_read"] > 0 for d in st["devices"]) \
                    and st["pipeline"]["committed_points"] > 0:
                return st
            time.sleep(0.2)
        raise TimeoutError(f"agent not flowing within {timeout:g}s: {self.tail()}")

    def sample(self) -> dict[str, Any]:
        """The figures a bench follows over a window, read from /status, with the process's CPU."""
        st = self.status()
        if st is None:
            raise RuntimeError(f"agent /status not answering: {self.tail()}")
        sink = st["sinks"][0] if st["sinks"] else {}
        return {"t": time.monotonic(), "cpu": self.cpu(),
                "committed": st["pipeline"]["committed_points"], "read": sum(d["points_read"] for d in st["devices"]),
                "overruns": sum(d["overruns"] for d in st["devices"]), "sent": sink.get("sent_points", 0),
                "lag_points": sink.get("lag_points", 0), "lag_s": sink.get("lag_seconds", 0.0),
                "live_lag_s": sink.get("live_lag_seconds", 0.0), "backlog_points": sink.get("backlog_points", 0),
                "state": sink.get("state"), "handoff": st["pipeline"]["handoff_queue"],
                "buffer_points": st["buffer"].get("points", 0), "buffer_bytes": st["buffer"].get("bytes", 0)}

    def cpu(self) -> float:
        return process_cpu_seconds(self.pid)

    def memory(self) -> dict[str, float]:
        return process_memory_mb(self.pid)

    def tail(self, chars: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def stop(self) -> int | None:
        return stop_process(self.proc, 30.0)


def write_agent(directory: Path, devices: list[dict[str, Any]], sink_url: str, health: str, *,
                max_retry_delay: str | None = None, agent_id: str = "bench") -> Path:
    """``directory/agent.yaml`` and a device file a device, for one influxdb sink at ``sink_url``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "devices").mkdir(exist_ok=True)
    for device in devices:
        (directory / "devices" / f"{device['name']}.yaml").write_text(yaml.safe_dump(device, sort_keys=False))
    sink: dict[str, Any] = {"type": "influxdb", "url": sink_url, "org": "bench", "bucket": "bench",
                            "token": "bench-token", "batch_size": BATCH_SIZE, "flush_interval": f"{FLUSH_INTERVAL:g}s"}
    if max_retry_delay:
        sink["max_retry_delay"] = max_retry_delay
    config = {"agent": {"id": agent_id, "site": "lab", "state_dir": str(directory / "state"), "health": health,
                        "log_level": "warning", "shutdown_timeout": "3s"},
              "devices": "devices/*.yaml", "buffer": {"max_size": "4GiB"}, "sinks": [sink]}
    path = directory / "agent.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
