"""The root's log: sequencer rules, one sequencer per database, tiles, proofs and split-view evidence."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest

from chain_lite import b64, merkle
from chain_lite.checkpoint import Checkpoint, SignedCheckpoint, sign_checkpoint
from chain_lite.cose import CoseSigner
from chain_lite.keys import NoteKey, generate_p256
from chain_lite.log_leaf import MapHead, parse_leaf, registry_leaf
from chain_lite.registry import Value, admin_kid, build_write, prefix_handle, pubkey_value, sign_write
from resolver.assembly import build_root_app
from resolver.config import load
from resolver.db import Database
from resolver.errors import StorageError
from resolver.map_state import MapState
from resolver.registry import submit_write
from resolver.sequencer import Sequencer, SequencerBusy
from resolver.tiles import encode_index, parse_tile_path, tile_path, unbundle
from rootclient.codecs import resolution_from_json
from rootclient.errors import EquivocationDetected
from rootclient.pin_file import FilePinStore, pin_file
from runtime.clock import now_ms
from tests.root_harness import POSTGRES_DOWN, RootUnderTest, ServerThread, postgres_schema

ORIGIN = "seq.test"


def _bootstrapped(url: str) -> tuple[Database, NoteKey, CoseSigner]:
    db = Database(url)
    db.create_schema()
    log_key = NoteKey.generate(ORIGIN, 0x01)
    admin = generate_p256()
    signer = CoseSigner(admin_kid("88"), admin)
    req = build_write(
        ORIGIN,
        "create",
        prefix_handle("88"),
        [pubkey_value(300, admin.public_key())],
        timestamp_ms=now_ms(),
        nonce=os.urandom(16),
    )
    submit_write(db, sign_write(req, signer).raw, origin=ORIGIN, now_ms=now_ms(), bootstrap=True)
    return db, log_key, signer


def _write(db: Database, signer: CoseSigner, ident: str) -> None:
    req = build_write(
        ORIGIN,
        "create",
        ident,
        [Value(1, "URL", "string", ident)],
        timestamp_ms=now_ms(),
        nonce=os.urandom(16),
    )
    submit_write(db, sign_write(req, signer).raw, origin=ORIGIN, now_ms=now_ms())


def test_only_one_sequencer_per_database(database_url: str) -> None:
    """A second sequencer on the same database is refused while the first lives, allowed after."""
    db, log_key, _ = _bootstrapped(database_url)
    first = Sequencer(db, log_key.log_signer(), ORIGIN, publish=True)
    try:
        with pytest.raises(SequencerBusy):
            Sequencer(db, log_key.log_signer(), ORIGIN, publish=True)
    finally:
        first.close()
    Sequencer(db, log_key.log_signer(), ORIGIN, publish=True).close()
    db.close()


@pytest.mark.skipif(POSTGRES_DOWN, reason="PostgreSQL not reachable")
def test_nodes_in_separate_schemas_of_one_database_each_sequence() -> None:
    """The advisory lock is per schema: a second node in another schema of the same database sequences
    its own log (it used to wait forever for a lock that only serialises one log)."""
    with postgres_schema() as first_url, postgres_schema() as second_url:
        first_db, first_key, _ = _bootstrapped(first_url)
        second_db, second_key, _ = _bootstrapped(second_url)
        first = Sequencer(first_db, first_key.log_signer(), ORIGIN, publish=True)
        try:
            second = Sequencer(second_db, second_key.log_signer(), ORIGIN, publish=True)
            with pytest.raises(SequencerBusy):  # still one sequencer per log
                Sequencer(second_db, second_key.log_signer(), ORIGIN, publish=True)
            second.close()
        finally:
            first.close()
            first_db.close()
            second_db.close()


def test_every_batch_ends_with_the_map_head_of_its_history(database_url: str) -> None:
    """Each checkpoint's last leaf is a map head whose root the history reproduces; batches are capped."""
    db, log_key, signer = _bootstrapped(database_url)
    seq = Sequencer(db, log_key.log_signer(), ORIGIN, max_batch=3, publish=True)
    try:
        seq.integrate(now_ms())
        for i in range(7):
            _write(db, signer, f"88/D{i}")
        sizes = []
        while (batch := seq.integrate(now_ms())) is not None:
            assert batch.leaves <= 4
            sizes.append(batch.checkpoint.checkpoint.size)
        assert len(sizes) == 3
        with db.transaction(write=False) as tx:
            for size in sizes:
                head = parse_leaf(bytes(tx.one("SELECT leaf FROM leaves WHERE idx = ?", (size - 1,))[0]))  # type: ignore[index]
                assert isinstance(head, MapHead) and head.epoch == size
                assert MapState.as_of(tx, size).root() == head.root
    finally:
        seq.close()
        db.close()


