"""Referral resolution with proofs at every hop (issue 14 items 1-2), over real HTTP with three nodes:
top `88.123` → secondary `88.123.99` → enterprise `88.123.99.7`, and the second line: the top also serves
`88.200` and delegates `88.200.5` to the enterprise node, which serves both (tests/root_harness.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from pyhandle.handleclient import PyHandleClient

from chain_lite import b64
from chain_lite.checkpoint import SignedCheckpoint
from chain_lite.epcis_facts import DEFAULT_IDENTIFIER_BASE as BASE
from chain_lite.epcis_identifiers import identifier_uri
from chain_lite.errors import ChainError
from chain_lite.keys import NoteKey, generate_p256, public_der
from chain_lite.note import SIGTYPE_ED25519, VerifierKey
from chain_lite.registry import DEFAULT_TTL, Delegation, Record, Value, prefix_handle, pubkey_value
from chain_lite.resolution import PrefixProofError, ProofMemo, verify_resolution
from edge import store
from edge.pin_store import SqlitePinStore
from edge.registry_cache import RegistryCache
from edgeroot.cli import main
from edgeroot.event_commands import sign_document
from edgeroot.resolve import REFERRAL_EXIT
from resolver import config as root_config
from resolver.delegation_check import PrefixStatus, check_prefix
from resolver.handle_proxy import MemoryPinStore, ReferralFailed, ReferralFollower
from rootclient.client import MAX_REFERRAL_TTL_S, AsyncRootClient, Hop, NodeClients
from rootclient.codecs import resolution_from_json
from rootclient.errors import ClientError, DelegationChanged
from rootclient.pin_file import pin_file
from rootclient.pinned_log import PinnedLog
from tests.root_harness import (
    POSTGRES_DOWN,
    POSTGRES_URL,
    SECOND_LINE,
    Hierarchy,
    RootUnderTest,
    ServerThread,
    TamperingProxy,
    delegate,
    delegation_to,
    running_hierarchy,
    running_root,
)

PUMP = "88.123.99.7/PUMP-1"
VALVE = "88.123.99/VALVE-1"
MOTOR = "88.200.5/MOTOR-1"
"""A device under the enterprise node's second prefix (the second line)."""
DOWN = "http://127.0.0.1:1"  # nothing listens on port 1


PUMP_KEY = generate_p256()


def _register(node: RootUnderTest, identifier: str) -> None:
    key = PUMP_KEY if identifier == PUMP else generate_p256()
    values = [pubkey_value(1, key.public_key()), Value(2, "DEVICE", "string", identifier)]
    with node.client() as c:  # the node's one admin key, named for the identifier's prefix
        c.write(node.write("create", identifier, values, node.admin_signer(identifier.partition("/")[0])))
    node.settle()


def _populate(h: Hierarchy) -> Hierarchy:
    _register(h.enterprise, PUMP)
    _register(h.secondary, VALVE)
    if SECOND_LINE[1] in h.enterprise.prefixes:
        _register(h.enterprise, MOTOR)
    return h


@pytest.fixture(scope="module")
def hierarchy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hierarchy]:
    """Three nodes on SQLite, the enterprise node serving two prefixes (the second line), a device at
    the enterprise node and one at the secondary node."""
    with running_hierarchy(tmp_path_factory.mktemp("hierarchy"), second_line=True) as h:
        yield _populate(h)


