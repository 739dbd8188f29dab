"""Local servers as child processes on free loopback ports: what ``mos-agent demo`` and the MQTT
simulator's embedded broker start (Mosquitto), and the port helpers they use for the simulators."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from mos_agent.child_process import die_with_parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing answered on {host}:{port} within {timeout}s")


class ServerNotInstalled(RuntimeError):
    pass


def find_binary(name: str, *extra_dirs: str) -> str:
    """The server's executable on PATH or in one of ``extra_dirs`` (Debian puts daemons in /usr/sbin)."""
    found = shutil.which(name)
    for d in extra_dirs:
        if not found and Path(d, name).exists():
            found = str(Path(d, name))
    if not found:
        raise ServerNotInstalled(f"{name} is not installed (Debian package: see README)")
    return found


@dataclass
class ServerProcess:
    """A server we started: its process, port, work directory and log file."""

    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    log_path: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class Mosquitto(ServerProcess):
    @classmethod
    def start(cls, workdir: Path, port: int | None = None, extra_conf: str = "") -> Mosquitto:
        binary = find_binary("mosquitto", "/usr/sbin")
        workdir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        conf = workdir / "mosquitto.conf"
        # Started as root, Mosquitto drops to the 'mosquitto' user, which cannot write the
        # persistence file nor read TLS files in a private temp dir: stay root there.
        stay = "user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
        conf.write_text(
            f"{stay}listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {workdir}/\nmax_queued_messages 100000\n{extra_conf}\n"
        )
        log_path = workdir / "mosquitto.log"
        # the broker goes when its parent goes, even by SIGKILL (a demo or simulator killed hard)
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log_path.open("ab"),
                                stderr=subprocess.STDOUT, preexec_fn=die_with_parent())
        server = cls(proc, port, workdir, log_path)
        try:
            wait_for_port(port)
        except TimeoutError:
            server.stop()
            raise
        return server

    @staticmethod
    def installed() -> bool:
        try:
            find_binary("mosquitto", "/usr/sbin")
        except ServerNotInstalled:
            return False
        return True
