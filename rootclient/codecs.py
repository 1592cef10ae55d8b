"""The JSON bodies of the root's protocol, encoded by the server and decoded by every client.

Decoders take whatever ``json.loads`` produced (``[]``, ``null``, a string where an object belongs) and
either return typed values or raise :class:`rootclient.errors.ProtocolError` naming the field; no
``KeyError``/``TypeError`` escapes. Binary fields are canonical base64 (:mod:`chain_lite.b64`): two
texts never carry the same bytes. Receipts and checkpoints travel as their C2SP text and are parsed
here once, so the caller holds parsed objects (and verifies their signatures once, elsewhere).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from chain_lite import b64
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.epcis_proof import IndexProof
from chain_lite.errors import ChainError
from chain_lite.merkle import HASH_SIZE
from chain_lite.policy import Policy
from chain_lite.receipt import Receipt
from chain_lite.registry import MAX_UINT31, Record, Value, governed_prefix
from chain_lite.resolution import PrefixProof, ResolutionProof
from rootclient.errors import ProtocolError

BlockBatch = list[tuple[bytes, Sequence[bytes] | None]]
"""Blocks in order, each with its readings' envelopes (replicate mode) or ``None`` (anchor mode)."""


# --- field readers: the one place hostile shapes are turned into ProtocolError -------------------------


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(what, f"expected a JSON object, got {type(value).__name__}")
    return value


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ProtocolError(what, f"expected a JSON list, got {type(value).__name__}")
    return value


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ProtocolError(what, f"expected a string, got {type(value).__name__}")
    return value


def _int(value: object, what: str) -> int:
    # bool is an int in Python but never a valid size, index or height on the wire.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(what, f"expected a non-negative integer, got {value!r:.40}")
    return value


def _bytes(value: object, what: str) -> bytes:
    data = b64.decode(_str(value, what))
    if data is None:
        raise ProtocolError(what, "not canonical base64")
    return data


def _hash(value: object, what: str) -> bytes:
    data = _bytes(value, what)
    if len(data) != HASH_SIZE:
        raise ProtocolError(what, f"a hash is {HASH_SIZE} bytes, got {len(data)}")
    return data


def _field(obj: dict[str, Any], key: str, what: str) -> object:
    if key not in obj:
        raise ProtocolError(what, f"missing field {key!r}")
    return obj[key]


def parse_receipt(text: object, what: str = "receipt") -> Receipt:
    """A C2SP tlog-proof receipt carried as a JSON string."""
    try:
        return Receipt.parse(_str(text, what).encode())
    except (ChainError, UnicodeEncodeError) as exc:
        raise ProtocolError(what, str(exc)) from exc


def parse_checkpoint(data: bytes, what: str = "checkpoint") -> SignedCheckpoint:
    """A C2SP signed checkpoint as served by ``GET /v1/checkpoint`` (signatures not yet verified)."""
    try:
        return SignedCheckpoint.parse(data)
    except ChainError as exc:
        raise ProtocolError(what, str(exc)) from exc


def parse_policy(data: bytes, what: str = "policy") -> Policy:
    """A C2SP tlog-policy as served by ``GET /v1/policy``."""
    try:
        return Policy.parse(data)
    except ChainError as exc:
        raise ProtocolError(what, str(exc)) from exc


# --- errors ---------------------------------------------------------------------------------------------


def error_json(handle_code: int, message: str) -> dict[str, Any]:
    """Every error the root answers: ``{"responseCode": <Handle code>, "message": <reason>}``."""
    return {"responseCode": handle_code, "message": message}


def parse_error(body: object) -> tuple[str, int] | None:
    """(message, Handle code) of an error body, or None when the body is not one."""
    if not isinstance(body, dict) or "message" not in body:
        return None
    code = body.get("responseCode", 2)
    return str(body["message"]), code if isinstance(code, int) and not isinstance(code, bool) else 2


# --- resolution -----------------------------------------------------------------------------------------


