"""SM3 log profile (issue 16 item 4): SM3 against GB/T 32905 and an independent implementation, RFC 6962
trees / the map / blocks hashed with SM3, and the refusals that keep the two profiles apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gmssl import func as gmssl_func
from gmssl import sm3 as gmssl_sm3
from hypothesis import given, settings
from hypothesis import strategies as st

from chain_lite import merkle, sparse_map
from chain_lite.block import (
    BLOCK_LABELS,
    GENESIS_PREV,
    BlockHeader,
    check_body,
    check_suite,
    header_for,
    open_block,
    parse_block,
    reading_proof,
    sign_block,
    verify_reading,
)
from chain_lite.checkpoint import Checkpoint, SignedCheckpoint, suite_extensions
from chain_lite.cose import CoseSigner
from chain_lite.errors import ChainError, ChainLinkError, FormatError, ProofError, SignatureError
from chain_lite.keys import generate_p256
from chain_lite.light_client import Accepted, Evidence, LightClient, Rejected
from chain_lite.policy import Policy
from chain_lite.receipt import Receipt, verify_receipt
from chain_lite.suite import (
    SHA256,
    SM3,
    CryptographySM3,
    HashSuite,
    HashSuiteMismatch,
    hash_suite,
    hashlib_sm3,
)

from .helpers import ORIGIN, LogBuilder
from .rfc6962_reference import make_reference

VECTORS = json.loads((Path(__file__).parent / "vectors" / "gbt32905_sm3.json").read_text())["cases"]


def gmssl_digest(data: bytes) -> bytes:
    """SM3 by gmssl's pure-Python implementation: shares no code with OpenSSL."""
    return bytes.fromhex(gmssl_sm3.sm3_hash(gmssl_func.bytes_to_list(data)))


def _backends() -> list[tuple[str, HashSuite]]:
    out = [("cryptography", HashSuite("sm3", CryptographySM3))]
    factory = hashlib_sm3()
    if factory is not None:
        out.append(("hashlib", HashSuite("sm3", factory)))
    return out


# --- SM3 itself ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", VECTORS, ids=lambda c: c["name"][:9])
@pytest.mark.parametrize(("backend", "suite"), _backends(), ids=lambda b: b if isinstance(b, str) else "")
def test_sm3_matches_the_gbt32905_examples(backend: str, suite: HashSuite, case: dict[str, str]) -> None:
    """Each OpenSSL route to SM3 (and the one chain_lite chose) gives the standard's digests."""
    message = bytes.fromhex(case["message_hex"])
    assert suite.digest(message).hex() == case["digest_hex"]
    assert SM3.digest(message).hex() == case["digest_hex"]
    assert gmssl_digest(message).hex() == case["digest_hex"]


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_sm3_agrees_with_an_independent_implementation(data: bytes) -> None:
    """Any message, including those crossing the 64-byte block and padding boundaries."""
    expected = gmssl_digest(data)
    assert SM3.digest(data) == expected
    for _, suite in _backends():
        assert suite.digest(data) == expected


def test_profiles_are_named_and_unknown_names_refused() -> None:
    """sha256 and sm3 are the profiles; anything else is a FormatError naming the known ones."""
    assert hash_suite("sha256") is SHA256 and hash_suite("sm3") is SM3
    assert SM3.empty_root == gmssl_digest(b"") != SHA256.empty_root == merkle.EMPTY_ROOT
    with pytest.raises(FormatError, match="sha256, sm3"):
        hash_suite("SM3")


# --- RFC 6962 trees with SM3 -----------------------------------------------------------------------------

SMALL = 24
LEAVES = tuple(f"leaf-{i}".encode() for i in range(SMALL))
MTH, PATH, PROOF = make_reference(LEAVES, gmssl_digest)


@pytest.fixture(scope="module")
def sm3_tree() -> merkle.MerkleTree:
    tree = merkle.MerkleTree(suite=SM3)
    tree.append_entries(LEAVES)
    return tree


