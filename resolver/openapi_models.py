"""The published OpenAPI schemas of the root's and the witness's HTTP answers.

These models only *document*: the handlers keep building their bodies with :mod:`rootclient.codecs`
(the one home of the JSON shapes) and return them unvalidated, so the bytes on the wire (and the ones
:mod:`resolver.fast_reads` precomputes) do not change. What keeps the two from drifting is
``tests/test_openapi.py``: it validates live answers of every route against the published schema, and
every model forbids extra keys, so a field added to a codec without its model fails that test.
"""

# ruff: noqa: N815 (field names are the wire's: ``responseCode`` is the Handle REST API's spelling)

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DelegationBody(_Body):
    """A delegation (docs/formats.md §12): the prefix is served by the node at ``urls``, whose log is
    ``vkey`` and whose answers must satisfy ``policy`` (C2SP tlog-policy text)."""

    prefix: str
    urls: list[str]
    vkey: str
    policy: str


class ErrorBody(_Body):
    """Every error: the Handle response code and the reason (:mod:`resolver.errors`); a write under a
    delegated prefix (301) also names the delegation to follow."""

    responseCode: int = Field(description="Handle code: 2 error, 100 not found, 102 invalid handle, ...")
    message: str
    referral: DelegationBody | SkipJsonSchema[None] = None


class AdminValue(_Body):
    """An ``HS_ADMIN`` value's data (Handle REST API): the admin key's handle, index and permission bits."""

    handle: str
    index: int
    permissions: str


class ValueData(_Body):
    format: Literal["string", "base64", "hex", "admin"]
    value: str | AdminValue


class HandleValue(_Body):
    """One typed value of a record, in the Handle REST API's shape."""

    index: int = Field(ge=1)
    type: str
    data: ValueData
    ttl: int
    timestamp: str = Field(description="UTC, ISO 8601 to the second (``2026-01-02T03:04:05Z``)")


class PrefixProofBody(_Body):
    """A prefix record (or its absence) under the answer's map root (docs/formats.md §21)."""

    prefix: str
    record: str | None = Field(description="The prefix record's bytes (base64); null when absent")
    map_proof: str = Field(description="Sparse Merkle map proof for 0.na/<prefix> (base64)")


class ResolutionProof(_Body):
    """Proves the answer as of a checkpoint: the map proof under the map head logged in ``epoch``."""

    epoch: int = Field(ge=0)
    record: str | None = Field(description="The canonical record bytes (base64); null when absent")
    map_proof: str = Field(description="Sparse Merkle map proof (base64)")
    map_head: str = Field(description="The logged map head (base64)")
    receipt: str = Field(description="C2SP tlog-proof@v1 receipt of the map head's leaf")
    prefixes: list[PrefixProofBody] = Field(
        description="Every prefix record deciding who answers for the identifier, under the same map"
    )


# A key present only when asked for: documented as optional, never as nullable (it is never null).
OptionalProof = ResolutionProof | SkipJsonSchema[None]


class HandleFound(_Body):
    """``responseCode`` 1: the (filtered) values of the handle, echoed as asked. Under a delegated
    prefix: the record of the node responsible (``hops``: the verified hop chain, with ``proof=true``),
    or with ``referral=true`` the delegation record (``referral``: the delegation)."""

    responseCode: Literal[1]
    handle: str
    values: list[HandleValue]
    proof: OptionalProof = None
    hops: list[dict[str, Any]] | SkipJsonSchema[None] = Field(
        None, description="docs/formats.md §21: each node asked after this one and what it proved"
    )
    referral: DelegationBody | SkipJsonSchema[None] = None


class HandleMissing(_Body):
    """``responseCode`` 100 (404, no such handle) or 200 (200, no value passes the filters)."""

    responseCode: Literal[100, 200]
    handle: str
    message: str
    proof: OptionalProof = None
    hops: list[dict[str, Any]] | SkipJsonSchema[None] = None


class HandleNotResponsible(_Body):
    """``responseCode`` 301 (HTTP 400): the handle's prefix is not served by this node."""

    responseCode: Literal[301]
    handle: str
    message: str
    proof: OptionalProof = None