HS_ADMIN = "HS_ADMIN"
FIRST_ADMIN_INDEX = 100  # where Handle puts a record's HS_ADMIN values (and the next free index after)
# HS_ADMIN permissions as the Handle REST API spells them: 12 bits, most significant first (list handles,
# read value, add/remove/modify admin, add/remove/modify value, delete/add derived prefix, delete/add
# handle; Handle's hdllib AdminRecord numbers them 11..0). A prefix admin here (DESIGN §2, D-011, D-012)
# may do all of it but list handles: create and delete identifiers and child prefixes, and update its
# own prefix record, whose HS_PUBKEY values are the admin keys (so adding or removing one adds or removes
# an admin). The same string Handle gives a prefix admin in ``0.NA/<prefix>``.
PREFIX_ADMIN_PERMISSIONS = "011111111111"


_LAST_STAMPED_S = 253_402_300_799
"""9999-12-31T23:59:59Z, the last second a four-digit year (and ``datetime``) can show."""


def _stamp(timestamp_ms: int) -> str:
    """A value's timestamp as the Handle REST API shows it, to the second, in UTC."""
    seconds = timestamp_ms // 1000
    if 0 <= seconds <= _LAST_STAMPED_S:
        return _stamp_second(seconds)
    return _stamp_reference(timestamp_ms)


@functools.lru_cache(maxsize=1024)
def _stamp_second(seconds: int) -> str:
    """:func:`_stamp` of a second in range: time.gmtime and an f-string, a third of strftime's cost (the
    same text: tests/test_rootclient_codecs.py compares them), kept for the last 1,024 seconds asked (the
    values of one record share their write's second, and records are often written in bursts)."""
    year, month, day, hour, minute, second = time.gmtime(seconds)[:6]
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}Z"


def _stamp_reference(timestamp_ms: int) -> str:
    """:func:`_stamp` through ``datetime``: what it gives in range, and its errors (ValueError) beyond."""
    return dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def handle_value(v: Value) -> dict[str, Any]:
    """One value in the Handle REST API's JSON shape."""
    return {
        "index": v.index,
        "type": v.type,
        "data": {"format": v.format, "value": v.value},
        "ttl": v.ttl,
        "timestamp": _stamp(v.timestamp_ms),
    }


def handle_admin_value(index: int, admin: Value, admin_handle: str) -> dict[str, Any]:
    """An ``HS_ADMIN`` value at ``index`` naming the admin key ``admin`` of ``admin_handle`` (its
    ``INDEX:0.na/PREFIX`` key name), in the Handle REST API's shape: ``data`` is ``{"format": "admin",
    "value": {"handle", "index", "permissions"}}``. It takes the key value's ttl and timestamp."""
    return {
        "index": index,
        "type": HS_ADMIN,
        "data": {
            "format": "admin",
            "value": {"handle": admin_handle, "index": admin.index, "permissions": PREFIX_ADMIN_PERMISSIONS},
        },
        "ttl": admin.ttl,
        "timestamp": _stamp(admin.timestamp_ms),
    }


def handle_record_values(record: Record) -> list[dict[str, Any]]:
    """A record's values as the Handle system shows them, in index order.

    A prefix record ``0.na/P`` also shows one ``HS_ADMIN`` value per admin key (each ``HS_PUBKEY`` value
    is the admin ``INDEX:0.na/P``, D-011), as a Handle prefix record names its admins. They are derived
    from the record, not stored in it (its map proof covers the keys they are read from); each takes the
    first index from :data:`FIRST_ADMIN_INDEX` up that no value uses. Other records show their values.
    """
    shown = [handle_value(v) for v in record.values]
    if governed_prefix(record.identifier) is not None:
        used = {v.index for v in record.values}
        free = (i for i in range(FIRST_ADMIN_INDEX, MAX_UINT31 + 1) if i not in used)
        keys = [v for v in record.values if v.type == "HS_PUBKEY"]
        shown += [handle_admin_value(next(free), key, record.identifier) for key in keys]
    return sorted(shown, key=lambda value: int(value["index"]))


def proof_json(
    *, epoch: int, record: bytes | None, map_proof: bytes, map_head_b64: str, receipt_text: str,
    prefixes: Sequence[PrefixProof] = (),
) -> dict[str, Any]:  # fmt: skip
    """The ``proof`` object of a resolution answer (the map head and receipt come pre-encoded: the
    server renders them once per checkpoint, not once per request); ``prefixes`` proves who is
    responsible for the identifier (docs/formats.md §21)."""
    return {**_own_proof(epoch, record, map_proof), **_shared_proof(map_head_b64, receipt_text, prefixes)}