def test_sm3_tree_matches_the_naive_reference_for_every_size_index_and_pair(
    sm3_tree: merkle.MerkleTree,
) -> None:
    """MTH, PATH and PROOF from RFC 6962 §2.1 with gmssl's SM3 equal the tree's roots and proofs, and
    those proofs verify with suite=SM3, for every size up to 24."""
    assert merkle.MerkleTree(suite=SM3).root() == MTH(0, 0) == SM3.empty_root
    for n in range(1, SMALL + 1):
        root = MTH(0, n)
        assert sm3_tree.root_at(n) == root == merkle.root_of(LEAVES[:n], suite=SM3)
        for m in range(n):
            proof = sm3_tree.inclusion_proof(m, n)
            assert proof == PATH(m, 0, n)
            merkle.verify_inclusion(m, n, merkle.leaf_hash(LEAVES[m], suite=SM3), proof, root, suite=SM3)
        for m in range(1, n):
            proof = sm3_tree.consistency_proof(m, n)
            assert proof == PROOF(m, n)
            merkle.verify_consistency(m, n, proof, MTH(0, m), root, suite=SM3)


@pytest.mark.parametrize(("backend", "suite"), _backends(), ids=lambda b: b if isinstance(b, str) else "")
def test_each_sm3_route_copies_and_updates_like_hashlib(backend: str, suite: HashSuite) -> None:
    """A prepared prefix object copied, then updated in pieces, hashes the whole message; copies and
    digest() leave the prepared object unchanged (the Merkle loops rely on it, D-136)."""
    prepared = suite.new(b"\x01")
    left, right = prepared.copy(), prepared.copy()
    left.update(b"a" * 32)
    left.update(b"b" * 33)
    right.update(b"c" * 70)
    assert left.digest() == left.digest() == gmssl_digest(b"\x01" + b"a" * 32 + b"b" * 33)
    assert right.digest() == gmssl_digest(b"\x01" + b"c" * 70)
    assert prepared.digest() == gmssl_digest(b"\x01")
    tree = merkle.MerkleTree(suite=suite)
    tree.append_entries(LEAVES)
    assert tree.root() == MTH(0, SMALL) == merkle.root_of(LEAVES, suite=suite)
    merkle.verify_inclusion(
        5, SMALL, merkle.leaf_hash(LEAVES[5], suite=suite), PATH(5, 0, SMALL), MTH(0, SMALL), suite=suite
    )
    merkle.verify_consistency(7, SMALL, PROOF(7, SMALL), MTH(0, 7), MTH(0, SMALL), suite=suite)


def _corrupt(proof: list[bytes], choice: int) -> list[bytes]:
    """One corruption of ``proof``: a flipped bit, a hash dropped, one added, or the order reversed
    (when that changes it: equal leaves give equal siblings)."""
    kind = choice % 4
    if kind == 0 and proof:
        i = choice // 4 % len(proof)
        flipped = bytes([proof[i][0] ^ (1 << (choice % 8))]) + proof[i][1:]
        return [*proof[:i], flipped, *proof[i + 1 :]]
    if kind == 1 and proof:
        return proof[:-1]
    if kind == 2 or not proof:
        return [*proof, b"\x5a" * 32]
    reordered = list(reversed(proof))
    return reordered if reordered != proof else [*proof, proof[0]]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=2, max_size=600), st.data())
def test_sm3_proofs_verify_and_corrupted_ones_are_refused(entries: list[bytes], data: st.DataObject) -> None:
    """Random SM3 trees: honest proofs verify with SM3, and never with SHA-256; corrupted ones fail."""
    n = len(entries)
    tree = merkle.MerkleTree(suite=SM3)
    tree.append_entries(entries)
    root = tree.root()
    m = data.draw(st.integers(0, n - 1))
    leaf = merkle.leaf_hash(entries[m], suite=SM3)
    proof = tree.inclusion_proof(m)
    merkle.verify_inclusion(m, n, leaf, proof, root, suite=SM3)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(m, n, leaf, proof, root)  # the SHA-256 verifier
    bad = _corrupt(proof, data.draw(st.integers(0, 1000)))
    with pytest.raises(ProofError):
        merkle.verify_inclusion(m, n, leaf, bad, root, suite=SM3)
    size1 = data.draw(st.integers(1, n - 1))
    old_root = tree.root_at(size1)
    cproof = tree.consistency_proof(size1)
    merkle.verify_consistency(size1, n, cproof, old_root, root, suite=SM3)
    with pytest.raises(ProofError):
        merkle.verify_consistency(size1, n, cproof, old_root, root)
    with pytest.raises(ProofError):
        merkle.verify_consistency(
            size1, n, _corrupt(cproof, data.draw(st.integers(0, 1000))), old_root, root, suite=SM3
        )


