"""Throw-away certificates for TLS tests, made with the openssl command line tool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def server_certificates(directory: Path) -> dict[str, Path]:
    """A CA (``ca.pem``) and a server certificate for 127.0.0.1 and localhost it signed
    (``server.pem``, key ``server.key``)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: no test certificates")
    directory.mkdir(parents=True, exist_ok=True)
    files = {name: directory / name for name in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem",
                                                 "san.cnf")}
    files["san.cnf"].write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(files["ca.key"]), "-out", str(files["ca.pem"]),
        "-days", "2", "-subj", "/CN=mos-agent test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(files["server.key"]), "-out", str(files["server.csr"]),
        "-subj", "/CN=localhost")
    run("x509", "-req", "-in", str(files["server.csr"]), "-CA", str(files["ca.pem"]), "-CAkey", str(files["ca.key"]),
        "-CAcreateserial", "-out", str(files["server.pem"]), "-days", "2", "-extfile", str(files["san.cnf"]))
    return files