def _own_proof(epoch: int, record: bytes | None, map_proof: bytes) -> dict[str, Any]:
    """The members of a ``proof`` object particular to one identifier."""
    return {
        "epoch": epoch,
        "record": None if record is None else b64.encode(record),
        "map_proof": b64.encode(map_proof),
    }


def _shared_proof(map_head_b64: str, receipt_text: str, prefixes: Iterable[PrefixProof]) -> dict[str, Any]:
    """The members of a ``proof`` object that every answer under the same prefixes as of one checkpoint
    shares (D-076, D-092)."""
    return {
        "map_head": map_head_b64,
        "receipt": receipt_text,
        "prefixes": [
            {
                "prefix": p.prefix,
                "record": None if p.record is None else b64.encode(p.record),
                "map_proof": b64.encode(p.map_proof),
            }
            for p in prefixes
        ],
    }


to_json_text = json.JSONEncoder(ensure_ascii=False).encode
"""``json.dumps(value, ensure_ascii=False)``, the text of the root's ``/v1`` answers, without making an
encoder per call (``json.dumps`` reuses one only with its default arguments)."""


def proof_json_bytes(
    *, epoch: int, record: bytes | None, map_proof: bytes, map_head_b64: str, receipt_text: str,
    prefixes: tuple[PrefixProof, ...] = (),
) -> bytes:  # fmt: skip
    """``to_json_text(proof_json(...))`` in UTF-8, with the shared members (three quarters of an answer
    at 100,000 identifiers: the receipt and the prefixes' proofs) encoded once per checkpoint and prefix
    chain rather than once per answer (decisions D-141). Bytes, so an answer is joined from encoded
    parts: a checkpoint's signature lines (an em dash) would make the whole text two bytes a character."""
    own = to_json_text(_own_proof(epoch, record, map_proof))[:-1].encode()
    return b"".join((own, b", ", _shared_proof_bytes(map_head_b64, receipt_text, prefixes), b"}"))


@functools.lru_cache(maxsize=256)
def _shared_proof_bytes(map_head_b64: str, receipt_text: str, prefixes: tuple[PrefixProof, ...]) -> bytes:
    """The shared members between the braces, in UTF-8; a pure function of its arguments, kept for the
    last 256 (checkpoint, prefix chain) pairs asked."""
    return to_json_text(_shared_proof(map_head_b64, receipt_text, prefixes))[1:-1].encode()


MAX_PREFIX_PROOFS = 128
"""An identifier of 255 bytes has at most 128 prefix segments."""


def _prefix_proofs(items: object, what: str) -> tuple[PrefixProof, ...] | None:
    if items is None:
        return None
    entries = _list(items, what)
    if len(entries) > MAX_PREFIX_PROOFS:
        raise ProtocolError(what, f"more than {MAX_PREFIX_PROOFS} prefix proofs")
    out = []
    for i, item in enumerate(entries):
        entry = _object(item, f"{what}[{i}]")
        raw = entry.get("record")
        out.append(
            PrefixProof(
                _str(_field(entry, "prefix", f"{what}[{i}]"), f"{what}[{i}].prefix"),
                None if raw is None else _bytes(raw, f"{what}[{i}].record"),
                _bytes(_field(entry, "map_proof", f"{what}[{i}]"), f"{what}[{i}].map_proof"),
            )
        )
    return tuple(out)


def proof_from_json(identifier: str, proof: object) -> ResolutionProof:
    """The ``proof`` object of a resolution answer, decoded (nothing verified yet)."""
    what = "resolution proof"
    obj = _object(proof, what)
    raw_record = obj.get("record")
    record = None if raw_record is None else _bytes(raw_record, f"{what} record")
    map_proof = _bytes(_field(obj, "map_proof", what), f"{what} map_proof")
    map_head = _bytes(_field(obj, "map_head", what), f"{what} map_head")
    receipt = parse_receipt(_field(obj, "receipt", what), f"{what} receipt")
    prefixes = _prefix_proofs(obj.get("prefixes"), f"{what} prefixes")
    return ResolutionProof(identifier, record, map_proof, map_head, receipt, prefixes)