def test_sm3_empty_tree_rules() -> None:
    """Size 0 has root SM3(""); the SHA-256 empty root is refused as an SM3 empty tree."""
    merkle.verify_consistency(0, 0, [], SM3.empty_root, SM3.empty_root, suite=SM3)
    with pytest.raises(ProofError):
        merkle.verify_consistency(0, 0, [], SHA256.empty_root, SHA256.empty_root, suite=SM3)


# --- the verifiable map with SM3 -------------------------------------------------------------------------


def test_sm3_map_proves_membership_and_absence_only_under_sm3() -> None:
    """Keys, leaves and nodes hash with SM3; its proofs verify with SM3 and fail with SHA-256."""
    ids = [f"88.123.99/PUMP-{i:04d}" for i in range(40)]
    smap = sparse_map.SparseMap(suite=SM3)
    for i, identifier in enumerate(ids):
        smap.set(sparse_map.map_key(identifier, suite=SM3), SM3.digest(b"record %d" % i))
    root = smap.root()
    key = sparse_map.map_key(ids[7], suite=SM3)
    assert key == gmssl_digest(ids[7].encode())
    proof = sparse_map.MapProof.from_bytes(smap.prove(key).to_bytes())
    sparse_map.verify_map_proof(root, key, SM3.digest(b"record 7"), proof, suite=SM3)
    with pytest.raises(ProofError):
        sparse_map.verify_map_proof(root, key, SM3.digest(b"record 7"), proof)
    absent = sparse_map.map_key("88.123.99/NOPE", suite=SM3)
    sparse_map.verify_map_proof(root, absent, None, smap.prove(absent), suite=SM3)
    same_entries = sparse_map.SparseMap(
        ((sparse_map.map_key(i, suite=SM3), SM3.digest(b"x")) for i in ids), suite=SM3
    )
    sha_entries = sparse_map.SparseMap((sparse_map.map_key(i), SHA256.digest(b"x")) for i in ids)
    assert same_entries.root() != sha_entries.root()


# --- gateway blocks with SM3 -----------------------------------------------------------------------------

GATEWAY = "88.123.99/GW-1"


def _readings(n: int) -> list[tuple[str, int, bytes]]:
    return [("88.123.99/PUMP-0001", i + 1, b"envelope %d" % i) for i in range(n)]


def test_sm3_block_header_names_its_profile_and_hashes_with_it() -> None:
    """The label says sm3; the readings root is the SM3 tree root, the block id the SM3 of the header,
    and the header survives signing and parsing with its profile."""
    readings = _readings(5)
    header = header_for(GATEWAY, 0, GENESIS_PREV, readings, 1_760_000_000_000, suite=SM3)
    bodies = [raw for _, _, raw in readings]
    assert header.readings_root == make_reference(tuple(bodies), gmssl_digest)[0](0, 5)
    encoded = header.encode()
    assert BLOCK_LABELS[SM3].encode() in encoded and header.block_id == gmssl_digest(encoded)
    decoded = BlockHeader.decode(encoded)
    assert decoded == header and decoded.suite is SM3
    signer = CoseSigner(GATEWAY, generate_p256())
    block = sign_block(header, signer)
    assert parse_block(block.raw).header.suite is SM3 and block.block_id == header.block_id
    check_body(header, bodies)
    verify_reading(header, bodies[3], 3, reading_proof(bodies, 3, suite=SM3))
    with pytest.raises(ProofError):
        verify_reading(header, bodies[3], 3, reading_proof(bodies, 3))  # a SHA-256 proof
    with pytest.raises(ChainLinkError):
        check_body(header, [*bodies[:4], b"forged"])


def test_blocks_of_the_other_profile_are_refused_by_name() -> None:
    """A SHA-256 log refuses an SM3 block (and the reverse) before checking anything else."""
    signer = CoseSigner(GATEWAY, generate_p256())
    sm3_block = sign_block(header_for(GATEWAY, 0, GENESIS_PREV, _readings(2), 1, suite=SM3), signer)
    sha_block = sign_block(header_for(GATEWAY, 0, GENESIS_PREV, _readings(2), 1), signer)
    lookup = {GATEWAY: signer.public_key}.get
    assert open_block(sm3_block.raw, lookup, suite=SM3).header.suite is SM3
    with pytest.raises(HashSuiteMismatch, match="uses hash sm3, but sha256 is required"):
        open_block(sm3_block.raw, lookup)
    with pytest.raises(HashSuiteMismatch, match="uses hash sha256, but sm3 is required"):
        check_suite(sha_block.header, SM3)
    with pytest.raises(FormatError, match="empty-tree root"):
        BlockHeader(GATEWAY, 0, GENESIS_PREV, SHA256.empty_root, 0, (), 1, SM3)
    assert sm3_block.block_id != sha_block.block_id