def test_sequencer_refuses_to_sign_over_a_corrupted_node_store(database_url: str) -> None:
    """If stored nodes no longer match the signed checkpoint, nothing is signed and the batch rolls back."""
    db, log_key, signer = _bootstrapped(database_url)
    seq = Sequencer(db, log_key.log_signer(), ORIGIN, publish=True)
    try:
        first = seq.integrate(now_ms())
        assert first is not None
        for i in range(3):
            _write(db, signer, f"88/C{i}")
        with db.transaction() as tx:
            tx.execute("UPDATE nodes SET hash = ? WHERE idx = 0", (bytes(32),))
        with pytest.raises(StorageError, match="inconsistent"):
            seq.integrate(now_ms())
        with db.transaction(write=False) as tx:
            assert tx.one("SELECT MAX(size) FROM checkpoints") == (first.checkpoint.checkpoint.size,)
            assert tx.one("SELECT COUNT(*) FROM pending") == (3,)
    finally:
        seq.close()
        db.close()


def test_registry_leaves_carry_the_signed_request(database_url: str) -> None:
    """A registry leaf is type 0x02 followed by the exact signed request the admin sent."""
    db, log_key, signer = _bootstrapped(database_url)
    req = build_write(
        ORIGIN,
        "create",
        "88/L",
        [Value(1, "URL", "string", "u")],
        timestamp_ms=now_ms(),
        nonce=os.urandom(16),
    )
    raw = sign_write(req, signer).raw
    submit_write(db, raw, origin=ORIGIN, now_ms=now_ms())
    seq = Sequencer(db, log_key.log_signer(), ORIGIN, publish=True)
    try:
        seq.integrate(now_ms())
        with db.transaction(write=False) as tx:
            leaves = [bytes(r[0]) for r in tx.all("SELECT leaf FROM leaves ORDER BY idx")]
    finally:
        seq.close()
        db.close()
    assert registry_leaf(raw) in leaves


@pytest.mark.parametrize("n", [0, 1, 999, 1000, 1234067])
def test_tile_index_encoding_round_trips(n: int) -> None:
    """Tile indexes are x-prefixed groups of three digits and parse back."""
    path = tile_path(0, n)
    parsed = parse_tile_path(path.removeprefix("tile/"))
    assert parsed is not None and parsed.index == n
    assert encode_index(1234067) == "x001/x234/067"


@pytest.mark.parametrize(
    "bad", ["0/1", "0/x000/001", "0/1000", "00/000", "0/000.p/256", "0/000.p/0", "9z/000", "0/x1/000"]
)
def test_non_canonical_tile_paths_are_refused(bad: str) -> None:
    """Paths that are not canonical tlog-tiles paths do not parse."""
    assert parse_tile_path(bad) is None


def test_tiles_match_the_checkpoint(any_suite_root: RootUnderTest) -> None:
    """Level-0 tile hashes are the entries' leaf hashes, and they hash to the checkpoint's root, with the
    log's hash (SHA-256, or SM3 for a `--suite sm` root)."""
    root = any_suite_root
    suite = root.policy.logs[0].suite
    with root.client() as c:
        for i in range(5):
            c.write(
                root.write("create", f"88.123/T{i}", [Value(1, "URL", "string", str(i))], root.admin_signer())
            )
    size = root.settle()
    cp = SignedCheckpoint.parse(httpx.get(f"{root.url}/log/checkpoint").content).checkpoint
    assert cp.size == size
    tile = httpx.get(f"{root.url}/log/{tile_path(0, 0, size)}")
    entries = unbundle(httpx.get(f"{root.url}/log/{tile_path(None, 0, size)}").content)
    hashes = [tile.content[i : i + 32] for i in range(0, len(tile.content), 32)]
    assert hashes == [merkle.leaf_hash(e, suite=suite) for e in entries]
    assert merkle.root_from_leaf_hashes(hashes, suite=suite) == cp.root
    assert httpx.get(f"{root.url}/log/{tile_path(0, 0, size + 1)}").status_code == 404
    assert httpx.get(f"{root.url}/log/tile/0/1").status_code == 404


