"""Every parser gets random and mutated bytes: only chain_lite's own typed errors may come out.

Besides bytes: key encodings (PEM and DER, every curve and algorithm a key file might hold) and JSON
documents whose top-level shape and fields are replaced by arbitrary JSON.
"""

from __future__ import annotations

import base64
import contextlib
import copy
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa, x25519
from hypothesis import given
from hypothesis import strategies as st

from chain_lite import b64, keys
from chain_lite.block import BlockHeader, build_header, parse_block, sign_block
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.cose import CoseSigner
from chain_lite.envelope import N, V, decode_envelope, encode_envelope
from chain_lite.errors import ChainError, KeyFormatError
from chain_lite.keys import NoteKey
from chain_lite.light_client import LightClient
from chain_lite.note import VerifierKey, parse_note
from chain_lite.policy import Policy
from chain_lite.receipt import Receipt
from chain_lite.registry import Record, Value
from rootclient.codecs import block_batch_from_json, resolution_from_json
from rootclient.errors import ProtocolError

from .helpers import LogBuilder

_log = LogBuilder()
_log.add(9)
_device = CoseSigner("88.1/dev", keys.generate_p256())
_envelope = encode_envelope(_device, [{N: "t", V: 1.5}], 1)
_block = sign_block(
    build_header("88.1/gw", 0, bytes(32), [decode_envelope(_envelope)], 5),
    CoseSigner("88.1/gw", keys.generate_p256()),
)
SEEDS: dict[str, tuple[bytes, Callable[[bytes], object]]] = {
    "note": (_log.checkpoint(), parse_note),
    "checkpoint": (_log.checkpoint(), SignedCheckpoint.parse),
    "policy": (_log.policy().to_text().encode(), Policy.parse),
    "receipt": (
        Receipt(3, tuple(_log.tree.inclusion_proof(3)), SignedCheckpoint.parse(_log.checkpoint())).to_bytes(),
        Receipt.parse,
    ),
    "envelope": (_envelope, decode_envelope),
    "block": (_block.raw, parse_block),
    "block header": (_block.header.encode(), BlockHeader.decode),
    "vkey": (_log.log_key.vkey().encode(), lambda b: VerifierKey.parse(b.decode("utf-8", "replace"))),
    "skey": (_log.log_key.skey().encode(), lambda b: NoteKey.parse_skey(b.decode("utf-8", "replace"))),
    "public key PEM": (keys.public_pem(keys.generate_p256().public_key()), keys.load_public_pem),
    "public key DER": (keys.public_der(keys.generate_p256().public_key()), keys.load_public_der),
    "Ed25519 public key DER": (keys.public_der(keys.generate_ed25519().public_key()), keys.load_public_der),
    "private key PEM": (keys.private_pem(keys.generate_p256()), keys.load_private_pem),
}


