"""pycose as the independent COSE implementation the tests check chain_lite.cose against (D-057)."""

from __future__ import annotations

import cbor2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pycose.keys import EC2Key, OKPKey
from pycose.keys.curves import P256, Ed25519
from pycose.messages import Sign1Message

from chain_lite import keys


def pycose_key(private: keys.PrivateKey, *, public_only: bool = False) -> EC2Key | OKPKey:
    """The same key as a pycose COSE_Key (RFC 9053 §7)."""
    if isinstance(private, ec.EllipticCurvePrivateKey):
        numbers = private.private_numbers()
        x = numbers.public_numbers.x.to_bytes(32, "big")
        y = numbers.public_numbers.y.to_bytes(32, "big")
        if public_only:
            return EC2Key(crv=P256, x=x, y=y)
        return EC2Key(crv=P256, x=x, y=y, d=numbers.private_value.to_bytes(32, "big"))
    raw = serialization.Encoding.Raw
    x = private.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
    if public_only:
        return OKPKey(crv=Ed25519, x=x)
    d = private.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return OKPKey(crv=Ed25519, x=x, d=d)


def pycose_decode(raw: bytes) -> Sign1Message:
    """pycose's decoder for a tagged COSE_Sign1.

    pycose 1.1 predates cbor2 6, which decodes the content of a tag as a tuple (and its maps as
    frozendict), so ``CoseMessage.decode`` refuses it; pycose is handed the four items as the list it
    expects, and still decodes the protected header, builds the Sig_structure and verifies on its own.
    """
    tag = cbor2.loads(raw)
    assert tag.tag == 18
    protected, unprotected, payload, signature = tag.value
    return Sign1Message.from_cose_obj([protected, dict(unprotected), payload, signature], True)