def resolution_from_json(answer: object) -> ResolutionProof:
    """The proof of a whole ``/v1/resolve`` answer (``{"identifier", "found", "values", "proof"}``)."""
    obj = _object(answer, "resolution answer")
    identifier = _str(_field(obj, "identifier", "resolution answer"), "resolution answer identifier")
    return proof_from_json(identifier, _field(obj, "proof", "resolution answer"))


# --- log proofs -----------------------------------------------------------------------------------------


def consistency_json(old: int, new: int, proof: Iterable[bytes]) -> dict[str, Any]:
    return {"old": old, "new": new, "proof": [b64.encode(h) for h in proof]}


def consistency_from_json(body: object, old: int, new: int) -> list[bytes]:
    """An RFC 9162 consistency proof from ``old`` to ``new``; each hash canonical base64 of 32 bytes."""
    what = f"consistency proof {old}->{new}"
    obj = _object(body, what)
    if obj.get("old", old) != old or obj.get("new", new) != new:
        raise ProtocolError(what, f"answer is for {obj.get('old')!r}->{obj.get('new')!r}")
    hashes = _list(_field(obj, "proof", what), what)
    return [_hash(h, f"{what} hash {i}") for i, h in enumerate(hashes)]


def inclusion_json(index: int, size: int, leaf: bytes, proof: Iterable[bytes]) -> dict[str, Any]:
    return {"index": index, "size": size, "leaf": b64.encode(leaf), "proof": [b64.encode(h) for h in proof]}


def inclusion_from_json(body: object, index: int, size: int) -> tuple[bytes, list[bytes]]:
    """The logged entry at ``index`` (its exact bytes) and its RFC 9162 inclusion proof in tree ``size``."""
    what = f"inclusion proof {index}@{size}"
    obj = _object(body, what)
    if obj.get("index", index) != index or obj.get("size", size) != size:
        raise ProtocolError(what, f"answer is for {obj.get('index')!r}@{obj.get('size')!r}")
    leaf = _bytes(_field(obj, "leaf", what), f"{what} leaf")
    hashes = _list(_field(obj, "proof", what), what)
    return leaf, [_hash(h, f"{what} hash {i}") for i, h in enumerate(hashes)]


# --- anchors of child logs (D-078) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnchorInfo:
    """A parent's pointer to its newest anchor of a child log (``GET /v1/anchors/{origin}``): where to
    look, never a proof; :mod:`chain_lite.anchor` checks what it points at."""

    origin: str
    tree_size: int
    url: str | None
    index: int | None
    size: int | None
    cosigned_size: int | None
    evidence: tuple[tuple[int, bytes, bytes], ...]
    """(size, cosigned note, refused note): two roots the child showed the parent for one size."""


def _optional_int(obj: dict[str, Any], key: str, what: str) -> int | None:
    value = obj.get(key)
    return None if value is None else _int(value, f"{what} {key}")


def anchor_from_json(body: object, origin: str) -> AnchorInfo:
    what = f"anchor of {origin}"
    obj = _object(body, what)
    if obj.get("origin") != origin:
        raise ProtocolError(what, f"answer is for {obj.get('origin')!r}")
    url = obj.get("url")
    if url is not None:
        url = _str(url, f"{what} url")
    anchor = obj.get("anchor")
    index = size = None
    if anchor is not None:
        pointer = _object(anchor, f"{what} anchor")
        index = _int(_field(pointer, "index", what), f"{what} index")
        size = _int(_field(pointer, "size", what), f"{what} size")
    evidence = []
    for i, item in enumerate(_list(obj.get("evidence", []), f"{what} evidence")):
        ev = _object(item, f"{what} evidence {i}")
        evidence.append(
            (
                _int(_field(ev, "size", what), f"{what} evidence {i} size"),
                _str(_field(ev, "cosigned", what), f"{what} evidence {i}").encode(),
                _str(_field(ev, "refused", what), f"{what} evidence {i}").encode(),
            )
        )
    return AnchorInfo(
        origin,
        _int(_field(obj, "tree_size", what), f"{what} tree_size"),
        url,
        index,
        size,
        _optional_int(obj, "cosigned_size", what),
        tuple(evidence),
    )


