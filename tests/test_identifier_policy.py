"""The identifier namespace policy (docs/formats.md §10): what is refused, what is folded, and the
registry's look-alike and one-key-one-device rules, at registration and at resolution."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from chain_lite import b64
from chain_lite.cose import HDR_CONTENT_TYPE, CoseSigner
from chain_lite.errors import IdentifierError
from chain_lite.identifier import MAX_IDENTIFIER_BYTES, Identifier, fold, normalize
from chain_lite.keys import generate_p256
from chain_lite.registry import (
    WRITE_CONTENT_TYPE,
    Record,
    Value,
    WriteRequest,
    admin_kid,
    build_write,
    canonical_identifier,
    prefix_handle,
    pubkey_value,
    sign_write,
)
from resolver import namespace
from resolver.db import Database
from resolver.errors import AlreadyExists, InvalidHandle, InvalidValue
from resolver.reads import RootNode
from resolver.registry import load_record, submit_write
from runtime.clock import now_ms

ORIGIN = "names.test"
P = "88.123.99"


# --- the policy in chain_lite: refused classes, each with a message naming it ----------------------------

REFUSED = [
    (f"{P}/PUMP\u200b-7", "invisible format character"),  # zero-width space
    (f"{P}/PUMP-7\u200d", "invisible format character"),  # zero-width joiner
    (f"{P}/\u202ePUMP-7", "invisible format character"),  # right-to-left override
    (f"{P}/PUMP\u2066-7\u2069", "invisible format character"),  # bidi isolate
    (f"{P}/PUMP\u200e-7", "invisible format character"),  # left-to-right mark
    (f"{P}/\ufeffPUMP-7", "invisible format character"),  # byte-order mark
    (f"{P}/PUMP\u00ad7", "invisible format character"),  # soft hyphen
    (f"{P}/PUMP-7 ", "whitespace"),
    (f"{P}/ PUMP-7", "whitespace"),
    (f"{P}/PUMP-7\u00a0", "whitespace"),  # no-break space
    (f"{P}/PUMP-7\u3000", "whitespace"),  # ideographic space
    (f"{P}/PUMP-7\t", "control character"),
    (f"{P}/PUMP\n-7", "control character"),
    (f"{P}/PUMP\x00", "control character"),
    (f"{P}/PUMP\u2028x", "line separator"),
    (f"{P}/\udcff", "lone surrogate"),  # what Python makes of the byte 0xff in argv
    (f"{P}/PUMP-\ue000", "private-use"),
    (f"{P}/PUMP-\u0378", "unassigned"),
    (f"{P}/x/../PUMP-0048", "'..' part"),
    (f"{P}/../PUMP-0048", "'..' part"),
    (f"{P}/./PUMP-0048", "'.' part"),
    (f"{P}/PUMP/..", "'..' part"),
    (f"{P}/x\\..\\PUMP-0048", "backslash"),
    (f"{P}/PUMP//7", "empty '/'-separated part"),
    (f"{P}/PUMP/", "empty '/'-separated part"),
    (f"{P}/", "empty suffix"),
    ("88..1/PUMP", "empty prefix segment"),
    ("/PUMP", "empty prefix"),
    ("PUMP-7", "missing '/'"),
    ("88.\u0661/PUMP", "prefix must be ASCII"),
    (f"{P}/" + "x" * (MAX_IDENTIFIER_BYTES - len(P)), f"longer than {MAX_IDENTIFIER_BYTES} bytes"),
    (f"{P}/" + "\u00fc" * 125, f"longer than {MAX_IDENTIFIER_BYTES} bytes"),  # 250 bytes of 125 letters
]


@pytest.mark.parametrize(("text", "reason"), REFUSED)
def test_refused_identifiers_name_the_rule(text: str, reason: str) -> None:
    """Each refused class is an IdentifierError whose message says which rule, in every entry point."""
    for parse in (Identifier.parse, normalize, fold, canonical_identifier):
        with pytest.raises(IdentifierError) as info:
            parse(text)
        assert reason in str(info.value), str(info.value)


def test_longest_identifier_is_accepted() -> None:
    """255 bytes exactly is allowed; the limit counts UTF-8 bytes, not characters."""
    text = f"{P}/" + "x" * (MAX_IDENTIFIER_BYTES - len(P) - 1)
    assert len(text.encode()) == MAX_IDENTIFIER_BYTES
    assert normalize(text) == text


def test_surrogate_is_an_identifier_error_not_a_unicode_error() -> None:
    """Undecodable input (a lone surrogate) used to escape Identifier.parse as UnicodeEncodeError."""
    with pytest.raises(IdentifierError, match="U\\+DCFF"):
        Identifier.parse("88.123.99/PUMP-\udcff")


def test_ascii_case_folds_in_the_key_and_spelling_is_kept_in_the_normal_form() -> None:
    """PUMP-7 and pump-7 are one identifier; the prefix is stored lowercase; non-ASCII case is kept."""
    assert canonical_identifier("88.123.99/PUMP-7") == canonical_identifier("88.123.99/pump-7")
    assert canonical_identifier("88.ABC.99/PUMP-7") == "88.abc.99/pump-7"
    assert normalize("88.ABC.99/PUMP-7") == "88.abc.99/PUMP-7"
    # Only ASCII letters fold: Greek, Cyrillic and German letters are not this namespace's business
    # (look-alikes among them are the registry's skeleton check).
    assert canonical_identifier("88.1/ΣÜД-i") == "88.1/ΣÜД-i"
    assert canonical_identifier("88.1/İ") == "88.1/İ"


def test_decomposed_and_composed_suffixes_are_one_identifier() -> None:
    """Suffixes are NFC-normalised before anything else."""
    assert canonical_identifier("88.1/Pumpe-U\u0308berdruck") == canonical_identifier("88.1/Pumpe-Überdruck")


_identifier_text = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda prefix, suffix: f"{prefix}/{suffix}",
        st.from_regex(r"\A[0-9A-Za-z_-]{1,6}(\.[0-9A-Za-z_-]{1,6}){0,3}\Z"),
        st.text(min_size=1, max_size=40),
    ),
    st.builds(lambda suffix: f"0.NA/{suffix}", st.text(min_size=1, max_size=12)),
)


@given(text=_identifier_text)
def test_canonical_form_is_idempotent(text: str) -> None:
    """The canonical form of a canonical identifier is itself, and so is the normal form's."""
    try:
        canonical = canonical_identifier(text)
    except IdentifierError:
        return
    assert canonical_identifier(canonical) == canonical
    assert normalize(normalize(text)) == normalize(text)
    assert canonical_identifier(normalize(text)) == canonical
    assert len(canonical.encode()) <= MAX_IDENTIFIER_BYTES


