"""`make bench`: the root console verifying an answer in headless Chromium, all-SM beside default (D-106).

The page checks an SM log's answers with sm-crypto's built files (SM2 in JavaScript big integers, SM3 in
JavaScript) where a default log's use WebCrypto (Ed25519, SHA-256, native). Timed inside the page, in the
same browser and run: one whole answer verified (log signature, witness cosignature, inclusion and map
proofs: ``verifyResolution``) on an all-SM node and on a default node, and the raw primitives beside
them (one SM2 verify, one SM3 hash of 65 bytes, one WebCrypto Ed25519 verify and SHA-256). The first
SM use also fetches and runs the two vendored scripts: timed once per fresh page. No target: the issue
sets none for the page; the figures say what a user waits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from results import record  # bench/ is on sys.path when run as a script

from chain_lite.registry import Value
from edgeroot.system import System, wait_until
from rootclient import routes
from rootclient.client import RootClient

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
ANSWERS = int(os.environ.get("BENCH_CONSOLE_ANSWERS", "10"))
PUMP = "88.123/PUMP-0042"
CHROMIUM = shutil.which("chromium-headless-shell") or next(
    (str(p) for p in [Path("/usr/lib/chromium/chromium-headless-shell")] if p.exists()), None
)

# Runs in the console page: the ms of one whole verification (median of `answers`), then ms per raw op.
TIMING = """async ([identifier, answers]) => {
  const api = await import("/console/node_api.js");
  const { verifyResolution, verdict } = await import("/console/resolution.js");
  const sm = await import("/console/sm.js");
  const bytes = await import("/console/bytes.js");
  const t0 = performance.now();
  await sm.sm3(new Uint8Array(1));  // first SM use: fetches and runs the vendored scripts
  const firstUse = performance.now() - t0;
  const answer = await api.getJson(api.config.resolve, identifier);
  const pinned = await api.policy();
  const whole = [];
  let word = null;
  for (let i = 0; i < answers; i++) {
    const s = performance.now();
    word = verdict(await verifyResolution(identifier, answer, pinned));
    whole.push(performance.now() - s);
  }
  whole.sort((a, b) => a - b);
  const per = async (n, op) => {
    const s = performance.now();
    for (let i = 0; i < n; i++) await op();
    return (performance.now() - s) / n;
  };
  const msg = new Uint8Array(200), node = new Uint8Array(65);
  const b64 = (t) => Uint8Array.from(atob(t), (c) => c.charCodeAt(0));
  // The GB/T 32918.5 example: its key, its signature of "message digest" (a valid one: the whole check).
  const point = b64(
    "BAn53zEeVCGhUN19Fh5LxcZyF5+tGDP8B2uwj/NW81AgzOpJDOJndaUtxupxjMGqYArtBfvzXghKZjL2By2prRM=",
  );
  const sig = b64("9aA7BkjSxGMO6sUT4buBoVlE2jgn1bdBQ6x+rO7nILOxtqop3yEv2HYxgrwNQhyhu5A4/R9/QtSEC2nEhbvBqg==");
  const example = new TextEncoder().encode("message digest");
  const ed = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
  const edSig = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, ed.privateKey, msg));
  const edRaw = new Uint8Array(await crypto.subtle.exportKey("raw", ed.publicKey));
  return {
    word, firstUse, whole: whole[Math.floor(whole.length / 2)],
    sm2: await per(20, async () => {
      if (!await sm.sm2Verify(point, sig, example)) throw new Error("the example does not verify");
    }),
    sm3: await per(2000, () => sm.sm3(node)),
    ed25519: await per(200, () => bytes.ed25519Verify(edRaw, edSig, msg)),
    sha256: await per(2000, () => bytes.sha256(node)),
  };
}"""


def node(system: System, suite: str) -> str:
    """A root of ``suite`` with a witness, holding two records; its URL once the pump resolves."""
    root = system.init_root(f"root.{suite}.bench", "88.123", witness=f"w.{suite}.bench", interval_ms=50,
                            suite=suite)  # fmt: skip
    system.start_root()
    with RootClient(root.url) as c:
        for identifier in (PUMP, "88.123/VALVE-7"):
            values = [Value(1, "URL", "string", f"https://plant.example/{identifier}")]
            c.write(root.write("create", identifier, values, root.admin_signer()))
        wait_until("the pump resolvable", lambda: c.resolve(PUMP)["found"], timeout=60, check=system.alive)
    return root.url


def measure(browser: Any, url: str) -> dict[str, Any]:
    page = browser.new_context().new_page()
    page.goto(url + routes.WEB_PAGE)
    page.wait_for_selector("body[data-ready]")
    result: dict[str, Any] = page.evaluate(TIMING, [PUMP, ANSWERS])
    page.context.close()
    return result


def main() -> None:
    if CHROMIUM is None:
        print("no headless Chromium (apt-get install chromium-headless-shell): console bench skipped")
        return
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 (the test extra; skipped without it)

    print(f"edgeroot console benchmark: headless Chromium, median of {RUNS} fresh pages per node")
    runs: dict[str, list[dict[str, Any]]] = {"default": [], "sm": []}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        urls = {suite: node(stack.enter_context(System(Path(tmp) / suite)), suite) for suite in runs}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM)
            for _ in range(RUNS):  # alternating, so both see the same load
                for suite, url in urls.items():
                    runs[suite].append(measure(browser, url))
            browser.close()
    keys = ("firstUse", "whole", "sm2", "sm3", "ed25519", "sha256")
    med = {suite: {k: statistics.median(r[k] for r in rs) for k in keys} for suite, rs in runs.items()}
    sm, default = med["sm"], med["default"]
    words = {suite: {r["word"] for r in rs} for suite, rs in runs.items()}
    floor = 2 * sm["sm2"]  # an SM answer needs two SM2 verifies: the log's and the witness's
    sm3_us, sha256_us = sm["sm3"] * 1000, sm["sha256"] * 1000
    print(f"  verdicts: {words}")
    print(f"  all-SM answer verified  {sm['whole']:8.1f} ms ({sm['whole'] / floor:.2f}x two raw SM2 verify)")
    print(f"  default answer verified {default['whole']:8.1f} ms")
    print(f"  raw SM2 verify {sm['sm2']:.1f} ms, SM3 (65 B) {sm3_us:.1f} us; "
          f"WebCrypto Ed25519 verify {sm['ed25519']:.3f} ms, SHA-256 {sha256_us:.1f} us")  # fmt: skip
    print(f"  first SM use (fetch + run the vendored scripts) {sm['firstUse']:.1f} ms")
    assert words == {"default": {"proven"}, "sm": {"proven"}}, words
    record("console", "all-SM answer verified in Chromium (SM2 log + SM2 witness, SM3 inclusion + map)",
           f"{sm['whole']:.0f} ms (median of {RUNS} pages x {ANSWERS}); {sm['whole'] / floor:.2f}x two raw "
           f"SM2 verifies in the same page ({sm['sm2']:.0f} ms each)")  # fmt: skip
    record("console", "default answer verified in Chromium (WebCrypto Ed25519 + SHA-256), same run",
           f"{default['whole']:.1f} ms; raw WebCrypto Ed25519 verify {sm['ed25519']:.2f} ms")  # fmt: skip
    record("console", "raw SM3 of 65 bytes in Chromium (sm-crypto) beside WebCrypto SHA-256, same page",
           f"{sm3_us:.0f} us vs {sha256_us:.0f} us")  # fmt: skip
    record("console", "first SM use on a page: fetch and run sm2.js + sm3.js (44 KB)",
           f"{sm['firstUse']:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
