"""A root made with ``--suite sm`` hashes with SM3 throughout (tree, map, checkpoints, witness, blocks),
and every verifier handles it; the same tests run against a default (SHA-256) root."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from chain_lite import merkle
from chain_lite.block import GENESIS_PREV, header_for, sign_block
from chain_lite.checkpoint import Checkpoint, SignedCheckpoint, sign_checkpoint, suite_extensions
from chain_lite.cose import CoseSigner
from chain_lite.errors import FormatError, SignatureError
from chain_lite.keys import NoteKey, generate_p256
from chain_lite.note import (
    SIGTYPE_COSIGNATURE_V1,
    SIGTYPE_ED25519,
    SIGTYPE_SM2,
    SIGTYPE_SM2_COSIGNATURE,
    Ed25519Verifier,
    SM2NoteVerifier,
    VerifierKey,
    open_note,
)
from chain_lite.registry import Value, pubkey_value
from chain_lite.sparse_map import map_key
from chain_lite.suite import SHA256, SM3, HashSuite
from edgeroot.cli import main as cli
from resolver.assembly import load_witness_logs
from resolver.config import load
from resolver.cosigning import request_body
from resolver.db import Database
from resolver.errors import StorageError
from resolver.log_store import log_suite, set_log_suite
from resolver.witness_server import Witness, WitnessState, witness_log_line
from rootclient.codecs import resolution_from_json
from rootclient.pin_file import FilePinStore
from tests.root_harness import RootUnderTest

GATEWAY = "88.123/GW-SM"


def _suite_of(root: RootUnderTest):  # type: ignore[no-untyped-def]
    return root.policy.logs[0].suite


def test_the_log_declares_its_hash_in_checkpoint_policy_and_database(any_suite_root: RootUnderTest) -> None:
    """An sm root: 'log-hash sm3' in policy.txt, 'hash sm3' in every checkpoint, meta 'hash' = sm3;
    a default root: none of them (plain C2SP bytes)."""
    root = any_suite_root
    suite = _suite_of(root)
    policy_text = root.policy_path.read_text()
    cp = SignedCheckpoint.parse(httpx.get(f"{root.url}/log/checkpoint").content).checkpoint
    db = Database(load(root.state).database)
    try:
        with db.transaction(write=False) as tx:
            stored = log_suite(tx)
    finally:
        db.close()
    assert cp.suite is suite is stored
    if suite is SM3:
        assert policy_text.startswith("log-hash sm3 ") and cp.extensions == ("hash sm3",)
    else:
        assert policy_text.startswith("log ") and cp.extensions == ()


def test_the_log_signs_with_its_suites_key(any_suite_root: RootUnderTest) -> None:
    """An sm root's log key is SM2 (SM2 + SM3 throughout, D-084): policy.txt pins an SM2 vkey, the served
    checkpoint carries exactly one log line, of the SM2 note type, which the SM2 verifier opens and an
    Ed25519 verifier of the same name does not accept. A default root's stays Ed25519."""
    root = any_suite_root
    suite = _suite_of(root)
    served = SignedCheckpoint.parse(httpx.get(f"{root.url}/log/checkpoint").content)
    vkey = VerifierKey.parse((root.state / "log.vkey").read_text().strip())
    pinned = root.policy.logs[0].verifier
    assert pinned.vkey() == vkey
    want = SIGTYPE_SM2 if suite is SM3 else SIGTYPE_ED25519
    assert vkey.sigtype == want and pinned.sigtype == want
    verifier = SM2NoteVerifier.from_vkey(vkey) if suite is SM3 else Ed25519Verifier.from_vkey(vkey)
    own = [s for s in served.note.signatures if s.name == root.origin]
    assert len(own) == 1 and own[0].key_id == verifier.key_id
    assert open_note(served.note, [verifier]) == [verifier]
    if suite is SM3:
        assert len(own[0].signature) == 64  # r || s (docs/formats.md §20)
        impostor = Ed25519Verifier(root.origin, vkey.public_key[:32])
        with pytest.raises(SignatureError):
            open_note(served.note, [impostor])


def test_resolution_proofs_verify_with_the_pinned_log(any_suite_root: RootUnderTest, tmp_path: Path) -> None:
    """A resolve answer (map proof over H(identifier), H(record)) verifies through the root client's
    pinned light client, and the map key is the suite's hash of the identifier."""
    root = any_suite_root
    suite = _suite_of(root)
    with root.client() as c:
        c.write(root.write("create", "88.123/PUMP-9", [Value(1, "URL", "string", "p")], root.admin_signer()))
        root.settle()
        answer = c.resolve("88.123/PUMP-9")
        verified = c.verify_resolution(
            resolution_from_json(answer), root.policy, FilePinStore(root.origin, tmp_path)
        )
    assert verified.proven.record is not None and verified.proven.checkpoint.checkpoint.suite is suite
    assert map_key("88.123/pump-9", suite=suite) != map_key(
        "88.123/pump-9", suite=SM3 if suite is SHA256 else SHA256
    )


