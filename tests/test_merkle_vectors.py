"""The public RFC 6962 vectors (transparency-dev/merkle testdata) read from ../shared/vectors/rfc6962."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from chain_lite import merkle
from chain_lite.errors import ChainError

from .conftest import SHARED_VECTORS

VECTOR_DIR = SHARED_VECTORS / "rfc6962"
if not VECTOR_DIR.is_dir():
    pytest.skip(
        f"public RFC 6962 vectors not found at {VECTOR_DIR} (they live in shared/, beside the checkout); "
        "set EDGEROOT_SHARED_VECTORS to run them",
        allow_module_level=True,
    )


def _cases(kind: str) -> list[Path]:
    return sorted((VECTOR_DIR / kind).rglob("*.json"))


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def test_all_196_public_vectors_are_present() -> None:
    """Every vector in the shared folder is collected, so none is silently skipped."""
    assert len(_cases("inclusion")) + len(_cases("consistency")) == 196


@pytest.mark.parametrize("path", _cases("inclusion"), ids=lambda p: str(p.relative_to(VECTOR_DIR)))
def test_inclusion_vector(path: Path) -> None:
    """Good inclusion proofs verify; every corrupted copy is rejected with a ChainError."""
    case = json.loads(path.read_text())
    proof = [_b64(h) for h in case["proof"] or []]
    args = (case["leafIdx"], case["treeSize"], _b64(case["leafHash"]), proof, _b64(case["root"]))
    if case["wantErr"]:
        with pytest.raises(ChainError):
            merkle.verify_inclusion(*args)
    else:
        merkle.verify_inclusion(*args)


@pytest.mark.parametrize("path", _cases("consistency"), ids=lambda p: str(p.relative_to(VECTOR_DIR)))
def test_consistency_vector(path: Path) -> None:
    """Good consistency proofs verify; every corrupted copy is rejected with a ChainError."""
    case = json.loads(path.read_text())
    proof = [_b64(h) for h in case["proof"] or []]
    args = (case["size1"], case["size2"], proof, _b64(case["root1"]), _b64(case["root2"]))
    if case["wantErr"]:
        with pytest.raises(ChainError):
            merkle.verify_consistency(*args)
    else:
        merkle.verify_consistency(*args)
