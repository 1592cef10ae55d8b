"""Reading verification: envelope structure, signer key, counter. Pure apart from two lookups (the
signer's key, and the readings already stored under a signer and counter).

Verdicts, in the order checked:

* ``oversize``: more than :data:`chain_lite.envelope.MAX_ENVELOPE_SIZE` bytes;
* ``malformed``: not a COSE_Sign1 envelope as ``docs/formats.md`` §8 defines (bad CBOR, wrong
  content format, bad SenML);
* ``unknown-device``: no key for the signer (the device, or the bridge for bridge-attested readings);
* ``bad-signature``;
* for a counter at or below the last one accepted from that signer: :class:`Duplicate` when a stored
  reading with that signer and counter has the same signed content (:func:`same_reading`), a resend
  to acknowledge again; else ``replay``. Counters, not envelope bytes, identify a reading: ECDSA
  signatures are malleable and a device may re-sign, so the same reading can arrive as different bytes
  (docs/decisions.md D-052);
* ``counter-jump``: a counter more than the window above the last one accepted (above 0 for a signer's
  first reading), so one wild counter cannot lock a device out (D-053);
* otherwise accepted; a counter more than one above the last is accepted and reported as a gap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from chain_lite.cose import Sign1, parse_sign1, verify_sign1
from chain_lite.envelope import MAX_ENVELOPE_SIZE, Envelope, decode_with_key
from chain_lite.errors import ChainError, SignatureError, UnknownSigner
from chain_lite.keys import PublicKey

DUPLICATE = "duplicate"
"""The reason of an accepted :class:`edge.intake.Outcome` for a reading that was stored before."""
REASONS = ("oversize", "malformed", "unknown-device", "bad-signature", "replay", "counter-jump")
COUNTER_WINDOW_DEFAULT = 10**16
"""The default of ``counters.max_jump``: wide enough for Modbus bridge counters, which are microseconds
since the epoch (D-034; 10^16 µs is the year 2286), and still 900 times narrower than the counter's
range, so a wild counter such as 2^63-1 is refused."""

StoredReadings = Callable[[str, int], Iterable[bytes]]
"""The raw envelopes stored under (signer, counter); empty when there is none (any more)."""


@dataclass(frozen=True, slots=True)
class Accepted:
    envelope: Envelope
    gap_from: int | None
    """The counter that was expected when this one skipped ahead, else None."""


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A reading stored before, received again: acknowledge it, store nothing, leave the counter."""

    envelope: Envelope


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    detail: str
    signer: str | None = None


Verdict = Accepted | Duplicate | Rejected


def same_reading(a: Sign1, b: Sign1) -> bool:
    """True when both carry the same signed content: protected header and payload, byte for byte (so the
    same signer, counter and SenML pack), whatever their signatures (D-052)."""
    return a.protected_bytes == b.protected_bytes and a.payload == b.payload


class ReadingVerifier:
    """Checks envelopes and advances per-signer counters (the caller persists them with the reading).

    ``stored`` finds the readings already stored under a signer and counter, including those accepted
    earlier in the batch being judged; ``window`` is ``counters.max_jump``.
    """

    def __init__(
        self,
        lookup: Callable[[str], PublicKey | None],
        counters: dict[str, int],
        *,
        stored: StoredReadings,
        window: int = COUNTER_WINDOW_DEFAULT,
    ) -> None:
        if window < 1:
            raise ValueError(f"counter window {window} < 1")
        self._lookup = lookup
        self._stored = stored
        self.counters = counters
        self.window = window

    def check(self, raw: bytes) -> Verdict:
        """Every check, in the order of the module docstring."""
        pre = self.precheck(raw)
        if isinstance(pre, Rejected):
            return pre
        env, key = pre
        try:
            verify_sign1(env.sign1, key)
        except SignatureError as exc:
            return Rejected("bad-signature", str(exc))
        return self.judge_counter(env)

    def precheck(self, raw: bytes) -> Rejected | tuple[Envelope, PublicKey]:
        """The checks before the signature (size, structure, signer's key): the envelope and the key its
        signature must be checked with, or the verdict. With :meth:`judge_counter` after a good signature
        this is :meth:`check` cut in two, so the signature can be checked elsewhere (in a worker process,
        :mod:`edge.verify_pool`) between them. Pure apart from the key lookup: it changes no counter."""
        if len(raw) > MAX_ENVELOPE_SIZE:
            return Rejected("oversize", f"{len(raw)} bytes, limit {MAX_ENVELOPE_SIZE}")
        try:
            return decode_with_key(raw, self._lookup)
        except UnknownSigner as exc:
            return Rejected("unknown-device", f"no key for {exc.kid}", exc.kid)
        except ChainError as exc:
            return Rejected("malformed", str(exc))

    def judge_counter(self, env: Envelope) -> Verdict:
        """The counter of an authentic reading: duplicate, replay, jump, or accepted (maybe with a gap)."""
        last = self.counters.get(env.signer)
        if last is not None and env.counter <= last:
            return self._seen_counter(env, last)
        base = 0 if last is None else last
        if env.counter - base > self.window:
            above = "0 (a first reading; " if last is None else f"the last accepted {last} ("
            return Rejected(
                "counter-jump",
                f"{env.signer} counter {env.counter} is {env.counter - base} above {above}"
                f"counters.max_jump {self.window})",
            )
        self.counters[env.signer] = env.counter
        gap = None if last is None or env.counter == last + 1 else last + 1
        return Accepted(env, gap)

    def _seen_counter(self, env: Envelope, last: int) -> Duplicate | Rejected:
        """A counter at or below the last accepted: a resend of a stored reading, or a replay."""
        stored = list(self._stored(env.signer, env.counter))
        # Stored envelopes passed these checks when they were stored: parsing them cannot fail.
        if any(same_reading(env.sign1, parse_sign1(s, "stored reading", max_size=len(s))) for s in stored):
            return Duplicate(env)
        why = (
            "differs from the stored reading with that counter"
            if stored
            # Pruned (only anchored readings are), or never stored (it arrived after a later counter, or
            # an operator set the counter past it): without an original, a resend cannot be told from a
            # replay. Refusing loses nothing that was stored: a pruned original was anchored first.
            else "no stored reading to compare it with (pruned, or never stored)"
        )
        return Rejected("replay", f"{env.signer} counter {env.counter} <= last accepted {last}; {why}")
