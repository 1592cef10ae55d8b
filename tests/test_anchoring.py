"""A parent node witnesses its child's log and anchors it in its own, over real HTTP (issue 14, item 4).

Two root nodes and a standalone witness, each a real uvicorn server on loopback with its own database:
the child lists the parent and the standalone witness as its witnesses; the parent lists the child.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gmalg
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from chain_lite.checkpoint import Checkpoint, SignedCheckpoint, sign_checkpoint, suite_extensions
from chain_lite.cose import CoseSigner
from chain_lite.errors import ChainError, QuorumNotMet
from chain_lite.keys import NoteKey, load_private_pem
from chain_lite.log_leaf import ChildAnchor, parse_leaf
from chain_lite.note import SIGTYPE_ED25519, SIGTYPE_SM2, SIGTYPE_SM2_COSIGNATURE, Note, VerifierKey
from chain_lite.policy import Policy
from chain_lite.registry import Value, admin_kid, build_write, sign_write
from chain_lite.suite import LOG_PROFILES, LogProfile
from edgeroot.cli import main
from edgeroot.system import wait_until
from resolver import config as root_config
from resolver.anchoring import ensure_witness_key
from resolver.assembly import build_root_app, build_witness_app, init_root, init_witness, node_policy
from resolver.cosigning import request_body
from rootclient import routes
from rootclient.client import RootClient
from runtime.clock import now_ms
from tests import independent_c2sp as ind
from tests.root_harness import POSTGRES_DOWN, ServerThread, free_port, postgres_schema

CHILD, PARENT, PREFIX = "child.test", "parent.test", "88.123.99"
INDEPENDENT = "independent.test"
EXIT_NOT_YET = 3


@dataclass
class Hierarchy:
    tmp: Path
    parent_state: Path
    child_state: Path
    parent_port: int
    child_port: int
    witness_port: int
    parent_witness: NoteKey
    independent_key: Ed25519PrivateKey
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    parent_server: ServerThread | None = None
    suite: LogProfile = LOG_PROFILES["default"]
    """Both logs' profile (``root init --suite``): ``sm`` makes them SM2 + SM3 (D-084)."""

    def child_cp(self, size: int, root: bytes) -> SignedCheckpoint:
        """A checkpoint of the child's log signed with its own key (whatever the parent saw)."""
        cp = Checkpoint(CHILD, size, root, suite_extensions(self.suite.hash))
        return sign_checkpoint(cp, self.child_key().log_signer())

    @property
    def parent_url(self) -> str:
        return f"http://127.0.0.1:{self.parent_port}"

    @property
    def child_url(self) -> str:
        return f"http://127.0.0.1:{self.child_port}"

    def start_parent(self) -> None:
        app, _ = build_root_app(root_config.load(self.parent_state))
        self.parent_server = ServerThread(app, self.parent_port).__enter__()

    def stop_parent(self) -> None:
        assert self.parent_server is not None
        self.parent_server.__exit__(None, None, None)
        self.parent_server = None

    def child_key(self) -> NoteKey:
        return NoteKey.parse_skey((self.child_state / "log.skey").read_text())

    def register(self, suffix: str) -> None:
        """A signed write at the child, for its own prefix."""
        admin = CoseSigner(admin_kid(PREFIX), load_private_pem((self.child_state / "admin.pem").read_bytes()))
        values = [Value(1, "URL", "string", f"https://plant.example/{suffix}")]
        request = build_write(
            CHILD, "create", f"{PREFIX}/{suffix}", values, timestamp_ms=now_ms(), nonce=os.urandom(16)
        )
        with RootClient(self.child_url) as c:
            c.write(sign_write(request, admin).raw)

    def child_checkpoint(self) -> bytes:
        with RootClient(self.child_url) as c:
            return c.checkpoint()

    def anchors(self) -> dict[str, Any]:
        with RootClient(self.parent_url) as c:
            answer: dict[str, Any] = c.get_json(routes.anchors(CHILD))
            return answer

    def anchored_size(self) -> int:
        anchor = self.anchors()["anchor"]
        return -1 if anchor is None else int(anchor["size"])

    def wait_anchored(self, size: int) -> None:
        wait_until(
            lambda: f"child size {size} anchored in the parent's log (now {self.anchored_size()})",
            lambda: self.anchored_size() >= size,
            timeout=30,
        )

    def wait_child_cosigned_by_parent(self) -> SignedCheckpoint:
        """The child's latest published checkpoint, once it carries the parent's cosignature."""

        def cosigned() -> SignedCheckpoint | None:
            cp = SignedCheckpoint.parse(self.child_checkpoint())
            names = {s.name for s in cp.note.signatures}
            return cp if self.parent_witness.name in names else None

        found = wait_until("the child's checkpoint cosigned by its parent", cosigned, timeout=30)
        assert found is not None
        return found

    def verify_anchor(self, checkpoint: bytes, *extra: str) -> tuple[int, dict[str, Any]]:
        path = self.tmp / f"cp-{hashlib.sha256(checkpoint).hexdigest()[:8]}.txt"
        path.write_bytes(checkpoint)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["verify", "anchor", str(path), "--policy", str(self.parent_state / "policy.txt"),
                         "--root", self.parent_url, *extra, "--json"])  # fmt: skip
        return code, json.loads(out.getvalue())


