"""SM2 at every signing point that is not a key file: COSE_Sign1 (readings, blocks, registry writes) with
alg -70100 (D-061), and signed notes with edgeroot's SM2 log and witness types (D-062), mixed with
Ed25519 ones under the C2SP rule that unknown signature lines are ignored."""

from __future__ import annotations

import cbor2
import gmalg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain_lite import b64, keys
from chain_lite.block import build_header, open_block, sign_block
from chain_lite.checkpoint import Checkpoint, sign_checkpoint
from chain_lite.cose import ALG_ES256, ALG_SM2, CoseSigner, parse_sign1, verify_sign1
from chain_lite.cosignature import SM2CosignatureVerifier, verifier_from_vkey
from chain_lite.envelope import BN, N, U, V, encode_envelope, open_envelope
from chain_lite.epcis_capture import (
    CAPTURE_KEY_TYPE,
    Capture,
    capture_key,
    parse_capture,
    sign_capture,
    signer_authority,
)
from chain_lite.errors import BadSignature, FormatError, KeyFormatError, NoTrustedSignature, QuorumNotMet
from chain_lite.keys import NoteKey
from chain_lite.note import (
    SIGTYPE_COSIGNATURE_V1,
    SIGTYPE_ED25519,
    SIGTYPE_SM2,
    SIGTYPE_SM2_COSIGNATURE,
    NoteSignature,
    SM2NoteVerifier,
    VerifierKey,
    key_id,
    open_note,
    parse_note,
    type_bytes,
)
from chain_lite.policy import Group, Log, Policy, Witness
from chain_lite.registry import Record, Value, pubkey_value
from chain_lite.sm2 import DEFAULT_ID, SM2PrivateKey

from .helpers import ORIGIN, TIME, LogBuilder

KID = "88.123.99/PUMP-0042"


# --- COSE_Sign1 ------------------------------------------------------------------------------------------


def test_an_sm2_envelope_carries_alg_sm2_and_the_oracle_verifies_its_sig_structure() -> None:
    """An SM2 device's envelope says alg -70100, opens with its key, and gmalg verifies the signature over
    the Sig_structure built independently with cbor2 (RFC 9052 §4.4) and the default identifier."""
    key = SM2PrivateKey.generate()
    raw = encode_envelope(CoseSigner(KID, key), [{BN: f"{KID}/", N: "temp", U: "Cel", V: 20.5}], 7)
    env = open_envelope(raw, {KID: key.public_key()}.get)
    assert (env.sign1.alg, env.counter, env.signer) == (ALG_SM2, 7, KID)
    tag = cbor2.loads(raw)
    protected, unprotected, payload, signature = tag.value
    assert cbor2.loads(protected)[1] == -70100 and unprotected == {}
    tbs = cbor2.dumps(["Signature1", protected, b"", payload])
    oracle = gmalg.SM2(uid=DEFAULT_ID, pk=key.public_key().point)
    assert oracle.verify(tbs, signature[:32], signature[32:])


@settings(max_examples=10, deadline=None)
@given(payload=st.binary(max_size=200))
def test_a_cose_sign1_made_by_the_oracle_verifies_with_ours(payload: bytes) -> None:
    """A COSE_Sign1 assembled with cbor2 and signed by gmalg verifies; altered, or under another key, not."""
    key = SM2PrivateKey.generate()
    protected = cbor2.dumps({1: ALG_SM2, 4: KID.encode()})
    tbs = cbor2.dumps(["Signature1", protected, b"", payload])
    oracle = gmalg.SM2(sk=key.private_scalar().to_bytes(32, "big"), uid=DEFAULT_ID, pk=key.public_key().point)
    r, s = oracle.sign(tbs)
    raw = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, r.rjust(32, b"\0") + s.rjust(32, b"\0")]))
    msg = parse_sign1(raw, "test", max_size=4096)
    verify_sign1(msg, key.public_key())
    with pytest.raises(BadSignature):
        verify_sign1(msg, SM2PrivateKey.generate().public_key())
    tampered = bytearray(raw)
    tampered[-1] ^= 1
    with pytest.raises(BadSignature):
        verify_sign1(parse_sign1(bytes(tampered), "test", max_size=4096), key.public_key())