def test_the_root_refuses_blocks_of_the_other_suite(any_suite_root: RootUnderTest) -> None:
    """A registered gateway's block hashed with the log's suite is accepted; the same chain built with the
    other suite is refused, naming both hashes."""
    root = any_suite_root
    suite = _suite_of(root)
    other = SM3 if suite is SHA256 else SHA256
    key = generate_p256()
    gateway = CoseSigner(GATEWAY, key)
    values = [pubkey_value(300, key.public_key()), Value(2, "GATEWAY", "string", "test gateway")]
    with root.client() as c:
        c.write(root.write("create", GATEWAY, values, root.admin_signer()))
        root.settle()
        wrong = sign_block(header_for(GATEWAY, 0, GENESIS_PREV, [], 1, suite=other), gateway)
        refused = c.submit_blocks([(wrong.raw, None)])
        assert not refused.accepted and f"uses hash {other.name}, but {suite.name} is required" in (
            refused.message or ""
        )
        right = sign_block(header_for(GATEWAY, 0, GENESIS_PREV, [], 1, suite=suite), gateway)
        accepted = c.submit_blocks([(right.raw, None)])
        assert [a.block_id for a in accepted.accepted] == [right.block_id]


def test_a_logs_hash_never_changes(tmp_path: Path) -> None:
    """The hash profile is set on an empty log only; a log with leaves keeps its hash."""
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        db.create_schema()
        with db.transaction() as tx:
            set_log_suite(tx, SM3)
            set_log_suite(tx, SM3)  # idempotent
            tx.execute("INSERT INTO meta (key, value) VALUES ('tree_size', '3')")
        with db.transaction() as tx, pytest.raises(StorageError, match="hashes with sm3"):
            set_log_suite(tx, SHA256)
    finally:
        db.close()


def test_cli_root_init_suite_sm_makes_an_sm3_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`edgeroot root init --suite sm` reports the suite, and its first checkpoint says hash sm3; the node's
    own witness key, with which it cosigns the children it anchors, is SM2 too (D-105)."""
    state = tmp_path / "root"
    code = cli(
        [
            "root",
            "init",
            "--state",
            str(state),
            "--origin",
            "sm.test",
            "--prefix",
            "88.7",
            "--suite",
            "sm",
            "--json",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["suite"] == "sm"
    db = Database(load(state).database)
    try:
        with db.transaction(write=False) as tx:
            note = tx.one("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1")
            assert log_suite(tx) is SM3
    finally:
        db.close()
    assert note is not None and SignedCheckpoint.parse(bytes(note[0])).checkpoint.suite is SM3
    assert (state / "policy.txt").read_text().startswith("log-hash sm3 ")
    vkey = VerifierKey.parse(out["log_vkey"])
    assert vkey.sigtype == SIGTYPE_SM2 and f"log-hash sm3 {vkey}" in (state / "policy.txt").read_text()
    assert NoteKey.parse_skey((state / "log.skey").read_text()).sigtype == SIGTYPE_SM2
    open_note(SignedCheckpoint.parse(bytes(note[0])).note, [SM2NoteVerifier.from_vkey(vkey)])
    witness = VerifierKey.parse(out["witness_vkey"])
    assert witness.sigtype == SIGTYPE_SM2_COSIGNATURE and witness.name == "sm.test/witness"
    assert (state / "witness.vkey").read_text().strip() == out["witness_vkey"]
    assert NoteKey.parse_skey((state / "witness.skey").read_text()).vkey() == out["witness_vkey"]


def _witness_fixture(tmp_path: Path, follows: HashSuite):  # type: ignore[no-untyped-def]
    log_key = NoteKey.generate("w-log.test", SIGTYPE_ED25519)
    vkey = VerifierKey.parse(log_key.vkey())
    (tmp_path / "logs.txt").write_text(f"# logs\n{witness_log_line(vkey, follows)}\n")
    followed, suites = load_witness_logs(tmp_path / "logs.txt")
    wkey = NoteKey.generate("w.test", SIGTYPE_COSIGNATURE_V1)
    return log_key, Witness(wkey.cosigner(), followed, WitnessState(tmp_path / "w.db"), suites)


@pytest.mark.parametrize("suite", [SHA256, SM3], ids=lambda s: s.name)
def test_the_witness_checks_proofs_with_the_hash_logs_txt_names(tmp_path: Path, suite: HashSuite) -> None:
    """logs.txt says `<vkey> sm3` for an SM3 log; the witness cosigns that log's checkpoints with SM3
    consistency proofs and answers 422 to one declaring the other hash."""
    log_key, witness = _witness_fixture(tmp_path, suite)
    tree = merkle.MerkleTree(suite=suite)
    tree.append_entries(b"e%d" % i for i in range(5))

    def body(old: int, declared: HashSuite, root: bytes) -> bytes:
        cp = Checkpoint("w-log.test", tree.size, root, suite_extensions(declared))
        proof = tree.consistency_proof(old) if 0 < old < tree.size else []
        return request_body(old, proof, sign_checkpoint(cp, log_key.log_signer()))

    assert witness.add_checkpoint(body(0, suite, tree.root()), 1_700_000_000).status == 200
    tree.append_entries(b"f%d" % i for i in range(7))
    other = SM3 if suite is SHA256 else SHA256
    refused = witness.add_checkpoint(body(5, other, tree.root()), 1_700_000_000)
    assert refused.status == 422 and f"follows w-log.test as {suite.name}" in refused.body.decode()
    assert witness.add_checkpoint(body(5, suite, tree.root()), 1_700_000_000).status == 200


def test_witness_logs_file_refuses_an_unknown_hash(tmp_path: Path) -> None:
    """A logs.txt line naming a hash edgeroot does not know is refused, not read as SHA-256."""
    vkey = NoteKey.generate("w-log.test", SIGTYPE_ED25519).vkey()
    (tmp_path / "logs.txt").write_text(f"{vkey} sha3\n")
    with pytest.raises(FormatError, match="unknown hash 'sha3'"):
        load_witness_logs(tmp_path / "logs.txt")
