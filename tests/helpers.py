"""Small builders shared by tests: a log with witnesses and a policy trusting them."""

from __future__ import annotations

from dataclasses import dataclass, field

from chain_lite.checkpoint import Checkpoint, sign_checkpoint, suite_extensions
from chain_lite.keys import NoteKey
from chain_lite.merkle import MerkleTree
from chain_lite.note import SIGTYPE_COSIGNATURE_V1, SIGTYPE_ED25519, SIGTYPE_SM2, SIGTYPE_SM2_COSIGNATURE
from chain_lite.policy import Group, Log, Policy, Witness
from chain_lite.suite import SHA256, HashSuite, LogProfile

ORIGIN = "log.test.edgeroot.example"
TIME = 1_760_000_000


@dataclass
class LogBuilder:
    log_key: NoteKey = field(default_factory=lambda: NoteKey.generate(ORIGIN, SIGTYPE_ED25519))
    witness_keys: list[NoteKey] = field(
        default_factory=lambda: [NoteKey.generate(f"w{i}.test", SIGTYPE_COSIGNATURE_V1) for i in range(3)]
    )
    tree: MerkleTree = field(default_factory=MerkleTree)
    suite: HashSuite = SHA256
    """The log's hash profile: its tree, its policy line and its checkpoints' hash line follow it."""

    def __post_init__(self) -> None:
        if self.tree.suite is not self.suite:
            self.tree = MerkleTree(suite=self.suite)

    @classmethod
    def of_profile(cls, profile: LogProfile) -> LogBuilder:
        """A log of ``root init --suite``'s profile: its hash and log key type; the witnesses cosign with
        SM2 when the log key is SM2 (an all-SM deployment), else with Ed25519."""
        sm = profile.log_sigtype == SIGTYPE_SM2
        wtype = SIGTYPE_SM2_COSIGNATURE if sm else SIGTYPE_COSIGNATURE_V1
        return cls(
            NoteKey.generate(ORIGIN, profile.log_sigtype),
            [NoteKey.generate(f"w{i}.test", wtype) for i in range(3)],
            suite=profile.hash,
        )

    def policy(self, quorum: int = 2) -> Policy:
        names = tuple(w.name for w in self.witness_keys)
        return Policy(
            [Log(self.log_key.log_signer().verifier, suite=self.suite)],
            [Witness(w.name, w.cosigner().verifier) for w in self.witness_keys],
            [Group("witnesses", quorum, names)],
            quorum="witnesses",
        )

    def checkpoint(self, size: int | None = None, *, cosigners: int = 3, root: bytes | None = None) -> bytes:
        size = self.tree.size if size is None else size
        root = root if root is not None else self.tree.root_at(size)
        cp = Checkpoint(ORIGIN, size, root, suite_extensions(self.suite))
        note = sign_checkpoint(cp, self.log_key.log_signer()).note
        note = note.with_signatures(w.cosigner().cosign(note, TIME) for w in self.witness_keys[:cosigners])
        return note.to_bytes()

    def add(self, n: int) -> None:
        start = self.tree.size
        self.tree.append_entries(f"entry {i}".encode() for i in range(start, start + n))
