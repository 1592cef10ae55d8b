"""Signed notes, checkpoints, cosignatures and policies: the spec's rules, positive and negative."""

from __future__ import annotations

import pytest

from chain_lite import b64
from chain_lite.checkpoint import Checkpoint, SignedCheckpoint
from chain_lite.cosignature import CosignatureVerifier, verifier_from_vkey
from chain_lite.errors import (
    BadSignature,
    FormatError,
    KeyFormatError,
    NoTrustedSignature,
    OriginMismatch,
    QuorumNotMet,
)
from chain_lite.keys import NoteKey
from chain_lite.note import (
    MAX_SIGNATURES,
    SIGTYPE_COSIGNATURE_V1,
    SIGTYPE_ED25519,
    Ed25519Verifier,
    NoteSignature,
    VerifierKey,
    open_note,
    parse_note,
    sign_note,
)
from chain_lite.policy import Policy

from .helpers import ORIGIN, LogBuilder

# The example from c2sp.org/signed-note: text ends at the LAST blank line.
SPEC_NOTE = (
    "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned è subito sera.\n\n"
    "— quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0x"
    "McXxj99ihAQwaqP3ZekRwNtIc=\n"
).encode()


def test_spec_example_note_splits_at_the_last_blank_line() -> None:
    """The text keeps its inner blank line; one signature line with a 4-byte key ID."""
    note = parse_note(SPEC_NOTE)
    assert note.text.endswith("sole:\n\ned è subito sera.\n")
    assert [s.name for s in note.signatures] == ["quasimodo.example/salvatore"]
    assert note.to_bytes() == SPEC_NOTE


def test_golang_sumdb_vkey_parses_with_the_right_key_id() -> None:
    """The public sum.golang.org vkey (Ed25519, type 0x01) parses and its key ID checks out."""
    vkey = VerifierKey.parse("sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8")
    assert (vkey.name, vkey.key_id, vkey.sigtype) == ("sum.golang.org", 0x033DE0AE, SIGTYPE_ED25519)
    assert str(vkey) == "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "name+033de0ae",
        "sum.golang.org+033de0af+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8",  # wrong key ID
        "sum.golang.org+033DE0AE+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8",  # uppercase hex
        "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn",  # bad base64
        "sum golang+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8",  # space in name
    ],
)
def test_malformed_vkeys_are_rejected(text: str) -> None:
    """Each vkey defect is a KeyFormatError."""
    with pytest.raises(KeyFormatError):
        VerifierKey.parse(text)


def test_note_signed_and_opened_round_trip() -> None:
    """A note signed by two keys opens with either; the vkey and skey forms round-trip."""
    a, b = (NoteKey.generate(n, SIGTYPE_ED25519) for n in ("a.example", "b.example"))
    note = sign_note("hello\n", [a.log_signer(), b.log_signer()])
    again = parse_note(note.to_bytes())
    assert again == note
    assert NoteKey.parse_skey(a.skey()).vkey() == a.vkey()
    verifier = verifier_from_vkey(VerifierKey.parse(b.vkey()))
    assert [v.name for v in open_note(again, [verifier])] == ["b.example"]


def test_unknown_signatures_are_ignored_but_a_bad_known_one_rejects_the_note() -> None:
    """Same name with another key ID is unknown (ignored); a known key's bad signature fails the note."""
    key = NoteKey.generate("k.example", SIGTYPE_ED25519)
    verifier = key.log_signer().verifier
    note = sign_note("text\n", [key.log_signer()])
    stranger = NoteSignature("k.example", verifier.key_id ^ 1, b"\x00" * 64)
    assert open_note(note.with_signatures([stranger]), [verifier]) == [verifier]
    forged = NoteSignature("k.example", verifier.key_id, b"\x00" * 64)
    with pytest.raises(BadSignature):
        open_note(note.with_signatures([forged]), [verifier])
    with pytest.raises(NoTrustedSignature):
        open_note(note, [NoteKey.generate("other", SIGTYPE_ED25519).log_signer().verifier])


@pytest.mark.parametrize(
    "data",
    [
        b"no blank line\n\xe2\x80\x94 a AAAAAAA=\n",
        b"text\n\n",  # no signatures
        b"text\n\n\xe2\x80\x94 a AAAAAAA=",  # no final newline
        b"text\n\n- a AAAAAAA=\n",  # hyphen, not em dash
        b"text\n\n\xe2\x80\x94 a\n",  # no signature after name
        b"text\n\n\xe2\x80\x94 a+b AAAAAAA=\n",  # plus in key name
        b"text\n\n\xe2\x80\x94 a AAAA\n",  # signature shorter than a key ID + 1 byte
        b"text\n\n\xe2\x80\x94 a AAAAAAB=\n",  # non-canonical base64 (non-zero trailing bits)
        b"te\txt\n\n\xe2\x80\x94 a AAAAAAA=\n",  # control character
        b"\xff\n\n\xe2\x80\x94 a AAAAAAA=\n",  # not UTF-8
    ],
)
def test_malformed_notes_are_rejected(data: bytes) -> None:
    """Every framing defect is a FormatError."""
    with pytest.raises(FormatError):
        parse_note(data)


def test_signature_lines_are_capped() -> None:
    """More than MAX_SIGNATURES lines is refused (the spec asks for at least 16 to be accepted)."""
    line = "— a " + b64.encode(b"\x00" * 68) + "\n"
    assert len(parse_note(("t\n\n" + line * 16).encode()).signatures) == 16
    with pytest.raises(FormatError):
        parse_note(("t\n\n" + line * (MAX_SIGNATURES + 1)).encode())