def test_consistency_and_inclusion_endpoints_verify(any_suite_root: RootUnderTest) -> None:
    """Proofs served by /v1/proof verify against the served checkpoints, with the log's hash."""
    root = any_suite_root
    suite = root.policy.logs[0].suite
    first = SignedCheckpoint.parse(httpx.get(f"{root.url}/v1/checkpoint").content).checkpoint
    with root.client() as c:
        c.write(root.write("create", "88.123/P", [Value(1, "URL", "string", "p")], root.admin_signer()))
    root.settle()
    second = SignedCheckpoint.parse(httpx.get(f"{root.url}/v1/checkpoint").content).checkpoint
    body = httpx.get(
        f"{root.url}/v1/proof/consistency", params={"old": first.size, "new": second.size}
    ).json()
    proof = [b64.decode(h) or b"" for h in body["proof"]]
    merkle.verify_consistency(first.size, second.size, proof, first.root, second.root, suite=suite)
    inc = httpx.get(f"{root.url}/v1/proof/inclusion", params={"index": 0, "size": second.size}).json()
    leaf = b64.decode(inc["leaf"]) or b""
    inclusion = [b64.decode(h) or b"" for h in inc["proof"]]
    merkle.verify_inclusion(
        0, second.size, merkle.leaf_hash(leaf, suite=suite), inclusion, second.root, suite=suite
    )
    bad = httpx.get(f"{root.url}/v1/proof/consistency", params={"old": 5, "new": second.size + 10})
    assert bad.status_code == 400 and bad.json()["message"]


def test_split_view_is_detected_and_kept_as_evidence(root: RootUnderTest, tmp_path: Path) -> None:
    """A validly signed and cosigned checkpoint inconsistent with the pin raises and is saved as evidence."""
    config = tmp_path / "cfg"
    with root.client() as c:
        answer = c.resolve("88.123/ANY")
        pinned = c.verify_resolution(
            resolution_from_json(answer), root.policy, FilePinStore(root.origin, config)
        ).pinned_size
        pin_before = json.loads(pin_file(root.origin, config).read_text())["pinned"]
        # The node's own keys make a fork: same log, bigger size, unrelated root.
        log_key = NoteKey.parse_skey((root.state / "log.skey").read_text())
        wkey = NoteKey.parse_skey((root.witness_state / "witness.skey").read_text())
        fork = sign_checkpoint(Checkpoint(root.origin, pinned, bytes(32)), log_key.log_signer())
        note = fork.note.with_signatures([wkey.cosigner().cosign(fork.note, int(time.time()))])
        forged = json.loads(json.dumps(answer))
        receipt = forged["proof"]["receipt"]
        forged["proof"]["receipt"] = receipt.split("\n\n", 1)[0] + "\n\n" + note.to_bytes().decode()
        with pytest.raises(EquivocationDetected) as info:
            c.verify_resolution(resolution_from_json(forged), root.policy, FilePinStore(root.origin, config))
    evidence = json.loads(Path(info.value.evidence).read_text())
    assert evidence["reason"] and evidence["conflicting"].startswith(root.origin)
    assert json.loads(pin_file(root.origin, config).read_text())["pinned"] == pin_before


def test_two_api_processes_share_one_database_and_fail_over(root: RootUnderTest) -> None:
    """A second node on the same database serves reads and writes; it takes over sequencing when the
    first stops."""
    app, _ = build_root_app(load(root.state))
    with ServerThread(app) as second:
        write = root.write(
            "create", "88.123/VIA-SECOND", [Value(1, "URL", "string", "2")], root.admin_signer()
        )
        assert httpx.post(f"{second.url}/v1/registry", content=write).status_code == 201
        root.settle()
        with root.client() as c:
            assert c.resolve("88.123/VIA-SECOND")["found"] is True
        root.witness_server.__exit__()  # the witness may go away too: publication does not wait for it
        root.server.__exit__()
        write = root.write("create", "88.123/AFTER", [Value(1, "URL", "string", "3")], root.admin_signer())
        assert httpx.post(f"{second.url}/v1/registry", content=write).status_code == 201
        deadline = time.monotonic() + 15
        while not httpx.get(f"{second.url}/v1/resolve/88.123/AFTER").json()["found"]:
            assert time.monotonic() < deadline, "the standby did not take over"
            time.sleep(0.1)
