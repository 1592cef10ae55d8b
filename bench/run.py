"""`make bench`: throughput of chain_lite's hot paths, medians of several runs, beside each target.

Single process, so every figure is one core. The machine is noisy (2 cores): compare medians and ratios,
not single runs.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from results import record  # bench/ is on sys.path when run as a script

from chain_lite import keys, merkle
from chain_lite.checkpoint import Checkpoint, sign_checkpoint
from chain_lite.cose import CoseSigner, verify_sign1
from chain_lite.envelope import BN, BT, N, U, V, decode_envelope, encode_envelope, open_envelope
from chain_lite.errors import UnknownSigner
from chain_lite.note import SIGTYPE_COSIGNATURE_V1, SIGTYPE_ED25519
from chain_lite.policy import Log, Policy, Witness
from chain_lite.suite import SHA256, SM3, HashSuite

RUNS = int(os.environ.get("BENCH_RUNS", "5"))


def rate(label: str, work: Callable[[], int]) -> float:
    """Median operations per second of ``work`` (which returns how many operations it did)."""
    rates = []
    for _ in range(RUNS):
        start = time.perf_counter()
        n = work()
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def bench_append(suite: HashSuite = SHA256) -> float:
    entries = [os.urandom(64) for _ in range(200_000)]

    def work() -> int:
        merkle.MerkleTree(suite=suite).append_entries(entries)
        return len(entries)

    return rate("append", work)


def _big_tree(suite: HashSuite = SHA256) -> merkle.MerkleTree:
    tree = merkle.MerkleTree(suite=suite)
    tree.append_entries(i.to_bytes(8, "big") for i in range(1 << 20))
    return tree


def bench_inclusion(tree: merkle.MerkleTree) -> float:
    size, suite = tree.size, tree.suite
    cases = [
        (i, merkle.leaf_hash(i.to_bytes(8, "big"), suite=suite), tree.inclusion_proof(i))
        for i in range(0, size, size // 2000)
    ]
    root = tree.root()

    def work() -> int:
        for i, leaf, proof in cases:
            merkle.verify_inclusion(i, size, leaf, proof, root, suite=suite)
        return len(cases)

    return rate("inclusion", work)


def bench_consistency(tree: merkle.MerkleTree) -> float:
    size, suite = tree.size, tree.suite
    cases = [(m, tree.root_at(m), tree.consistency_proof(m)) for m in range(1, size, size // 2000)]
    root = tree.root()

    def work() -> int:
        for m, old_root, proof in cases:
            merkle.verify_consistency(m, size, proof, old_root, root, suite=suite)
        return len(cases)

    return rate("consistency", work)


def bench_raw_hash(suite: HashSuite) -> float:
    """The raw limit under an append: one-shot hashes of a 65-byte node input, nothing else."""
    data = b"\x01" + os.urandom(64)
    new = suite.new

    def work() -> int:
        for _ in range(100_000):
            new(data).digest()
        return 100_000

    return rate("hash", work)


ENVELOPE_BATCH = 100
"""Envelopes judged together, as the gateway's writer takes a burst (edge/ingest.py, up to 1,000)."""


def bench_envelopes(*, interleaved: bool = False) -> float:
    """Envelopes decoded and verified as the gateway judges a batch (edge/writer.py ``_authentic``): every
    envelope of the batch decoded and its signer's key looked up, then every signature verified. With
    ``interleaved``, each envelope is decoded and verified before the next (``open_envelope``, as a root's
    block intake does): the Python work between two verifications evicts OpenSSL's P-256 tables from
    the core's L2 cache, which costs more than the decoding itself (D-147)."""
    devices = {
        f"88.123.99/PUMP-{i:04d}": CoseSigner(f"88.123.99/PUMP-{i:04d}", keys.generate_p256())
        for i in range(10)
    }
    lookup = {d: s.public_key for d, s in devices.items()}.get
    envelopes = []
    for n in range(3000):
        device, signer = list(devices.items())[n % 10]
        records = [{BN: f"urn:dev:{device}:", BT: 1_760_000_000 + n, N: "temp", U: "Cel", V: 20.5 + n % 7}]
        envelopes.append(encode_envelope(signer, records, n + 1))
    batches = [envelopes[i : i + ENVELOPE_BATCH] for i in range(0, len(envelopes), ENVELOPE_BATCH)]

    def work() -> int:
        for batch in batches:
            checked = [(env, lookup(env.signer)) for env in map(decode_envelope, batch)]
            for env, key in checked:
                if key is None:
                    raise UnknownSigner(env.signer)
                verify_sign1(env.sign1, key)
        return len(envelopes)

    def one_by_one() -> int:
        for raw in envelopes:
            open_envelope(raw, lookup)
        return len(envelopes)

    return rate("envelope", one_by_one if interleaved else work)


def bench_checkpoints(witnesses: int) -> float:
    log_key = keys.NoteKey.generate("bench.log", SIGTYPE_ED25519)
    wkeys = [keys.NoteKey.generate(f"w{i}.bench", SIGTYPE_COSIGNATURE_V1) for i in range(witnesses)]
    policy = Policy(
        [Log(log_key.log_signer().verifier)],
        [Witness(w.name, w.cosigner().verifier) for w in wkeys],
        quorum=wkeys[0].name if wkeys else "none",
    )
    note = sign_checkpoint(Checkpoint("bench.log", 123456, os.urandom(32)), log_key.log_signer()).note
    data = note.with_signatures(w.cosigner().cosign(note, 1_760_000_000) for w in wkeys).to_bytes()

    def work() -> int:
        for _ in range(2000):
            policy.verify_checkpoint(data)
        return 2000

    return rate("checkpoint", work)


