"""The delegation value (HS_SITE on a prefix record, docs/formats.md §12) and the pure referral rules
(:func:`chain_lite.resolution.referral_of`): round trips, hostile encodings, and who answers."""

from __future__ import annotations

import re
from typing import Any

import pytest

from chain_lite import b64, cbor
from chain_lite.errors import FormatError
from chain_lite.keys import NoteKey
from chain_lite.note import SIGTYPE_COSIGNATURE_V1, SIGTYPE_ED25519
from chain_lite.registry import (
    DELEGATION_LABEL,
    MAX_DELEGATED_POLICY,
    Delegation,
    Record,
    Value,
    prefix_handle,
)
from chain_lite.resolution import NotDelegatedHere, ProvenRecord, home_prefixes, referral_of

LOG = NoteKey.generate("child.example", SIGTYPE_ED25519)
OTHER = NoteKey.generate("other.example", SIGTYPE_ED25519)
WITNESS = NoteKey.generate("w.example", SIGTYPE_COSIGNATURE_V1)
POLICY = f"log {LOG.vkey()}\nquorum none\n"


def _delegation(prefix: str = "88.123.99", **changes: Any) -> Delegation:
    fields: dict[str, Any] = {
        "prefix": prefix, "urls": ("http://127.0.0.1:8471",), "vkey": LOG.vkey(), "policy": POLICY,
    }  # fmt: skip
    fields.update(changes)
    return Delegation(**fields)


def test_delegation_round_trips_through_its_hs_site_value() -> None:
    """A delegation survives value → record → decode unchanged, and names the child's log."""
    delegation = _delegation(urls=("http://a.example:8470", "https://b.example"))
    record = Record(prefix_handle("88.123.99"), (delegation.value().stamped(1),))
    assert record.delegation() == delegation
    assert delegation.origin == "child.example"
    assert [str(log.verifier.vkey()) for log in delegation.trust_policy().logs] == [LOG.vkey()]
    assert Delegation.decode(delegation.encode()) == delegation


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"urls": ()}, "1..4 node URLs"),
        ({"urls": tuple(f"http://n{i}.example" for i in range(5))}, "1..4 node URLs"),
        ({"urls": ("ftp://x.example",)}, "http(s) URL"),
        ({"urls": ("http://x.example/",)}, "trailing slash"),
        ({"urls": ("http://x example",)}, "without spaces"),
        ({"urls": ("http://x.example/\x1b[2J",)}, "printable"),
        ({"urls": ("http://x.example", "http://x.example")}, "listed twice"),
        ({"vkey": WITNESS.vkey(), "policy": f"log {LOG.vkey()}\nquorum none\n"}, "type 0x04, want 0x01"),
        ({"policy": f"log {OTHER.vkey()}\nquorum none\n"}, "exactly one log"),
        ({"policy": f"log {LOG.vkey()}\nlog {OTHER.vkey()}\nquorum none\n"}, "exactly one log"),
        ({"policy": POLICY + "#" * MAX_DELEGATED_POLICY}, "at most 2048 bytes"),
        ({"policy": "log nonsense\n"}, "verifier key"),
        ({"prefix": "88.ABC"}, "normalised prefix"),
    ],
)
def test_a_malformed_delegation_is_refused_naming_the_rule(changes: dict[str, Any], reason: str) -> None:
    """Each rule of the delegation value refuses its violation with a message naming it."""
    with pytest.raises(FormatError, match=re.escape(reason)):
        _delegation(**changes)


def test_hostile_delegation_encodings_are_refused() -> None:
    """Wrong label, wrong arity, non-deterministic CBOR and wrong item types are FormatErrors."""
    good = _delegation()
    items = [DELEGATION_LABEL, good.prefix, list(good.urls), good.vkey, good.policy]
    for bad in (
        cbor.encode(["edgeroot/delegation/v2", *items[1:]]),
        cbor.encode(items[:4]),
        cbor.encode([*items[:2], "http://x.example", *items[3:]]),
        cbor.encode([*items[:3], 7, items[4]]),
        b"\x9f" + good.encode()[1:] + b"\xff",  # indefinite-length array: not deterministic
        good.encode()[:-3],
    ):
        with pytest.raises(FormatError):
            Delegation.decode(bad)


