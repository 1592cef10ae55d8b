"""Connectors: plugins of one shape that bring envelopes to :class:`edge.ingest.Ingest`.

A plugin module (``mqtt.py``, ``coap.py``) provides a :class:`Plugin`:

* ``name`` (the ``type`` of a ``[[connector]]`` table) and ``sample_config`` (a TOML snippet);
* ``validate(table) -> config``: check the table once, errors naming the key path;
* ``create(config, ingest, factory=None) -> Connector``: ``ingest`` is the :class:`IngestPort`;
  ``factory`` builds the transport client or server, so tests can inject and count them.

A :class:`Connector` has ``async start()``, ``async stop()`` and a ``state`` string for ``status``; it
acknowledges its sender only after ``submit`` returned a durable outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from runtime.tomlconfig import Table

if TYPE_CHECKING:
    from edge.writer import Outcome

Submit = Callable[..., Coroutine[Any, Any, "Outcome"]]
"""``submit(raw, source, *, reject=None)``: :meth:`edge.ingest.Ingest.submit`."""
SubmitMany = Callable[..., Coroutine[Any, Any, "list[Outcome]"]]
"""``submit_many([(raw, source), ...])``: :meth:`edge.ingest.Ingest.submit_many`."""


class IngestPort(Protocol):
    """The gateway's door as connectors (and the serial bridge's forwarder) see it."""

    async def submit(self, raw: bytes, source: str, *, reject: str | None = None) -> Outcome: ...
    async def submit_many(
        self, items: list[tuple[bytes, str]], *, reject: str | None = None
    ) -> list[Outcome]: ...


class ConnectorConfig(Protocol):
    @property
    def type(self) -> str: ...


class Connector(Protocol):
    state: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Plugin:
    name: str
    sample_config: str
    validate: Callable[[Table], ConnectorConfig]
    create: Callable[..., Connector]


# The plugins import the types above, so they are registered after them.
from edge.connectors import coap, mqtt  # noqa: E402

PLUGINS: dict[str, Plugin] = {p.name: p for p in (mqtt.PLUGIN, coap.PLUGIN)}
