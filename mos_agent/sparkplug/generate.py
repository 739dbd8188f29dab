"""Regenerate ``sparkplug_b_pb2.py`` from ``sparkplug_b.proto`` (needs ``grpcio-tools``):

    python -m mos_agent.sparkplug.generate

The generated module and its type stub (``.pyi``, for the type checker) are committed, so the
agent needs only the ``protobuf`` runtime; a test runs :func:`generate` into a temporary directory
and checks the committed files are what it gives.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = HERE / "sparkplug_b.proto"
MODULE = HERE / "sparkplug_b_pb2.py"
STUB = HERE / "sparkplug_b_pb2.pyi"
HEADER = (
    "# Generated from sparkplug_b.proto by `python -m mos_agent.sparkplug.generate`, which runs\n"
    "#   python -m grpc_tools.protoc -I mos_agent/sparkplug --python_out=DIR --pyi_out=DIR sparkplug_b.proto\n"
    "# (grpcio-tools). Do not edit: change the .proto and regenerate.\n"
)


def generate(out_dir: Path) -> list[Path]:
    """Compile the .proto into ``out_dir``; returns the module and stub written."""
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    status = protoc.main(["grpc_tools.protoc", f"-I{HERE}", f"--python_out={out_dir}", f"--pyi_out={out_dir}",
                          str(PROTO)])
    if status != 0:
        raise RuntimeError(f"protoc failed with status {status}")
    written = [out_dir / MODULE.name, out_dir / STUB.name]
    for target in written:
        target.write_text(HEADER + target.read_text())
    return written


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for generated in generate(Path(tmp)):
            (HERE / generated.name).write_text(generated.read_text())
            print(f"wrote {HERE / generated.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
