"""MQTT driver: topics with ISA-95 captures and JSON paths, QoS 1 acknowledged after the buffer
commit on a persistent session. See README.md in this folder."""

from drivers.mqtt.driver import MqttDriver

__all__ = ["MqttDriver"]
