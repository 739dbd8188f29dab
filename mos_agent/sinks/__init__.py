"""Sinks: where buffered readings go. :func:`build_sink` makes one from its configuration model and
:func:`sink_names` names them (a sink's name is its cursor in the buffer). What a sink is:
:mod:`~mos_agent.sinks.base`; one worker thread a sink: :mod:`~mos_agent.sinks.runner`; the buffer
and the runners together: :mod:`~mos_agent.sinks.forward`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mos_agent.config.models import InfluxSinkConfig, MqttSinkConfig, SinkConfig, SqliteSinkConfig
from mos_agent.sinks.base import (
    Sink,
    SinkAuthError,
    SinkContext,
    SinkError,
    SinkRejected,
    SinkRetryable,
    SinkTooLarge,
)

__all__ = ["Sink", "SinkAuthError", "SinkContext", "SinkError", "SinkRejected", "SinkRetryable", "SinkTooLarge",
           "build_sink", "sink_names"]


def build_sink(name: str, config: SinkConfig, state_dir: Path, context: SinkContext) -> Sink:
    """The sink a configuration section describes; its client library is imported only when used."""
    if isinstance(config, InfluxSinkConfig):
        from mos_agent.sinks.influxdb import InfluxSink

        return InfluxSink(name, config)
    if isinstance(config, SqliteSinkConfig):
        from mos_agent.sinks.sqlite import SqliteHistorySink

        return SqliteHistorySink(name, config, state_dir)
    if isinstance(config, MqttSinkConfig):
        from mos_agent.sinks.mqtt import MqttSink

        return MqttSink(name, config, agent=context.agent, state_dir=state_dir, series=context.series,
                        device_states=context.device_states)
    raise ValueError(f"unknown sink type {config.type!r}")


def sink_names(configs: Sequence[SinkConfig]) -> list[str]:
    """A sink's name is its ``name`` or its type; repeats get -2, -3 … so every name is unique."""
    names: list[str] = []
    for cfg in configs:
        base = cfg.name or cfg.type
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names
