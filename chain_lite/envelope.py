"""Reading envelopes: a device-signed COSE_Sign1 over a SenML-CBOR pack (RFC 9052, RFC 8428).

Protected header (all signed)::

    1 (alg)            -7 ES256 | -8 EdDSA
    3 (content type)   112 (application/senml+cbor)
    4 (kid)            signer identifier, UTF-8, canonical form (88.123.99/PUMP-0042)
    -70001 (counter)   the signer's monotonic reading counter, unsigned, < 2**63
    -70002 (subject)   only on bridge-attested readings: the identifier of the measured device

Labels below -65536 are private use (RFC 9052 §3.1). The payload is a SenML pack with the integer
labels of RFC 8428 §6; only the labels listed in :data:`SENML_LABELS` are accepted.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from chain_lite import cbor
from chain_lite.cose import (
    HDR_CONTENT_TYPE,
    HDR_COUNTER,
    HDR_KID,
    HDR_SUBJECT,
    CoseSigner,
    KeyLookup,
    Sign1,
    parse_sign1,
    verify_sign1,
)
from chain_lite.errors import FormatError, IdentifierError, UnknownSigner
from chain_lite.identifier import normalize
from chain_lite.keys import PublicKey

CONTENT_FORMAT_SENML_CBOR = 112
MAX_ENVELOPE_SIZE = 8 * 1024
MAX_RECORDS = 128
MAX_COUNTER = (1 << 63) - 1

# RFC 8428 §6 (CBOR labels) with the type each value must have.
BVER, BN, BT, BU, BV, BS, N, U, V, VS, VB, S, T, UT, VD = -1, -2, -3, -4, -5, -6, 0, 1, 2, 3, 4, 5, 6, 7, 8
_NUMBER = (int, float)
SENML_LABELS: dict[int, tuple[type, ...]] = {
    BVER: (int,), BN: (str,), BT: _NUMBER, BU: (str,), BV: _NUMBER, BS: _NUMBER,
    N: (str,), U: (str,), V: _NUMBER, VS: (str,), VB: (bool,), S: _NUMBER, T: _NUMBER, UT: _NUMBER,
    VD: (bytes,),
}  # fmt: skip
_VALUE_LABELS = (V, VS, VB, VD)

Record = Mapping[int, Any]


class Envelope(NamedTuple):
    """A decoded envelope; its signature is checked by :func:`open_envelope`, not by decoding. A named
    tuple, as :class:`chain_lite.cose.Sign1` is, for the same reason."""

    raw: bytes
    signer: str
    subject: str
    counter: int
    records: tuple[Record, ...]
    sign1: Sign1

    @property
    def bridge_attested(self) -> bool:
        """True when a bridge signed on behalf of ``subject`` (the device did not sign itself)."""
        return self.subject != self.signer


# The same rules as exact-type sets: decoded CBOR holds only exact int, float, str, bytes and bool values.
# bool is not an int here: VB is the only label that takes it.
_EXACT_TYPES: dict[int, frozenset[type]] = {label: frozenset(types) for label, types in SENML_LABELS.items()}
_VALUES = frozenset(_VALUE_LABELS)
_VALUES_OR_SUMS = frozenset((*_VALUE_LABELS, S, BV, BS))
_MAX_SHAPES = 1024
_shapes: dict[tuple[object, ...], tuple[int, ...]] = {}
"""Record shapes judged good, each with its labels that hold floats. A bounded memo: emptied when full."""


def _check_record(record: object) -> Record:
    """``record`` when it is a SenML record docs/formats.md §8 accepts, else FormatError.

    Every rule but finiteness depends only on the record's shape: its labels, their types and their
    values' types, in order. A gateway sees a handful of shapes, so each is judged once (issue 13: the
    label-by-label check was 15 % of the decoding instructions) and a record of a known shape only has
    its floats checked. The labels' own types are part of the shape because ``2.0 == 2``."""
    if type(record) is not dict or not record:
        raise FormatError("envelope", "SenML record is not a non-empty map")
    shape = (*record, *map(type, record), *map(type, record.values()))
    floats = _shapes.get(shape)
    if floats is None:
        floats = _judge_shape(record)
        if len(_shapes) >= _MAX_SHAPES:
            _shapes.clear()
        _shapes[shape] = floats
    for label in floats:
        if not math.isfinite(record[label]):
            raise FormatError("envelope", f"SenML label {label} is not a finite number")
    return record


def _judge_shape(record: dict[Any, Any]) -> tuple[int, ...]:
    """The labels of ``record`` holding floats, when its labels and value types are allowed; else
    FormatError naming the first rule it breaks. Values are not looked at beyond their types."""
    floats = []
    for label, value in record.items():
        allowed = _EXACT_TYPES.get(label) if type(label) is int else None
        if allowed is None:
            raise FormatError("envelope", f"unknown SenML label {label!r}")
        kind = type(value)
        if kind not in allowed:
            raise FormatError("envelope", f"SenML label {label} has a value of the wrong type")
        if kind is float:
            floats.append(label)
    if len(_VALUES.intersection(record)) > 1:
        raise FormatError("envelope", "SenML record has more than one value")
    if _VALUES_OR_SUMS.isdisjoint(record):
        raise FormatError("envelope", "SenML record has no value or sum")
    return tuple(floats)