def _databases(tmp: Path, backend: str) -> Iterator[tuple[str, str]]:
    """The parent's database (where anchors live) on ``backend``; the child's on SQLite."""
    child_db = f"sqlite:///{tmp / 'child.db'}"
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'parent.db'}", child_db
        return
    with postgres_schema() as parent_db:
        yield parent_db, child_db


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(
    POSTGRES_DOWN is not None, reason=f"PostgreSQL not reachable: {POSTGRES_DOWN}")), "sm"])  # fmt: skip
def hierarchy(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Hierarchy]:
    """Parent (witnessing the child and an independently implemented log), child (cosigned by its parent
    and by a standalone ``edgeroot witness``, and requiring both), all serving. ``sm``: on SQLite, both
    logs made with ``--suite sm`` (SM2 log keys, SM3) and an SM2 standalone witness."""
    backend, suite = ("sqlite", "sm") if request.param == "sm" else (request.param, "default")
    for parent_db, child_db in _databases(tmp_path, backend):
        yield from _hierarchy(tmp_path, parent_db, child_db, LOG_PROFILES[suite])


def _hierarchy(tmp: Path, parent_db: str, child_db: str, profile: LogProfile) -> Iterator[Hierarchy]:
    pstate, cstate, wstate = tmp / "parent", tmp / "child", tmp / "witness"
    child = init_root(cstate, CHILD, PREFIX, database=child_db, profile=profile)
    init_root(pstate, PARENT, "88.123", database=parent_db, profile=profile)
    pkey = ensure_witness_key(pstate, PARENT)
    sm = profile.log_sigtype == SIGTYPE_SM2
    wkey = init_witness(wstate, "witness.test", [VerifierKey.parse(child.log_vkey)], {CHILD: profile.hash},
                        alg="sm2" if sm else "p256")  # fmt: skip
    independent_key = Ed25519PrivateKey.generate()
    h = Hierarchy(tmp, pstate, cstate, free_port(), free_port(), free_port(), pkey, independent_key,
                  suite=profile)  # fmt: skip
    root_config.update(pstate / "root.toml", {
        "sequencer": {"interval_ms": 50},
        "child": [
            {"origin": CHILD, "vkey": child.log_vkey, "url": h.child_url, "hash": profile.hash.name},
            {"origin": INDEPENDENT, "vkey": ind.vkey(INDEPENDENT, 0x01, independent_key)},
        ],
    })  # fmt: skip
    root_config.update(cstate / "root.toml", {
        "sequencer": {"interval_ms": 50},
        "witness": [
            {"name": pkey.name, "url": h.parent_url, "vkey": pkey.vkey()},
            {"name": wkey.name, "url": f"http://127.0.0.1:{h.witness_port}", "vkey": wkey.vkey()},
        ],
    })  # fmt: skip
    # The child's policy requires its parent's cosignature and the standalone witness's (item 2).
    witnesses = [VerifierKey.parse(pkey.vkey()), VerifierKey.parse(wkey.vkey())]
    child_policy = node_policy(VerifierKey.parse(child.log_vkey), witnesses, 2, suite=profile.hash)
    (cstate / "policy.txt").write_text(child_policy.to_text())
    with h.stack:
        h.stack.enter_context(ServerThread(build_witness_app(wstate), h.witness_port))
        h.start_parent()
        h.stack.callback(lambda: h.parent_server is not None and h.stop_parent())
        app, _ = build_root_app(root_config.load(cstate))
        h.stack.enter_context(ServerThread(app, h.child_port))
        yield h


