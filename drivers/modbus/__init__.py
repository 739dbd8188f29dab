"""Modbus driver: TCP, RTU over a serial line, and RTU framing over TCP (serial gateways).

Entry point ``mos_agent.drivers: modbus = drivers.modbus:ModbusDriver``. See README.md beside
this file for the device file, address syntax, types, request planning and quality codes.
"""

from drivers.modbus.config import ModbusConnection, ModbusDevice, ModbusTag
from drivers.modbus.driver import ModbusDriver

__all__ = ["ModbusConnection", "ModbusDevice", "ModbusDriver", "ModbusTag"]
