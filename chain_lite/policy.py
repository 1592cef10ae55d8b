"""C2SP tlog-policy: which logs and witnesses a verifier trusts, and the witness quorum.

Line based; items separated by spaces or tabs; ``#`` comments and blank lines ignored::

    log <vkey> [<url>]
    log-hash <hash> <vkey> [<url>]      (edgeroot: a log hashing with another profile than SHA-256)
    witness <name> <vkey> [<url>]
    group <name> all|any|<k> <member>...
    quorum <name>|none

Names are opaque octet strings, compared exactly; groups and the quorum may refer only to names defined
on earlier lines. A checkpoint is valid when a listed log whose key name equals the origin signed it and
valid cosignatures from the listed witnesses satisfy the quorum.

``log-hash`` is edgeroot's one addition (D-064): it pins the log's hash profile (``sm3``; ``sha256`` is
what a plain ``log`` line means). A C2SP verifier that does not know it refuses the policy instead of
checking an SM3 log's proofs with SHA-256, and a checkpoint whose declared profile differs is refused.

A log key is Ed25519 (type 0x01) or SM2, a witness key Ed25519 (0x04) or SM2 (D-062): the vkey says
which, so one policy may mix them (an SM2 log cosigned by Ed25519 witnesses, and so on).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from chain_lite.checkpoint import Checkpoint, SignedCheckpoint
from chain_lite.cosignature import (
    LogVerifier,
    WitnessVerifier,
    cosignature_timestamp,
    log_verifier,
    witness_verifier,
)
from chain_lite.errors import FormatError, NoTrustedSignature, OriginMismatch, QuorumNotMet
from chain_lite.note import Note, Verifier, VerifierKey, open_note
from chain_lite.suite import SHA256, HashSuite, HashSuiteMismatch, hash_suite

MAX_ENTRIES = 256
"""Limit on logs, witnesses and groups each; the spec recommends supporting at least 32."""
NONE = "none"
_WHITESPACE = " \t"


@dataclass(frozen=True, slots=True)
class Log:
    verifier: LogVerifier
    url: str | None = None
    suite: HashSuite = SHA256
    """The hash profile of the log's tree, map and blocks (fixed for the log's lifetime)."""


@dataclass(frozen=True, slots=True)
class Witness:
    name: str
    verifier: WitnessVerifier
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class VerifiedCheckpoint:
    """A checkpoint whose log signature and witness quorum have been verified against a policy."""

    checkpoint: Checkpoint
    note: Note
    log: str
    cosigners: tuple[str, ...]
    cosigned_at: Mapping[str, int] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return self.note.to_bytes()


class Policy:
    """A parsed, validated trust policy."""

    def __init__(
        self,
        logs: Iterable[Log],
        witnesses: Iterable[Witness] = (),
        groups: Iterable[Group] = (),
        quorum: str = NONE,
    ) -> None:
        self.logs = tuple(logs)
        self.witnesses = {w.name: w for w in witnesses}
        self.groups = {g.name: g for g in groups}
        self.quorum = quorum
        self._validate()
        # Built once: verify_checkpoint runs for every checkpoint a client or gateway sees.
        self._witness_by_key = {(w.verifier.name, w.verifier.key_id): w for w in self.witnesses.values()}
        self._witness_verifiers = [w.verifier for w in self.witnesses.values()]

    def _validate(self) -> None:
        keys = [log.verifier.public_key for log in self.logs] + [
            w.verifier.public_key for w in self.witnesses.values()
        ]
        if len(set(keys)) != len(keys):
            raise FormatError("policy", "the same public key is listed twice")
        suites: dict[str, HashSuite] = {}
        for log in self.logs:
            if suites.setdefault(log.verifier.name, log.suite) is not log.suite:
                raise FormatError("policy", f"log {log.verifier.name!r} is listed with two hashes")
        if self.quorum != NONE and self.quorum not in self.witnesses and self.quorum not in self.groups:
            raise FormatError("policy", f"quorum {self.quorum!r} is not a defined witness or group")

    # --- parsing and writing ---------------------------------------------------------------------------

    @classmethod
    def parse(cls, data: bytes) -> Policy:
        for byte in data:
            if (byte < 0x20 and byte not in (0x09, 0x0A)) or byte == 0x7F:
                raise FormatError("policy", f"control character {byte:#04x} not allowed")
        # surrogateescape maps every octet to one code point, so names stay opaque and exact.
        text = data.decode("utf-8", "surrogateescape")
        logs: list[Log] = []
        witnesses: dict[str, Witness] = {}
        groups: dict[str, Group] = {}
        quorum: str | None = None
        for number, raw_line in enumerate(text.split("\n"), start=1):
            line = raw_line.strip(_WHITESPACE)
            if not line or line.startswith("#"):
                continue
            # Only ASCII space and tab separate items; other Unicode spaces belong to names.
            words = [w for w in line.replace("\t", " ").split(" ") if w]
            try:
                keyword, args = words[0], words[1:]
                if keyword == "log":
                    logs.append(cls._parse_log(args))
                elif keyword == "log-hash":
                    if not args:
                        raise FormatError("policy", "log-hash takes a hash, a vkey and an optional URL")
                    logs.append(cls._parse_log(args[1:], hash_suite(args[0])))
                elif keyword == "witness":
                    witness = cls._parse_witness(args)
                    cls._new_name(witness.name, witnesses, groups)
                    witnesses[witness.name] = witness
                elif keyword == "group":
                    group = cls._parse_group(args, witnesses, groups)
                    groups[group.name] = group
                elif keyword == "quorum":
                    if quorum is not None:
                        raise FormatError("policy", "more than one quorum line")
                    if len(args) != 1:
                        raise FormatError("policy", "quorum takes exactly one name")
                    if args[0] != NONE and args[0] not in witnesses and args[0] not in groups:
                        raise FormatError("policy", f"quorum refers to undefined name {args[0]!r}")
                    quorum = args[0]
                else:
                    raise FormatError("policy", f"unknown keyword {keyword!r}")
                if max(len(logs), len(witnesses), len(groups)) > MAX_ENTRIES:
                    raise FormatError("policy", f"more than {MAX_ENTRIES} logs, witnesses or groups")
            except FormatError as exc:
                raise FormatError("policy", f"line {number}: {exc.reason}") from exc
        if quorum is None:
            raise FormatError("policy", "no quorum line")
        return cls(logs, witnesses.values(), groups.values(), quorum)

    @staticmethod
    def _new_name(name: str, witnesses: Mapping[str, Witness], groups: Mapping[str, Group]) -> None:
        if name == NONE:
            raise FormatError("policy", "'none' is reserved")
        if name in witnesses or name in groups:
            raise FormatError("policy", f"name {name!r} defined twice")

    @staticmethod
    def _parse_log(args: list[str], suite: HashSuite = SHA256) -> Log:
        if len(args) not in (1, 2):
            raise FormatError("policy", "log takes a vkey and an optional URL")
        verifier = log_verifier(VerifierKey.parse(args[0]))
        return Log(verifier, args[1] if len(args) == 2 else None, suite)

    @staticmethod
    def _parse_witness(args: list[str]) -> Witness:
        if len(args) not in (2, 3):
            raise FormatError("policy", "witness takes a name, a vkey and an optional URL")
        verifier = witness_verifier(VerifierKey.parse(args[1]))
        return Witness(args[0], verifier, args[2] if len(args) == 3 else None)

    @classmethod
    def _parse_group(
        cls, args: list[str], witnesses: Mapping[str, Witness], groups: Mapping[str, Group]
    ) -> Group:
        if len(args) < 3:
            raise FormatError("policy", "group takes a name, a threshold and at least one member")
        name, threshold_text, members = args[0], args[1], args[2:]
        cls._new_name(name, witnesses, groups)
        if len(set(members)) != len(members):
            raise FormatError("policy", f"group {name!r} lists a member twice")
        for member in members:
            if member not in witnesses and member not in groups:
                raise FormatError("policy", f"group {name!r} refers to undefined name {member!r}")
        if threshold_text == "all":
            threshold = len(members)
        elif threshold_text == "any":
            threshold = 1
        elif threshold_text.isascii() and threshold_text.isdigit() and len(threshold_text) < 6:
            threshold = int(threshold_text)
            if not 1 <= threshold <= len(members):
                raise FormatError("policy", f"group {name!r} threshold must be between 1 and {len(members)}")
        else:
            raise FormatError("policy", f"group {name!r} threshold must be all, any or a number")
        return Group(name, threshold, tuple(members))

    def to_text(self) -> str:
        lines = [
            ("log " if log.suite is SHA256 else f"log-hash {log.suite.name} ")
            + str(log.verifier.vkey())
            + (f" {log.url}" if log.url else "")
            for log in self.logs
        ]
        lines += [
            f"witness {w.name} {w.verifier.vkey()}" + (f" {w.url}" if w.url else "")
            for w in self.witnesses.values()
        ]
        for g in self.groups.values():
            lines.append(f"group {g.name} {g.threshold} {' '.join(g.members)}")
        lines.append(f"quorum {self.quorum}")
        return "\n".join(lines) + "\n"

    # --- evaluation ------------------------------------------------------------------------------------

    def suite_of(self, origin: str) -> HashSuite:
        """The hash profile this policy pins for the log ``origin`` (SHA-256 if it lists no such log)."""
        for log in self.logs:
            if log.verifier.name == origin:
                return log.suite
        return SHA256

    def quorum_met(self, cosigners: Iterable[str]) -> bool:
        """Whether valid cosignatures from the witnesses named ``cosigners`` satisfy the quorum."""
        have = set(cosigners)

        def witnessed(name: str) -> bool:
            if name == NONE:
                return True
            group = self.groups.get(name)
            if group is None:
                return name in have
            return sum(witnessed(m) for m in group.members) >= group.threshold

        return witnessed(self.quorum)

    def verify_checkpoint(
        self, data: bytes | SignedCheckpoint, origin: str | None = None
    ) -> VerifiedCheckpoint:
        """Verify a signed checkpoint: a listed log signed it, and the witness quorum cosigned it.

        ``origin`` pins the expected log when the policy lists several.
        """
        signed = data if isinstance(data, SignedCheckpoint) else SignedCheckpoint.parse(data)
        cp = signed.checkpoint
        if origin is not None and cp.origin != origin:
            raise OriginMismatch(origin, cp.origin)
        # The log's key name must be the origin line (tlog-policy "Defining a log").
        logs = [log.verifier for log in self.logs if log.verifier.name == cp.origin]
        if not logs:
            raise OriginMismatch(" or ".join(log.verifier.name for log in self.logs) or "(no log)", cp.origin)
        # Before any signature: a checkpoint of another profile is refused by name, never hashed with ours.
        pinned = self.suite_of(cp.origin)
        if cp.suite is not pinned:
            raise HashSuiteMismatch(f"checkpoint of {cp.origin}", pinned.name, cp.suite.name)
        verifiers: list[Verifier] = [*logs, *self._witness_verifiers]
        good = open_note(signed.note, verifiers)
        log_names = [v.name for v in good if v in logs]
        if not log_names:
            raise NoTrustedSignature(f"log {cp.origin}")
        # open_note verified every signature line of a known witness, so each one here is good.
        stamps: dict[str, int] = {}
        for sig in signed.note.signatures:
            witness = self._witness_by_key.get((sig.name, sig.key_id))
            if witness is not None:
                stamps[witness.name] = cosignature_timestamp(sig.signature)
        cosigners = list(stamps)
        if not self.quorum_met(cosigners):
            raise QuorumNotMet(self.quorum, cosigners)
        return VerifiedCheckpoint(cp, signed.note, log_names[0], tuple(cosigners), stamps)