@pytest.mark.parametrize(
    "text",
    [
        "origin\n00\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",  # leading zero
        "origin\n-1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "origin\n18446744073709551616\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",  # 2**64
        "origin\n1\nAAAA\n",  # root not 32 bytes
        "origin\n1\n",  # no root line
        "\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",  # empty origin
        "origin\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n",  # empty extension line
    ],
)
def test_malformed_checkpoints_are_rejected(text: str) -> None:
    """Checkpoint body rules of c2sp.org/tlog-checkpoint."""
    with pytest.raises(FormatError):
        Checkpoint.from_text(text)


def test_checkpoint_text_round_trips_with_extensions() -> None:
    """Extension lines are kept and signed."""
    cp = Checkpoint("o", 5, b"\x01" * 32, ("ext one",))
    assert Checkpoint.from_text(cp.to_text()) == cp


def test_cosignature_covers_the_timestamp() -> None:
    """Changing the timestamp inside a cosignature invalidates it."""
    witness = NoteKey.generate("w.example", SIGTYPE_COSIGNATURE_V1).cosigner()
    log = NoteKey.generate("o", SIGTYPE_ED25519).log_signer()
    note = sign_note("o\n1\n" + b64.encode(b"\x00" * 32) + "\n", [log])
    sig = witness.cosign(note, 1234)
    assert witness.verifier.verify(note.text.encode(), sig.signature)
    moved = (1235).to_bytes(8, "big") + sig.signature[8:]
    assert not witness.verifier.verify(note.text.encode(), moved)
    assert isinstance(witness.verifier, CosignatureVerifier)
    # A cosignature key must not double as a log key (different signature type, different key ID).
    assert witness.verifier.key_id != Ed25519Verifier(witness.name, witness.verifier.public_key).key_id


def test_policy_requires_log_signature_and_quorum() -> None:
    """2-of-3: two cosignatures pass, one fails; a missing log signature fails; origin must match."""
    log = LogBuilder()
    log.add(10)
    policy = log.policy(quorum=2)
    assert policy.verify_checkpoint(log.checkpoint(cosigners=2)).checkpoint.size == 10
    with pytest.raises(QuorumNotMet) as err:
        policy.verify_checkpoint(log.checkpoint(cosigners=1))
    assert err.value.cosigners == ["w0.test"]
    only_witnesses = parse_note(log.checkpoint())
    only_witnesses = type(only_witnesses)(only_witnesses.text, only_witnesses.signatures[1:])
    with pytest.raises(NoTrustedSignature):
        policy.verify_checkpoint(only_witnesses.to_bytes())
    with pytest.raises(OriginMismatch):
        policy.verify_checkpoint(log.checkpoint(), origin="another.origin")


def test_policy_text_round_trips_and_groups_nest() -> None:
    """A nested-group policy parses, evaluates k-of-n at each level, and writes back the same meaning."""
    log = LogBuilder()
    w = log.witness_keys
    text = (
        "# comment\n"
        f"log {log.log_key.vkey()} https://log.example\n\n"
        + "".join(f"witness {k.name} {k.cosigner().verifier.vkey()}\n" for k in w)
        + f"group pair any {w[0].name} {w[1].name}\n"
        + f"\tgroup top  all pair {w[2].name}  \n"
        + "quorum top\n"
    )
    policy = Policy.parse(text.encode())
    assert policy.quorum_met([w[0].name, w[2].name])
    assert not policy.quorum_met([w[0].name, w[1].name])
    assert Policy.parse(policy.to_text().encode()).to_text() == policy.to_text()
    assert policy.logs[0].url == "https://log.example"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("", "no quorum line"),
        ("quorum none\nquorum none\n", "more than one quorum"),
        ("quorum w9\n", "undefined"),
        ("group g 1 w9\nquorum g\n", "undefined"),
        ("frobnicate x\nquorum none\n", "unknown keyword"),
        ("log notakey\nquorum none\n", "key"),
    ],
)
def test_malformed_policies_say_which_line_and_why(body: str, why: str) -> None:
    """Each policy error names the problem."""
    with pytest.raises(FormatError, match=why):
        Policy.parse(body.encode())


def test_policy_rejects_duplicate_keys_bad_thresholds_and_reserved_names() -> None:
    """Duplicate keys, k outside 1..n, members listed twice and the name 'none' are refused."""
    log = LogBuilder()
    w0 = log.witness_keys[0]
    wline = f"witness {w0.name} {w0.cosigner().verifier.vkey()}\n"
    for body in (
        wline + f"witness other {w0.cosigner().verifier.vkey()}\nquorum none\n",
        wline + f"group g 2 {w0.name}\nquorum g\n",
        wline + f"group g 0 {w0.name}\nquorum g\n",
        wline + f"group g any {w0.name} {w0.name}\nquorum g\n",
        f"witness none {w0.cosigner().verifier.vkey()}\nquorum none\n",
        "log " + log.witness_keys[1].vkey() + "\nquorum none\n",  # a witness key used as a log key
        "quorum none\x01\n",
    ):
        with pytest.raises(FormatError):
            Policy.parse(body.encode())


def test_signed_checkpoint_parse_keeps_every_byte() -> None:
    """Parsing and writing a signed checkpoint is lossless."""
    log = LogBuilder()
    log.add(3)
    data = log.checkpoint()
    assert SignedCheckpoint.parse(data).to_bytes() == data
    assert SignedCheckpoint.parse(data).checkpoint.origin == ORIGIN


def test_policy_with_non_utf8_key_name_is_a_format_error() -> None:
    """Found by fuzzing: a vkey name with a stray 0x80 octet is refused, not a crash."""
    log = LogBuilder()
    line = f"log \x80{log.log_key.vkey()}\nquorum none\n".encode("utf-8", "surrogateescape")
    with pytest.raises(FormatError):
        Policy.parse(line.replace(b"\xc2\x80", b"\x80"))