class ResolveAnswer(_Body):
    identifier: str = Field(description="As asked; the proof is for its canonical form")
    found: bool
    values: list[HandleValue]
    proof: ResolutionProof
    referral: DelegationBody | SkipJsonSchema[None] = Field(
        None, description="Present when a delegation covers the identifier: the node to ask next (a hint; "
        "verifiers read it from proof.prefixes)",
    )  # fmt: skip


class Change(_Body):
    log_index: int = Field(ge=0)
    op: Literal["set", "delete"]
    values: list[HandleValue]


class History(_Body):
    identifier: str = Field(description="The canonical identifier")
    changes: list[Change]


class WriteAnswer(_Body):
    responseCode: Literal[1]
    handle: str
    op: Literal["create", "update", "delete"]
    request_id: str = Field(description="hex")


class BlockItem(_Body):
    block: str = Field(description="The signed block header (base64)")
    body: list[str] | SkipJsonSchema[None] = Field(
        default=None, description="replicate mode: the block's reading envelopes (base64)"
    )


class BlockBatch(_Body):
    """``POST /v1/gateways/blocks``'s body (:func:`rootclient.codecs.block_batch`)."""

    mode: Literal["anchor", "replicate"] = "anchor"
    blocks: list[BlockItem] = Field(min_length=1)


class AcceptedBlock(_Body):
    block_id: str = Field(description="hex")
    height: int = Field(ge=0)
    duplicate: bool


class BlocksAccepted(_Body):
    accepted: list[AcceptedBlock]
    responseCode: Literal[1]


class BlocksRefused(_Body):
    """The blocks accepted before the one refused, and why it was (409: fork evidence kept)."""

    accepted: list[AcceptedBlock]
    responseCode: int
    message: str


class BlockInfo(_Body):
    block_id: str = Field(description="hex")
    gateway: str
    height: int = Field(ge=0)
    log_index: int | None = Field(description="null until the block is sequenced")
    receipt: str | None = Field(description="C2SP tlog-proof@v1; null until the block is sequenced")


class WindowBlock(_Body):
    block_id: str = Field(description="hex")
    height: int = Field(ge=0)
    time_ms: int = Field(ge=0, description="the block's signed close time, gateway clock")
    header: str = Field(description="the gateway-signed block header (COSE_Sign1), base64")
    log_index: int | None = Field(description="null until the block is sequenced")
    receipt: str | None = Field(description="C2SP tlog-proof@v1; null until the block is sequenced")
    readings: Literal["at-root", "at-gateway"] = Field(
        description="at-root: replicate mode, the root holds the readings; at-gateway: anchor mode"
    )


class WindowBlocks(_Body):
    gateway: str
    from_ms: int
    to_ms: int
    blocks: list[WindowBlock]
    next: int | None = Field(description="pass as after= for the next page; null: the window is exhausted")


class GatewayHead(_Body):
    gateway: str
    height: int = Field(ge=0)
    block_id: str = Field(description="hex")


class ConsistencyProof(_Body):
    old: int
    new: int
    proof: list[str] = Field(description="RFC 9162 hashes (base64)")


class InclusionProof(_Body):
    index: int
    size: int
    leaf: str = Field(description="The logged entry's bytes (base64)")
    proof: list[str] = Field(description="RFC 9162 hashes (base64)")


class ServedPrefix(_Body):
    """A root prefix this node serves and whether a parent delegates it here (D-127)."""

    prefix: str
    delegation: Literal["top", "pending", "delegated", "missing", "unknown"] = Field(
        description="top: no parent; pending: not checked yet; delegated; missing: the parent's side names "
        "no delegation to this node's log; unknown: no answer could be had"
    )
    detail: str


class Health(_Body):
    status: Literal["ok"]
    origin: str
    published_size: int = Field(ge=0)
    prefixes: list[ServedPrefix] | SkipJsonSchema[None] = Field(
        None, description="The root prefixes served, each with its delegation (a problem when not delegated)"
    )
    sequencer: str | SkipJsonSchema[None] = None
    worker: int | SkipJsonSchema[None] = Field(
        None, ge=1, description="The worker that answered, under `root run --workers N` (absent with one)"
    )
    pid: int | SkipJsonSchema[None] = Field(None, description="That worker's process id")
    witnesses_failing: dict[str, int]
    problems: list[str]


