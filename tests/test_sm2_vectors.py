"""The committed SM2 messages (tests/vectors/sm2/edgeroot_sm2_messages.json) pin the wire formats of
docs/formats.md §20: they verify through chain_lite, and their signatures, key IDs and framing are checked
again here with gmalg, hashlib and cbor2, which share no code with chain_lite."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import cbor2
import gmalg
import pytest

from chain_lite.cose import ALG_SM2
from chain_lite.envelope import open_envelope
from chain_lite.errors import ChainError
from chain_lite.policy import Policy
from chain_lite.sm2 import DEFAULT_ID, SM2PublicKey

VECTORS = json.loads((Path(__file__).parent / "vectors" / "sm2" / "edgeroot_sm2_messages.json").read_text())
LOG_TYPE = b"\xffedgeroot/sm2/v1"
WITNESS_TYPE = b"\xffedgeroot/sm2-cosignature/v1"


def _vkey_parts(vkey: str, type_bytes: bytes) -> tuple[str, bytes, bytes]:
    """Name, key ID and point of an SM2 vkey, read with the standard library only."""
    name, hexid, material = vkey.split("+", 2)
    raw = base64.b64decode(material, validate=True)
    assert raw.startswith(type_bytes) and len(raw) == len(type_bytes) + 65
    return name, bytes.fromhex(hexid), raw[len(type_bytes) :]


def test_the_committed_envelope_opens_and_its_signature_is_sm2_over_the_sig_structure() -> None:
    """alg -70100 in the protected header, counter and kid as committed; gmalg verifies the signature over
    the Sig_structure that cbor2 builds from the message's own items."""
    raw = bytes.fromhex(VECTORS["envelope"])
    point = bytes.fromhex(VECTORS["device_point"])
    env = open_envelope(raw, {VECTORS["envelope_kid"]: SM2PublicKey.from_point(point)}.get)
    want = (ALG_SM2, VECTORS["envelope_counter"], VECTORS["envelope_kid"])
    assert (env.sign1.alg, env.counter, env.signer) == want
    protected, _, payload, signature = cbor2.loads(raw).value
    assert cbor2.loads(protected)[1] == -70100
    tbs = cbor2.dumps(["Signature1", protected, b"", payload])
    assert gmalg.SM2(uid=DEFAULT_ID, pk=point).verify(tbs, signature[:32], signature[32:])


def test_the_committed_checkpoint_verifies_and_each_line_is_checked_independently() -> None:
    """The policy verifies the SM2-signed, SM2-cosigned checkpoint; the key IDs are SHA-256 over name,
    newline, 0xff + identifier and point; gmalg verifies the log line over the text and the cosignature
    line over the cosignature/v1 message."""
    verified = Policy.parse(VECTORS["policy"].encode()).verify_checkpoint(VECTORS["checkpoint"].encode())
    assert verified.checkpoint.size == 12 and verified.cosigners == ("w0.vectors.edgeroot.example",)
    text, _, block = VECTORS["checkpoint"].rpartition("\n\n")
    text += "\n"
    lines = {line.split(" ")[1]: base64.b64decode(line.split(" ")[2]) for line in block.splitlines()}
    for vkey, type_bytes in ((VECTORS["log_vkey"], LOG_TYPE), (VECTORS["witness_vkey"], WITNESS_TYPE)):
        name, kid, point = _vkey_parts(vkey, type_bytes)
        assert hashlib.sha256(name.encode() + b"\n" + type_bytes + point).digest()[:4] == kid
        sig = lines[name]
        assert sig[:4] == kid
        oracle = gmalg.SM2(uid=DEFAULT_ID, pk=point)
        if type_bytes == LOG_TYPE:
            assert oracle.verify(text.encode(), sig[4:36], sig[36:])
        else:
            timestamp = int.from_bytes(sig[4:12], "big")
            message = b"cosignature/v1\ntime %d\n" % timestamp + text.encode()
            assert timestamp == 1_760_000_000 and oracle.verify(message, sig[12:44], sig[44:])


def test_every_bit_flip_of_the_committed_checkpoint_is_rejected() -> None:
    """One changed bit anywhere in the signed checkpoint (text or either SM2 line) and it is refused."""
    policy = Policy.parse(VECTORS["policy"].encode())
    data = VECTORS["checkpoint"].encode()
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 0x80 >> (bit % 8)
        with pytest.raises(ChainError):
            policy.verify_checkpoint(bytes(flipped))