def _only_chain_errors(parse: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(ChainError):
        parse(data)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_inputs_parse(name: str) -> None:
    """The unmutated seeds are valid, so the mutations below start from real structure."""
    data, parse = SEEDS[name]
    parse(data)


@pytest.mark.parametrize("name", sorted(SEEDS))
@given(data=st.binary(max_size=600))
def test_random_bytes_raise_only_chain_errors(name: str, data: bytes) -> None:
    """Arbitrary bytes: a value or a ChainError."""
    _only_chain_errors(SEEDS[name][1], data)


@pytest.mark.parametrize("name", sorted(SEEDS))
@given(st.data())
def test_mutated_inputs_raise_only_chain_errors(name: str, data: st.DataObject) -> None:
    """Valid inputs with bytes flipped, cut, duplicated or inserted: a value or a ChainError."""
    seed, parse = SEEDS[name]
    buf = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        pos = data.draw(st.integers(0, max(0, len(buf) - 1)))
        if op == "flip" and buf:
            buf[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del buf[pos : pos + data.draw(st.integers(1, 16))]
        elif op == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            buf[pos:pos] = buf[pos : pos + data.draw(st.integers(1, 32))]
    _only_chain_errors(parse, bytes(buf))


# --- key encodings ------------------------------------------------------------------------------------------


def _der(tag: int, body: bytes) -> bytes:
    size = len(body)
    length = bytes([size]) if size < 128 else bytes([0x80 | 2]) + size.to_bytes(2, "big")
    return bytes([tag]) + length + body


def _oid(dotted: str) -> bytes:
    first, second, *rest = (int(p) for p in dotted.split("."))
    out = bytearray([40 * first + second])
    for arc in rest:
        chunk = [arc & 0x7F]
        high = arc >> 7
        while high:
            chunk.append(0x80 | (high & 0x7F))
            high >>= 7
        out += bytes(reversed(chunk))
    return _der(0x06, bytes(out))


_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
_SECP112R1 = "1.3.132.0.6"  # a named curve OpenSSL does not implement: cryptography says UnsupportedAlgorithm


def _ec_spki(curve: str, point: bytes) -> bytes:
    algorithm = _der(0x30, _oid(_EC_PUBLIC_KEY) + _oid(curve))
    return _der(0x30, algorithm + _der(0x03, b"\x00" + point))


def _ec_pkcs8_pem(curve: str, scalar: bytes) -> bytes:
    algorithm = _der(0x30, _oid(_EC_PUBLIC_KEY) + _oid(curve))
    inner = _der(0x30, _der(0x02, b"\x01") + _der(0x04, scalar))
    der = _der(0x30, _der(0x02, b"\x00") + algorithm + _der(0x04, inner))
    return b"-----BEGIN PRIVATE KEY-----\n" + base64.encodebytes(der) + b"-----END PRIVATE KEY-----\n"


def _public_ders() -> dict[str, bytes]:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    out = {
        f"EC {curve.name}": ec.generate_private_key(curve).public_key().public_bytes(der, spki)
        for curve in (ec.SECP256K1(), ec.SECP384R1(), ec.BrainpoolP256R1(), ec.SECP521R1())
    }
    out["EC secp112r1"] = _ec_spki(_SECP112R1, b"\x04" + bytes(range(1, 29)))
    out["RSA"] = rsa.generate_private_key(65537, 1024).public_key().public_bytes(der, spki)
    out["Ed448"] = ed448.Ed448PrivateKey.generate().public_key().public_bytes(der, spki)
    out["X25519"] = x25519.X25519PrivateKey.generate().public_key().public_bytes(der, spki)
    return out


_UNSUPPORTED_PUBLIC = _public_ders()


@pytest.mark.parametrize("kind", sorted(_UNSUPPORTED_PUBLIC))
def test_unsupported_public_keys_are_key_format_errors(kind: str) -> None:
    """Any key but P-256 or Ed25519 (DER, PEM, HS_PUBKEY) is a KeyFormatError, never UnsupportedAlgorithm."""
    der = _UNSUPPORTED_PUBLIC[kind]
    pem = b"-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(der) + b"-----END PUBLIC KEY-----\n"
    with pytest.raises(KeyFormatError):
        keys.load_public_der(der)
    with pytest.raises(KeyFormatError):
        keys.load_public_pem(pem)
    record = Record("88.1/dev", (Value(1, "HS_PUBKEY", "base64", b64.encode(der)),))
    with pytest.raises(KeyFormatError):
        record.signing_key()


def test_private_key_on_an_unknown_curve_is_a_key_format_error() -> None:
    """A PKCS#8 key on a curve OpenSSL does not implement is a KeyFormatError, not UnsupportedAlgorithm."""
    with pytest.raises(KeyFormatError, match="unsupported"):
        keys.load_private_pem(_ec_pkcs8_pem(_SECP112R1, bytes(range(1, 15))))


@pytest.mark.parametrize("kind", sorted(_UNSUPPORTED_PUBLIC))
@given(st.data())
def test_mutated_key_encodings_raise_only_chain_errors(kind: str, data: st.DataObject) -> None:
    """Keys of every algorithm with their DER mutated (OIDs, lengths, points): a key or a ChainError."""
    buf = bytearray(_UNSUPPORTED_PUBLIC[kind])
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        buf[pos] ^= data.draw(st.integers(1, 255))
    _only_chain_errors(keys.load_public_der, bytes(buf))


# --- JSON documents: every top-level shape and every field replaced ----------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

_answer = {
    "identifier": "88.1/dev",
    "found": False,
    "values": [],
    "proof": {
        "epoch": 10,
        "record": None,
        "map_proof": b64.encode(b"\x83"),
        "map_head": b64.encode(b"\x03"),
        "receipt": Receipt(3, tuple(_log.tree.inclusion_proof(3)), SignedCheckpoint.parse(_log.checkpoint()))
        .to_bytes()
        .decode(),
    },
}
_light = LightClient(_log.policy(), _log.log_key.name, _log.checkpoint())

# name: (a valid document, its parser, the error tree it may raise)
JSON_SEEDS: dict[str, tuple[Any, Callable[[Any], object], type[Exception]]] = {
    "light client state": (
        _light.state(),
        lambda doc: LightClient.from_state(_log.policy(), doc),
        ChainError,
    ),
    "resolution answer": (_answer, resolution_from_json, ProtocolError),
    "block batch": (
        {"mode": "replicate", "blocks": [{"block": b64.encode(_block.raw), "body": [b64.encode(_envelope)]}]},
        block_batch_from_json,
        ProtocolError,
    ),
}


@pytest.mark.parametrize("name", sorted(JSON_SEEDS))
def test_json_seeds_parse(name: str) -> None:
    """The unmutated JSON seeds are valid, so the mutations below start from real structure."""
    doc, parse, _ = JSON_SEEDS[name]
    parse(copy.deepcopy(doc))


@pytest.mark.parametrize("name", sorted(JSON_SEEDS))
@given(doc=_json)
def test_any_top_level_json_shape_raises_only_typed_errors(name: str, doc: Any) -> None:
    """``[]``, ``null``, numbers, strings, objects of anything: a value or the parser's typed error."""
    _, parse, errors = JSON_SEEDS[name]
    with contextlib.suppress(errors):
        parse(doc)


def _paths(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*path, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += _paths(value, (*path, i))
    return out


@pytest.mark.parametrize("name", sorted(JSON_SEEDS))
@given(st.data())
def test_mutated_json_fields_raise_only_typed_errors(name: str, data: st.DataObject) -> None:
    """Valid documents with fields replaced by any JSON value or removed: a value or a typed error."""
    seed, parse, errors = JSON_SEEDS[name]
    doc = copy.deepcopy(seed)
    for _ in range(data.draw(st.integers(1, 3))):
        inner = [p for p in _paths(doc) if p]
        if not inner:
            break
        path = data.draw(st.sampled_from(inner))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and data.draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(_json)
    with contextlib.suppress(errors):
        parse(doc)
