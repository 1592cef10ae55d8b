"""Connectors: plugins of one shape that bring envelopes to the gateway's door (:mod:`edge.intake`).

A plugin module (``mqtt.py``, ``coap.py``) provides a :class:`Plugin`:

* ``name`` (the ``type`` of a ``[[connector]]`` table) and ``config``, the frozen dataclass that
  declares its keys (:func:`runtime.tomlconfig.setting`), from which ``sample_config`` is written;
* ``validate(table) -> config``: check the table once, errors naming the key path;
* ``create(config, ingest, factory=None) -> Connector``: ``ingest`` is an :class:`edge.intake.IngestPort`;
  ``factory`` builds the transport client or server, so tests can inject and count them.

A :class:`Connector` has ``async start()``, ``async stop()`` and a ``state`` string for ``status``; it
acknowledges its sender only after ``submit`` returned a durable outcome. Connectors depend on that
contract alone, never on the writer or the ingest implementation, so a test can drive one with a fake
``submit`` (tests/test_connectors.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from runtime.tomlconfig import Table, render


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
    config: type
    validate: Callable[[Table], ConnectorConfig]
    create: Callable[..., Connector]

    @property
    def sample_config(self) -> str:
        """A commented ``[[connector]]`` table of this kind, every key with its default and help."""
        return render(self.config, {"type": self.name}, title=f"[[connector]] type {self.name!r}")


# The plugins import the types above, so they are registered after them.
from edge.connectors import coap, mqtt  # noqa: E402

PLUGINS: dict[str, Plugin] = {p.name: p for p in (mqtt.PLUGIN, coap.PLUGIN)}
