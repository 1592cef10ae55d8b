"""A parent witnesses the children it delegated to, with no ``[[child]]`` table (issue 14 items 1 and 4,
D-085), over real HTTP: two root nodes from :func:`tests.root_harness.running_root`, each with its own
SQLite file (or the child on PostgreSQL) and its own standalone witness."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.keys import NoteKey
from chain_lite.note import SIGTYPE_ED25519, VerifierKey
from chain_lite.registry import Delegation, Value, prefix_handle
from chain_lite.suite import SHA256, SM3
from edgeroot.cli import main
from edgeroot.system import wait_until
from resolver import config as root_config
from resolver.anchoring import ChildLog, ChildLogs, ensure_witness_key
from resolver.assembly import node_policy
from resolver.cosigning import request_body
from rootclient import routes
from tests.root_harness import (
    POSTGRES_DOWN,
    RootUnderTest,
    delegate,
    delegation_to,
    postgres_schema,
    running_root,
)

TOP, CHILD, PREFIX = "top.test", "secondary.test", "88.123.99"


@contextlib.contextmanager
def _two_nodes(tmp: Path, child_backend: str) -> Iterator[tuple[RootUnderTest, RootUnderTest]]:
    with contextlib.ExitStack() as stack:
        if child_backend == "sqlite":
            child_db = f"sqlite:///{tmp / 'child.db'}"
        else:
            child_db = stack.enter_context(postgres_schema())
        top = stack.enter_context(running_root(tmp / "top", f"sqlite:///{tmp / 'top.db'}", origin=TOP))
        child = stack.enter_context(
            running_root(tmp / "child", child_db, origin=CHILD, prefixes=(PREFIX,), parent=top.url)
        )
        # The child lists its parent's witness key as one more [[witness]] (as with a [[child]] table),
        # taken in by a reload; the parent has no [[child]] table at all.
        assert not root_config.load(top.state).children
        pkey = ensure_witness_key(top.state, TOP)
        witnesses = root_config.load(child.state).witnesses
        root_config.update(child.state / "root.toml", {"witness": [
            *({"name": w.name, "url": w.url, "vkey": str(w.vkey)} for w in witnesses),
            {"name": pkey.name, "url": top.url, "vkey": pkey.vkey()},
        ]})  # fmt: skip
        app = child.server.server.config.app
        assert isinstance(app, FastAPI)
        assert "witnesses now" in app.state.hooks.reload()
        yield top, child


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(
    POSTGRES_DOWN is not None, reason=f"PostgreSQL not reachable: {POSTGRES_DOWN}"))])  # fmt: skip
def nodes(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[RootUnderTest, RootUnderTest]]:
    with _two_nodes(tmp_path, request.param) as pair:
        yield pair


def _register(child: RootUnderTest, suffix: str) -> None:
    values = [Value(1, "URL", "string", f"https://plant.example/{suffix}")]
    with child.client() as c:
        c.write(child.write("create", f"{PREFIX}/{suffix}", values, child.admin_signer(PREFIX)))


def _checkpoint(child: RootUnderTest) -> SignedCheckpoint:
    with child.client() as c:
        return SignedCheckpoint.parse(c.checkpoint())


def _cosigned_by(child: RootUnderTest, top: RootUnderTest, above: int = 0) -> SignedCheckpoint:
    name = ensure_witness_key(top.state, TOP).name

    def found() -> SignedCheckpoint | None:
        cp = _checkpoint(child)
        signed = name in {s.name for s in cp.note.signatures}
        return cp if signed and cp.checkpoint.size > above else None

    cp = wait_until(f"a child checkpoint above size {above} cosigned by its parent", found, timeout=30)
    assert cp is not None
    return cp


def _anchors(top: RootUnderTest) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(top.url + routes.anchors(CHILD)).json()
    return answer


def _verify_anchor(tmp: Path, top: RootUnderTest, cp: SignedCheckpoint) -> tuple[int, dict[str, Any]]:
    path = tmp / f"cp-{cp.checkpoint.size}.txt"
    path.write_bytes(cp.to_bytes())
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["verify", "anchor", str(path), "--policy", str(top.policy_path), "--root", top.url,
                     "--json"])  # fmt: skip
    return code, json.loads(out.getvalue())


def _answers(top: RootUnderTest, status: int) -> float:
    """``edgeroot_root_anchor_answers`` for unknown logs (label ``?``) with ``status``, at the parent."""
    text = httpx.get(top.url + routes.METRICS).text
    line = f'edgeroot_root_anchor_answers_total{{child="?",status="{status}"}} '
    return sum(float(x.removeprefix(line)) for x in text.splitlines() if x.startswith(line))


def test_parent_anchors_its_delegated_child_and_stops_when_the_delegation_is_deleted(
    nodes: tuple[RootUnderTest, RootUnderTest], tmp_path: Path
) -> None:
    top, child = nodes
    _register(child, "PUMP-0")
    before = _checkpoint(child)
    # Not delegated yet: the parent does not know the child's log (tlog-witness: 404 unknown log).
    refused = httpx.post(
        top.url + routes.WITNESS_ADD_CHECKPOINT,
        content=request_body(before.checkpoint.size, [], before),
    )
    assert refused.status_code == 404 and f"unknown log '{CHILD}'" in refused.text, refused.text
    assert _anchors(top).get("anchor") is None

    delegate(top, delegation_to(child, PREFIX))
    top.settle()
    _register(child, "PUMP-1")
    cp = _cosigned_by(child, top, before.checkpoint.size)
    wait_until(
        f"child size {cp.checkpoint.size} anchored in the parent's log",
        lambda: (_anchors(top).get("anchor") or {}).get("size", -1) >= cp.checkpoint.size,
        timeout=30,
    )
    info = _anchors(top)
    assert info["vkey"] == str(child.policy.logs[0].verifier.vkey()) and info["url"] == child.url
    code, answer = _verify_anchor(tmp_path, top, cp)
    assert code == 0 and answer["anchored"] is True and answer["parent_log"] == TOP, answer

    # The child's latest checkpoint shown again is cosigned again (the parent still follows the child).
    child.settle()
    latest = _checkpoint(child)
    wait_until(
        "the parent's head at the child's latest checkpoint",
        lambda: _anchors(top)["cosigned_size"] == latest.checkpoint.size,
        timeout=30,
    )
    again = httpx.post(
        top.url + routes.WITNESS_ADD_CHECKPOINT, content=request_body(latest.checkpoint.size, [], latest)
    )
    assert again.status_code == 200, again.text

    # The delegation deleted (the prefix record updated without its HS_SITE value) and published: the
    # parent no longer cosigns the child.
    without = [Value(2, "URL", "string", "https://top.example/moved")]
    with top.client() as c:
        c.write(top.write("update", prefix_handle(PREFIX), without, top.admin_signer()))
    top.settle()
    gone = httpx.post(
        top.url + routes.WITNESS_ADD_CHECKPOINT, content=request_body(latest.checkpoint.size, [], latest)
    )
    assert gone.status_code == 404 and f"unknown log '{CHILD}'" in gone.text, gone.text
    refusals = _answers(top, 404)
    _register(child, "PUMP-2")  # the child's own cosigner now gets 404 from its former parent
    wait_until("the parent refusing the child's next checkpoint", lambda: _answers(top, 404) > refusals,
               timeout=30)  # fmt: skip

    def newer() -> SignedCheckpoint | None:
        cp = _checkpoint(child)
        return cp if cp.checkpoint.size > latest.checkpoint.size else None

    grown = wait_until("a newer child checkpoint", newer, timeout=30)
    assert grown is not None
    assert ensure_witness_key(top.state, TOP).name not in {s.name for s in grown.note.signatures}
    assert _anchors(top)["anchor"]["size"] <= latest.checkpoint.size
    assert _anchors(top)["vkey"] is None  # no longer a child log; its past anchors stay provable
    code, answer = _verify_anchor(tmp_path, top, cp)
    assert code == 0 and answer["anchored"] is True, answer


def test_child_logs_union_keeps_config_and_takes_the_hash_from_the_delegated_policy() -> None:
    """[[child]] entries stay, a delegation adds its log with the hash of its policy's log-hash line, a
    configured log wins over a delegation naming it, and a delegation gone removes its log."""
    external = NoteKey.generate("external.test", SIGTYPE_ED25519)
    sm = NoteKey.generate("sm-child.test", SIGTYPE_ED25519)
    vk = VerifierKey.parse(sm.vkey())
    policy = node_policy(vk, [], 0, suite=SM3).to_text()
    assert "log-hash sm3" in policy
    delegation = Delegation("88.123.5", ("http://127.0.0.1:1",), str(vk), policy)
    configured = ChildLog("external.test", VerifierKey.parse(external.vkey()), "")
    logs = ChildLogs([configured], {"external.test": SHA256})
    logs.set_delegated([delegation])
    assert set(logs) == {"external.test", "sm-child.test"} and logs.suites["sm-child.test"] is SM3
    assert logs.child("sm-child.test") is not None
    ext = VerifierKey.parse(external.vkey())
    shadowed = Delegation(
        "88.123.6", ("http://127.0.0.1:2",), str(ext), node_policy(ext, [], 0, suite=SM3).to_text()
    )
    logs.set_delegated([delegation, shadowed])  # the [[child]] table wins: its URL and hash stay
    assert logs.suites["external.test"] is SHA256 and logs.child("external.test") == configured
    logs.set_delegated([])
    assert set(logs) == {"external.test"} and "sm-child.test" not in logs.suites
