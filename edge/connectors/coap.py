"""CoAP connector (aiocoap): ``POST /readings`` with a COSE_Sign1 envelope as the payload.

Answers only once the reading's outcome is durable: 2.04 Changed when stored; 2.04 with the payload
``held: key lookup`` when held durably while its signer's key is looked up (on the gateway's disk and
judged later, so the device may free it; D-059); 4.00 Bad Request with
the reason when rejected (quarantined); 4.15 for a content format other than COSE_Sign1 (18) or
SenML-less octets (the option may be absent); 5.03 Service Unavailable when the gateway refuses input
(disk budget, shutdown, too many readings held), so the device keeps the reading and retries.
Confirmable requests get a piggybacked or separate response from aiocoap; in both cases after durability.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiocoap
import aiocoap.resource

from edge.connectors import Plugin
from edge.intake import HELD, WRONG_CONTENT_FORMAT, IngestPort, Submit
from runtime.tomlconfig import Table, read_settings, setting

log = logging.getLogger(__name__)
NAME = "coap"
CONTENT_FORMAT_COSE_SIGN1 = 18
HELD_PAYLOAD = b"held: key lookup"
"""The diagnostic payload of a 2.04 for a reading held durably (acknowledged, judged later)."""


@dataclass(frozen=True, slots=True)
class CoapConfig:
    type: str = setting("type", NAME, choices=(NAME,), help="CoAP server: POST /readings")
    host: str = setting("host", "127.0.0.1", help='address to listen on; "::" for all interfaces')
    port: int = setting("port", 5683, range=(1, 65535), help="UDP port")


def validate(t: Table) -> CoapConfig:
    return CoapConfig(**read_settings(CoapConfig, t))


class ReadingsResource(aiocoap.resource.Resource):  # type: ignore[misc]
    def __init__(self, submit: Submit) -> None:
        super().__init__()
        self.submit = submit

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        source = f"coap:{request.remote.hostinfo}"
        fmt = request.opt.content_format
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


def coap_server(config: CoapConfig, site: Any) -> Any:
    """The default transport factory: an aiocoap server context (a coroutine to await)."""
    # UDP only: with the websockets package installed, aiocoap's defaults would also open a CoAP-over-
    # WebSockets listener on a random port, which nobody asked for.
    return aiocoap.Context.create_server_context(site, bind=(config.host, config.port), transports=["udp6"])


class CoapConnector:
    def __init__(
        self, config: CoapConfig, submit: Submit, factory: Callable[[CoapConfig, Any], Any] | None = None
    ) -> None:
        self.config = config
        self.submit = submit
        self.factory = factory or coap_server
        self.state = "stopped"
        self._context: Any = None

    async def start(self) -> None:
        site = aiocoap.resource.Site()
        site.add_resource(["readings"], ReadingsResource(self.submit))
        self._context = await self.factory(self.config, site)
        self.state = "listening"
        log.info("CoAP listening on %s:%d /readings", self.config.host, self.config.port)

    async def stop(self) -> None:
        if self._context is not None:
            await self._context.shutdown()
            self._context = None
        self.state = "stopped"


def create(
    config: CoapConfig, ingest: IngestPort, factory: Callable[[CoapConfig, Any], Any] | None = None
) -> CoapConnector:
    return CoapConnector(config, ingest.submit, factory)


PLUGIN: Plugin = Plugin(NAME, CoapConfig, validate, create)
