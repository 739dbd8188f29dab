"""Sinks: where buffered readings go. :func:`build_sink` makes one from its configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mos_agent.sinks.base import Sink, SinkAuthError, SinkError, SinkRejected, SinkRetryable, SinkTooLarge

__all__ = ["Sink", "SinkAuthError", "SinkError", "SinkRejected", "SinkRetryable", "SinkTooLarge", "build_sink"]


def build_sink(name: str, config: Any, state_dir: Path) -> Sink:
    if config.type == "influxdb":
        from mos_agent.sinks.influxdb import InfluxSink

        return InfluxSink(name, config)
    if config.type == "sqlite":
        from mos_agent.sinks.sqlite import SqliteHistorySink

        return SqliteHistorySink(name, config, state_dir)
    raise ValueError(f"unknown sink type {config.type!r}")