class AnchorPointer(_Body):
    index: int = Field(ge=0, description="The anchor leaf's index in this node's log")
    size: int = Field(ge=0, description="The anchored child checkpoint's tree size")
    cosigned_at: int = Field(ge=0, description="When this node cosigned it (POSIX seconds)")


class AnchorEvidence(_Body):
    size: int = Field(ge=0)
    cosigned: str = Field(description="The child checkpoint this node cosigned at that size (signed note)")
    refused: str = Field(description="Another child checkpoint of the same size, refused (signed note)")


class AnchorAnswer(_Body):
    """A pointer for ``edgeroot verify anchor`` (docs/formats.md §13): check it, never trust it."""

    origin: str
    tree_size: int = Field(ge=0, description="The checkpoint size of this node's log the anchor is under")
    vkey: str | None = Field(description="The child log's verifier key this node checks it with")
    url: str | None = Field(description="The child node's URL, when configured")
    anchor: AnchorPointer | None = Field(description="The newest anchor below tree_size (none yet: null)")
    cosigned_size: int | None = Field(description="The newest child size cosigned (maybe not logged yet)")
    evidence: list[AnchorEvidence] = Field(description="Two roots the child showed for one size")


# --- EPCIS (docs/formats.md, "EPCIS events on the log") --------------------------------------------


class EpcisCapturedEvent(_Body):
    hashID: str = Field(description="the event's CBV 2.0 event hash ID")
    signer: str
    duplicate: bool = Field(description="the node held this hash ID already; not logged again")


class EpcisCaptured(_Body):
    """202: every event passed; the job at ``Location`` reports their log indices."""

    captureID: str
    events: list[EpcisCapturedEvent]


class EpcisJobEvent(_Body):
    hashID: str
    logIndex: int | None = Field(description="null until the event is in a published checkpoint")
    receipt: str | None = Field(description="C2SP tlog-proof of the event's leaf; null with logIndex")


class EpcisCaptureJob(_Body):
    """An EPCIS 2.0 capture job, with each event's hash ID and log index."""

    captureID: str
    createdAt: str
    running: bool
    success: bool
    captureErrorBehaviour: Literal["rollback"]
    errors: list[str]
    events: list[EpcisJobEvent] = Field(alias="edgeroot:events")
    checkpointSize: int = Field(alias="edgeroot:checkpointSize", ge=0)


class EpcisQueryDocument(_Body):
    """An EPCIS 2.0 EPCISQueryDocument; each event carries ``edgeroot:signedCapture`` and
    ``edgeroot:proof`` (log index, inclusion proof in ``edgeroot:checkpoint``)."""

    context: list[Any] = Field(alias="@context")
    type: Literal["EPCISQueryDocument"]
    schemaVersion: str
    creationDate: str
    epcisBody: dict[str, Any]
    checkpoint: str = Field(alias="edgeroot:checkpoint")


class EpcisIndexProof(_Body):
    identifier: str = Field(description="the identifier's comparison key")
    indices: list[int]
    entry: str | None = Field(description="base64 index entry; null: the map proves there is none")
    map_proof: str


class EpcisIndexAnswer(_Body):
    """Completeness proofs: each identifier's events as of the checkpoint the receipt is in."""

    epoch: int = Field(ge=1)
    map_head: str
    receipt: str
    proofs: list[EpcisIndexProof]


EPCIS_REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "EventInvalid: not an EPCISDocument, an invalid event"},
    403: {
        "model": ErrorBody,
        "description": "EventUnauthorised: unsigned, unknown signer, not a capture key",
    },
    422: {
        "model": ErrorBody,
        "description": "EventTampered: changed after signing, bad signature, wrong hash ID",
    },
}


# --- OpenAPI fragments ----------------------------------------------------------------------------------