_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def _reference_suffix(suffix: str) -> str | None:
    """The suffix rules of docs/formats.md §10 one character at a time, as written before the printable
    ASCII shortcut: the NFC form, or ``None`` when refused."""
    if not suffix or any(unicodedata.category(c) in _REFUSED_CATEGORIES or c == "\\" for c in suffix):
        return None
    nfc = unicodedata.normalize("NFC", suffix)
    if nfc[0].isspace() or nfc[-1].isspace() or any(p in ("", ".", "..") for p in nfc.split("/")):
        return None
    return nfc


@given(suffix=st.text(st.characters(max_codepoint=0x7F), max_size=12) | st.text(max_size=12))
def test_printable_ascii_shortcut_checks_suffixes_as_the_character_rules_do(suffix: str) -> None:
    """Every suffix, ASCII (controls, DEL, backslash, spaces, dots included) or not, is accepted with the
    same normal form, or refused, as the per-character rules decide."""
    try:
        got: str | None = Identifier.parse(f"{P}/{suffix}").suffix
    except IdentifierError:
        got = None
    assert got == _reference_suffix(suffix)


@given(text=_identifier_text)
def test_verifier_and_server_agree_on_the_canonical_form(text: str) -> None:
    """The node's read path, its write path and the verifier hash the same map key, or all refuse."""
    try:
        verifier = canonical_identifier(normalize(text))  # what chain_lite.resolution proves
    except IdentifierError:
        verifier = None
    try:
        server_read = RootNode.canonical(text)
    except InvalidHandle:
        server_read = None
    try:
        request = build_write(ORIGIN, "delete", text, None, timestamp_ms=1, nonce=bytes(16))
        server_write: str | None = WriteRequest.decode(request.encode()).identifier
    except IdentifierError:
        server_write = None
    assert verifier == server_read == server_write