# --- gateway blocks -------------------------------------------------------------------------------------


def block_batch(blocks: Sequence[tuple[bytes, Sequence[bytes] | None]]) -> dict[str, Any]:
    """The ``POST /v1/gateways/blocks`` body; replicate mode when the blocks carry their readings."""
    items = []
    for raw, body in blocks:
        item: dict[str, Any] = {"block": b64.encode(raw)}
        if body is not None:
            item["body"] = [b64.encode(e) for e in body]
        items.append(item)
    mode = "replicate" if blocks and blocks[0][1] is not None else "anchor"
    return {"mode": mode, "blocks": items}


def block_batch_from_json(payload: object) -> BlockBatch:
    """``{"mode": "anchor"|"replicate", "blocks": [{"block": b64, "body": [b64, ...]}]}``."""
    obj = _object(payload, "body")
    mode = obj.get("mode", "anchor")
    if mode not in ("anchor", "replicate"):
        raise ProtocolError("mode", "must be 'anchor' or 'replicate'")
    items = obj.get("blocks")
    if not isinstance(items, list) or not items:
        raise ProtocolError("blocks", "must be a non-empty list")
    out: BlockBatch = []
    for i, item in enumerate(items):
        entry = _object(item, f"blocks[{i}]")
        raw = _bytes(entry.get("block"), f"blocks[{i}].block")
        body = None
        if mode == "replicate":
            readings = entry.get("body")
            if not isinstance(readings, list):
                raise ProtocolError(
                    f"blocks[{i}].body", "must be a list of base64 envelopes in replicate mode"
                )
            body = [_bytes(r, f"blocks[{i}].body[{j}]") for j, r in enumerate(readings)]
        out.append((raw, body))
    return out


@dataclass(frozen=True, slots=True)
class AcceptedBlock:
    block_id: bytes
    height: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class BlocksAnswer:
    """The answer to a block batch: the blocks accepted (in order) and, when the root stopped at one,
    its HTTP status and reason (409: a different block at a known height, fork evidence)."""

    accepted: tuple[AcceptedBlock, ...]
    status: int
    message: str | None


def blocks_answer_json(accepted: Iterable[AcceptedBlock]) -> dict[str, Any]:
    """The answer body before any refusal; a refusal adds ``responseCode`` and ``message`` to it."""
    return {
        "accepted": [
            {"block_id": a.block_id.hex(), "height": a.height, "duplicate": a.duplicate} for a in accepted
        ],
        "responseCode": 1,
    }


def blocks_answer_from_json(body: object, status: int) -> BlocksAnswer:
    obj = _object(body, "block batch answer")
    accepted = []
    for i, item in enumerate(_list(obj.get("accepted", []), "accepted")):
        entry = _object(item, f"accepted[{i}]")
        try:
            block_id = bytes.fromhex(
                _str(_field(entry, "block_id", f"accepted[{i}]"), f"accepted[{i}].block_id")
            )
        except ValueError as exc:
            raise ProtocolError(f"accepted[{i}].block_id", "not hex") from exc
        height = _int(entry.get("height", 0), f"accepted[{i}].height")
        accepted.append(AcceptedBlock(block_id, height, entry.get("duplicate") is True))
    message = obj.get("message")
    return BlocksAnswer(tuple(accepted), status, None if message is None else str(message))


@dataclass(frozen=True, slots=True)
class BlockInfo:
    """``GET /v1/blocks/{id}``: where an accepted block sits in the log; ``receipt`` is None until it
    is sequenced. ``receipt_text`` is the receipt exactly as served (the gateway stores it)."""

    block_id: bytes
    gateway: str
    height: int
    log_index: int | None
    receipt: Receipt | None
    receipt_text: str | None


def block_info_json(
    block_id: bytes, gateway: str, height: int, log_index: int | None, receipt: Receipt | None
) -> dict[str, Any]:
    return {
        "block_id": block_id.hex(),
        "gateway": gateway,
        "height": height,
        "log_index": log_index,
        "receipt": None if receipt is None else receipt.to_bytes().decode(),
    }


