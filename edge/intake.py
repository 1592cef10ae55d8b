"""The ingest contract: what a connector hands the gateway and what it gets back.

A connector (MQTT, CoAP, a test's fake) sees the gateway as one door, an :class:`IngestPort`, and
nothing else of it::

    outcome = await port.submit(raw_envelope_bytes, source="mqtt:edgeroot/readings/pump")

``submit`` returns once the reading is **durable**: stored (``outcome.accepted``), durably rejected
(quarantined with ``outcome.reason``) or durably **held** (reason :data:`HELD`, below); only then may
the connector acknowledge its sender (MQTT PUBACK, CoAP 2.04 / 4.xx, serial ack frame).
``outcome.durable`` is False only when the gateway refuses input (:data:`STORE_FULL`,
:data:`SHUTTING_DOWN`, :data:`KEY_LOOKUP`): the sender must *not* be acknowledged, so it keeps the
reading and retries.

A reading is **held** (reason :data:`HELD`, ``durable`` True, ``accepted`` False) when its signer has no
key here yet and the root's registry may have one. It is written, in the same transaction as the rest of
its batch, to the gateway's ``held`` table: it is on disk and *will be judged*, so the connector
acknowledges it as it would a stored reading (CoAP 2.04 with the payload ``held: key lookup``, serial
ACK, MQTT PUBACK). It is not a stored reading yet: an end-to-end acknowledgement (MQTT ``ack_topic``)
lists it neither as stored nor as rejected, and a device that resends it later is answered as a
``duplicate`` once it is stored. The outcome comes at once, it never waits for the lookup, so a lookup
(or a flood of made-up signers) never delays anyone else's reading; later readings of the same signer
are held behind it, in arrival order. When the lookup finds the key, the gateway judges the held readings
as new ones; only a lookup that *proves* absence (a verified answer from the root) makes
``unknown-device`` final; a lookup that fails leaves them held, retried, and is a health problem
(docs/formats.md §8, the verdict table; D-059). When too many readings are held already
(:data:`edge.writer.MAX_HELD`), one more is refused unacknowledged instead (:data:`KEY_LOOKUP`).

``submit`` may block for a while: that is back-pressure, and a connector stops reading from its
transport meanwhile instead of buffering in memory.

Outcome reasons: :data:`HELD` and :data:`KEY_LOOKUP` (above), the verifier's verdicts (``oversize``,
``malformed``, ``unknown-device``, ``bad-signature``, ``replay``, ``counter-jump``: :mod:`edge.admission`), a
connector's own verdict passed as ``reject=`` (:data:`WRONG_CONTENT_FORMAT`), and the two refusals
above. An *accepted* outcome may carry the reason ``duplicate``: the reading was stored before (a
resend), so the sender is acknowledged as for a new one.

This module is the contract only: the implementation is :class:`edge.ingest.Ingest` over
:class:`edge.writer.Writer`, and connectors import neither (an import contract in pyproject.toml).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from chain_lite import cbor
from chain_lite.envelope import MAX_ENVELOPE_SIZE
from chain_lite.errors import ChainError

WRONG_CONTENT_FORMAT = "wrong-content-format"
"""A connector's verdict: the transport said the payload is not a COSE_Sign1 envelope."""
MALFORMED_BATCH = "malformed-batch"
"""A connector's verdict: the message is a CBOR array but not a batch of envelopes (:func:`split_batch`)."""


@dataclass(frozen=True, slots=True)
class Submission:
    """One envelope on its way to the writer, stamped with its arrival time."""

    raw: bytes
    source: str
    """Where it came from, for the quarantine and the logs (``mqtt:<topic>``, ``coap:<host>``)."""
    received_ms: int
    reject: str | None = None
    """A reason a connector already decided (e.g. :data:`WRONG_CONTENT_FORMAT`): quarantined unverified."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """``durable``: stored (accepted), durably quarantined or durably held (:data:`HELD`), so the sender
    may be acknowledged."""

    accepted: bool
    durable: bool
    reason: str | None = None
    detail: str = ""
    signer: str | None = None
    """For ``unknown-device``, :data:`HELD` and :data:`KEY_LOOKUP`: whose key was missing."""


ACCEPTED = Outcome(accepted=True, durable=True)
"""A new reading, stored (one shared value: outcomes are frozen, and a writer gives thousands a second)."""
STORE_FULL = Outcome(accepted=False, durable=False, reason="store-full", detail="disk budget reached")
KEY_LOOKUP = "key-lookup"
"""A refusal: the reading's signer's key is being looked up and no more readings can be held durably
now; not acknowledged, resend later."""
HELD = "held"
"""The reason of a durably held reading (``durable`` True, ``accepted`` False): on disk in the gateway,
waiting for its signer's key; acknowledge it, it is judged later (D-059)."""
SHUTTING_DOWN = Outcome(accepted=False, durable=False, reason="shutting-down", detail="gateway is stopping")


