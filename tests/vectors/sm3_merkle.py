"""Writes tests/vectors/sm3_merkle.json: RFC 6962 trees with SM3 for the SM3 log profile (D-064).

Computed by the naive RFC 6962 reference (tests/rfc6962_reference.py) over gmssl's pure-Python SM3, so
the file shares no code with chain_lite: roots for every size 0..N, every inclusion proof and every
consistency proof of trees up to N leaves, the leaves being the ASCII strings ``leaf-0``, ``leaf-1``, …
Run with `make vectors` and commit the output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gmssl import func, sm3

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.rfc6962_reference import make_reference

OUT = Path(__file__).resolve().parent / "sm3_merkle.json"
N = 10


def gmssl_sm3(data: bytes) -> bytes:
    return bytes.fromhex(sm3.sm3_hash(func.bytes_to_list(data)))


def main() -> None:
    leaves = tuple(f"leaf-{i}".encode() for i in range(N))
    mth, path, proof = make_reference(leaves, gmssl_sm3)
    content = {
        "about": "RFC 6962 Merkle trees with SM3 (GB/T 32905) for hash, leaf prefix 0x00, node prefix 0x01",
        "leaves_ascii": [leaf.decode() for leaf in leaves],
        "roots_hex": [mth(0, n).hex() for n in range(N + 1)],
        "inclusion": [
            {
                "index": m,
                "size": n,
                "leaf_hash_hex": mth(m, m + 1).hex(),
                "proof_hex": [h.hex() for h in path(m, 0, n)],
            }
            for n in range(1, N + 1)
            for m in range(n)
        ],
        "consistency": [
            {"size1": m, "size2": n, "proof_hex": [h.hex() for h in proof(m, n)]}
            for n in range(2, N + 1)
            for m in range(1, n)
        ],
    }
    OUT.write_text(json.dumps(content, indent=1) + "\n")
    print(f"wrote {OUT}: {len(content['inclusion'])} inclusion, {len(content['consistency'])} consistency")


if __name__ == "__main__":
    main()