def block_info_from_json(body: object, block_id: bytes) -> BlockInfo:
    what = f"block {block_id.hex()}"
    obj = _object(body, what)
    gateway = _str(_field(obj, "gateway", what), f"{what} gateway")
    height = _int(_field(obj, "height", what), f"{what} height")
    raw_index = obj.get("log_index")
    log_index = None if raw_index is None else _int(raw_index, f"{what} log_index")
    text = obj.get("receipt")
    receipt = None if text is None else parse_receipt(text, f"{what} receipt")
    return BlockInfo(block_id, gateway, height, log_index, receipt, None if text is None else str(text))


def gateway_head_from_json(body: object, gateway: str) -> tuple[int, bytes]:
    """``GET /v1/gateways/{id}/head``: the height and id of the gateway's latest accepted block."""
    what = f"head of {gateway}"
    obj = _object(body, what)
    height = _int(_field(obj, "height", what), f"{what} height")
    try:
        block_id = bytes.fromhex(_str(_field(obj, "block_id", what), f"{what} block_id"))
    except ValueError as exc:
        raise ProtocolError(f"{what} block_id", "not hex") from exc
    return height, block_id


# --- EPCIS: query pages and completeness proofs ----------------------------------------------------------

EPCIS_NAMESPACE = "https://edgeroot.example/ns/epcis#"
"""edgeroot's JSON-LD namespace in EPCIS documents (the ``edgeroot:`` extension fields)."""
EPCIS_SIGNATURE = "edgeroot:signedCapture"
EPCIS_PROOF = "edgeroot:proof"


@dataclass(frozen=True, slots=True)
class ShownEvent:
    """An event as a node's query answer shows it: the signed capture, its log index and inclusion
    proof (in the page's checkpoint). The event JSON is re-read from the signed capture when verified."""

    signed_capture: bytes
    index: int
    inclusion: list[bytes]


@dataclass(frozen=True, slots=True)
class EventsPage:
    checkpoint: SignedCheckpoint
    events: list[ShownEvent]
    next_token: str | None


def events_page_from_json(body: object, next_token: str | None) -> EventsPage:
    """An ``EPCISQueryDocument`` answer of ``GET /epcis/events``."""
    doc = _object(body, "EPCIS query document")
    if doc.get("type") != "EPCISQueryDocument":
        raise ProtocolError("EPCIS query document", "type is not EPCISQueryDocument")
    results = _object(
        _field(_object(_field(doc, "epcisBody", "query document"), "epcisBody"), "queryResults", "epcisBody"),
        "queryResults",
    )
    results_body = _object(_field(results, "resultsBody", "queryResults"), "resultsBody")
    events = []
    for i, item in enumerate(_list(_field(results_body, "eventList", "resultsBody"), "eventList")):
        what = f"eventList[{i}]"
        event = _object(item, what)
        proof = _object(_field(event, EPCIS_PROOF, what), f"{what}.{EPCIS_PROOF}")
        inclusion = [_hash(h, f"{what} inclusion") for h in _list(_field(proof, "inclusion", what), what)]
        events.append(
            ShownEvent(
                _bytes(_field(event, EPCIS_SIGNATURE, what), f"{what}.{EPCIS_SIGNATURE}"),
                _int(_field(proof, "logIndex", what), f"{what} logIndex"),
                inclusion,
            )
        )
    note = _str(_field(doc, "edgeroot:checkpoint", "query document"), "edgeroot:checkpoint")
    return EventsPage(parse_checkpoint(note.encode(), "edgeroot:checkpoint"), events, next_token)


