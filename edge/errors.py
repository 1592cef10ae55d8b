"""The one exception tree of edge/."""

from __future__ import annotations

from runtime import tomlconfig


class GatewayError(Exception):
    """Base of every error raised by the gateway."""


class ConfigError(GatewayError, tomlconfig.ConfigError):
    """``gateway.toml`` is invalid; the message names the file, the key path and the reason."""


class StoreFull(GatewayError):
    """The disk budget is reached with unanchored data: new input is refused, never silently dropped."""


class SyncError(GatewayError):
    """The root could not be reached or refused a batch; retried with backoff."""


class BlocksRefused(SyncError):
    """The root answered and refused a block (4xx, e.g. this gateway is not registered): anchoring stops
    until someone acts, so it is a health problem, still retried with backoff."""


class IngestStopped(GatewayError):
    """The ingest loop is gone (crashed, or cut short at shutdown): the submission was not stored, so the
    sender must not be acknowledged; it keeps the reading and retries."""