# --- checkpoints and policies declare the profile --------------------------------------------------------


def test_checkpoint_hash_line_declares_the_profile() -> None:
    """No hash line is SHA-256 (plain C2SP bytes); 'hash sm3' first is SM3; anything else is refused."""
    root = bytes(32)
    plain = Checkpoint(ORIGIN, 3, root)
    assert plain.suite is SHA256 and suite_extensions(SHA256) == ()
    sm3 = Checkpoint(ORIGIN, 3, root, suite_extensions(SM3))
    assert sm3.to_text().endswith("\nhash sm3\n") and Checkpoint.from_text(sm3.to_text()).suite is SM3
    assert Checkpoint.from_text(sm3.to_text() + "other ext\n").suite is SM3
    for bad in (("hash sha256",), ("hash md5",), ("other", "hash sm3"), ("hash sm3", "hash sm3")):
        with pytest.raises(FormatError, match="hash"):
            Checkpoint(ORIGIN, 3, root, bad)


def test_policy_log_hash_line_round_trips_and_refuses_two_hashes_for_one_log() -> None:
    """'log-hash sm3 <vkey>' pins SM3; a plain 'log' line stays SHA-256 (and C2SP's own syntax)."""
    log = LogBuilder(suite=SM3)
    text = log.policy().to_text()
    assert text.startswith(f"log-hash sm3 {log.log_key.log_signer().verifier.vkey()}\n")
    parsed = Policy.parse(text.encode())
    assert parsed.suite_of(ORIGIN) is SM3 and parsed.to_text() == text
    assert Policy.parse(LogBuilder().policy().to_text().encode()).suite_of(ORIGIN) is SHA256
    vkey = log.log_key.log_signer().verifier.vkey()
    with pytest.raises(FormatError, match=r"line 1: unknown hash 'sha3'; known: sha256, sm3"):
        Policy.parse(f"log-hash sha3 {vkey}\nquorum none\n".encode())
    with pytest.raises(FormatError, match="log-hash takes"):
        Policy.parse(b"log-hash\nquorum none\n")
    other = LogBuilder().log_key.log_signer().verifier.vkey()
    with pytest.raises(FormatError, match="listed with two hashes"):
        Policy.parse(f"log-hash sm3 {vkey}\nlog {other}\nquorum none\n".encode())


@pytest.mark.parametrize(
    ("log_suite", "policy_suite"), [(SM3, SHA256), (SHA256, SM3)], ids=["sm3-log", "sha256-log"]
)
def test_a_checkpoint_of_the_other_profile_is_refused_with_a_clear_error(
    log_suite: HashSuite, policy_suite: HashSuite
) -> None:
    """Same log key, same origin, validly signed: a verifier pinned to the other profile refuses the
    checkpoint by name (policy, receipt, light client) instead of hashing it with the wrong function."""
    log = LogBuilder(suite=log_suite)
    log.add(9)
    wrong_policy = LogBuilder(log_key=log.log_key, witness_keys=log.witness_keys, suite=policy_suite).policy()
    expected = f"uses hash {log_suite.name}, but {policy_suite.name} is required"
    with pytest.raises(HashSuiteMismatch, match=expected):
        wrong_policy.verify_checkpoint(log.checkpoint())
    receipt = Receipt(4, tuple(log.tree.inclusion_proof(4)), SignedCheckpoint.parse(log.checkpoint()))
    verify_receipt(receipt, b"entry 4", log.policy(), is_hash=False)
    with pytest.raises(HashSuiteMismatch):
        verify_receipt(receipt, b"entry 4", wrong_policy, is_hash=False)
    outcome = LightClient(wrong_policy, ORIGIN).update(log.checkpoint(), [])
    assert isinstance(outcome, Rejected) and isinstance(outcome.reason, HashSuiteMismatch)
    assert isinstance(LightClient(log.policy(), ORIGIN).update(log.checkpoint(), []), Accepted)


