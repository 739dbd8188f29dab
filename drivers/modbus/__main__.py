"""``python -m drivers.modbus DEVICE.yaml``: print the request plan of a device file."""

from drivers.modbus.plan import main

raise SystemExit(main())