def _strip(cp: SignedCheckpoint, name: str) -> bytes:
    return Note(cp.note.text, tuple(s for s in cp.note.signatures if s.name != name)).to_bytes()


def test_child_checkpoints_are_anchored_and_verify_anchor_proves_it(hierarchy: Hierarchy) -> None:
    """Each new child checkpoint is cosigned by the parent and logged as an anchor leaf; `verify anchor`
    proves the latest one anchored itself and an older one anchored through a later one."""
    h = hierarchy
    h.register("PUMP-1")
    first = h.wait_child_cosigned_by_parent()
    h.wait_anchored(first.checkpoint.size)
    h.register("PUMP-2")
    h.wait_anchored(first.checkpoint.size + 1)
    latest = h.wait_child_cosigned_by_parent()
    h.wait_anchored(latest.checkpoint.size)

    code, answer = h.verify_anchor(latest.to_bytes())
    assert code == 0 and answer["anchored"] is True, answer
    assert answer["anchored_size"] == latest.checkpoint.size and answer["parent_log"] == PARENT

    code, answer = h.verify_anchor(first.to_bytes())
    assert code == 0 and answer["anchored"] is True, answer
    assert answer["anchored_size"] > first.checkpoint.size and "through size" in answer["message"]

    # The leaf itself: type 0x06 naming the child's key and its checkpoint, in the parent's log.
    info = h.anchors()
    with RootClient(h.parent_url) as c:
        leaf, _ = c.inclusion(info["anchor"]["index"], info["tree_size"])
    anchor = parse_leaf(leaf)
    assert isinstance(anchor, ChildAnchor) and anchor.checkpoint.checkpoint == latest.checkpoint
    assert (h.tmp / "parent" / "witness.vkey").read_text().strip() == h.parent_witness.vkey()


def test_child_policy_requiring_its_parent_refuses_a_checkpoint_without_the_parents_cosignature(
    hierarchy: Hierarchy,
) -> None:
    """The child's policy lists its parent as a witness: with the parent's line removed, quorum fails."""
    h = hierarchy
    h.register("VALVE-1")
    cp = h.wait_child_cosigned_by_parent()
    policy = Policy.parse((h.child_state / "policy.txt").read_bytes())
    wait_until("the standalone witness's cosignature", lambda: len(
        SignedCheckpoint.parse(h.child_checkpoint()).note.signatures) == 3)  # fmt: skip
    cp = SignedCheckpoint.parse(h.child_checkpoint())
    assert set(policy.verify_checkpoint(cp).cosigners) == {h.parent_witness.name, "witness.test"}
    with pytest.raises(QuorumNotMet):
        policy.verify_checkpoint(_strip(cp, h.parent_witness.name))


def test_the_parent_cosigns_its_child_with_a_witness_key_of_its_own_suite(hierarchy: Hierarchy) -> None:
    """`root init` makes the node's witness key of its suite (Ed25519 0x04, or SM2 on an SM node: D-105);
    the child's policy accepts the parent's cosignature made with it, and a flipped bit in that
    cosignature fails the checkpoint (signed-note: a known key's bad line is an error, not ignored)."""
    h = hierarchy
    assert h.parent_witness.sigtype == h.suite.cosign_sigtype
    assert (h.parent_state / "witness.vkey").read_text().strip() == h.parent_witness.vkey()
    h.register("PUMP-1")
    h.wait_child_cosigned_by_parent()
    policy = Policy.parse((h.child_state / "policy.txt").read_bytes())
    assert policy.witnesses[h.parent_witness.name].verifier.sigtype == h.suite.cosign_sigtype
    wait_until("the standalone witness's cosignature", lambda: len(
        SignedCheckpoint.parse(h.child_checkpoint()).note.signatures) == 3)  # fmt: skip
    cp = SignedCheckpoint.parse(h.child_checkpoint())
    assert h.parent_witness.name in policy.verify_checkpoint(cp).cosigners
    text = cp.to_bytes().decode()
    line = next(x for x in text.splitlines() if x.startswith(f"\u2014 {h.parent_witness.name} "))
    raw = bytearray(base64.b64decode(line.rsplit(" ", 1)[1]))
    raw[-1] ^= 0x01  # the last byte of s (SM2) or of the Ed25519 signature
    forged = text.replace(line, line.rsplit(" ", 1)[0] + " " + base64.b64encode(bytes(raw)).decode())
    with pytest.raises(ChainError):
        policy.verify_checkpoint(forged.encode())