# --- the registry: look-alikes and device keys -------------------------------------------------------------


class Registry:
    """A node database with the root prefix 88 and its admin, for write checks without HTTP."""

    def __init__(self, url: str, admin: CoseSigner | None = None) -> None:
        """A new database bootstrapped with a new admin, or (``admin`` given) an existing one reopened."""
        self.db = Database(url)
        self.db.create_schema()
        self.admin = admin or CoseSigner(admin_kid("88"), generate_p256())
        if admin is None:
            self.submit("create", prefix_handle("88"), [pubkey_value(300, self.admin.public_key)],
                        bootstrap=True)  # fmt: skip

    def submit(
        self, op: str, identifier: str, values: list[Value] | None, *, bootstrap: bool = False
    ) -> None:
        req = build_write(ORIGIN, op, identifier, values, timestamp_ms=now_ms(), nonce=os.urandom(16))
        raw = sign_write(req, self.admin).raw
        submit_write(self.db, raw, origin=ORIGIN, now_ms=now_ms(), bootstrap=bootstrap)

    def create(self, identifier: str, values: list[Value] | None = None) -> None:
        self.submit("create", identifier, values or [Value(1, "URL", "string", "https://plant.example")])

    def record(self, identifier: str) -> Record | None:
        with self.db.transaction(write=False) as tx:
            return load_record(tx, identifier)


@pytest.fixture
def registry(database_url: str) -> Iterator[Registry]:
    reg = Registry(database_url)
    yield reg
    reg.db.close()


@pytest.mark.parametrize(
    ("existing", "look_alike"),
    [
        ("88/PUMP-7", "88/\u0420UM\u0420-7"),  # Cyrillic Er and Em
        ("88/PUMP-7", "88/PUMP-\uff17"),  # full-width digit seven
        ("88/pump-7", "88/\uff30\uff35\uff2d\uff30-7"),  # full-width letters, other case
        ("88/filter-1", "88/\ufb01lter-1"),  # the fi ligature
        ("88/PUMP-0042", "88/PUMP-OO42"),  # letter O for digit zero
        ("88/valve-l1", "88/valve-1l"),  # l and 1
        ("88/modem", "88/rnodern"),  # rn for m
        ("0.na/88.l23", "0.na/88.123"),  # prefix records too
    ],
)
def test_look_alike_of_an_existing_identifier_is_refused_naming_it(
    registry: Registry, existing: str, look_alike: str
) -> None:
    """A new identifier with the UTS #39 skeleton of an existing one is refused (409, Handle 101)."""
    registry.create(existing)
    with pytest.raises(AlreadyExists) as info:
        registry.create(look_alike)
    assert info.value.status == 409 and info.value.handle_code == 101
    assert canonical_identifier(existing) in info.value.message and "looks the same" in info.value.message
    assert registry.record(look_alike) is None


def test_case_variant_is_the_same_identifier(registry: Registry) -> None:
    """Creating pump-7 after PUMP-7 is 'already exists'; both spellings find the one record."""
    registry.create("88/PUMP-7")
    with pytest.raises(AlreadyExists, match="88/pump-7 already exists"):
        registry.create("88/pump-7")
    first, second = registry.record("88/PUMP-7"), registry.record("88/Pump-7")
    assert first is not None and first == second and first.identifier == "88/pump-7"