class Submit(Protocol):
    """Hand one envelope to the gateway; returns when it is durable or durably rejected."""

    async def __call__(self, raw: bytes, source: str, *, reject: str | None = None) -> Outcome: ...


class SubmitMany(Protocol):
    """Like :class:`Submit` for several envelopes at once (one crossing): outcomes in order."""

    async def __call__(
        self, items: list[tuple[bytes, str]], *, reject: str | None = None
    ) -> list[Outcome]: ...


class IngestPort(Protocol):
    """The gateway's door as connectors see it (the serial bridge reaches it through a connector)."""

    async def submit(self, raw: bytes, source: str, *, reject: str | None = None) -> Outcome: ...

    async def submit_many(
        self, items: list[tuple[bytes, str]], *, reject: str | None = None
    ) -> list[Outcome]: ...


# --- several readings per message (docs/formats.md §19, D-082) ----------------------------------------------

MAX_BATCH_ENVELOPES = 256
MAX_BATCH_BYTES = 512 * 1024
"""A batch message holds 1 to 256 envelopes in at most 512 KiB (the broker's and CoAP's limits are the
operator's; these keep one message's verification and transaction bounded)."""


class BatchError(ValueError):
    """A message that starts as a batch (a CBOR array) but is not one; ``reason`` says what is wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"batch of envelopes: {reason}")
        self.reason = reason


def is_batch(payload: bytes) -> bool:
    """True when ``payload`` starts with a CBOR array head (major type 4), as a batch does; a single
    envelope starts with tag 18 (``0xd2``)."""
    return bool(payload) and payload[0] >> 5 == 4


def split_batch(payload: bytes) -> list[bytes]:
    """The envelopes of a batch message, in order: a deterministically encoded CBOR array (definite
    length, shortest heads) of 1 to :data:`MAX_BATCH_ENVELOPES` byte strings, each a whole envelope
    (docs/formats.md §8), nothing after it. Each envelope is judged on its own by the gateway; this only
    cuts the message. Raises :class:`BatchError` naming what is wrong."""
    if len(payload) > MAX_BATCH_BYTES:
        raise BatchError(f"{len(payload)} bytes, limit {MAX_BATCH_BYTES}")
    try:
        items = cbor.decode_deterministic(payload, "batch", max_size=MAX_BATCH_BYTES)
    except ChainError as exc:
        raise BatchError(str(exc)) from exc
    if not isinstance(items, list):
        raise BatchError("not a CBOR array")
    if not 1 <= len(items) <= MAX_BATCH_ENVELOPES:
        raise BatchError(f"{len(items)} envelopes; a batch holds 1 to {MAX_BATCH_ENVELOPES}")
    for at, item in enumerate(items):
        if not isinstance(item, bytes):
            raise BatchError(f"item {at} is not a byte string (an envelope is carried as its bytes)")
        if len(item) > MAX_ENVELOPE_SIZE:
            raise BatchError(f"envelope {at} is {len(item)} bytes, limit {MAX_ENVELOPE_SIZE}")
    return items


def encode_batch(envelopes: list[bytes]) -> bytes:
    """The batch message :func:`split_batch` reads: a CBOR array of the envelopes as byte strings."""
    if not 1 <= len(envelopes) <= MAX_BATCH_ENVELOPES:
        raise BatchError(f"{len(envelopes)} envelopes; a batch holds 1 to {MAX_BATCH_ENVELOPES}")
    return cbor.head(4, len(envelopes)) + b"".join(cbor.encode_bstr(e) for e in envelopes)