Responses = dict[int | str, dict[str, Any]]

ERROR_REASONS = {
    400: "Malformed request: a bad identifier, parameter or body (never 422)",
    401: "The write request carries no usable signature",
    403: "A signature that does not verify, an unknown or out-of-scope admin key, a replay",
    404: "No such resource",
    409: "Conflicts with what exists",
    413: "Request body above the node's limit",
    422: "A gateway block badly signed, unlinked, or whose body does not match its header",
    500: "The node's own failure (details in its log)",
    502: "A delegated node (the Handle API follows referrals) is unreachable or did not prove its answer",
    503: "No published checkpoint yet, or the database is unreachable",
}


def errors(*statuses: int) -> Responses:
    """Error answers (always :class:`ErrorBody`), plus 500; declaring them also keeps FastAPI from
    inventing a 422 validation answer the app never gives (validation errors are 400)."""
    return {s: {"model": ErrorBody, "description": ERROR_REASONS[s]} for s in (*statuses, 500)}


def content(media_type: str, description: str, *, binary: bool = False) -> dict[str, Any]:
    """A non-JSON answer's documentation."""
    schema = {"type": "string", "format": "binary"} if binary else {"type": "string"}
    return {"description": description, "content": {media_type: {"schema": schema}}}


def request_body(media_type: str, description: str) -> dict[str, Any]:
    """``openapi_extra`` for an endpoint that reads its raw body itself."""
    schema = {"type": "string", "format": "binary"}
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {media_type: {"schema": schema}},
        }
    }


_JSON = "application/json"
_ERROR_REF = "#/components/schemas/ErrorBody"
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")


def publish_as_served(schema: dict[str, Any]) -> dict[str, Any]:
    """Make FastAPI's generated document say what the app really answers (``schema`` is changed in place):

    - no 422 "validation error": the app's handler answers those with 400 and :class:`ErrorBody`
      (a route that really answers 422 declares it, and keeps it);
    - an error body is JSON even on a route whose success is text (FastAPI labels every answer of a
      route with the route's media type).
    """
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            answers = operation.get("responses", {})
            phantom = answers.get("422", {}).get("content", {}).get(_JSON, {}).get("schema", {})
            if phantom.get("$ref", "").endswith("/HTTPValidationError"):
                del answers["422"]
            for answer in answers.values():
                media = answer.get("content", {})
                for media_type, body in list(media.items()):
                    if media_type != _JSON and body.get("schema", {}).get("$ref") == _ERROR_REF:
                        del media[media_type]
                        media[_JSON] = body
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_VALIDATION:
        components.pop(name, None)
    # Bodies the endpoints read raw (to cap and decode them strictly) are documented by reference.
    for model in REQUEST_MODELS:
        body = model.model_json_schema(ref_template=_COMPONENT + "{model}")
        components.update(body.pop("$defs", {}))
        components[model.__name__] = body
    return schema


_COMPONENT = "#/components/schemas/"
REQUEST_MODELS: tuple[type[BaseModel], ...] = (BlockBatch,)


def json_request_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for an endpoint that reads its JSON body itself (``model`` is in REQUEST_MODELS)."""
    ref = {"$ref": _COMPONENT + model.__name__}
    return {"requestBody": {"required": True, "content": {_JSON: {"schema": ref}}}}


def witness_answers(size_type: str) -> Responses:
    """``POST /add-checkpoint``'s answers (C2SP tlog-witness): a cosignature line, the witness's
    latest size (409, ``size_type``), or a plain-text reason."""
    text = "text/plain; charset=utf-8"
    plain = {"schema": {"type": "string"}}
    return {
        200: content(text, "A tlog-cosignature v1 signature line"),
        400: content(text, "A malformed request or checkpoint, or a body above the size limit"),
        403: content(text, "The checkpoint's signature does not verify"),
        404: content(text, "This witness does not follow the checkpoint's log"),
        409: {
            "description": "The old size is not this witness's latest: the body is its latest size",
            "content": {size_type: plain, text: plain},
        },
        422: content(text, "A consistency proof that does not verify"),
    }
