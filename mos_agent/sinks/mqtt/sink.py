"""The northbound MQTT sink: buffered line protocol → UNS JSON or Sparkplug B messages, published
through one :class:`~mos_agent.sinks.mqtt.session.MqttSession` per sink."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path

from mos_agent.buffer import BatchKind
from mos_agent.config.loader import read_secret
from mos_agent.config.models import AgentSection, MqttSinkConfig
from mos_agent.lineprotocol import LineProtocolError
from mos_agent.payload import Payload
from mos_agent.series import SeriesSpec
from mos_agent.sinks.base import DeviceStates, Sink, SinkRejected
from mos_agent.sinks.mqtt.edge_node import BdSeqStore, EdgeNode, SparkplugPublisher, configured_metrics
from mos_agent.sinks.mqtt.rows import ReadingParser
from mos_agent.sinks.mqtt.session import MqttSession, Publisher
from mos_agent.sinks.mqtt.uns import UnsEncoder, UnsPublisher
from mos_agent.status import MqttSinkStats, SinkStats


def bdseq_path(state_dir: Path, sink_name: str) -> Path:
    """Where a Sparkplug sink keeps its bdSeq (one file per sink: each is its own edge node
    session)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", sink_name)
    return Path(state_dir) / f"sparkplug-{safe}.bdseq.json"


class MqttSink(Sink):
    type = "mqtt"

    def __init__(self, name: str, config: MqttSinkConfig, *, agent: AgentSection, state_dir: Path,
                 series: Iterable[SeriesSpec] = (), device_states: DeviceStates | None = None,
                 logger: logging.Logger | None = None) -> None:
        self.name = name
        self.config = config
        self.log = logger or logging.getLogger("mos_agent.sinks.mqtt")
        self._password = config.password or read_secret(None, config.password_file)
        publisher: Publisher
        if config.format == "uns":
            publisher = UnsPublisher(UnsEncoder(config.prefix, agent.enterprise, agent.site, agent.id, config.qos))
        else:
            assert config.group_id is not None
            node = EdgeNode(config.group_id, agent.id, configured_metrics(series))
            publisher = SparkplugPublisher(node, BdSeqStore(bdseq_path(state_dir, name)), qos=config.qos,
                                           primary_host_id=config.primary_host_id,
                                           device_states=device_states, logger=self.log)
        self.publisher = publisher
        self._parser = ReadingParser()
        self.session = MqttSession(name, config, publisher, config.client_id or f"mos-agent-{agent.id}-{name}",
                                   self._password, self.log)
        self.session.start()

    def __repr__(self) -> str:
        return f"MqttSink(name={self.name!r}, url={self.config.url!r}, format={self.config.format!r})"

    def write(self, payload: Payload, kind: BatchKind = BatchKind.LIVE) -> None:
        """Publish the payload's readings; backlog batches are historical (UNS: not retained;
        Sparkplug: ``is_historical``). Returns once the broker acknowledged all of it."""
        try:
            readings = self._parser.parse(payload.plain)
        except LineProtocolError as exc:
            raise SinkRejected(str(exc)) from None
        self.session.publish(readings, historical=kind == BatchKind.BACKLOG)

    def redact(self, text: str) -> str:
        if self._password and len(self._password) >= 4:
            text = text.replace(self._password, "***")
        return text

    def fill_status(self, stats: SinkStats) -> None:
        stats.mqtt = self.status()

    def status(self) -> MqttSinkStats:
        return self.session.status()

    def close(self) -> None:
        self.session.close()