def test_alg_and_key_type_must_agree() -> None:
    """An SM2 message checked with a P-256 key, or an ES256 one with an SM2 key, is a bad signature; the
    draft's -48 (now IANA's ML-DSA-44) is refused as an unknown algorithm."""
    sm2_key, p256_key = SM2PrivateKey.generate(), keys.generate_p256()
    sm2_msg = parse_sign1(CoseSigner(KID, sm2_key).sign(b"x"), "test", max_size=1024)
    es_msg = parse_sign1(CoseSigner(KID, p256_key).sign(b"x"), "test", max_size=1024)
    assert (sm2_msg.alg, es_msg.alg) == (ALG_SM2, ALG_ES256)
    with pytest.raises(BadSignature, match="does not match alg SM2"):
        verify_sign1(sm2_msg, p256_key.public_key())
    with pytest.raises(BadSignature, match="does not match alg ES256"):
        verify_sign1(es_msg, sm2_key.public_key())
    draft = cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -48, 4: b"k"}), {}, b"x", bytes(64)]))
    with pytest.raises(FormatError, match="unsupported alg -48"):
        parse_sign1(draft, "test", max_size=1024)


def test_an_sm2_gateway_signs_blocks_that_verify() -> None:
    """Gateway blocks are COSE_Sign1 too: an SM2 gateway key signs one and only its key verifies it."""
    gateway = SM2PrivateKey.generate()
    device = CoseSigner(KID, SM2PrivateKey.generate())
    envelope = encode_envelope(device, [{N: "flow", V: 1.0}], 1)
    opened = open_envelope(envelope, {KID: device.public_key}.get)
    header = build_header("88.123.99/GW-1", 0, bytes(32), [opened], 5)
    signed = sign_block(header, CoseSigner("88.123.99/GW-1", gateway))
    assert open_block(signed.raw, {"88.123.99/GW-1": gateway.public_key()}.get).header == header
    with pytest.raises(BadSignature):
        open_block(signed.raw, {"88.123.99/GW-1": SM2PrivateKey.generate().public_key()}.get)


def test_an_sm2_capture_key_signs_epcis_captures() -> None:
    """EPCIS captures are COSE_Sign1 too: a capture key registered as SM2 is the key the shared rule gives
    its signer, and the capture verifies with it (and with no other key)."""
    station = SM2PrivateKey.generate()
    record = Record("88.123.99/line-3", (Value(1, CAPTURE_KEY_TYPE, "string", "line 3"),
                                         pubkey_value(300, station.public_key())))  # fmt: skip
    event = b'{"type":"ObjectEvent","eventTime":"2026-11-30T08:00:00Z"}'
    capture = Capture("root.test", "ni:///sha-256;" + "ab" * 32 + "?ver=CBV2.0", event)
    raw = sign_capture(capture, CoseSigner("88.123.99/LINE-3", station)).raw
    signed = parse_capture(raw)
    key = capture_key(signer_authority("88.123.99/LINE-3"), "88.123.99/LINE-3", record)
    assert key == station.public_key() and signed.sign1.alg == ALG_SM2
    verify_sign1(signed.sign1, key)
    with pytest.raises(BadSignature):
        verify_sign1(signed.sign1, SM2PrivateKey.generate().public_key())


# --- signed notes, checkpoints and policies --------------------------------------------------------------


def _sm2_log(witnesses: int = 3) -> LogBuilder:
    log = LogBuilder(
        log_key=NoteKey.generate(ORIGIN, SIGTYPE_SM2),
        witness_keys=[NoteKey.generate(f"w{i}.test", SIGTYPE_SM2_COSIGNATURE) for i in range(witnesses)],
    )
    log.add(12)
    return log