def test_a_record_with_two_or_misplaced_delegations_is_refused() -> None:
    """At most one HS_SITE per prefix record, for its own prefix, base64; elsewhere HS_SITE is a value."""
    value = _delegation().value()
    two = Record(prefix_handle("88.123.99"), (value.stamped(1), Value(2, "HS_SITE", "base64", value.value)))
    with pytest.raises(FormatError, match="2 HS_SITE values"):
        two.delegation()
    assert Record("88.123.99/x", (value,)).delegation() is None  # an ordinary value there
    with pytest.raises(FormatError, match=r"carries a delegation of 88\.123\.99"):
        Record(prefix_handle("88.123.98"), (value,)).delegation()
    with pytest.raises(FormatError, match="must be base64"):
        Record(prefix_handle("88.123.99"), (Value(1, "HS_SITE", "string", "x"),)).delegation()
    assert Record(prefix_handle("88.123.99"), (Value(1, "DESC", "string", "x"),)).delegation() is None


def test_home_prefixes_are_every_prefix_that_decides_who_answers() -> None:
    """`P/S` is decided by every prefix of P; a prefix record `0.na/Q` by those of Q's parent."""
    assert home_prefixes("88.123.99/pump") == ("88", "88.123", "88.123.99")
    assert home_prefixes("0.na/88.123.99") == ("88", "88.123")
    assert home_prefixes("0.na/88") == ()


def _proven(chain: dict[str, Delegation | str | None]) -> ProvenRecord:
    """A proven answer whose prefix chain holds, per prefix: a delegation, a plain record, or nothing."""
    prefixes: list[tuple[str, Record | None]] = []
    for prefix, what in chain.items():
        if what is None:
            prefixes.append((prefix, None))
        elif isinstance(what, Delegation):
            prefixes.append((prefix, Record(prefix_handle(prefix), (what.value(),))))
        else:
            prefixes.append((prefix, Record(prefix_handle(prefix), (Value(1, "DESC", "string", what),))))
    return ProvenRecord("88.123.99.7/pump", None, 1, None, tuple(prefixes))  # type: ignore[arg-type]


def test_the_shortest_delegated_prefix_wins_at_the_trust_anchor() -> None:
    """Once a prefix is delegated everything below it is the child's, whatever else the anchor holds."""
    d99, d7 = _delegation("88.123.99"), _delegation("88.123.99.7")
    chain = {"88": None, "88.123": "served", "88.123.99": d99, "88.123.99.7": d7}
    assert referral_of(_proven(chain), None) == d99
    assert referral_of(_proven({**chain, "88.123.99": "served", "88.123.99.7": None}), None) is None


def test_a_delegated_node_must_hold_its_prefix_and_may_only_delegate_below_it() -> None:
    """The child must prove its own undelegated 0.na/D; delegations at or above D are not its to give."""
    d7 = _delegation("88.123.99.7")
    upper = _delegation("88.123")
    ok = {"88": None, "88.123": upper, "88.123.99": "mine", "88.123.99.7": d7}
    assert referral_of(_proven(ok), "88.123.99") == d7  # the delegation above is not the child's to give
    assert referral_of(_proven({**ok, "88.123.99.7": None}), "88.123.99") is None
    with pytest.raises(NotDelegatedHere, match=r"proves 0.na/88.123.99 absent"):
        referral_of(_proven({**ok, "88.123.99": None}), "88.123.99")
    with pytest.raises(NotDelegatedHere, match=r"delegates 0\.na/88\.123\.99 onwards"):
        referral_of(_proven({**ok, "88.123.99": _delegation("88.123.99")}), "88.123.99")


def test_an_answer_without_a_prefix_chain_cannot_be_followed() -> None:
    """An answer that proves nothing about who is responsible is refused, not taken as served here."""
    bare = ProvenRecord("88.123.99/x", None, 1, None)  # type: ignore[arg-type]
    with pytest.raises(FormatError, match="proves no prefix records"):
        referral_of(bare, None)


def test_the_hs_site_value_fits_one_record_value_at_its_limits() -> None:
    """Four URLs of 200 bytes and a 2 KiB policy still fit the 4 KiB value limit."""
    padding = "#" * (MAX_DELEGATED_POLICY - len(POLICY.encode()) - 1) + "\n"
    urls = tuple(f"https://{i}{'n' * 170}.example:8470" for i in range(4))
    delegation = _delegation(urls=urls, policy=padding + POLICY)
    value = delegation.value()
    assert b64.decode(value.value) == delegation.encode()