def index_proofs_from_json(body: object) -> list[IndexProof]:
    """The answer of ``GET /v1/epcis/index?id=ID&id=...``: one proof per identifier."""
    answer = _object(body, "EPCIS index answer")
    head = _bytes(_field(answer, "map_head", "index answer"), "map_head")
    receipt = parse_receipt(_field(answer, "receipt", "index answer"), "receipt")
    out = []
    for i, item in enumerate(_list(_field(answer, "proofs", "index answer"), "proofs")):
        what = f"proofs[{i}]"
        proof = _object(item, what)
        entry = _field(proof, "entry", what)
        indices = _list(_field(proof, "indices", what), f"{what}.indices")
        out.append(
            IndexProof(
                _str(_field(proof, "identifier", what), f"{what}.identifier"),
                tuple(_int(v, f"{what}.indices") for v in indices),
                None if entry is None else _bytes(entry, f"{what}.entry"),
                _bytes(_field(proof, "map_proof", what), f"{what}.map_proof"),
                head,
                receipt,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class CaptureAnswer:
    capture_id: str
    location: str
    events: list[tuple[str, str, bool]]
    """(hash ID, signer, duplicate) of each event, in document order."""


def capture_answer_from_json(body: object, location: str | None) -> CaptureAnswer:
    answer = _object(body, "capture answer")
    events = []
    for i, item in enumerate(_list(_field(answer, "events", "capture answer"), "events")):
        e = _object(item, f"events[{i}]")
        duplicate = _field(e, "duplicate", f"events[{i}]")
        if not isinstance(duplicate, bool):
            raise ProtocolError(f"events[{i}].duplicate", "expected true or false")
        events.append(
            (
                _str(_field(e, "hashID", f"events[{i}]"), "hashID"),
                _str(_field(e, "signer", f"events[{i}]"), "signer"),
                duplicate,
            )
        )
    if location is None:
        raise ProtocolError("capture answer", "no Location header")
    return CaptureAnswer(_str(_field(answer, "captureID", "capture answer"), "captureID"), location, events)


# --- GET /v1/blocks?gateway=&from=&to= (D-074) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowBlock:
    """A gateway block covering a time window, as the root holds it."""

    block_id: bytes
    height: int
    time_ms: int
    header: bytes
    """The gateway-signed header, exactly as logged (signature not checked here)."""
    log_index: int | None
    receipt: Receipt | None
    receipt_text: str | None
    at_root: bool
    """Readings at the root (replicate mode) or only at the gateway (anchor mode)."""


def window_blocks_json(
    gateway: str,
    from_ms: int,
    to_ms: int,
    blocks: Iterable[tuple[bytes, int, int, bytes, int | None, Receipt | None, bool]],
    next_after: int | None,
) -> dict[str, Any]:
    """Blocks as (block id, height, time, signed header, log index, receipt, replicated)."""
    return {
        "gateway": gateway,
        "from_ms": from_ms,
        "to_ms": to_ms,
        "blocks": [
            {
                "block_id": bid.hex(),
                "height": height,
                "time_ms": time_ms,
                "header": b64.encode(raw),
                "log_index": idx,
                "receipt": None if receipt is None else receipt.to_bytes().decode(),
                "readings": "at-root" if replicated else "at-gateway",
            }
            for bid, height, time_ms, raw, idx, receipt, replicated in blocks
        ],
        "next": next_after,
    }


def window_blocks_from_json(body: object) -> tuple[list[WindowBlock], int | None]:
    """The blocks of ``GET /v1/blocks`` and the height to continue after (None: no more)."""
    obj = _object(body, "window blocks")
    out = []
    for i, item in enumerate(_list(_field(obj, "blocks", "window blocks"), "window blocks")):
        what = f"window block {i}"
        b = _object(item, what)
        try:
            block_id = bytes.fromhex(_str(_field(b, "block_id", what), f"{what} block_id"))
        except ValueError as exc:
            raise ProtocolError(f"{what} block_id", "not hex") from exc
        raw_index, text = b.get("log_index"), b.get("receipt")
        readings = _field(b, "readings", what)
        if readings not in ("at-root", "at-gateway"):
            raise ProtocolError(f"{what} readings", "is neither at-root nor at-gateway")
        out.append(
            WindowBlock(
                block_id,
                _int(_field(b, "height", what), f"{what} height"),
                _int(_field(b, "time_ms", what), f"{what} time_ms"),
                _bytes(_field(b, "header", what), f"{what} header"),
                None if raw_index is None else _int(raw_index, f"{what} log_index"),
                None if text is None else parse_receipt(text, f"{what} receipt"),
                None if text is None else str(text),
                readings == "at-root",
            )
        )
    raw_next = obj.get("next")
    return out, None if raw_next is None else _int(raw_next, "window blocks next")