def test_parent_outage_child_keeps_serving_and_anchoring_catches_up(hierarchy: Hierarchy) -> None:
    """With the parent down the child still publishes and resolves with proofs; back up, the parent
    anchors the child's latest checkpoint without any new write at the child."""
    h = hierarchy
    h.register("PUMP-1")
    h.wait_anchored(h.wait_child_cosigned_by_parent().checkpoint.size)
    h.stop_parent()
    h.register("PUMP-2")
    with RootClient(h.child_url) as c:  # the child publishes and proves its own ids without its parent
        wait_until("PUMP-2 resolvable at the child", lambda: c.resolve(f"{PREFIX}/PUMP-2")["found"])
    during = SignedCheckpoint.parse(h.child_checkpoint())
    assert h.parent_witness.name not in {s.name for s in during.note.signatures}
    code, out = h.verify_anchor(during.to_bytes())
    assert code == 2 and "parent" in out["error"], out  # nothing judged while the parent is away

    h.start_parent()
    h.wait_anchored(during.checkpoint.size)
    code, out = h.verify_anchor(h.child_checkpoint())
    assert code == 0 and out["anchored"] is True, out


def test_a_child_checkpoint_beyond_the_newest_anchor_is_not_anchored_yet(hierarchy: Hierarchy) -> None:
    """A checkpoint the child signed but never showed its parent: exit 3, not a failure."""
    h = hierarchy
    h.register("PUMP-1")
    anchored = h.wait_child_cosigned_by_parent()
    h.wait_anchored(anchored.checkpoint.size)
    unseen = h.child_cp(anchored.checkpoint.size + 5, bytes(32))
    code, out = h.verify_anchor(unseen.to_bytes())
    assert code == EXIT_NOT_YET and out["anchored"] is False and out["pending"] is True, out
    assert out["anchored_size"] == anchored.checkpoint.size


def test_child_equivocation_is_refused_kept_as_evidence_and_reported(hierarchy: Hierarchy) -> None:
    """A second root for an anchored size, signed by the child: the parent refuses it (409), keeps both
    notes, cosigns the child no more; `verify anchor` says INCONSISTENT and shows the evidence."""
    h = hierarchy
    h.register("PUMP-1")
    real = h.wait_child_cosigned_by_parent()
    size = real.checkpoint.size
    h.wait_anchored(size)
    forged = h.child_cp(size, bytes(32))
    response = httpx.post(
        h.parent_url + routes.WITNESS_ADD_CHECKPOINT, content=request_body(size, [], forged)
    )
    assert response.status_code == 409 and "evidence kept" in response.text

    code, out = h.verify_anchor(forged.to_bytes())
    assert code == 1 and out["error"].startswith("INCONSISTENT"), out
    code, out = h.verify_anchor(real.to_bytes())
    assert code == 1 and "two roots for size" in out["error"], out
    (evidence,) = out["evidence"]
    assert evidence["size"] == size and evidence["refused"] == forged.to_bytes().decode()

    h.register("PUMP-2")  # the child grows: its parent no longer cosigns it
    wait_until("a newer child checkpoint", lambda: SignedCheckpoint.parse(
        h.child_checkpoint()).checkpoint.size > size)  # fmt: skip
    metrics = httpx.get(h.parent_url + routes.METRICS).text
    assert f'edgeroot_root_anchor_child_forked{{child="{CHILD}"}} 1.0' in metrics
    assert h.anchored_size() == size


