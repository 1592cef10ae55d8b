"""Every HTTP route of a root node, written once for the server's decorators and for every client.

Each route is a path template (for FastAPI, ``{name:path}`` captures slashes) and, where a client
calls it with arguments, a function building the concrete path. Identifier paths are percent-encoded
with the one ``/`` between prefix and suffix kept, and the server decodes them strictly from the raw
path (after the route's fixed ``*_PREFIX``), so an identifier travels exactly as written.
"""

from __future__ import annotations

from urllib.parse import quote

HANDLE = "/api/handles/{handle:path}"
"""Handle-compatible resolution (the Handle REST API's JSON shape)."""
HANDLE_PREFIX = "/api/handles/"

RESOLVE = "/v1/resolve/{identifier:path}"
"""Resolution with a map proof and a receipt; ``?at=N`` as of log size N."""
RESOLVE_PREFIX = "/v1/resolve/"

HISTORY = "/v1/history/{identifier:path}"
HISTORY_PREFIX = "/v1/history/"

REGISTRY = "/v1/registry"
"""POST one signed write request (``application/cose``)."""

GATEWAY_BLOCKS = "/v1/gateways/blocks"
"""POST a batch of a gateway's signed blocks (see :func:`rootclient.codecs.block_batch`)."""

BLOCK = "/v1/blocks/{block_id}"
BLOCKS = "/v1/blocks"
"""``?gateway=ID&from=MS&to=MS[&after=H]``: a gateway's blocks covering a time window, with receipts and
whether their readings are at the root (replicate) or stayed at the gateway (anchor), D-074."""
GATEWAY_HEAD = "/v1/gateways/{gateway:path}/head"
GATEWAY_PREFIX = "/v1/gateways/"
GATEWAY_HEAD_SUFFIX = "/head"

CHECKPOINT = "/v1/checkpoint"
CONSISTENCY = "/v1/proof/consistency"
INCLUSION = "/v1/proof/inclusion"

TILES_CHECKPOINT = "/log/checkpoint"
"""C2SP tlog-tiles: the checkpoint, and the tiles under :data:`TILE`."""
TILE = "/log/tile/{path:path}"

WITNESS_ADD_CHECKPOINT = "/add-checkpoint"
"""C2SP tlog-witness: a witness (``edgeroot witness run``) cosigns a checkpoint posted here."""

HEALTH = "/healthz"
METRICS = "/metrics"
WEB_PAGE = "/"
"""The engineer's console: resolves identifiers and verifies every answer in the browser."""
CONSOLE_ASSET = "/console/{asset:path}"
"""The console's static modules and style sheet (packaged under ``resolver/console/``)."""
CONSOLE_PREFIX = "/console/"

POLICY = "/v1/policy"
"""The node's C2SP tlog-policy (its log key, witnesses and quorum), as ``text/plain``."""

ANCHORS = "/v1/anchors/{origin:path}"
"""A parent node's newest anchor of a child log (``?size=N``: covered by its checkpoint of size N)."""
ANCHORS_PREFIX = "/v1/anchors/"


def quote_identifier(identifier: str) -> str:
    """Percent-encode an identifier for a URL path, keeping the one ``/`` between prefix and suffix."""
    prefix, _, suffix = identifier.partition("/")
    return f"{quote(prefix, safe='')}/{quote(suffix, safe='')}"


def resolve(identifier: str) -> str:
    return RESOLVE_PREFIX + quote_identifier(identifier)


def handle(identifier: str) -> str:
    return HANDLE_PREFIX + quote_identifier(identifier)


def history(identifier: str) -> str:
    return HISTORY_PREFIX + quote_identifier(identifier)


def block(block_id: bytes) -> str:
    return BLOCK.format(block_id=block_id.hex())


def gateway_head(gateway: str) -> str:
    return GATEWAY_PREFIX + quote_identifier(gateway) + GATEWAY_HEAD_SUFFIX


def anchors(origin: str) -> str:
    return ANCHORS_PREFIX + quote(origin, safe="")


EPCIS_CAPTURE = "/epcis/capture"
"""EPCIS 2.0 capture (POST an ``EPCISDocument`` whose events carry ``edgeroot:signedCapture``): 202 and
a ``Location`` of the capture job."""
EPCIS_CAPTURE_JOB = "/epcis/capture/{capture_id}"
EPCIS_EVENTS = "/epcis/events"
"""EPCIS 2.0 event query (``MATCH_anyEPC``, ..., ``nextPageToken``), each event with its proof."""
EPCIS_INDEX = "/v1/epcis/index"
"""``?id=ID``: the completeness proof of an identifier's events (its index entry in the map)."""


def epcis_capture_job(capture_id: str) -> str:
    return EPCIS_CAPTURE_JOB.format(capture_id=capture_id)
