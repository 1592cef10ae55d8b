"""edgeroot: the one CLI and the daemon runtime shared by the root node, gateway and bridge."""

__version__ = "0.1.0"