class Cli:
    """`edgeroot resolve --verify` from the top node, with a pin directory of its own."""

    def __init__(self, h: Hierarchy, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.h, self.config, self.capsys = h, config, capsys

    def resolve(self, identifier: str, *extra: str, top: str | None = None) -> tuple[int, dict[str, Any]]:
        args = ["resolve", identifier, "--root", top or self.h.top.url, "--verify", "--policy"]
        code = main([*args, str(self.h.top.policy_path), "--config-dir", str(self.config), "--json", *extra])
        return code, json.loads(self.capsys.readouterr().out)


@pytest.fixture
def cli(hierarchy: Hierarchy, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(hierarchy, tmp_path / "cfg", capsys)


def _check_proven_through_three_nodes(h: Hierarchy, cli: Cli) -> None:
    code, answer = cli.resolve(PUMP)
    assert code == 0, answer
    assert answer["message"].startswith("PROVEN via 88.123 → 88.123.99 → 88.123.99.7: 88.123.99.7/PUMP-1")
    assert answer["log"] == "enterprise.test" and answer["node"] == h.enterprise.url
    hops = answer["hops"]
    assert [(x["log"], x["delegated_prefix"], x["proven"]) for x in hops] == [
        ("top.test", None, "referral"),
        ("secondary.test", "88.123.99", "referral"),
        ("enterprise.test", "88.123.99.7", "record"),
    ]
    assert [x["referral"]["prefix"] for x in hops[:2]] == ["88.123.99", "88.123.99.7"]
    assert hops[0]["referral"]["policy"] == h.secondary.policy_path.read_text()
    assert [v["type"] for v in answer["values"]] == ["HS_PUBKEY", "DEVICE"]
    for node in h.nodes:  # one pin per log, each at its log's size
        pinned = json.loads(pin_file(node.origin, cli.config).read_text())
        assert pinned["origin"] == node.origin, pinned


def test_resolve_from_the_top_proves_every_hop_down_to_the_enterprise_node(
    hierarchy: Hierarchy, cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    """`resolve --verify` at the top follows two delegations, each proven, to the enterprise record;
    every log gets its own pin; the human output names each hop."""
    _check_proven_through_three_nodes(hierarchy, cli)
    code = main(
        ["resolve", PUMP, "--root", hierarchy.top.url, "--verify", "--policy", str(hierarchy.top.policy_path),
         "--config-dir", str(cli.config)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "PROVEN via 88.123 → 88.123.99 → 88.123.99.7" in out
    assert (
        "1. " + hierarchy.top.url + " log top.test (trust anchor (--policy)): delegation of 88.123.99" in out
    )
    assert (
        "3. " + hierarchy.enterprise.url + " log enterprise.test (delegated 88.123.99.7): the record" in out
    )


def test_absence_is_proven_at_the_node_responsible(hierarchy: Hierarchy, cli: Cli) -> None:
    """An identifier nobody registered is proven absent by the enterprise node, not by the top."""
    code, answer = cli.resolve("88.123.99.7/NOBODY")
    assert code == 0 and answer["message"].startswith("PROVEN ABSENT via 88.123 → 88.123.99 → 88.123.99.7")
    assert answer["log"] == "enterprise.test" and answer["hops"][-1]["proven"] == "absent"
    code, answer = cli.resolve(VALVE)
    assert code == 0 and [x["log"] for x in answer["hops"]] == ["top.test", "secondary.test"]
    code, answer = cli.resolve("88.123/NOBODY")  # served by the top itself: one hop, as before
    assert code == 0 and answer["message"].startswith("PROVEN ABSENT: ") and len(answer["hops"]) == 1


def test_resolve_without_verify_follows_the_hints_and_says_it_is_unverified(
    hierarchy: Hierarchy, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --verify the CLI follows the answers' referral hints to the node that has the record."""
    code = main(["resolve", PUMP, "--root", hierarchy.top.url, "--json"])
    answer = json.loads(capsys.readouterr().out)
    assert code == 0 and answer["message"] == f"{PUMP} (unverified)"
    assert answer["nodes"] == [hierarchy.top.url, hierarchy.secondary.url, hierarchy.enterprise.url]
    assert main(["resolve", PUMP, "--root", hierarchy.top.url, "--max-hops", "2"]) == 2
    assert "cannot follow the referral" in capsys.readouterr().err


def test_resolve_at_a_past_size_refuses_a_delegated_identifier(
    hierarchy: Hierarchy, cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--at N` verifies one node's past state: proven delegated there, it says so (exit 2), never
    "absent"."""
    size = hierarchy.top.settle()
    args = [
        "resolve",
        PUMP,
        "--root",
        hierarchy.top.url,
        "--verify",
        "--policy",
        str(hierarchy.top.policy_path),
    ]
    assert main([*args, "--at", str(size), "--config-dir", str(cli.config)]) == 2
    assert "--at does not follow referrals" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["resolve", "--help"])
    assert "log size N of the --root node's log" in " ".join(capsys.readouterr().out.split())


def test_the_top_answer_carries_the_delegation_with_its_map_proof(hierarchy: Hierarchy) -> None:
    """The top's `/v1/resolve` answer proves every prefix record of the identifier and hints the
    referral; the proven 0.na/88.123.99 record is the delegation the secondary node was given."""
    answer = httpx.get(f"{hierarchy.top.url}/v1/resolve/{PUMP}").json()
    assert answer["found"] is False and answer["referral"]["urls"] == [hierarchy.secondary.url]
    chain = answer["proof"]["prefixes"]
    assert [p["prefix"] for p in chain] == ["88", "88.123", "88.123.99", "88.123.99.7"]
    assert [p["record"] is None for p in chain] == [True, False, False, True]
    record = Record.decode(b64.decode(chain[2]["record"]) or b"")
    assert record.delegation() == delegation_to(hierarchy.secondary, "88.123.99")


def test_a_parent_refuses_writes_under_a_delegated_prefix_with_the_referral(hierarchy: Hierarchy) -> None:
    """Handle's 301 "not served here": identifiers and sub-prefixes of a delegated prefix are the child's;
    a delegation of a prefix the node still has records under, and a malformed one, are refused."""
    top = hierarchy.top
    value = [Value(1, "URL", "string", "x")]
    for identifier in ("88.123.99/NEW", prefix_handle("88.123.99.7"), "88.123.99.7/NEW"):
        raw = top.write("create", identifier, value, top.admin_signer())
        answer = httpx.post(
            f"{top.url}/v1/registry", content=raw, headers={"content-type": "application/cose"}
        )
        body = answer.json()
        assert answer.status_code == 400 and body["responseCode"] == 301, body
        assert body["referral"]["prefix"] == "88.123.99" and body["referral"]["urls"] == [
            hierarchy.secondary.url
        ]
        assert "delegated to" in body["message"]
    with top.client() as c:  # the delegation record itself stays the parent's to change
        c.write(top.write("create", "88.123/KEEP", value, top.admin_signer()))
        top.settle()
        child = delegation_to(hierarchy.enterprise, "88.123")
        with pytest.raises(ClientError) as refused:
            c.write(top.write("update", prefix_handle("88.123"), [child.value()], top.admin_signer()))
        assert refused.value.status == 403  # may not delegate its own root prefix at all
        c.write(
            top.write(
                "create", prefix_handle("88.123.50"), [Value(1, "DESC", "string", "x")], top.admin_signer()
            )
        )
        admin50 = top.add_prefix("88.123.51")
        c.write(top.write("create", "88.123.51/THING", value, admin50))
        top.settle()
        with pytest.raises(ClientError, match=r"still holds 88\.123\.51/thing") as below:
            c.write(
                top.write("update", prefix_handle("88.123.51"),
                          [delegation_to(hierarchy.enterprise, "88.123.51").value()], top.admin_signer())
            )  # fmt: skip
        assert below.value.status == 409
        garbage = Value(1, "HS_SITE", "base64", b64.encode(b"\x80"))
        with pytest.raises(ClientError, match="delegation") as bad:
            c.write(top.write("update", prefix_handle("88.123.50"), [garbage], top.admin_signer()))
        assert bad.value.status == 400 and bad.value.handle_code == 202


def test_a_node_that_does_not_hold_the_delegated_prefix_is_exit_6(
    hierarchy: Hierarchy, cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    """`register prefix --node --node-policy` writes a delegation; delegated to a node that does not
    hold the prefix, resolution stops with exit 6 naming it."""
    top, secondary = hierarchy.top, hierarchy.secondary
    code = main(
        ["register", "prefix", "88.123.98", "--root", top.url, "--key", str(top.state / "admin.pem"),
         "--node", secondary.url, "--node-policy", str(secondary.policy_path), "--json"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr()
    capsys.readouterr()
    top.settle()
    code, answer = cli.resolve("88.123.98/X")
    assert code == REFERRAL_EXIT["not-delegated"] == 6, answer
    assert answer["referral_error"] == "not-delegated"
    assert "node answered for 88.123.98 without holding it" in answer["error"]
    assert [x["log"] for x in answer["hops"]] == ["top.test"]


def test_a_dead_child_is_exit_5(hierarchy: Hierarchy, cli: Cli) -> None:
    """A delegation whose URLs all fail: exit 5, naming each URL's failure."""
    delegate(hierarchy.top, delegation_to(hierarchy.enterprise, "88.123.97", urls=(DOWN,)))
    hierarchy.top.settle()
    code, answer = cli.resolve("88.123.97/X")
    assert code == REFERRAL_EXIT["dead-child"] == 5, answer
    assert "no URL of the delegated node answered" in answer["error"] and DOWN in answer["error"]


def test_a_delegation_loop_is_exit_3(hierarchy: Hierarchy, cli: Cli) -> None:
    """The enterprise node delegating a prefix back to the top's log: exit 3, naming the path."""
    delegate(hierarchy.enterprise, delegation_to(hierarchy.top, "88.123.99.7.1"))
    hierarchy.enterprise.settle()
    code, answer = cli.resolve("88.123.99.7.1/X")
    assert code == REFERRAL_EXIT["loop"] == 3, answer
    assert "already visited (top.test -> secondary.test -> enterprise.test)" in answer["error"]


def test_more_referrals_than_max_hops_is_exit_4(cli: Cli) -> None:
    """`--max-hops 2` stops a lookup that needs three nodes: exit 4."""
    code, answer = cli.resolve(PUMP, "--max-hops", "2")
    assert code == REFERRAL_EXIT["depth"] == 4, answer
    assert len(answer["hops"]) == 2


def _rewrite_delegation(answer: dict[str, Any], url: str) -> dict[str, Any]:
    """Point the proven delegation of 88.123.99 at ``url`` (the map proof cannot follow)."""
    for entry in answer["proof"]["prefixes"]:
        if entry["prefix"] == "88.123.99":
            record = Record.decode(b64.decode(entry["record"]) or b"")
            old = record.delegation()
            assert old is not None
            forged = Delegation(old.prefix, (url,), old.vkey, old.policy)
            entry["record"] = b64.encode(Record(record.identifier, (forged.value().stamped(1),)).encode())
    return answer


def test_a_forged_delegation_is_exit_7(hierarchy: Hierarchy, cli: Cli) -> None:
    """A top node (or a man in the middle) pointing the delegation elsewhere: its map proof fails."""
    proxy = TamperingProxy(hierarchy.top.url, lambda a: _rewrite_delegation(a, DOWN))
    with ServerThread(proxy) as front:
        code, answer = cli.resolve(PUMP, top=front.url)
    assert code == REFERRAL_EXIT["forged-delegation"] == 7, answer
    assert "proof of the prefix record 0.na/88.123.99" in answer["error"]


def _forge_record(answer: dict[str, Any]) -> dict[str, Any]:
    fake = Record("88.123.99.8/x", (Value(1, "URL", "string", "http://evil.example"),))
    answer["proof"]["record"] = b64.encode(fake.encode())
    return answer


def test_a_forged_child_answer_is_exit_8(hierarchy: Hierarchy, cli: Cli) -> None:
    """A child whose answer does not verify under the delegated policy (a record its map does not hold;
    another log answering at the delegated URL): exit 8."""
    proxy = TamperingProxy(hierarchy.enterprise.url, _forge_record)
    with ServerThread(proxy) as front:
        delegate(hierarchy.secondary, delegation_to(hierarchy.enterprise, "88.123.99.8", urls=(front.url,)))
        hierarchy.secondary.settle()
        code, answer = cli.resolve("88.123.99.8/X")
    assert code == REFERRAL_EXIT["forged-answer"] == 8, answer
    assert "does NOT verify under the policy its delegation commits to" in answer["error"]
    impostor = delegation_to(hierarchy.secondary, "88.123.96", urls=(hierarchy.enterprise.url,))
    delegate(hierarchy.top, impostor)
    hierarchy.top.settle()
    code, answer = cli.resolve("88.123.96/X")
    assert code == 8, answer
    assert (
        "answered with log enterprise.test, but 88.123.96 is delegated to log secondary.test"
        in answer["error"]
    )


def test_a_delegation_changed_after_the_pin_is_exit_9(hierarchy: Hierarchy, cli: Cli) -> None:
    """Once enterprise.test is pinned, a delegation naming another key for it fails with exit 9 (the
    pinned checkpoint does not verify under the new policy), before anything from the node is used."""
    assert cli.resolve(PUMP)[0] == 0
    impostor_key = NoteKey.generate("enterprise.test", SIGTYPE_ED25519)
    original = delegation_to(hierarchy.enterprise, "88.123.99.7")
    changed = Delegation(
        original.prefix, original.urls, impostor_key.vkey(), f"log {impostor_key.vkey()}\nquorum none\n"
    )
    delegate(hierarchy.secondary, changed, op="update")
    try:
        hierarchy.secondary.settle()
        code, answer = cli.resolve(PUMP)
        assert code == REFERRAL_EXIT["delegation-changed"] == 9, answer
        assert "changed after the pin" in answer["error"]
    finally:
        delegate(hierarchy.secondary, original, op="update")
        hierarchy.secondary.settle()
    assert cli.resolve(PUMP)[0] == 0


# --- a warm client reuses proven delegations by their TTL (D-091) -------------------------------------------


class _Counting:
    """A TamperingProxy's ``tamper`` that changes nothing and counts the resolutions it passes on."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, answer: dict[str, Any]) -> dict[str, Any]:
        self.count += 1
        return answer


class _WarmClient:
    """One warm client (:class:`NodeClients`, one in-memory pin per log) whose clock the test moves."""

    def __init__(self, h: Hierarchy) -> None:
        self.h = h
        self.now = 0.0
        self.pins: dict[str, MemoryPinStore] = {}
        self.nodes = NodeClients(pins=self.pin, clock=lambda: self.now)

    def pin(self, origin: str) -> MemoryPinStore:
        return self.pins.setdefault(origin, MemoryPinStore())

    async def resolve(self, top: AsyncRootClient, identifier: str) -> tuple[Hop, ...]:
        return await self.nodes.resolve(top, identifier, self.h.top.policy)


def test_a_warm_client_asks_for_a_proven_delegation_again_only_after_its_ttl(hierarchy: Hierarchy) -> None:
    """Within its TTL a delegation proven once serves every identifier under its prefix without asking
    the nodes that proved it (the hop chain still lists those hops and proofs); after the TTL, or once
    its log no longer vouches for the checkpoint it was proven at, the top is asked again."""
    counter = _Counting()
    warm = _WarmClient(hierarchy)

    async def scenario(front: str) -> dict[str, Any]:
        async with AsyncRootClient(front) as top:
            out: dict[str, Any] = {"first": await warm.resolve(top, PUMP), "asked_first": counter.count}
            out["again"] = await warm.resolve(top, PUMP)
            out["other"] = await warm.resolve(top, "88.123.99.7/NOBODY")
            out["valve"] = await warm.resolve(top, VALVE)
            out["asked_within"] = counter.count
            warm.now += MAX_REFERRAL_TTL_S + 1
            out["late"] = await warm.resolve(top, PUMP)
            out["asked_late"] = counter.count
            warm.nodes.logs.clear()  # the logs that proved the delegations are gone: nothing vouches
            out["unvouched"] = await warm.resolve(top, PUMP)
            out["asked_unvouched"] = counter.count
        await warm.nodes.aclose()
        return out

    with ServerThread(TamperingProxy(hierarchy.top.url, counter)) as front:
        out = asyncio.run(scenario(front.url))
    first, again, other, valve, late = (out[k] for k in ("first", "again", "other", "valve", "late"))
    assert [h.origin for h in first] == ["top.test", "secondary.test", "enterprise.test"]
    assert first[0].referral_ttl_s == DEFAULT_TTL and first[1].referral_ttl_s == DEFAULT_TTL
    assert out["asked_first"] == 1 and out["asked_within"] == 1, out
    assert again[0] is first[0] and again[1] is first[1]  # the proven delegations, not asked again
    assert again[2] is not first[2] and again[2].verified.proven.record == first[2].verified.proven.record
    assert other[:2] == first[:2] and other[2].verified.proven.record is None  # absent, at the enterprise
    assert valve[0] is first[0] and [h.origin for h in valve] == ["top.test", "secondary.test"]
    assert out["asked_late"] == 2 and late[0] is not first[0] and late[1] is not first[1]
    assert [h.origin for h in late] == [h.origin for h in first]
    assert out["asked_unvouched"] == 3 and out["unvouched"][0] is not late[0]


def test_a_warm_client_catches_a_delegation_changed_after_the_pin_once_its_ttl_is_over(
    hierarchy: Hierarchy,
) -> None:
    """A delegation changed at the parent after the child log was pinned: within the TTL the warm client
    keeps using the one it proved (as Handle's TTL allows); after it, it asks again and refuses the new
    one with DelegationChanged, since the pinned checkpoint does not verify under its policy."""
    warm = _WarmClient(hierarchy)
    impostor_key = NoteKey.generate("enterprise.test", SIGTYPE_ED25519)
    original = delegation_to(hierarchy.enterprise, "88.123.99.7")
    changed = Delegation(
        original.prefix, original.urls, impostor_key.vkey(), f"log {impostor_key.vkey()}\nquorum none\n"
    )

    async def scenario() -> tuple[tuple[Hop, ...], tuple[Hop, ...], DelegationChanged]:
        async with AsyncRootClient(hierarchy.top.url) as top:
            first = await warm.resolve(top, PUMP)
            # The harness's writes use the synchronous client: off this loop, in a worker thread.
            await asyncio.to_thread(delegate, hierarchy.secondary, changed, op="update")
            await asyncio.to_thread(hierarchy.secondary.settle)
            within = await warm.resolve(top, PUMP)
            warm.now += MAX_REFERRAL_TTL_S + 1
            with pytest.raises(DelegationChanged) as caught:
                await warm.resolve(top, PUMP)
        await warm.nodes.aclose()
        return first, within, caught.value

    try:
        first, within, caught = asyncio.run(scenario())
    finally:
        delegate(hierarchy.secondary, original, op="update")
        hierarchy.secondary.settle()
    assert within[1] is first[1] and within[2].verified.proven.record == first[2].verified.proven.record
    assert caught.kind == "delegation-changed" and "changed after the pin" in caught.message
    hops = cast(tuple[Hop, ...], caught.hops)  # ReferralError keeps them as objects (rootclient.errors)
    assert [h.origin for h in hops] == ["top.test", "secondary.test"]
    assert hops[1].referral == changed


def test_a_memo_of_shared_proof_parts_never_lets_other_bytes_through(hierarchy: Hierarchy) -> None:
    """Answers of one checkpoint share the map head's inclusion and the prefix records: with a memo
    they verify to the same result, and a forged prefix record or receipt hash in a later answer is
    still refused (the memo is keyed by every byte it checked)."""
    top = hierarchy.top
    size = top.settle()
    answers = [httpx.get(f"{top.url}/v1/resolve/{i}").json() for i in (PUMP, "88.123.99.7/OTHER")]
    proofs = [resolution_from_json(a) for a in answers]
    assert {p.receipt.checkpoint.checkpoint.size for p in proofs} == {size}
    verified = top.policy.verify_checkpoint(proofs[0].receipt.checkpoint, top.origin)
    memo = ProofMemo()
    for proof in proofs:
        assert verify_resolution(proof, verified, memo=memo) == verify_resolution(proof, verified)
    forged = resolution_from_json(_rewrite_delegation(json.loads(json.dumps(answers[1])), DOWN))
    with pytest.raises(PrefixProofError, match=r"0\.na/88\.123\.99"):
        verify_resolution(forged, verified, memo=memo)
    bent = json.loads(json.dumps(answers[1]))
    receipt = bent["proof"]["receipt"].splitlines()
    receipt[2] = b64.encode(bytes(32))  # the first hash of the map head's inclusion proof
    bent["proof"]["receipt"] = "\n".join(receipt) + "\n"
    with pytest.raises(ChainError):
        verify_resolution(resolution_from_json(bent), verified, memo=memo)


@pytest.mark.skipif(
    bool(POSTGRES_DOWN), reason=f"PostgreSQL not reachable at {POSTGRES_URL}: {POSTGRES_DOWN}"
)
def test_three_nodes_on_postgresql_resolve_through_referrals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same hierarchy with the secondary node on PostgreSQL proves every hop (one node per test
    database: the sequencer's advisory lock is per database)."""
    with running_hierarchy(tmp_path / "pg", ("sqlite", "postgresql", "sqlite")) as h:
        _populate(h)
        _check_proven_through_three_nodes(h, Cli(h, tmp_path / "cfg", capsys))


# --- the Handle API follows referrals (issue 14 item 3) -------------------------------------------------


def test_an_unmodified_handle_client_reads_the_enterprise_record_through_the_top(
    hierarchy: Hierarchy,
) -> None:
    """pyhandle reading from the top node gets the enterprise node's record, value for value."""
    top = PyHandleClient("rest").instantiate_for_read_access(handle_server_url=hierarchy.top.url)
    own = httpx.get(f"{hierarchy.enterprise.url}/api/handles/{PUMP}").json()
    assert top.retrieve_handle_record_json(PUMP)["values"] == own["values"]
    assert top.retrieve_handle_record(PUMP)["DEVICE"] == PUMP
    assert top.retrieve_handle_record("88.123.99.7/NOBODY") is None  # proven absent at the enterprise node
    via = httpx.get(f"{hierarchy.top.url}/api/handles/{PUMP}", params={"type": "DEVICE"}).json()
    assert [v["type"] for v in via["values"]] == ["DEVICE"] and "hops" not in via


def test_the_handle_api_adds_the_hop_chain_or_answers_with_the_delegation(hierarchy: Hierarchy) -> None:
    """`?proof=true` adds the top's own proof and the verified hops; `?referral=true` gives the
    delegation record instead of following it."""
    top = hierarchy.top.url
    proven = httpx.get(f"{top}/api/handles/{PUMP}", params={"proof": "true"}).json()
    assert [(h["log"], h["proven"]) for h in proven["hops"]] == [
        ("secondary.test", "referral"),
        ("enterprise.test", "record"),
    ]
    assert [p["prefix"] for p in proven["proof"]["prefixes"]][-2:] == ["88.123.99", "88.123.99.7"]
    referral = httpx.get(f"{top}/api/handles/{PUMP}", params={"referral": "true"})
    body = referral.json()
    assert referral.status_code == 200 and body["responseCode"] == 1
    assert body["referral"]["prefix"] == "88.123.99" and body["referral"]["urls"] == [hierarchy.secondary.url]
    assert [v["type"] for v in body["values"]] == ["HS_SITE"]


def test_the_handle_api_answers_502_when_the_child_is_dead(hierarchy: Hierarchy) -> None:
    """A delegation that cannot be followed is Handle code 2 with HTTP 502, naming the failure."""
    delegate(hierarchy.top, delegation_to(hierarchy.enterprise, "88.123.94", urls=(DOWN,)))
    hierarchy.top.settle()
    answer = httpx.get(f"{hierarchy.top.url}/api/handles/88.123.94/X")
    assert answer.status_code == 502 and answer.json()["responseCode"] == 2
    assert "no URL of the delegated node answered" in answer.json()["message"]


async def _follow(
    follower: ReferralFollower, delegation: Delegation, *identifiers: str
) -> list[tuple[Hop, ...]]:
    """``follower``'s answers for ``identifiers`` in turn; then the follower is closed, as its node does."""
    try:
        return [await follower.follow(delegation, identifier) for identifier in identifiers]
    finally:
        await follower.aclose()


def test_the_follower_caches_by_ttl_and_bounds_the_recursion(hierarchy: Hierarchy) -> None:
    """A followed answer is reused within its TTL and fetched again after; `max_hops` bounds the chain."""
    delegation = delegation_to(hierarchy.secondary, "88.123.99")
    pump = PUMP.lower()
    first, again = asyncio.run(_follow(ReferralFollower("top.test"), delegation, pump, pump))
    assert first is again and [h.origin for h in first] == ["secondary.test", "enterprise.test"]
    first, again = asyncio.run(_follow(ReferralFollower("top.test", max_ttl_s=0), delegation, pump, pump))
    assert first is not again and first[-1].verified.proven.record == again[-1].verified.proven.record
    with pytest.raises(ReferralFailed, match="more than 1 nodes to ask") as deep:
        asyncio.run(_follow(ReferralFollower("top.test", max_hops=1), delegation, pump))
    assert deep.value.kind == "depth"
    with pytest.raises(ReferralFailed, match="already visited"):
        asyncio.run(_follow(ReferralFollower("enterprise.test"), delegation, pump))
    with pytest.raises(ReferralFailed, match=r"delegated to log secondary\.test, this one"):
        asyncio.run(_follow(ReferralFollower("secondary.test"), delegation, pump))


# --- long-lived followers are warm clients (D-130): one connection per child node, TTL-bound reuse ------


@contextlib.contextmanager
def _child_behind_a_front(
    h: Hierarchy, tmp: Path, prefix: str, devices: int, *, ttl: int = DEFAULT_TTL
) -> Iterator[tuple[RootUnderTest, TamperingProxy, str]]:
    """A fresh node serving ``prefix`` under the secondary node (a prefix no other test delegates),
    ``devices`` devices registered at it (``PREFIX/DEV-i``), and the secondary node's delegation of
    ``prefix`` (its ``HS_SITE`` ttl ``ttl``) pointing at a front that forwards to it and records what
    is asked over which connections: (the node, the front, the front's URL)."""
    origin = f"child{prefix.rpartition('.')[2]}.test"
    home = tmp / origin
    with running_root(
        home, f"sqlite:///{home / 'root.db'}", origin=origin, prefixes=(prefix,), parent=h.secondary.url
    ) as child:
        for i in range(devices):
            _register(child, f"{prefix}/DEV-{i}")
        front = TamperingProxy(child.url)
        with ServerThread(front) as served:
            delegate(h.secondary, delegation_to(child, prefix, urls=(served.url,)), ttl=ttl)
            h.secondary.settle()
            yield child, front, served.url


def test_handle_api_lookups_through_the_top_open_one_connection_to_the_child_not_one_each(
    hierarchy: Hierarchy, tmp_path: Path
) -> None:
    """N lookups of N identifiers through the top's Handle API each ask the child node, over ONE
    connection: the top's follower keeps its clients (and pins, and proven delegations) for the node's
    life instead of opening them per lookup."""
    with _child_behind_a_front(hierarchy, tmp_path, "88.123.99.6", devices=3) as (_child, front, url):
        asked = [f"88.123.99.6/DEV-{i}" for i in range(3)] + [f"88.123.99.6/NOBODY-{i}" for i in range(9)]
        with httpx.Client(base_url=hierarchy.top.url, timeout=30) as http:
            answers = [http.get(f"/api/handles/{i}", params={"proof": "true"}) for i in asked]
    assert [a.status_code for a in answers] == [200] * 3 + [404] * 9, [a.text for a in answers]
    hops = answers[0].json()["hops"]
    assert [(h["log"], h["node"]) for h in hops] == [
        ("secondary.test", hierarchy.secondary.url),
        ("child6.test", url),
    ]
    assert len(front.asked("/v1/resolve/")) == len(asked)  # every lookup reached the child
    assert len(front.connections()) == 1, front.requests


def test_the_handle_api_sees_a_changed_delegation_once_its_ttl_is_over(
    hierarchy: Hierarchy, tmp_path: Path
) -> None:
    """The follower reuses a delegation it proved, and the answers it reached through it, only for the
    delegation's TTL (its HS_SITE ttl, 60 s here), however long the record's own TTL: a delegation
    moved to another URL is followed there once the TTL is over (a cached answer too); one that names
    another log key is refused as delegation-changed once the TTL is over."""
    now = [0.0]
    follower = ReferralFollower("top.test", clock=lambda: now[0])
    from_top = delegation_to(hierarchy.secondary, "88.123.99")
    device, other = "88.123.99.5/dev-0", "88.123.99.5/nobody"

    with _child_behind_a_front(hierarchy, tmp_path, "88.123.99.5", devices=1, ttl=60) as (child, _front, url):
        moved_front = TamperingProxy(child.url)
        with ServerThread(moved_front) as moved:
            impostor = NoteKey.generate(child.origin, SIGTYPE_ED25519)
            changed = Delegation(
                "88.123.99.5", (moved.url,), impostor.vkey(), f"log {impostor.vkey()}\nquorum none\n"
            )

            async def rewrite(delegation: Delegation) -> None:
                # The harness's writes use the synchronous client: off this loop, in a worker thread.
                await asyncio.to_thread(delegate, hierarchy.secondary, delegation, op="update", ttl=60)
                await asyncio.to_thread(hierarchy.secondary.settle)

            async def scenario() -> dict[str, Any]:
                out: dict[str, Any] = {}
                try:
                    out["first"] = await follower.follow(from_top, device)
                    await rewrite(delegation_to(child, "88.123.99.5", urls=(moved.url,)))
                    now[0] = 59.0
                    out["cached"] = await follower.follow(from_top, device)
                    out["within"] = await follower.follow(from_top, other)
                    now[0] = 61.0
                    out["after"] = await follower.follow(from_top, device)
                    await rewrite(changed)
                    now[0] = 120.0
                    out["still"] = await follower.follow(from_top, other + "-2")
                    now[0] = 122.0
                    for name, identifier in (("refused", other + "-3"), ("refused_cached", device)):
                        try:
                            await follower.follow(from_top, identifier)
                        except ReferralFailed as exc:
                            out[name] = exc
                finally:
                    await follower.aclose()
                return out

            out = asyncio.run(scenario())
    first, cached, within, after = (out[k] for k in ("first", "cached", "within", "after"))
    assert [h.url for h in first] == [hierarchy.secondary.url, url]
    assert first[-1].verified.proven.record is not None
    assert cached is first  # the answer and the delegation it went through, within the delegation's TTL
    assert within[0] is first[0] and within[-1].url == url and within[-1].verified.proven.record is None
    assert after[0] is not first[0] and after[-1].url == moved.url  # asked again once the TTL is over
    assert after[-1].verified.proven.record == first[-1].verified.proven.record
    assert out["still"][0] is after[0]  # within the TTL the delegation proven before is still used
    for name in ("refused", "refused_cached"):
        assert out[name].kind == "delegation-changed", out[name]
        assert "changed after the pin" in out[name].message


# --- a node serving several prefixes (issue 14 item 1, D-125 - D-127) -------------------------------------


def test_records_under_both_prefixes_of_the_enterprise_node_are_proven_from_the_top(
    hierarchy: Hierarchy, cli: Cli
) -> None:
    """The enterprise node serves `88.123.99.7` (delegated by the secondary node) and `88.200.5`
    (delegated by the top): `resolve --verify` at the top proves a record and an absence under each,
    every hop naming the prefix it serves, with one pin per log."""
    code, answer = cli.resolve(MOTOR)
    assert code == 0, answer
    assert answer["message"].startswith(f"PROVEN via 88.200 → 88.200.5: {MOTOR}")
    assert answer["log"] == "enterprise.test" and answer["node"] == hierarchy.enterprise.url
    assert [(x["log"], x["delegated_prefix"], x["served_prefix"], x["proven"]) for x in answer["hops"]] == [
        ("top.test", None, "88.200", "referral"),
        ("enterprise.test", "88.200.5", "88.200.5", "record"),
    ]
    assert answer["hops"][0]["referral"]["policy"] == hierarchy.enterprise.policy_path.read_text()
    assert [v["value"] for v in answer["values"] if v["type"] == "DEVICE"] == [MOTOR]
    _check_proven_through_three_nodes(hierarchy, cli)  # the other prefix, at the same node, same pins
    code, answer = cli.resolve("88.200.5/NOBODY")
    assert code == 0 and answer["message"].startswith("PROVEN ABSENT via 88.200 → 88.200.5"), answer
    assert answer["log"] == "enterprise.test"


def test_the_handle_api_at_the_top_reads_records_under_both_prefixes_of_the_enterprise_node(
    hierarchy: Hierarchy,
) -> None:
    """An unmodified Handle client reading from the top gets the enterprise record under each of its
    prefixes; the enterprise node itself answers 100 under its prefixes and 301 (not responsible) under
    a sibling it does not serve."""
    top = PyHandleClient("rest").instantiate_for_read_access(handle_server_url=hierarchy.top.url)
    assert top.retrieve_handle_record(MOTOR)["DEVICE"] == MOTOR
    assert top.retrieve_handle_record(PUMP)["DEVICE"] == PUMP
    proven = httpx.get(f"{hierarchy.top.url}/api/handles/{MOTOR}", params={"proof": "true"}).json()
    assert [(h["log"], h["delegated_prefix"], h["proven"]) for h in proven["hops"]] == [
        ("enterprise.test", "88.200.5", "record")
    ]
    own = httpx.get(f"{hierarchy.enterprise.url}/api/handles/{MOTOR}").json()
    assert proven["values"] == own["values"]
    for identifier in ("88.200.5/NOBODY", "88.123.99.7/NOBODY"):
        answer = httpx.get(f"{hierarchy.enterprise.url}/api/handles/{identifier}")
        assert answer.status_code == 404 and answer.json()["responseCode"] == 100, answer.text
    elsewhere = httpx.get(f"{hierarchy.enterprise.url}/api/handles/88.200.9/X")
    assert elsewhere.status_code == 400 and elsewhere.json()["responseCode"] == 301, elsewhere.text


def test_a_sibling_prefix_delegated_to_the_enterprise_node_it_does_not_serve_is_exit_6(
    hierarchy: Hierarchy, cli: Cli
) -> None:
    """The top delegating `88.200.6` to the enterprise node, which serves `88.200.5` but not `88.200.6`:
    the node is asked for a prefix it does not serve, exit 6 naming it."""
    delegate(hierarchy.top, delegation_to(hierarchy.enterprise, "88.200.6"))
    hierarchy.top.settle()
    code, answer = cli.resolve("88.200.6/X")
    assert code == REFERRAL_EXIT["not-delegated"] == 6, answer
    assert "node answered for 88.200.6 without holding it" in answer["error"]
    assert [x["log"] for x in answer["hops"]] == ["top.test"]


def test_a_write_under_neither_prefix_of_the_enterprise_node_is_refused_as_not_responsible(
    hierarchy: Hierarchy,
) -> None:
    """Under neither served prefix (a stranger's, its parent's, the top's), a write is Handle 301 "not
    registered at this node" before any admin key is looked up; under each, the node's one admin key
    writes in that prefix's name, and not in the other's."""
    node = hierarchy.enterprise
    value = [Value(1, "URL", "string", "x")]
    for identifier, prefix in (
        ("88.300.1/X", "88.300.1"),
        ("88.123.99/X", "88.123.99"),
        ("88.200/X", "88.200"),
    ):
        raw = node.write("create", identifier, value, node.admin_signer(prefix))
        answer = httpx.post(
            f"{node.url}/v1/registry", content=raw, headers={"content-type": "application/cose"}
        )
        body = answer.json()
        assert answer.status_code == 400 and body["responseCode"] == 301, body
        assert body["message"] == f"prefix {prefix} is not registered at this node" and "referral" not in body
    with node.client() as c:
        for prefix in node.prefixes:
            c.write(node.write("create", f"{prefix}/WRITTEN-1", value, node.admin_signer(prefix)))
        with pytest.raises(ClientError, match="outside its prefix") as outside:
            c.write(node.write("create", "88.200.5/WRITTEN-2", value, node.admin_signer("88.123.99.7")))
    assert outside.value.status == 403
    assert 'edgeroot_root_refused_total{reason="NotResponsible"} 3.0' in httpx.get(f"{node.url}/metrics").text


def test_healthz_names_the_prefix_that_lacks_its_delegation_and_add_prefix_extends_a_running_node(
    hierarchy: Hierarchy, capsys: pytest.CaptureFixture[str]
) -> None:
    """The enterprise node checks each served prefix's delegation from its parent (the top, following
    referrals): both delegated, by the node that holds each. `root add-prefix` on the running node adds
    `88.200.7` (writes under it accepted at once, the leaf logged by the running node); after a reload
    /healthz names that prefix as not delegated while the node stays ok, until the top delegates it."""
    node, top = hierarchy.enterprise, hierarchy.top
    node.reload()  # the check ran at start, before the parents delegated; a reload checks again at once
    health = node.wait_for_delegations({"88.123.99.7": "delegated", "88.200.5": "delegated"})
    details = {p["prefix"]: p["detail"] for p in health["prefixes"]}
    assert details["88.123.99.7"].startswith(f"delegated by {hierarchy.secondary.url} (log secondary.test)")
    assert details["88.200.5"].startswith(f"delegated by {top.url} (log top.test)")
    assert health["problems"] == []

    assert main(["root", "add-prefix", "88.200.7", "--state", str(node.state), "--json"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert (
        added["prefixes"] == ["88.123.99.7", "88.200.5", "88.200.7"] and added["admin"] == "300:0.na/88.200.7"
    )
    assert added["sequenced"] is False  # the running node holds the sequencer lock and logs the leaf
    assert f"edgeroot register prefix 88.200.7 --root {top.url}" in added["next"]
    assert root_config.load(node.state).prefixes == ("88.123.99.7", "88.200.5", "88.200.7")
    with node.client() as c:
        c.write(
            node.write(
                "create", "88.200.7/LINE-1", [Value(1, "URL", "string", "x")], node.admin_signer("88.200.7")
            )
        )
    node.settle()
    assert node.reload().startswith("prefixes now 88.123.99.7, 88.200.5, 88.200.7")
    health = node.wait_for_delegations(
        {"88.123.99.7": "delegated", "88.200.5": "delegated", "88.200.7": "missing"}
    )
    assert health["status"] == "ok" and health["published_size"] > 0
    assert health["problems"] == [
        f"prefix 88.200.7: {top.url} (log top.test) holds no 0.na/88.200.7: not delegated to this node"
    ]
    metrics = httpx.get(f"{node.url}/metrics").text
    assert 'edgeroot_root_prefix_delegated{prefix="88.200.7"} 0.0' in metrics
    assert 'edgeroot_root_prefix_delegated{prefix="88.200.5"} 1.0' in metrics

    delegate(top, delegation_to(node, "88.200.7"))
    top.settle()
    node.reload()
    health = node.wait_for_delegations(
        {"88.123.99.7": "delegated", "88.200.5": "delegated", "88.200.7": "delegated"}
    )
    assert health["problems"] == []


def test_the_delegation_check_names_the_log_a_prefix_is_delegated_to_or_why_it_is_not(
    hierarchy: Hierarchy,
) -> None:
    """The enterprise node's check, asked directly: a prefix delegated to another log (named), one its
    parent holds itself (no delegation) are `missing`; a parent that cannot be asked is `unknown`; each is
    a /healthz problem line naming the prefix."""
    top, secondary = hierarchy.top, hierarchy.secondary
    mine = VerifierKey.parse((hierarchy.enterprise.state / "log.vkey").read_text())
    theirs = (secondary.state / "log.vkey").read_text().strip()

    async def verdicts() -> list[PrefixStatus]:
        nodes = NodeClients()
        try:
            asked = ((top.url, "88.123.99"), (top.url, "88.200"), (DOWN, "88.200.5"))
            return [await check_prefix(nodes, parent, prefix, mine) for parent, prefix in asked]
        finally:
            await nodes.aclose()

    other, own, down = asyncio.run(verdicts())
    where = f"at {top.url} (log top.test)"
    assert (other.state, other.detail) == (
        "missing", f"0.na/88.123.99 {where} delegates it to log {theirs}, not to this node's log {mine}"
    )  # fmt: skip
    assert (own.state, own.detail) == (
        "missing", f"0.na/88.200 {where} is not delegated (it has no HS_SITE)"
    )  # fmt: skip
    assert down.state == "unknown" and down.detail.startswith(f"cannot ask the parent: cannot reach {DOWN}")
    assert [s.problem for s in (other, own, down)] == [
        f"prefix 88.123.99: {other.detail}", f"prefix 88.200: {own.detail}", f"prefix 88.200.5: {down.detail}"
    ]  # fmt: skip


# --- gateways resolve device keys through referrals (issue 14 item 5) ------------------------------------


def test_a_gateway_trusting_only_the_top_gets_an_enterprise_device_key(
    hierarchy: Hierarchy, tmp_path: Path
) -> None:
    """The registry cache of a gateway pinned to the top follows the delegations, keeps one pin per
    child log in gateway.db, and caches the enterprise device's key; a forged child answer is a failed
    lookup (the reading stays held), never a key."""
    db = tmp_path / "gateway.db"
    store.create_schema(db)

    async def scenario() -> tuple[bool, bytes | None, list[str], bool]:
        async with AsyncRootClient(hierarchy.top.url) as client:
            pins = SqlitePinStore(db)
            pinned = await PinnedLog.open(hierarchy.top.policy, hierarchy.top.origin, client, pins)
            async with contextlib.aclosing(RegistryCache(client, pinned, pins)) as registry:
                found = await registry.fetch(PUMP)
                row = await pins.db(
                    lambda c: c.execute("SELECT key FROM devices WHERE identifier = ?", (PUMP,)).fetchone()
                )
                keys = await pins.db(
                    lambda c: [
                        r[0]
                        for r in c.execute("SELECT key FROM meta WHERE key LIKE 'light_client%' ORDER BY key")
                    ]
                )
                forged = await registry.fetch("88.123.99.9/X")  # its child's answer is forged: no key
            return found, None if row is None else bytes(row[0]), keys, forged

    proxy = TamperingProxy(hierarchy.enterprise.url, _forge_record)
    with ServerThread(proxy) as front:
        delegate(hierarchy.secondary, delegation_to(hierarchy.enterprise, "88.123.99.9", urls=(front.url,)))
        hierarchy.secondary.settle()
        found, key, pins, forged = asyncio.run(scenario())
    assert found and key == public_der(PUMP_KEY.public_key())
    assert pins == ["light_client", "light_client.enterprise.test", "light_client.secondary.test"]
    assert forged is False


def test_a_gateway_asks_each_child_node_over_one_connection_and_keeps_its_pin_in_gateway_db(
    hierarchy: Hierarchy, tmp_path: Path
) -> None:
    """The registry cache is a warm client for the gateway's life: N device keys fetched through the
    delegations ask the child node N times over one connection (the secondary node's delegation is
    reused); the child log's pin is saved in gateway.db, and after a restart it is loaded from there:
    the child's next, larger checkpoint is proven consistent with it (a consistency proof from it)."""
    db = tmp_path / "gateway.db"
    store.create_schema(db)
    top = hierarchy.top

    async def gateway_run(identifiers: list[str]) -> tuple[list[bool], int, dict[str, Any] | None]:
        """One run of a gateway: its registry cache fetches ``identifiers``, then is closed."""
        async with AsyncRootClient(top.url) as client:
            pins = SqlitePinStore(db)
            pinned = await PinnedLog.open(top.policy, top.origin, client, pins)
            async with contextlib.aclosing(RegistryCache(client, pinned, pins)) as registry:
                found = [await registry.fetch(identifier) for identifier in identifiers]
                opened = registry.referrals.open_clients
            saved = await pins.db(lambda c: store.read_meta(c, "light_client.child4.test"))
        return found, opened, None if saved is None else json.loads(saved)

    with _child_behind_a_front(hierarchy, tmp_path, "88.123.99.4", devices=8) as (child, front, _url):
        devices = [f"88.123.99.4/DEV-{i}" for i in range(8)]
        found, opened, pin = asyncio.run(gateway_run(devices))
        resolved, connections = len(front.asked("/v1/resolve/")), front.connections()
        pinned_size = SignedCheckpoint.parse(str((pin or {})["pinned"]).encode()).checkpoint.size
        assert pinned_size == child.settle()
        _register(child, "88.123.99.4/LATER")
        grown = child.settle()
        again, _, pin_after = asyncio.run(gateway_run(["88.123.99.4/LATER"]))
    assert found == [True] * 8 and again == [True]
    assert resolved == 8 and len(connections) == 1, front.requests
    assert opened == 2  # the secondary node's client and the child's
    assert front.asked("/v1/proof/consistency") == [f"/v1/proof/consistency?old={pinned_size}&new={grown}"]
    assert pin_after is not None
    assert SignedCheckpoint.parse(str(pin_after["pinned"]).encode()).checkpoint.size == grown


# --- the CLI around delegation ----------------------------------------------------------------------------


def test_root_init_parent_is_kept_and_names_the_next_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`root init --parent URL` writes `parent` to root.toml and says how the parent delegates here; a
    parent that is not an http(s) URL is refused at load, naming the key."""
    state = tmp_path / "child"
    args = ["root", "init", "--state", str(state), "--origin", "child.test", "--prefix", "88.123.99"]
    assert main([*args, "--parent", "http://top.example:8470/", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["parent"] == "http://top.example:8470/"
    assert "edgeroot register prefix 88.123.99 --root http://top.example:8470/" in out["next"]
    assert f"--node-policy {state / 'policy.txt'}" in out["next"]
    assert root_config.load(state).parent == "http://top.example:8470"
    text = (state / "root.toml").read_text().replace('parent = "http://top.example:8470/"', 'parent = "top"')
    (state / "root.toml").write_text(text)
    with pytest.raises(root_config.ConfigError, match="parent"):
        root_config.load(state)


def test_register_prefix_node_needs_both_options_and_one_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--node` without `--node-policy` (and the reverse), an unreadable policy, or one with two logs:
    exit 2 before anything is sent."""
    key = tmp_path / "admin.pem"
    key.write_bytes(b"unused")
    base = ["register", "prefix", "88.123.99", "--root", DOWN, "--key", str(key)]
    two = tmp_path / "two.txt"
    a, b = NoteKey.generate("a.example", SIGTYPE_ED25519), NoteKey.generate("b.example", SIGTYPE_ED25519)
    two.write_text(f"log {a.vkey()}\nlog {b.vkey()}\nquorum none\n")
    assert main([*base, "--node", "http://child.example"]) == 2
    assert "needs both --node URL and --node-policy FILE" in capsys.readouterr().err
    assert main([*base, "--node-policy", str(two)]) == 2
    assert "needs both" in capsys.readouterr().err
    assert main([*base, "--node", "http://child.example", "--node-policy", str(tmp_path / "missing")]) == 2
    assert "cannot read --node-policy" in capsys.readouterr().err
    assert main([*base, "--node", "http://child.example", "--node-policy", str(two)]) == 2
    assert "lists 2 logs, not 1" in capsys.readouterr().err


def test_a_child_log_hashing_with_sm3_is_followed_under_its_delegated_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An enterprise node on the SM3 profile under SHA-256 parents: its delegation carries its
    `log-hash sm3` policy, and its answers are verified with SM3 at that hop."""
    with running_hierarchy(tmp_path / "sm", suites=("default", "default", "sm")) as h:
        assert "log-hash sm3 " in h.enterprise.policy_path.read_text()
        _populate(h)
        code, answer = Cli(h, tmp_path / "cfg", capsys).resolve(PUMP)
        assert code == 0, answer
        assert [x["log"] for x in answer["hops"]] == ["top.test", "secondary.test", "enterprise.test"]


# --- a trace from the top reaches events logged at the nodes below (D-100) ---------------------------------


def _capture(node: RootUnderTest, event: dict[str, Any]) -> None:
    document = {
        "@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"],
        "type": "EPCISDocument", "schemaVersion": "2.0", "creationDate": "2026-11-30T12:00:00.000Z",
        "epcisBody": {"eventList": [event]},
    }  # fmt: skip
    with node.client() as c:
        c.epcis_capture(sign_document(document, node.admin_signer(), node.origin))
    node.settle()


def test_a_trace_from_the_top_verifies_each_event_at_the_node_its_prefix_is_delegated_to(
    hierarchy: Hierarchy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`trace --verify` at the top with the top's policy only: the part's events are asked of the
    enterprise node, its raw batch's of the secondary node (each found by referral), every event and
    completeness proof verified under its own log, one pin per log; without --verify, by the hints."""
    raw, part = "88.123.99/RAW-1", "88.123.99.7/PART-1"
    made = {"type": "ObjectEvent", "eventTime": "2026-11-30T08:00:00Z", "eventTimeZoneOffset": "+00:00",
            "epcList": [identifier_uri(raw, BASE)], "action": "ADD", "bizStep": "commissioning"}  # fmt: skip
    turned = {"type": "TransformationEvent", "eventTime": "2026-11-30T09:00:00Z",
              "eventTimeZoneOffset": "+00:00", "inputEPCList": [identifier_uri(raw, BASE)],
              "outputEPCList": [identifier_uri(part, BASE)], "bizStep": "commissioning"}  # fmt: skip
    _capture(hierarchy.secondary, made)
    _capture(hierarchy.enterprise, turned)
    config = tmp_path / "pins"
    argv = ["trace", identifier_uri(part, BASE), "--root", hierarchy.top.url, "--verify",
            "--policy", str(hierarchy.top.policy_path), "--config-dir", str(config), "--json"]  # fmt: skip
    code = main(argv)
    answer = json.loads(capsys.readouterr().out)
    assert code == 0, answer
    tree = answer["tree"]
    [event] = tree["events"]
    assert (event["signer"], event["verified"], event["attribution"]) == (
        "300:0.na/88.123.99.7",
        True,
        "owner",
    )
    assert tree["complete_as_of"] is not None
    [came_from] = tree["from"]
    assert came_from["identifier"] == raw.lower()
    assert [(e["type"], e["signer"], e["verified"]) for e in came_from["events"]] == [
        ("ObjectEvent", "300:0.na/88.123.99", True)
    ]
    assert came_from["complete_as_of"] is not None
    for node in hierarchy.nodes:
        assert json.loads(pin_file(node.origin, config).read_text())["origin"] == node.origin
    # Without --verify the answers' referral hints lead to the same nodes, and the tree says unverified.
    assert main(["trace", identifier_uri(part, BASE), "--root", hierarchy.top.url, "--json"]) == 0
    loose = json.loads(capsys.readouterr().out)["tree"]
    assert [e["verified"] for e in loose["events"]] == [False]
    assert [e["signer"] for e in loose["from"][0]["events"]] == ["300:0.na/88.123.99"]


def test_a_trace_through_a_dead_child_is_a_verdict_with_the_referral_exit_code(
    hierarchy: Hierarchy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`trace --verify` of an identifier delegated to a node that does not answer: the referral's
    verdict and exit code (5), as `resolve` gives, never a traceback."""
    delegate(hierarchy.top, delegation_to(hierarchy.enterprise, "88.123.93", urls=(DOWN,)))
    hierarchy.top.settle()
    pins = tmp_path / "pins"
    argv = ["trace", identifier_uri("88.123.93/LOT-1", BASE), "--root", hierarchy.top.url, "--verify",
            "--policy", str(hierarchy.top.policy_path), "--config-dir", str(pins), "--json"]  # fmt: skip
    code = main(argv)
    answer = json.loads(capsys.readouterr().out)
    assert code == REFERRAL_EXIT["dead-child"] == 5, answer
    assert answer["referral_error"] == "dead-child" and DOWN in answer["error"]