@functools.lru_cache(maxsize=4096)
def _identifier(value: str | bytes, what: str) -> str:
    """``value`` (text, or a kid's UTF-8 bytes) as text when it is an identifier in canonical form, else
    FormatError. A gateway sees the same few thousand signers over and over and the answer is a pure
    function of the value, so it is computed once per identifier rather than once per reading (issue 13).
    Invalid identifiers raise and are not cached; the bound keeps a stream of distinct ones from growing
    memory."""
    text = value.decode() if isinstance(value, bytes) else value
    try:
        canonical = normalize(text)
    except IdentifierError as exc:
        raise FormatError("envelope", f"{what}: {exc.reason}") from exc
    if canonical != text:
        raise FormatError("envelope", f"{what} {text!r} is not in canonical form {canonical!r}")
    return text


def decode_envelope(data: bytes) -> Envelope:
    """Parse an envelope and check its structure; does *not* check the signature."""
    decoder = cbor.ItemDecoder("envelope", unique_keys=True)  # the message, its header, then its pack
    msg = parse_sign1(data, "envelope", max_size=MAX_ENVELOPE_SIZE, decoder=decoder)
    header = msg.protected
    content_type = header.get(HDR_CONTENT_TYPE)
    if type(content_type) is not int or content_type != CONTENT_FORMAT_SENML_CBOR:
        raise FormatError("envelope", "content type is not SenML-CBOR (112)")
    counter = header.get(HDR_COUNTER)
    if type(counter) is not int or not 0 <= counter <= MAX_COUNTER:
        raise FormatError("envelope", "counter missing or not an unsigned 63-bit integer")
    signer = _identifier(header[HDR_KID], "kid")  # bytes, valid UTF-8: parse_sign1 checked
    subject = signer
    if HDR_SUBJECT in header:
        if not isinstance(header[HDR_SUBJECT], str):
            raise FormatError("envelope", "subject is not text")
        subject = _identifier(header[HDR_SUBJECT], "subject")
        if subject == signer:
            raise FormatError("envelope", "a subject header must name a device other than the signer")
    # A record with a repeated label is malformed (RFC 8949 §5.6): {v: 1, v: 2} is 2 to cbor2 and may be
    # 1 to the next SenML reader of the same signed bytes.
    pack = decoder.decode(msg.payload)
    if not isinstance(pack, list) or not 1 <= len(pack) <= MAX_RECORDS:
        raise FormatError("envelope", f"SenML pack must be an array of 1 to {MAX_RECORDS} records")
    records = tuple(_check_record(r) for r in pack)
    return Envelope(data, signer, subject, counter, records, msg)


def decode_with_key(data: bytes, lookup: KeyLookup) -> tuple[Envelope, PublicKey]:
    """Decode an envelope and find its signer's key from ``lookup`` (:class:`UnknownSigner` when there is
    none); the signature is not checked yet. Judging a batch, decode every envelope first and then verify
    every signature (``verify_sign1(env.sign1, key)``): decisions D-147, D-153."""
    env = decode_envelope(data)
    key = lookup(env.signer)  # the kid as text, decoded once already
    if key is None:
        raise UnknownSigner(env.signer)
    return env, key


def open_envelope(data: bytes, lookup: KeyLookup) -> Envelope:
    """Decode and verify an envelope against the signer's key from ``lookup``."""
    env, key = decode_with_key(data, lookup)
    verify_sign1(env.sign1, key)
    return env


def encode_envelope(
    signer: CoseSigner, records: Sequence[Record], counter: int, *, subject: str | None = None
) -> bytes:
    """Sign a SenML pack as ``signer``; pass ``subject`` when a bridge attests for another device."""
    if not 0 <= counter <= MAX_COUNTER:
        raise FormatError("envelope", "counter must be an unsigned 63-bit integer")
    protected: dict[int, Any] = {HDR_CONTENT_TYPE: CONTENT_FORMAT_SENML_CBOR, HDR_COUNTER: counter}
    if subject is not None and subject != signer.kid:
        protected[HDR_SUBJECT] = subject
    raw = signer.sign(cbor.encode([dict(r) for r in records]), protected)
    decode_envelope(raw)  # refuse to emit what a verifier would refuse
    return raw


def resolve(records: Sequence[Record]) -> list[dict[str, Any]]:
    """Resolved SenML records (RFC 8428 §4.6): base name, time and unit applied; ``name``, ``time``,
    ``unit`` and ``value`` keys, times relative to 0 left as given."""
    base_name, base_time, base_unit, base_value = "", 0.0, None, None
    out = []
    for r in records:
        base_name = r.get(BN, base_name)
        base_time = r.get(BT, base_time)
        base_unit = r.get(BU, base_unit)
        base_value = r.get(BV, base_value)
        value = next((r[label] for label in _VALUE_LABELS if label in r), None)
        if value is None and base_value is not None:
            value = base_value
        elif isinstance(value, int | float) and not isinstance(value, bool) and base_value is not None:
            value = base_value + value
        out.append(
            {
                "name": base_name + r.get(N, ""),
                "time": base_time + r.get(T, 0),
                "unit": r.get(U, base_unit),
                "value": value,
            }
        )
    return out