def test_the_parent_is_a_plain_c2sp_witness_to_an_independent_log(hierarchy: Hierarchy) -> None:
    """A log written with the independent C2SP implementation (no chain_lite) gets the parent's
    cosignature over plain tlog-witness, and the cosignature verifies with raw Ed25519; an SM parent's
    (D-105) with an independent SM2 (gmalg, default identifier) over the same tlog-cosignature message."""
    h = hierarchy
    leaves = [b"a", b"b", b"c"]
    root, _ = ind.rfc6962_tree(leaves)
    text = ind.checkpoint_text(INDEPENDENT, len(leaves), root)
    note = text + "\n" + ind.log_signature(INDEPENDENT, h.independent_key, text)
    response = httpx.post(h.parent_url + "/add-checkpoint", content=b"old 0\n\n" + note.encode())
    assert response.status_code == 200, response.text
    (line,) = response.text.splitlines()
    name, encoded = line.removeprefix("\u2014 ").split(" ")
    raw = base64.b64decode(encoded)
    assert name == h.parent_witness.name
    timestamp, signature = int.from_bytes(raw[4:12], "big"), raw[12:]
    public = base64.b64decode(h.parent_witness.vkey().split("+", 2)[2])[1:]
    message = f"cosignature/v1\ntime {timestamp}\n{text}".encode()
    if h.suite.cosign_sigtype == SIGTYPE_SM2_COSIGNATURE:
        point = public[len(b"edgeroot/sm2-cosignature/v1") :]  # the type is 0xff and the identifier
        oracle = gmalg.SM2(uid=b"1234567812345678", pk=point)
        assert oracle.verify(message, signature[:32], signature[32:]), "gmalg refuses the SM2 cosignature"
    else:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)  # raises if it does not verify
    again = httpx.post(h.parent_url + "/add-checkpoint", content=b"old 0\n\n" + note.encode())
    assert again.status_code == 409 and again.headers["content-type"] == "text/x.tlog.size"
    assert again.text == f"{len(leaves)}\n"
    anchor = wait_until(
        "the independent log's anchor",
        lambda: httpx.get(h.parent_url + routes.anchors(INDEPENDENT)).json()["anchor"],
    )
    assert anchor["size"] == len(leaves)


def test_verify_anchor_says_what_was_proven_in_plain_words_and_names_an_unknown_child(
    hierarchy: Hierarchy, capsys: pytest.CaptureFixture[str]
) -> None:
    """Human output names the verdict, the parent entry and its cosigners; a log the parent does not
    witness is a usage error (exit 2) naming it; the parent's pointer route answers 404 for it."""
    h = hierarchy
    h.register("PUMP-1")
    cp = h.wait_child_cosigned_by_parent()
    h.wait_anchored(cp.checkpoint.size)
    path = h.tmp / "child.txt"
    path.write_bytes(cp.to_bytes())
    policy = str(h.parent_state / "policy.txt")
    assert main(["verify", "anchor", str(path), "--policy", policy, "--root", h.parent_url]) == 0
    out = capsys.readouterr().out
    assert f"ANCHORED: {CHILD} size {cp.checkpoint.size} is anchored itself at entry" in out
    assert f"of {PARENT}" in out

    wrong = str(h.child_state / "policy.txt")  # trusts the child's log, not the parent's
    assert main(["verify", "anchor", str(path), "--policy", wrong, "--root", h.parent_url]) == 1
    assert f"the parent's anchor of {CHILD} does NOT verify" in capsys.readouterr().err

    stranger = NoteKey.generate("stranger.test", SIGTYPE_ED25519)
    alien = h.tmp / "alien.txt"
    alien.write_bytes(
        sign_checkpoint(Checkpoint("stranger.test", 3, bytes(32)), stranger.log_signer()).to_bytes()
    )
    assert main(["verify", "anchor", str(alien), "--policy", policy, "--root", h.parent_url]) == 2
    assert "does not witness stranger.test" in capsys.readouterr().err
    assert httpx.get(h.parent_url + routes.anchors("stranger.test")).status_code == 404