def test_look_alikes_are_compared_under_one_prefix_only(registry: Registry) -> None:
    """The same skeleton under another prefix is another identifier."""
    registry.create(prefix_handle("88.1"), [pubkey_value(300, generate_p256().public_key())])
    registry.create("88/PUMP-7")
    registry.create("88.1/\u0420UM\u0420-7")
    assert registry.record("88.1/\u0420UM\u0420-7") is not None


def test_update_keeps_and_delete_frees_the_skeleton(registry: Registry) -> None:
    """An identifier's own update never trips the check; after a delete a look-alike may be created."""
    registry.create("88/PUMP-7")
    registry.submit("update", "88/PUMP-7", [Value(1, "URL", "string", "https://plant.example/new")])
    registry.submit("delete", "88/PUMP-7", None)
    registry.create("88/\u0420UM\u0420-7")
    assert registry.record("88/\u0420UM\u0420-7") is not None


def _device(key: bytes, index: int = 1) -> list[Value]:
    return [Value(index, "HS_PUBKEY", "base64", b64.encode(key)), Value(index + 1, "DEVICE", "string", "x")]


def _spki(key: object) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# SubjectPublicKeyInfo of a P-256 key with a compressed point (RFC 5480 §2.2 allows it): this fixed header
# (id-ecPublicKey, prime256v1, a 34-byte BIT STRING) followed by the 33-byte point.
_COMPRESSED_P256_SPKI_HEADER = bytes.fromhex("3039301306072a8648ce3d020106082a8648ce3d030107032200")


def test_device_key_bound_to_another_identifier_is_refused(registry: Registry) -> None:
    """One device key, one device: create, update and another encoding of the key are all refused."""
    key = generate_p256()
    registry.create("88/DEV-1", _device(_spki(key)))
    with pytest.raises(AlreadyExists) as info:
        registry.create("88/DEV-2", _device(_spki(key)))
    assert "88/dev-1" in info.value.message and "one device key" in info.value.message
    assert registry.record("88/DEV-2") is None
    compressed = _COMPRESSED_P256_SPKI_HEADER + key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    with pytest.raises(AlreadyExists, match="88/dev-1"):
        registry.create("88/DEV-2", _device(compressed))
    registry.create("88/DEV-2", _device(_spki(generate_p256())))
    with pytest.raises(AlreadyExists, match="88/dev-1"):
        registry.submit("update", "88/DEV-2", _device(_spki(key), index=5))
    # The device may keep (update with) its own key, and after a delete the key is free again.
    registry.submit("update", "88/DEV-1", _device(_spki(key), index=3))
    registry.submit("delete", "88/DEV-1", None)
    registry.submit("update", "88/DEV-2", _device(_spki(key)))
    record = registry.record("88/DEV-2")
    assert record is not None and record.signing_key() is not None


def test_prefix_admins_may_share_a_key(registry: Registry) -> None:
    """Admin keys are not device keys: one admin may hold several prefixes."""
    admin = generate_p256().public_key()
    registry.create(prefix_handle("88.1"), [pubkey_value(300, admin)])
    registry.create(prefix_handle("88.2"), [pubkey_value(300, admin)])


def test_hs_pubkey_on_an_unsupported_curve_is_an_invalid_value(registry: Registry) -> None:
    """A key on a curve OpenSSL does not implement is refused as 400 / Handle 202 (it was a 500)."""
    spki = bytes.fromhex("3036301006072a8648ce3d020106052b81040006032200") + bytes(range(1, 34))
    with pytest.raises(InvalidValue) as info:
        registry.create("88/DEV-9", _device(spki))
    assert info.value.status == 400 and info.value.handle_code == 202