def test_removing_or_adding_the_hash_line_breaks_the_log_signature() -> None:
    """The hash line is signed text: stripping it from an SM3 checkpoint (to pass it off as SHA-256)
    leaves no valid log signature."""
    log = LogBuilder(suite=SM3)
    log.add(5)
    signed = log.checkpoint()
    stripped = signed.replace(b"\nhash sm3\n", b"\n", 1)
    assert stripped != signed
    sha_view = LogBuilder(log_key=log.log_key, witness_keys=log.witness_keys).policy()
    with pytest.raises(SignatureError):
        sha_view.verify_checkpoint(stripped)


def test_sm3_light_client_keeps_evidence_of_an_sm3_fork() -> None:
    """Two validly signed SM3 checkpoints whose trees diverge are evidence under SM3 proofs too."""
    log = LogBuilder(suite=SM3)
    log.add(8)
    client = LightClient(log.policy(), ORIGIN, log.checkpoint())
    fork = LogBuilder(log_key=log.log_key, witness_keys=log.witness_keys, suite=SM3)
    fork.tree.append_entries(b"forged %d" % i for i in range(12))
    outcome = client.update(fork.checkpoint(), fork.tree.consistency_proof(8))
    assert isinstance(outcome, Evidence)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=400))
def test_hostile_checkpoint_text_gives_a_chain_error_only(tail: bytes) -> None:
    """Arbitrary extension lines after a valid head parse or fail with a ChainError, never otherwise."""
    text = f"{ORIGIN}\n5\n{'A' * 43}=\n".encode() + tail
    try:
        cp = Checkpoint.from_text(text.decode("utf-8", "replace"))
    except ChainError:
        return
    assert cp.suite in (SHA256, SM3)


SM3_TREES = json.loads((Path(__file__).parent / "vectors" / "sm3_merkle.json").read_text())


def test_sm3_tree_vectors_verify_and_their_corruptions_do_not() -> None:
    """tests/vectors/sm3_merkle.json (made by the naive reference over gmssl): chain_lite's SM3 tree
    gives the same roots and proofs; each proof verifies with SM3, and with one bit flipped it does not."""
    leaves = [leaf.encode() for leaf in SM3_TREES["leaves_ascii"]]
    tree = merkle.MerkleTree(suite=SM3)
    tree.append_entries(leaves)
    roots = [bytes.fromhex(r) for r in SM3_TREES["roots_hex"]]
    assert roots[0] == SM3.empty_root
    assert [tree.root_at(n) for n in range(len(roots))] == roots
    for case in SM3_TREES["inclusion"]:
        m, n = case["index"], case["size"]
        leaf, proof = bytes.fromhex(case["leaf_hash_hex"]), [bytes.fromhex(h) for h in case["proof_hex"]]
        assert leaf == merkle.leaf_hash(leaves[m], suite=SM3) and tree.inclusion_proof(m, n) == proof
        merkle.verify_inclusion(m, n, leaf, proof, roots[n], suite=SM3)
        if proof:
            with pytest.raises(ProofError):
                merkle.verify_inclusion(
                    m, n, leaf, [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]], roots[n], suite=SM3
                )
    for case in SM3_TREES["consistency"]:
        m, n, proof = case["size1"], case["size2"], [bytes.fromhex(h) for h in case["proof_hex"]]
        assert tree.consistency_proof(m, n) == proof
        merkle.verify_consistency(m, n, proof, roots[m], roots[n], suite=SM3)
        with pytest.raises(ProofError):
            merkle.verify_consistency(
                m, n, [*proof[:-1], bytes([proof[-1][0] ^ 1]) + proof[-1][1:]], roots[m], roots[n], suite=SM3
            )


_WORD = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(st.lists(_WORD, max_size=4), st.sampled_from(["sha256", "sm3", "SM3", "md5", ""]))
def test_hostile_log_hash_lines_give_a_format_error_only(words: list[str], name: str) -> None:
    """A 'log-hash' line with any arguments parses (a known hash and a valid vkey) or is a FormatError
    naming its line, never another exception."""
    vkey = str(LogBuilder().log_key.log_signer().verifier.vkey())
    for args in (words, [name, *words], [name, vkey, *words]):
        text = f"log-hash {' '.join(args)}\nquorum none\n".encode()
        reason = None
        try:
            policy = Policy.parse(text)
        except FormatError as exc:
            reason = exc.reason
        if reason is not None:
            assert reason.startswith("line 1: ")
        else:
            assert args[0] in ("sha256", "sm3") and policy.suite_of(ORIGIN) is hash_suite(args[0])
