"""Northbound MQTT sink: the plant as a Unified Namespace (JSON) or a Sparkplug B 3.0 edge node."""

from mos_agent.sinks.mqtt.sink import MqttSink

__all__ = ["MqttSink"]
