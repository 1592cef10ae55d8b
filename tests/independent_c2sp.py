"""A second, independent implementation of C2SP signed notes, checkpoints, cosignatures, policies and
tlog-proof receipts, written from the spec text with hashlib and cryptography only.

It imports nothing from chain_lite, so a misreading of the spec in one is caught by the other.
"""

from __future__ import annotations

import base64
import hashlib
import struct

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def _pub(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_hash(name: str, alg: int, pub: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + pub).digest()[:4]


def vkey(name: str, alg: int, key: Ed25519PrivateKey) -> str:
    pub = _pub(key)
    return f"{name}+{key_hash(name, alg, pub).hex()}+{base64.b64encode(bytes([alg]) + pub).decode()}"


def sig_line(name: str, alg: int, key: Ed25519PrivateKey, sig: bytes) -> str:
    return "\u2014 " + name + " " + base64.b64encode(key_hash(name, alg, _pub(key)) + sig).decode() + "\n"


def checkpoint_text(origin: str, size: int, root: bytes) -> str:
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def log_signature(origin: str, key: Ed25519PrivateKey, text: str) -> str:
    return sig_line(origin, 0x01, key, key.sign(text.encode()))


def cosignature(name: str, key: Ed25519PrivateKey, text: str, timestamp: int) -> str:
    message = b"cosignature/v1\ntime " + str(timestamp).encode() + b"\n" + text.encode()
    return sig_line(name, 0x04, key, struct.pack(">Q", timestamp) + key.sign(message))


def rfc6962_tree(leaves: list[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """Root and every leaf's audit path, by the RFC 6962 §2.1 recursion."""

    def mth(items: list[bytes]) -> bytes:
        if len(items) == 1:
            return hashlib.sha256(b"\x00" + items[0]).digest()
        k = 1
        while k * 2 < len(items):
            k *= 2
        return hashlib.sha256(b"\x01" + mth(items[:k]) + mth(items[k:])).digest()

    def path(m: int, items: list[bytes]) -> list[bytes]:
        if len(items) == 1:
            return []
        k = 1
        while k * 2 < len(items):
            k *= 2
        if m < k:
            return [*path(m, items[:k]), mth(items[k:])]
        return [*path(m - k, items[k:]), mth(items[:k])]

    return mth(leaves), [path(i, leaves) for i in range(len(leaves))]


def receipt(index: int, proof: list[bytes], signed_checkpoint: str) -> bytes:
    lines = ["c2sp.org/tlog-proof@v1", f"index {index}"] + [base64.b64encode(h).decode() for h in proof]
    return ("\n".join(lines) + "\n\n" + signed_checkpoint).encode()
