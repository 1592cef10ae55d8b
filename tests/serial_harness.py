"""Serial lines for tests: the pseudo-terminal helpers live in :mod:`firmware_bridge.null_modem`."""

from firmware_bridge.null_modem import null_modem, pty, read_some, write_all

__all__ = ["null_modem", "pty", "read_some", "write_all"]