def test_write_with_a_dot_segment_is_refused_by_the_node(registry: Registry) -> None:
    """88.123.99/x/../PUMP-0048 signed by hand (build_write refuses it) is refused as Handle 102."""
    with pytest.raises(IdentifierError):
        build_write(ORIGIN, "create", "88/x/../PUMP", [Value(1, "URL", "string", "u")], timestamp_ms=1,
                    nonce=bytes(16))  # fmt: skip
    # WriteRequest itself does not check the identifier; the node's parser does.
    forged = WriteRequest(ORIGIN, "create", "88/x/../PUMP", (Value(1, "URL", "string", "u"),), now_ms(),
                          os.urandom(16))  # fmt: skip
    raw = registry.admin.sign(forged.encode(), {HDR_CONTENT_TYPE: WRITE_CONTENT_TYPE})
    with pytest.raises(InvalidHandle, match=r"'\.\.' part"):
        submit_write(registry.db, raw, origin=ORIGIN, now_ms=now_ms())


def test_database_from_before_the_policy_gains_skeletons_and_key_bindings(tmp_path: Path) -> None:
    """An older SQLite file (no skeleton column, no key table) is brought up to date at start."""
    path = tmp_path / "old.db"
    first = Registry(f"sqlite:///{path}")
    key = generate_p256()
    first.create("88/PUMP-7", _device(_spki(key)))
    first.db.close()
    with sqlite3.connect(path) as conn:  # make it look like a database of the previous release
        conn.execute("DROP INDEX records_by_skeleton")
        conn.execute("ALTER TABLE records DROP COLUMN skeleton")
        conn.execute("DROP TABLE device_keys")
        conn.execute("DELETE FROM meta WHERE key = 'namespace_version'")
    db = Database(f"sqlite:///{path}")
    db.create_schema()
    with db.transaction(write=False) as tx:
        assert tx.one("SELECT skeleton FROM records WHERE identifier = '88/pump-7'") == (
            namespace.skeleton("88/pump-7"),
        )
        assert tx.one("SELECT identifier FROM device_keys") == ("88/pump-7",)
        row = tx.one("SELECT value FROM meta WHERE key = 'namespace_version'")
        assert row == (namespace.SKELETON_VERSION,)
    db.close()
    again = Registry(f"sqlite:///{path}", first.admin)
    with pytest.raises(AlreadyExists, match="88/pump-7"):
        again.create("88/\u0420UM\u0420-7")
    with pytest.raises(AlreadyExists, match="88/pump-7"):
        again.create("88/DEV-2", _device(_spki(key)))
    again.db.close()


def test_skeleton_folds_case_width_and_script() -> None:
    """The stored skeleton meets ASCII case, full width, Cyrillic and ligatures; it keeps the prefix."""
    keys = {
        namespace.skeleton(canonical_identifier(text))
        for text in ("88/PUMP-7", "88/pump-7", "88/\u0420UM\u0420-7", "88/\uff30UMP-\uff17", "88/\u0440ump-7")
    }
    assert len(keys) == 1
    assert namespace.skeleton("88/ﬁlter") == namespace.skeleton("88/filter")
    assert namespace.skeleton("88.1/pump-7") != namespace.skeleton("88/pump-7")
    assert namespace.skeleton("88/pump-7") != namespace.skeleton("88/pump-8")
    assert unicodedata.normalize("NFC", "88/Ü") == "88/Ü"  # NFC input (canonical) stays itself


# --- the CLI ----------------------------------------------------------------------------------------------


def test_resolve_of_undecodable_bytes_is_a_usage_error() -> None:
    """`edgeroot resolve $'88.123.99/\\xff'` exits 2 with a clear message instead of a traceback."""
    out = subprocess.run(
        [sys.executable.encode(), b"-m", b"edgeroot", b"resolve", b"88.123.99/\xff", b"--root",
         b"http://127.0.0.1:9"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert b"Traceback" not in out.stderr and b"lone surrogate" in out.stderr
