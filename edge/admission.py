"""Reading verification: envelope structure, signer key, counter. Pure apart from the key lookup.

Verdicts, in the order checked:

* ``oversize``: more than :data:`chain_lite.envelope.MAX_ENVELOPE_SIZE` bytes;
* ``malformed``: not a COSE_Sign1 envelope as ``docs/formats.md`` §8 defines (bad CBOR, wrong
  content format, bad SenML);
* ``unknown-device``: no key for the signer (the device, or the bridge for bridge-attested readings);
* ``bad-signature``;
* ``replay``: a counter at or below the last one accepted from that signer. Counters, not envelope
  bytes, identify a reading: ECDSA signatures are malleable, so the same reading can arrive as
  different bytes (docs/decisions.md);
* otherwise accepted; a counter more than one above the last is accepted and reported as a gap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from chain_lite.cose import verify_sign1
from chain_lite.envelope import MAX_ENVELOPE_SIZE, Envelope, decode_envelope
from chain_lite.errors import ChainError, SignatureError
from chain_lite.keys import PublicKey

REASONS = ("oversize", "malformed", "unknown-device", "bad-signature", "replay")


@dataclass(frozen=True, slots=True)
class Accepted:
    envelope: Envelope
    gap_from: int | None
    """The counter that was expected when this one skipped ahead, else None."""


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    detail: str
    signer: str | None = None


Verdict = Accepted | Rejected


class ReadingVerifier:
    """Checks envelopes and advances per-signer counters (the caller persists them with the reading)."""

    def __init__(self, lookup: Callable[[str], PublicKey | None], counters: dict[str, int]) -> None:
        self._lookup = lookup
        self.counters = counters

    def check(self, raw: bytes) -> Verdict:
        if len(raw) > MAX_ENVELOPE_SIZE:
            return Rejected("oversize", f"{len(raw)} bytes, limit {MAX_ENVELOPE_SIZE}")
        try:
            env = decode_envelope(raw)
        except ChainError as exc:
            return Rejected("malformed", str(exc))
        key = self._lookup(env.signer)
        if key is None:
            return Rejected("unknown-device", f"no key for {env.signer}", env.signer)
        try:
            verify_sign1(env.sign1, key)
        except SignatureError as exc:
            return Rejected("bad-signature", str(exc))
        last = self.counters.get(env.signer)
        if last is not None and env.counter <= last:
            return Rejected("replay", f"{env.signer} counter {env.counter} <= last accepted {last}")
        self.counters[env.signer] = env.counter
        gap = None if last is None or env.counter == last + 1 else last + 1
        return Accepted(env, gap)