def test_an_all_sm2_log_and_its_witnesses_verify_through_a_policy() -> None:
    """SM2 log signature and SM2 cosignatures: the policy (parsed back from its own text) verifies the
    checkpoint, counts the quorum, and refuses it short of the quorum."""
    log = _sm2_log()
    policy = Policy.parse(log.policy(quorum=2).to_text().encode())
    assert isinstance(policy.logs[0].verifier, SM2NoteVerifier)
    assert all(isinstance(w.verifier, SM2CosignatureVerifier) for w in policy.witnesses.values())
    verified = policy.verify_checkpoint(log.checkpoint(cosigners=2))
    assert verified.checkpoint.size == 12 and verified.cosigned_at == {"w0.test": TIME, "w1.test": TIME}
    with pytest.raises(QuorumNotMet):
        policy.verify_checkpoint(log.checkpoint(cosigners=1))


def test_every_bit_flip_of_an_sm2_signature_line_is_refused() -> None:
    """A known SM2 key's signature that fails rejects the whole note (c2sp.org/signed-note)."""
    log = _sm2_log(witnesses=1)
    policy = log.policy(quorum=1)
    note = parse_note(log.checkpoint(cosigners=1))
    for index in range(2):
        sig = note.signatures[index]
        for bit in range(0, len(sig.signature) * 8, 7):
            flipped = bytearray(sig.signature)
            flipped[bit // 8] ^= 0x80 >> (bit % 8)
            signatures = list(note.signatures)
            signatures[index] = type(sig)(sig.name, sig.key_id, bytes(flipped))
            with pytest.raises((BadSignature, NoTrustedSignature, FormatError)):
                policy.verify_checkpoint(type(note)(note.text, tuple(signatures)).to_bytes())


def test_mixed_suites_and_unknown_lines_are_ignored_by_the_c2sp_rule() -> None:
    """An Ed25519 log cosigned by an SM2 witness and an Ed25519 one: a policy that knows only the
    Ed25519 keys ignores the SM2 line; one that lists the SM2 witness counts it; an SM2 log signature
    next to an Ed25519 one is ignored by a verifier that trusts only the Ed25519 key."""
    ed_log = NoteKey.generate(ORIGIN, SIGTYPE_ED25519)
    sm2_log = NoteKey.generate(ORIGIN, SIGTYPE_SM2)
    ed_witness = NoteKey.generate("w-ed.test", SIGTYPE_COSIGNATURE_V1)
    sm2_witness = NoteKey.generate("w-sm2.test", SIGTYPE_SM2_COSIGNATURE)
    cp = Checkpoint(ORIGIN, 3, bytes(range(32)))
    note = sign_checkpoint(cp, ed_log.log_signer()).note
    sm2_signer = sm2_log.log_signer()
    sm2_line = NoteSignature(sm2_signer.name, sm2_signer.key_id, sm2_signer.sign(note.text.encode()))
    cosignatures = [w.cosigner().cosign(note, TIME) for w in (sm2_witness, ed_witness)]
    note = note.with_signatures([*cosignatures, sm2_line])
    data = note.to_bytes()
    ed_only = Policy(
        [Log(ed_log.log_signer().verifier)],
        [Witness("w-ed.test", ed_witness.cosigner().verifier)],
        quorum="w-ed.test",
    )
    assert ed_only.verify_checkpoint(data).cosigners == ("w-ed.test",)
    both = Policy(
        [Log(ed_log.log_signer().verifier)],
        [Witness(w.name, w.cosigner().verifier) for w in (ed_witness, sm2_witness)],
        [Group("all", 2, ("w-ed.test", "w-sm2.test"))],
        quorum="all",
    )
    assert set(both.verify_checkpoint(data).cosigners) == {"w-ed.test", "w-sm2.test"}
    # The same note read by a verifier that trusts only the SM2 log key: its line verifies too.
    assert open_note(parse_note(data), [sm2_signer.verifier]) == [sm2_signer.verifier]


def test_sm2_note_keys_round_trip_and_are_typed() -> None:
    """SM2 signer and verifier keys: 0xff and the type's identifier, key IDs over those bytes, the
    65-byte point in the vkey and the 32-byte scalar in the skey; log and witness keys are not mixed."""
    labels = {SIGTYPE_SM2: b"edgeroot/sm2/v1", SIGTYPE_SM2_COSIGNATURE: b"edgeroot/sm2-cosignature/v1"}
    for sigtype, label in labels.items():
        key = NoteKey.generate("k.example", sigtype)
        raw = b64.decode(key.vkey().split("+", 2)[2])
        assert raw is not None and raw.startswith(b"\xff" + label) and len(raw) == 1 + len(label) + 65
        assert type_bytes(sigtype) == b"\xff" + label
        assert key_id("k.example", sigtype, raw[1 + len(label) :]) == int(key.vkey().split("+")[1], 16)
        again = NoteKey.parse_skey(key.skey())
        assert again.vkey() == key.vkey() and str(VerifierKey.parse(key.vkey())) == key.vkey()
    with pytest.raises(KeyFormatError, match="witness key"):
        NoteKey.generate("w.example", SIGTYPE_SM2_COSIGNATURE).log_signer()
    with pytest.raises(KeyFormatError, match="log key"):
        NoteKey.generate("l.example", SIGTYPE_SM2).cosigner()
    witness_vkey = NoteKey.generate("w.example", SIGTYPE_SM2_COSIGNATURE).vkey()
    with pytest.raises(FormatError):
        Policy.parse(f"log {witness_vkey}\nquorum none\n".encode())


def test_bad_sm2_vkeys_are_refused_and_unknown_types_kept() -> None:
    """A wrong key ID, a point off the curve or of the wrong size: refused. A 0xff type edgeroot does not
    know parses as an unknown key (type 0xff) that no verifier is made for."""
    good = NoteKey.generate("k.example", SIGTYPE_SM2).vkey()
    name, hexid, data = good.split("+", 2)
    raw = b64.decode(data)
    assert raw is not None
    wrong_id = f"{name}+{int(hexid, 16) ^ 1:08x}+{data}"
    with pytest.raises(KeyFormatError, match="does not match"):
        VerifierKey.parse(wrong_id)
    prefix = len(type_bytes(SIGTYPE_SM2))

    def vkey_of(material: bytes) -> str:
        return f"{name}+{key_id(name, SIGTYPE_SM2, material[prefix:]):08x}+{b64.encode(material)}"

    with pytest.raises(KeyFormatError, match="65-byte"):
        VerifierKey.parse(vkey_of(raw[:-1]))
    off_curve = VerifierKey.parse(vkey_of(raw[:-1] + bytes([raw[-1] ^ 1])))
    with pytest.raises(KeyFormatError):
        verifier_from_vkey(off_curve)
    foreign = b"\xffsomeone-else/v9" + bytes(40)
    unknown = VerifierKey.parse(f"{name}+0badc0de+{b64.encode(foreign)}")
    assert unknown.sigtype == 0xFF
    with pytest.raises(KeyFormatError, match="unsupported signature type"):
        verifier_from_vkey(unknown)


@settings(max_examples=300)
@given(tail=st.binary(max_size=100), sigtype=st.sampled_from([SIGTYPE_SM2, SIGTYPE_SM2_COSIGNATURE]))
def test_garbage_sm2_note_keys_never_crash(tail: bytes, sigtype: int) -> None:
    """Any key material after an SM2 type parses or is a KeyFormatError, as vkey and as signer key."""
    encoded = b64.encode(type_bytes(sigtype) + tail)
    for text in (f"k.example+01234567+{encoded}", f"PRIVATE+KEY+k.example+01234567+{encoded}"):
        try:
            if text.startswith("PRIVATE"):
                NoteKey.parse_skey(text)
            else:
                verifier_from_vkey(VerifierKey.parse(text))
        except KeyFormatError:
            pass
