"""The one exception tree of rootclient/: what went wrong talking to a root node or checking its answer."""

from __future__ import annotations


class RootClientError(Exception):
    """Base of every error this package raises."""


class ClientError(RootClientError):
    """The node could not be reached or answered with an error."""

    def __init__(self, message: str, status: int = 0, handle_code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.handle_code = handle_code


class ProtocolError(RootClientError):
    """A message of the root's protocol has the wrong shape: not JSON, a missing or mistyped field,
    bad base64, a hash of the wrong length, an unparsable receipt or checkpoint.

    ``what`` names the message (``resolution proof``, ``blocks[2].block``), ``reason`` says what is wrong.
    A malformed message proves nothing about the log, so it is never turned into equivocation evidence.
    """

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}: {reason}")
        self.what = what
        self.reason = reason


class PinError(RootClientError):
    """The stored pin cannot be used: unreadable, not trusted by the policy, or for another log."""


class EquivocationDetected(ClientError):
    """The log showed two signed, inconsistent checkpoints; ``evidence`` says where the proof was saved
    (a file path for the CLI, the gateway store's key for the gateway)."""

    def __init__(self, message: str, evidence: str) -> None:
        super().__init__(message)
        self.evidence = evidence


class ReferralError(RootClientError):
    """Following a referral failed (D-076). ``hops`` are the hops proven before it (what was learnt);
    ``kind`` names the failure for scripts (the CLI's exit code and ``--json`` ``referral_error``)."""

    kind = "referral"

    def __init__(self, message: str, hops: tuple[object, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.hops = hops


class ReferralLoop(ReferralError):
    """A delegation leads back to a log already visited on this resolution."""

    kind = "loop"


class ReferralTooDeep(ReferralError):
    """More delegations than the client follows (``max_hops``)."""

    kind = "depth"


class DeadChild(ReferralError):
    """No URL of the delegated node gave a usable answer (unreachable, an error status, out of protocol)."""

    kind = "dead-child"


class NotDelegated(ReferralError):
    """The delegated node does not hold the prefix delegated to it, or passes on one outside it."""

    kind = "not-delegated"


class ForgedDelegation(ReferralError):
    """The proof of who is responsible (a prefix record, a delegation) does not verify."""

    kind = "forged-delegation"


class ForgedAnswer(ReferralError):
    """A delegated node's answer does not verify under the policy its delegation commits to."""

    kind = "forged-answer"


class DelegationChanged(ReferralError):
    """The pinned checkpoint of a delegated log does not verify under the policy the delegation now
    commits to: the delegation changed (new log key, new witnesses) after this client pinned the log."""

    kind = "delegation-changed"
