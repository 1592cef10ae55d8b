"""The C2SP tlog-witness add-checkpoint rules (400/403/404/409/422/200), directly and over HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from chain_lite import merkle
from chain_lite.checkpoint import Checkpoint, SignedCheckpoint, sign_checkpoint
from chain_lite.cosignature import CosignatureVerifier
from chain_lite.keys import NoteKey
from chain_lite.note import SIGTYPE_COSIGNATURE_V1, SIGTYPE_ED25519, VerifierKey, parse_note
from resolver.assembly import build_witness_app, init_witness
from resolver.config import WitnessConfig
from resolver.cosigning import Cosigner, request_body
from resolver.db import Database
from resolver.witness_server import SIZE_CONTENT_TYPE, Answer, Witness, WitnessState
from tests.root_harness import ServerThread

ORIGIN = "log.test"
NOW = 1_700_000_000


class Fixture:
    def __init__(self, tmp: Path) -> None:
        self.log_key = NoteKey.generate(ORIGIN, SIGTYPE_ED25519)
        self.wkey = NoteKey.generate("w.test", SIGTYPE_COSIGNATURE_V1)
        self.state = WitnessState(tmp / "w.db")
        self.witness = Witness(self.wkey.cosigner(), [VerifierKey.parse(self.log_key.vkey())], self.state)
        self.tree = merkle.MerkleTree()

    def grow(self, n: int) -> None:
        start = self.tree.size
        self.tree.append_entries(f"e{i}".encode() for i in range(start, start + n))

    def checkpoint(
        self, size: int | None = None, root: bytes | None = None, key: NoteKey | None = None
    ) -> SignedCheckpoint:
        size = self.tree.size if size is None else size
        cp = Checkpoint(ORIGIN, size, root if root is not None else self.tree.root_at(size))
        return sign_checkpoint(cp, (key or self.log_key).log_signer())

    def add(
        self,
        old: int,
        proof: list[bytes] | None = None,
        *,
        root: bytes | None = None,
        key: NoteKey | None = None,
    ) -> Answer:
        cp = self.checkpoint(root=root, key=key)
        size = cp.checkpoint.size
        if proof is None:
            proof = self.tree.consistency_proof(old, size) if 0 < old < size else []
        return self.witness.add_checkpoint(request_body(old, proof, cp), NOW)


@pytest.fixture
def fx(tmp_path: Path) -> Fixture:
    return Fixture(tmp_path)


def test_first_checkpoint_is_cosigned_and_the_cosignature_verifies(fx: Fixture) -> None:
    """From old 0 a valid checkpoint gets one verifiable, timestamped cosignature line."""
    fx.grow(5)
    answer = fx.add(0)
    assert answer.status == 200
    cp = fx.checkpoint()
    note = parse_note(cp.note.text.encode() + b"\n" + answer.body)
    verifier = CosignatureVerifier.from_vkey(VerifierKey.parse(fx.wkey.vkey()))
    assert verifier.verify(note.text.encode(), note.signatures[0].signature)
    assert fx.state.get(ORIGIN)[0] == 5


def test_growth_with_consistency_proof_is_cosigned(fx: Fixture) -> None:
    """A bigger checkpoint with a valid proof from the last cosigned size is cosigned."""
    fx.grow(5)
    assert fx.add(0).status == 200
    fx.grow(7)
    assert fx.add(5).status == 200
    assert fx.state.get(ORIGIN)[0] == 12


def test_stale_old_size_gets_409_with_the_known_size(fx: Fixture) -> None:
    """An old size other than the last cosigned one: 409, text/x.tlog.size, the size and a newline."""
    fx.grow(5)
    fx.add(0)
    fx.grow(3)
    answer = fx.add(3)
    assert (answer.status, answer.content_type, answer.body) == (409, SIZE_CONTENT_TYPE, b"5\n")


def test_same_size_different_root_is_a_plain_409(fx: Fixture) -> None:
    """Two roots at one size is a fork: 409 without the size content type."""
    fx.grow(5)
    fx.add(0)
    answer = fx.add(5, [], root=bytes(32))
    assert answer.status == 409 and answer.content_type != SIZE_CONTENT_TYPE


def test_forked_log_keeps_evidence_and_is_never_cosigned_again(fx: Fixture) -> None:
    """A second root at a cosigned size is kept as evidence; later, valid checkpoints are refused too."""
    fx.grow(5)
    assert fx.add(0).status == 200
    assert not fx.state.forked(ORIGIN)
    answer = fx.add(5, [], root=bytes(32))
    assert answer.status == 409 and b"evidence kept" in answer.body
    assert fx.state.forked(ORIGIN)
    fx.grow(3)
    later = fx.add(5)
    assert later.status == 409 and later.content_type != SIZE_CONTENT_TYPE and b"two roots" in later.body
    assert fx.state.get(ORIGIN)[0] == 5


def test_forged_fork_note_is_not_evidence(fx: Fixture) -> None:
    """A second root signed by another key is refused (403) and leaves no evidence behind."""
    fx.grow(5)
    fx.add(0)
    other = NoteKey.generate(ORIGIN, SIGTYPE_ED25519)
    assert fx.add(5, [], root=bytes(32), key=other).status == 403
    assert not fx.state.forked(ORIGIN)


def test_bad_proof_gets_422(fx: Fixture) -> None:
    """A consistency proof that does not verify is 422; so is a proof from size 0."""
    fx.grow(5)
    fx.add(0)
    fx.grow(3)
    proof = fx.tree.consistency_proof(5, 8)
    proof[0] = bytes(32)
    assert fx.add(5, proof).status == 422
    assert fx.state.get(ORIGIN)[0] == 5


def test_unknown_log_bad_signature_and_malformed(fx: Fixture) -> None:
    """Unknown origin 404; signed by another key 403; old above size 400; garbage 400."""
    fx.grow(2)
    other = NoteKey.generate("other.test", SIGTYPE_ED25519)
    cp = sign_checkpoint(Checkpoint("other.test", 2, fx.tree.root()), other.log_signer())
    assert fx.witness.add_checkpoint(request_body(0, [], cp), NOW).status == 404
    forged = NoteKey.generate(ORIGIN, SIGTYPE_ED25519)
    assert fx.add(0, key=forged).status == 403
    assert fx.add(9, []).status == 400
    for body in (b"", b"old 0\n", b"old x\n\nfoo", b"old 01\n\n" + b"x", b"new 0\n\n" + b"y"):
        assert fx.witness.add_checkpoint(body, NOW).status == 400


def test_witness_http_endpoint_speaks_the_protocol(tmp_path: Path) -> None:
    """Over HTTP: 200 with a cosignature, then 409 with text/x.tlog.size exactly."""
    log_key = NoteKey.generate(ORIGIN, SIGTYPE_ED25519)
    init_witness(tmp_path, "w.test", [VerifierKey.parse(log_key.vkey())])
    tree = merkle.MerkleTree()
    tree.append_entries([b"a", b"b", b"c"])
    cp = sign_checkpoint(Checkpoint(ORIGIN, 3, tree.root()), log_key.log_signer())
    with ServerThread(build_witness_app(tmp_path)) as server:
        ok = httpx.post(f"{server.url}/add-checkpoint", content=request_body(0, [], cp))
        assert ok.status_code == 200 and ok.text.startswith("— w.test ")
        again = httpx.post(f"{server.url}/add-checkpoint", content=request_body(0, [], cp))
        assert again.status_code == 409
        assert again.headers["content-type"] == SIZE_CONTENT_TYPE and again.text == "3\n"
        big = httpx.post(f"{server.url}/add-checkpoint", content=b"x" * 20000)
        assert big.status_code == 400
        metrics = httpx.get(f"{server.url}/metrics").text
        for status in ("200", "409", "400"):
            assert f'edgeroot_witness_answers_total{{status="{status}"}} 1.0' in metrics


def test_a_refusing_witness_is_logged_once_per_interval_not_per_retry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The root asks a refusing witness again every 2 s; its WARNING is logged once, the rest held."""
    db = Database(f"sqlite:///{tmp_path / 'root.db'}")
    db.create_schema()
    wkey = NoteKey.generate("w.refusing", SIGTYPE_COSIGNATURE_V1)
    witness = WitnessConfig("w.refusing", "http://witness.test", VerifierKey.parse(wkey.vkey()))
    fx = Fixture(tmp_path)
    fx.grow(3)
    cp = fx.checkpoint()

    async def ask_five_times() -> None:
        refuse = httpx.MockTransport(lambda _request: httpx.Response(403, text="unknown log"))
        async with httpx.AsyncClient(transport=refuse) as client:
            cosigner = Cosigner(db, [witness], client)
            for _ in range(5):
                assert await cosigner._ask(witness, cp) == []

    with caplog.at_level("WARNING", logger="resolver.cosigning"):
        asyncio.run(ask_five_times())
    db.close()
    refusals = [r for r in caplog.records if "refused checkpoint" in r.getMessage()]
    assert len(refusals) == 1 and "w.refusing" in refusals[0].getMessage()
