"""CoAP connector (aiocoap): ``POST /readings`` with a COSE_Sign1 envelope as the payload.

Answers only once the reading's outcome is durable: 2.04 Changed when stored; 2.04 with the payload
``held: key lookup`` when held durably while its signer's key is looked up (on the gateway's disk and
judged later, so the device may free it; D-059); 4.00 Bad Request with
the reason when rejected (quarantined); 4.15 for a content format other than COSE_Sign1 (18) or
SenML-less octets (the option may be absent); 5.03 Service Unavailable when the gateway refuses input
(disk budget, shutdown, too many readings held), so the device keeps the reading and retries.
Confirmable requests get a piggybacked or separate response from aiocoap; in both cases after durability.

A request may carry several readings (docs/formats.md §19, D-082): a batch of envelopes, content format
60 (``application/cbor``) or none. It is answered once every envelope in it is durable: 2.04 Changed
with a CBOR array of one entry per envelope, in order (null: stored; else its reason, ``held`` included);
5.03 when any was refused (the device sends the whole batch again: stored ones come back as duplicates,
answered null); 4.00 for a malformed batch (quarantined whole).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiocoap
import aiocoap.resource

from chain_lite import cbor
from edge.connectors import Plugin
from edge.intake import (
    HELD,
    MALFORMED_BATCH,
    WRONG_CONTENT_FORMAT,
    BatchError,
    IngestPort,
    Outcome,
    Submit,
    SubmitMany,
    is_batch,
    split_batch,
)
from runtime.tomlconfig import Table, read_settings, setting

log = logging.getLogger(__name__)
NAME = "coap"
CONTENT_FORMAT_COSE_SIGN1 = 18
CONTENT_FORMAT_CBOR = 60
HELD_PAYLOAD = b"held: key lookup"
"""The diagnostic payload of a 2.04 for a reading held durably (acknowledged, judged later)."""


@dataclass(frozen=True, slots=True)
class CoapConfig:
    type: str = setting("type", NAME, choices=(NAME,), help="CoAP server: POST /readings")
    host: str = setting("host", "127.0.0.1", help='address to listen on; "::" for all interfaces')
    port: int = setting("port", 5683, range=(1, 65535), help="UDP port")


def validate(t: Table) -> CoapConfig:
    return CoapConfig(**read_settings(CoapConfig, t))


def batch_answer(outcomes: list[Outcome]) -> bytes:
    """The payload of a 2.04 to a batch: a CBOR array, per envelope null (stored, or a duplicate of a
    stored one) or its reason as text (``held``, or why it was quarantined)."""
    return cbor.encode([None if o.accepted else o.reason for o in outcomes])


class ReadingsResource(aiocoap.resource.Resource):  # type: ignore[misc]
    def __init__(self, submit: Submit, submit_many: SubmitMany) -> None:
        super().__init__()
        self.submit = submit
        self.submit_many = submit_many

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        source = f"coap:{request.remote.hostinfo}"
        fmt = request.opt.content_format
        if (fmt is None or int(fmt) == CONTENT_FORMAT_CBOR) and is_batch(request.payload):
            return await self._batch(request.payload, source)
        if fmt is not None and int(fmt) != CONTENT_FORMAT_COSE_SIGN1:
            await self.submit(request.payload, source, reject=WRONG_CONTENT_FORMAT)
            return aiocoap.Message(
                code=aiocoap.UNSUPPORTED_CONTENT_FORMAT, payload=b"content format must be 18 (COSE_Sign1)"
            )
        outcome = await self.submit(request.payload, source)
        if outcome.accepted:
            return aiocoap.Message(code=aiocoap.CHANGED)
        if outcome.reason == HELD:
            return aiocoap.Message(code=aiocoap.CHANGED, payload=HELD_PAYLOAD)
        message = f"{outcome.reason}: {outcome.detail}".encode()[:512]
        if outcome.durable:
            return aiocoap.Message(code=aiocoap.BAD_REQUEST, payload=message)
        return aiocoap.Message(code=aiocoap.SERVICE_UNAVAILABLE, payload=message)

    async def _batch(self, payload: bytes, source: str) -> aiocoap.Message:
        try:
            envelopes = split_batch(payload)
        except BatchError as exc:
            await self.submit(payload, source, reject=MALFORMED_BATCH)
            return aiocoap.Message(code=aiocoap.BAD_REQUEST, payload=str(exc).encode()[:512])
        outcomes = await self.submit_many([(e, source) for e in envelopes])
        refused = next((o for o in outcomes if not o.durable), None)
        if refused is not None:
            message = f"{refused.reason}: {refused.detail}".encode()[:512]
            return aiocoap.Message(code=aiocoap.SERVICE_UNAVAILABLE, payload=message)
        return aiocoap.Message(
            code=aiocoap.CHANGED, payload=batch_answer(outcomes), content_format=CONTENT_FORMAT_CBOR
        )


def coap_server(config: CoapConfig, site: Any) -> Any:
    """The default transport factory: an aiocoap server context (a coroutine to await)."""
    # UDP only: with the websockets package installed, aiocoap's defaults would also open a CoAP-over-
    # WebSockets listener on a random port, which nobody asked for.
    return aiocoap.Context.create_server_context(site, bind=(config.host, config.port), transports=["udp6"])


class CoapConnector:
    def __init__(
        self,
        config: CoapConfig,
        submit: Submit,
        factory: Callable[[CoapConfig, Any], Any] | None = None,
        submit_many: SubmitMany | None = None,
    ) -> None:
        self.config = config
        self.submit = submit
        self.submit_many: SubmitMany = submit_many or self._one_by_one
        self.factory = factory or coap_server
        self.state = "stopped"
        self._context: Any = None

    async def start(self) -> None:
        site = aiocoap.resource.Site()
        site.add_resource(["readings"], ReadingsResource(self.submit, self.submit_many))
        self._context = await self.factory(self.config, site)
        self.state = "listening"
        log.info("CoAP listening on %s:%d /readings", self.config.host, self.config.port)

    async def _one_by_one(
        self, items: list[tuple[bytes, str]], *, reject: str | None = None
    ) -> list[Outcome]:
        """Batches through a ``submit`` alone (a test's fake door): one envelope after another."""
        return [await self.submit(raw, source, reject=reject) for raw, source in items]

    async def stop(self) -> None:
        if self._context is not None:
            await self._context.shutdown()
            self._context = None
        self.state = "stopped"


def create(
    config: CoapConfig, ingest: IngestPort, factory: Callable[[CoapConfig, Any], Any] | None = None
) -> CoapConnector:
    return CoapConnector(config, ingest.submit, factory, ingest.submit_many)


PLUGIN: Plugin = Plugin(NAME, CoapConfig, validate, create)
