"""Appends numbered chunks to a StoreAndForward as fast as it can and prints each chunk number
once ``append`` has returned (acknowledged = durable). Run by tests/test_kill9.py, which kills
it with SIGKILL mid-stream.

usage: python -m tests.helpers.kill9_writer STATE_DIR STORE_URL START_MS POINTS_PER_CHUNK CHUNKS
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from mos_agent.config.models import AgentConfig
from mos_agent.sinks.forward import StoreAndForward
from tests.support.samples import sample_chunks


def main(argv: list[str]) -> int:
    state_dir, url, start_ms, per_chunk, chunks = Path(argv[0]), argv[1], int(argv[2]), int(argv[3]), int(argv[4])
    config = AgentConfig.model_validate({
        "agent": {"id": "kill9", "site": "plant", "state_dir": str(state_dir)},
        "sinks": [{"type": "influxdb", "url": url, "bucket": "factory", "org": "mdcg", "token": "t",
                   "batch_size": per_chunk, "flush_interval": "50ms"}],
    })
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    store = StoreAndForward(config, state_dir, logging.getLogger("kill9"))
    store.start()
    print("ready", flush=True)
    for number, (body, points) in enumerate(sample_chunks(chunks, per_chunk, start_ms=start_ms)):
        store.append([body], [points])
        print(number, flush=True)
    store.stop(30)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
