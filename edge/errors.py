"""The one exception tree of edge/."""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error raised by the gateway."""


class ConfigError(GatewayError):
    """The configuration is invalid; the message names the file, the key path and the reason."""

    def __init__(self, path: object, key: str, reason: str) -> None:
        super().__init__(f"{path}: {key}: {reason}")
        self.key = key
        self.reason = reason


class StoreFull(GatewayError):
    """The disk budget is reached with unanchored data: new input is refused, never silently dropped."""


class SyncError(GatewayError):
    """The root could not be reached or refused a batch; retried with backoff."""
