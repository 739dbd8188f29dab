"""OPC UA driver for mos-agent (asyncua): subscriptions or polling, message security, browsing."""

from drivers.opcua.driver import OpcUaDriver

__all__ = ["OpcUaDriver"]
