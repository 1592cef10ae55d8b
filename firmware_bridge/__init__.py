"""firmware_bridge: brings serial-line devices (framed firmware, Modbus RTU) into edgeroot."""