def bench_raw_p256() -> float:
    key = keys.generate_p256()
    sig = key.sign(b"m" * 100, ec.ECDSA(hashes.SHA256()))
    public = key.public_key()

    def work() -> int:
        for _ in range(2000):
            public.verify(sig, b"m" * 100, ec.ECDSA(hashes.SHA256()))
        return 2000

    return rate("p256", work)


def bench_raw_ed25519() -> float:
    key = keys.generate_ed25519()
    sig = key.sign(b"m" * 100)
    public = key.public_key()

    def work() -> int:
        for _ in range(2000):
            public.verify(sig, b"m" * 100)
        return 2000

    return rate("ed25519", work)


def main() -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"edgeroot chain_lite benchmarks: {machine}, median of {RUNS} runs, one core")
    tree, sm3_tree = _big_tree(), _big_tree(SM3)
    # The raw limits first, in the same process and run as the figures they bound (issue 13 item 8).
    raw_p256, raw_ed25519 = bench_raw_p256(), bench_raw_ed25519()
    raw_sha256, raw_sm3 = bench_raw_hash(SHA256), bench_raw_hash(SM3)
    envelopes, checkpoints = bench_envelopes(), bench_checkpoints(0)
    one_by_one = bench_envelopes(interleaved=True)

    def hashes(raw: float, label: str) -> Callable[[float], str]:
        """How many raw one-shot hashes of a 65-byte node fit in the time of one operation."""
        return lambda value: f"the time of {raw / value:.1f} raw {label} node hashes each"

    def ed25519(value: float, signatures: int) -> str:
        """The share of raw Ed25519 verification speed, divided by the signatures each check verifies."""
        per = "" if signatures == 1 else f" / {signatures} ({signatures} signatures each)"
        return f"{value * signatures / raw_ed25519:.0%} of raw Ed25519 verify{per}"

    sha, sm3 = hashes(raw_sha256, "SHA-256"), hashes(raw_sm3, "SM3")
    # (what, value, target, unit, the raw limit beside it, met); the envelope target is a share of raw
    # P-256 verify in the same run (issue 13), so it holds on a slower or busier machine too.
    rows: list[tuple[str, float, str, str, str, bool | None]] = []

    def row(what: str, value: float, target: float | None, unit: str, limit: str) -> None:
        met = None if target is None else value >= target
        rows.append((what, value, "-" if target is None else f">= {target:,} {unit}", unit, limit, met))

    append = bench_append()
    row("Merkle append (64-byte leaves, hashing included)", append, 400_000, "leaves/s", sha(append))
    append_sm3 = bench_append(SM3)
    row(
        "Merkle append, SM3 log (64-byte leaves, hashing incl.)",
        append_sm3,
        150_000,
        "leaves/s",
        sm3(append_sm3),
    )
    for what, value, target, limit in (
        ("inclusion proof verify (2^20 leaves)", bench_inclusion(tree), 50_000, sha),
        ("consistency proof verify (2^20 leaves)", bench_consistency(tree), 50_000, sha),
        ("inclusion proof verify, SM3 log (2^20 leaves)", bench_inclusion(sm3_tree), None, sm3),
        ("consistency proof verify, SM3 log (2^20 leaves)", bench_consistency(sm3_tree), None, sm3),
    ):
        row(what, value, target, "proofs/s", limit(value))
    share = envelopes / raw_p256
    rows.append(("envelope decode + ES256 verify", envelopes, ">= 85% of raw P-256 verify, same run",
                 "envelopes/s", f"{share:.0%} of raw P-256 verify", share >= 0.85))  # fmt: skip
    row("same, one envelope at a time (open_envelope)", one_by_one, None, "envelopes/s",
        f"{one_by_one / raw_p256:.0%} of raw P-256 verify")  # fmt: skip
    row(
        "checkpoint verify (log signature only)",
        checkpoints,
        10_000,
        "checkpoints/s",
        ed25519(checkpoints, 1),
    )
    cosigned = bench_checkpoints(2)
    row("checkpoint verify (log + 2 cosignatures)", cosigned, None, "checkpoints/s", ed25519(cosigned, 3))
    print(f"\n| {'what':<50} | {'median':>12} | {'unit':<13} | raw limit, same run | verdict |")
    for what, value, target, unit, limit, met in rows:
        verdict = "-" if met is None else ("meets" if met else "MISSES")
        print(f"| {what:<50} | {value:>12,.0f} | {unit:<13} | {limit} | {verdict} (target {target}) |")
        record("chain_lite", what, f"{value:,.0f} {unit} (median of {RUNS}) = {limit}", target, met)
    print(
        f"\nRaw limits, same process: P-256 verify {raw_p256:,.0f}/s, Ed25519 verify {raw_ed25519:,.0f}/s, "
        f"SHA-256 of a 65-byte node {raw_sha256:,.0f}/s, SM3 {raw_sm3:,.0f}/s (~2 hashes per appended leaf)"
    )
    record("chain_lite", "raw SHA-256 of a 65-byte node (hashlib), same run", f"{raw_sha256:,.0f}/s")
    record("chain_lite", "raw SM3 of a 65-byte node (OpenSSL), same run", f"{raw_sm3:,.0f}/s")
    record("chain_lite", "raw P-256 verify (cryptography), same run", f"{raw_p256:,.0f}/s")
    record("chain_lite", "raw Ed25519 verify (cryptography), same run", f"{raw_ed25519:,.0f}/s")


if __name__ == "__main__":
    main()
