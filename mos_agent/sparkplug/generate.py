"""Regenerate ``sparkplug_b_pb2.py`` from ``sparkplug_b.proto`` (needs ``grpcio-tools``):

    python -m mos_agent.sparkplug.generate

The generated module is committed, so the agent needs only the ``protobuf`` runtime; a test runs
:func:`generate` into a temporary directory and checks the committed file is what it gives.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = HERE / "sparkplug_b.proto"
MODULE = HERE / "sparkplug_b_pb2.py"
HEADER = (
    "# Generated from sparkplug_b.proto by `python -m mos_agent.sparkplug.generate`, which runs\n"
    "#   python -m grpc_tools.protoc -I mos_agent/sparkplug --python_out=DIR sparkplug_b.proto\n"
    "# (grpcio-tools). Do not edit: change the .proto and regenerate.\n"
)


def generate(out_dir: Path) -> Path:
    """Compile the .proto into ``out_dir``; returns the path of the module written."""
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    status = protoc.main(["grpc_tools.protoc", f"-I{HERE}", f"--python_out={out_dir}", str(PROTO)])
    if status != 0:
        raise RuntimeError(f"protoc failed with status {status}")
    target = out_dir / MODULE.name
    target.write_text(HEADER + target.read_text())
    return target


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        MODULE.write_text(generate(Path(tmp)).read_text())
    print(f"wrote {MODULE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
