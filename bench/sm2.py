"""`make bench`: SM2 (国密) envelope decode + verify beside its P-256 twin and OpenSSL's raw figure.

Issue 16's floor: an SM2 envelope decoded and verified at >= 1,500/s on one core, about 70 % of what
`openssl speed sm2` reports here. `openssl speed` counts operations per second of *CPU time* (its default
`usertime`), so the envelope paths are timed the same way (``time.process_time``), in the same run, on
the same core; wall-clock figures are printed beside them. The other SM2 libraries D-060 measured are
timed too where they are installed (the test extra brings gmalg and tongsuopy).
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable

from results import record  # bench/ is on sys.path when run as a script

from chain_lite import keys
from chain_lite.cose import CoseSigner
from chain_lite.envelope import BN, BT, N, U, V, encode_envelope, open_envelope
from chain_lite.sm2 import SM2PrivateKey

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
SECONDS = float(os.environ.get("BENCH_SM2_SECONDS", "2"))
TARGET = 1_500


def pin_one_core() -> int | None:
    """Run on one core (the last), as `openssl speed` below does; None where affinity is not settable."""
    try:
        core = max(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
    except (AttributeError, OSError):
        return None
    return core


def rates(work: Callable[[], int]) -> tuple[float, float]:
    """Medians of RUNS runs of ``work`` (returns how many operations it did): per CPU second, per second."""
    cpu, wall = [], []
    for _ in range(RUNS):
        c0, w0 = time.process_time(), time.perf_counter()
        n = work()
        cpu.append(n / (time.process_time() - c0))
        wall.append(n / (time.perf_counter() - w0))
    return statistics.median(cpu), statistics.median(wall)


def envelopes(key_of: Callable[[], keys.PrivateKey], count: int) -> Callable[[], int]:
    devices = {f"88.123.99/PUMP-{i:04d}": CoseSigner(f"88.123.99/PUMP-{i:04d}", key_of()) for i in range(10)}
    lookup = {d: s.public_key for d, s in devices.items()}.get
    signed = []
    for n in range(count):
        device, signer = list(devices.items())[n % 10]
        records = [{BN: f"urn:dev:{device}:", BT: 1_760_000_000 + n, N: "temp", U: "Cel", V: 20.5 + n % 7}]
        signed.append(encode_envelope(signer, records, n + 1))

    def work() -> int:
        for raw in signed:
            open_envelope(raw, lookup)
        return len(signed)

    return work


def raw_sm2(count: int) -> Callable[[], int]:
    key = SM2PrivateKey.generate()
    message = b"m" * 200
    signature, public = key.sign(message), key.public_key()

    def work() -> int:
        for _ in range(count):
            public.verify(signature, message)
        return count

    return work


def openssl_speed(core: int | None) -> tuple[float, float] | None:
    """`openssl speed sm2` verify/s: CPU time (its default) and elapsed (``-elapsed``), on ``core``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    prefix = ["taskset", "-c", str(core)] if core is not None and shutil.which("taskset") else []
    figures = []
    for extra in ([], ["-elapsed"]):
        out = subprocess.run(
            [*prefix, openssl, "speed", "-seconds", str(int(SECONDS) or 1), *extra, "sm2"],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        match = re.search(r"SM2 \(CurveSM2\)\s+\S+\s+\S+\s+\S+\s+(\S+)", out)
        if match is None:
            return None
        figures.append(float(match.group(1)))
    return figures[0], figures[1]


def other_libraries() -> dict[str, float]:
    """Raw verify per CPU second of the SM2 libraries D-060 compared, where installed."""
    message = b"m" * 200
    found: dict[str, float] = {}
    try:
        from tongsuopy.crypto import hashes as ts_hashes  # noqa: PLC0415 (optional: the test extra)
        from tongsuopy.crypto.asymciphers import ec as ts_ec  # noqa: PLC0415

        key = ts_ec.generate_private_key(ts_ec.SM2())
        sig = key.sign(message, ts_ec.ECDSA(ts_hashes.SM3()))
        pub = key.public_key()

        def tongsuo() -> int:
            for _ in range(500):
                pub.verify(sig, message, ts_ec.ECDSA(ts_hashes.SM3()))
            return 500

        found["tongsuopy 1.0 (Tongsuo, OpenSSL 1.1.1h fork, bundled)"] = rates(tongsuo)[0]
    except ImportError:
        pass
    try:
        import gmalg  # noqa: PLC0415 (optional: the test extra)

        sk, pk = gmalg.SM2().generate_keypair()
        sm2 = gmalg.SM2(sk, b"1234567812345678", pk)
        r, s = sm2.sign(message)

        def pure() -> int:
            for _ in range(10):
                sm2.verify(message, r, s)
            return 10

        found["gmalg (pure Python)"] = rates(pure)[0]
    except ImportError:
        pass
    return found


def main() -> None:
    core = pin_one_core()
    print(f"edgeroot SM2 benchmarks: median of {RUNS} runs, one core ({core=}), CPU time like openssl speed")
    raw_openssl = openssl_speed(core)
    sm2_cpu, sm2_wall = rates(envelopes(keys.generate_sm2, 1000))
    p256_cpu, p256_wall = rates(envelopes(keys.generate_p256, 3000))
    raw_cpu, _ = rates(raw_sm2(1000))
    verdict = sm2_cpu >= TARGET
    print(f"  SM2 envelope decode + verify   {sm2_cpu:>9,.0f}/s CPU ({sm2_wall:,.0f}/s wall), want {TARGET}")
    print(f"  P-256 envelope decode + verify {p256_cpu:>9,.0f}/s CPU ({p256_wall:,.0f}/s wall)")
    print(f"  SM2 raw verify (chain_lite.sm2) {raw_cpu:>8,.0f}/s CPU")
    record(
        "sm2",
        "SM2 envelope decode + verify (one core, per CPU second)",
        f"{sm2_cpu:,.0f} envelopes/s ({sm2_wall:,.0f}/s wall; median of {RUNS})",
        f">= {TARGET:,} envelopes/s",
        verdict,
    )
    record("sm2", "P-256 envelope decode + verify, same run (per CPU second)", f"{p256_cpu:,.0f} envelopes/s")
    record("sm2", "SM2 raw verify through chain_lite.sm2 (per CPU second)", f"{raw_cpu:,.0f}/s")
    if raw_openssl is not None:
        speed_cpu, speed_elapsed = raw_openssl
        share = sm2_cpu / speed_cpu
        print(f"  openssl speed sm2 verify       {speed_cpu:>9,.0f}/s CPU ({speed_elapsed:,.0f}/s elapsed)")
        print(f"  -> the SM2 envelope path runs at {share:.0%} of OpenSSL's raw figure (issue: about 70 %)")
        record(
            "sm2",
            "raw `openssl speed sm2` verify, same run, for context",
            f"{speed_cpu:,.0f}/s CPU ({speed_elapsed:,.0f}/s elapsed); envelope path at {share:.0%} of it",
        )
    for name, rate in other_libraries().items():
        print(f"  {name}: {rate:,.0f} verify/s CPU")
        record("sm2", f"raw SM2 verify, {name}, for context", f"{rate:,.0f}/s")


if __name__ == "__main__":
    main()
