"""The root console in a real browser against an all-SM node (`root init --suite sm`: SM3 log, SM2 log
key, SM2 witness). WebCrypto has neither SM2 nor SM3: the page checks them with sm-crypto's built files,
vendored (D-106). Here that code is first cross-checked in Chromium against the standards' examples,
chain_lite's SM2 and SM3 and the project's SM vectors; then an SM answer is proven in the browser, and
every tampered part of it fails the check that covers it."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chain_lite import b64
from chain_lite.registry import Value
from chain_lite.sm2 import SM2PrivateKey
from chain_lite.suite import LOG_PROFILES, SM3
from rootclient import routes
from tests.root_harness import ORIGIN, RootUnderTest, running_root
from tests.test_console import (
    CHECKS,
    CHROMIUM,
    INSTALL_HINT,
    PUMP,
    PUMP_ASKED,
    Proof,
    edit_signature_line,
    flip_inclusion_hash,
    flip_sibling,
    open_page,
    reason,
    resolve,
    resolve_tampered,
    statuses,
    sync_api,
)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=f"no headless Chromium: {INSTALL_HINT}")

VECTORS = Path(__file__).resolve().parent / "vectors"
VENDOR = Path(__file__).resolve().parent.parent / "resolver" / "console" / "vendor" / "sm-crypto-0.5.8"
VENDORED_SHA256 = {  # the files of the sm-crypto 0.5.8 tarball, unmodified (vendor/.../README.md)
    "sm2.js": "eb352d6c48a2bc6210b5687d3b80cfeed034a3cd6095118762fe4b076642c5a6",
    "sm3.js": "27155525fcb072cfed85449595e40c1588256649083828ccfa12fe88885af2b7",
}
URL_VALUE = "https://plant.example/sm"
WITNESS = "witness.test"


@pytest.fixture(scope="module")
def sm_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RootUnderTest]:
    tmp = tmp_path_factory.mktemp("console-sm")
    with running_root(tmp, f"sqlite:///{tmp / 'root.db'}", profile=LOG_PROFILES["sm"]) as root:
        with root.client() as c:
            for identifier in (PUMP, "88.123/valve-7"):  # two records, so map proofs have siblings
                values = [Value(1, "URL", "string", URL_VALUE if identifier == PUMP else "https://x.example")]
                c.write(root.write("create", identifier, values, root.admin_signer()))
                root.settle()
        yield root


@pytest.fixture(scope="module")
def browser(sm_node: RootUnderTest) -> Iterator[Any]:
    del sm_node  # set up first: the root's sync client cannot run inside Playwright's event loop
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


# --- the vendored library, cross-checked in the browser -----------------------------------------------


def _in_page(page: Any, body: str, arg: object) -> Any:
    """Run ``body`` (an async function body of ``arg``, with ``sm`` = sm.js, ``proofs`` = proofs.js, ``note``
    = note.js and ``hex``/``unhex`` helpers) in the console page."""
    script = f"""async (arg) => {{
        const sm = await import("/console/sm.js");
        const proofs = await import("/console/proofs.js");
        const note = await import("/console/note.js");
        const unhex = (h) => Uint8Array.from((h.match(/../g) || []), (x) => parseInt(x, 16));
        const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
        {body}
    }}"""
    return page.evaluate(script, arg)


def test_the_vendored_sm_crypto_is_the_recorded_release() -> None:
    """The vendored files are byte for byte the release recorded in D-106 and the vendor README."""
    assert {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in VENDOR.glob("*.js")
    } == VENDORED_SHA256
    assert "Permission is hereby granted, free of charge" in (VENDOR / "LICENCE_MIT").read_text()  # MIT


def test_the_browsers_sm3_is_gbt_32905_and_chain_lites(browser: Any, sm_node: RootUnderTest) -> None:
    """SM3 in Chromium gives the GB/T 32905 examples' digests and chain_lite's SM3 of random inputs (0 to
    200 bytes), and the RFC 6962 SM3 inclusion vectors verify with it (a flipped proof hash does not)."""
    cases = json.loads((VECTORS / "gbt32905_sm3.json").read_text())["cases"]
    inputs = [os.urandom(n) for n in (0, 1, 55, 56, 63, 64, 65, 119, 200)]
    merkle = json.loads((VECTORS / "sm3_merkle.json").read_text())
    page = open_page(browser, sm_node)
    got = _in_page(page, """
        const digests = [];
        for (const m of arg.messages) digests.push(hex(await sm.sm3(unhex(m))));
        const inclusion = [];
        for (const v of arg.inclusion) {
          const proof = v.proof_hex.map(unhex);
          const run = async (p) => {
            try {
              await proofs.verifyInclusion(BigInt(v.index), BigInt(v.size), unhex(v.leaf_hash_hex), p,
                                           unhex(arg.roots[v.size]), sm.sm3);
              return true;
            } catch (e) { return e.key; }
          };
          const flip = (h) => Uint8Array.of(h[0] ^ 1, ...h.slice(1));
          const bad = proof.length ? [flip(proof[0]), ...proof.slice(1)] : null;
          inclusion.push([await run(proof), bad ? await run(bad) : "inclusionBad"]);
        }
        return { digests, inclusion };
    """, {
        "messages": [c["message_hex"] for c in cases] + [m.hex() for m in inputs],
        "inclusion": merkle["inclusion"],
        "roots": merkle["roots_hex"],
    })  # fmt: skip
    assert got["digests"] == [c["digest_hex"] for c in cases] + [SM3.digest(m).hex() for m in inputs]
    assert len(got["inclusion"]) == len(merkle["inclusion"]) > 10
    assert all(ok is True and bad == "inclusionBad" for ok, bad in got["inclusion"]), got["inclusion"]
    page.context.close()


def test_the_browsers_sm2_verify_is_gbt_32918_and_chain_lites(browser: Any, sm_node: RootUnderTest) -> None:
    """SM2 verify in Chromium: the GB/T 32918.5 example (its identifier is the default 1234567812345678)
    verifies; chain_lite's signatures over random messages verify (Z_A over the default identifier, SM3),
    and fail when made with another identifier, over another message, with a flipped bit, with r or s
    out of range, or under another key; the SM vectors' policy and SM2-signed, SM2-cosigned checkpoint
    pass the page's own checks."""
    standard = json.loads((VECTORS / "sm2" / "gbt32918_5_signature.json").read_text())
    assert standard["id_ascii"] == "1234567812345678"
    key, other = SM2PrivateKey.generate(), SM2PrivateKey.generate()
    point = key.public_key().point.hex()
    order = bytes.fromhex(standard["curve"]["n"])
    cases: list[tuple[str, str, str, bool]] = [  # (point, signature, message) hex and the expected answer
        ("04" + standard["xA"] + standard["yA"], standard["r"] + standard["s"],
         standard["message_ascii"].encode().hex(), True),
    ]  # fmt: skip
    for n in (0, 1, 32, 200, 1000):
        message = os.urandom(n)
        signature = key.sign(message)
        flipped = bytearray(signature)
        flipped[n % 64] ^= 0x01
        cases += [
            (point, signature.hex(), message.hex(), True),
            (point, key.sign(message, b"alice@example.com").hex(), message.hex(), False),
            (point, signature.hex(), (message + b"!").hex(), False),
            (point, bytes(flipped).hex(), message.hex(), False),
            (other.public_key().point.hex(), signature.hex(), message.hex(), False),
            (point, (order + signature[32:]).hex(), message.hex(), False),
            (point, (signature[:32] + bytes(32)).hex(), message.hex(), False),
        ]
    vectors = json.loads((VECTORS / "sm2" / "edgeroot_sm2_messages.json").read_text())
    page = open_page(browser, sm_node)
    got = _in_page(page, """
        const answers = [];
        for (const [p, s, m] of arg.cases) answers.push(await sm.sm2Verify(unhex(p), unhex(s), unhex(m)));
        const policy = await note.parsePolicy(arg.policy);
        const cp = note.parseNote(arg.checkpoint);
        const log = await note.checkLogSignature(cp, policy);
        return { answers, log, quorum: await note.checkQuorum(cp, policy) };
    """, {"cases": cases, "policy": vectors["policy"], "checkpoint": vectors["checkpoint"]})  # fmt: skip
    assert got["answers"] == [expected for *_, expected in cases]
    assert got["log"] == {"status": "ok", "reason": ["logSigOk", "root.vectors.edgeroot.example", "SM2"]}
    assert got["quorum"]["status"] == "ok", got["quorum"]
    page.context.close()


# --- an SM node's answers ----------------------------------------------------------------------------


def test_an_all_sm_answer_is_proven_in_the_browser(browser: Any, sm_node: RootUnderTest) -> None:
    """SM2 log signature, SM2 cosignature, SM3 inclusion and SM3 map proof all checked in the page: the
    verdict is "Proven", and the proven record is shown; an absent identifier is proven absent."""
    page = open_page(browser, sm_node)
    resolve(page, PUMP_ASKED)
    assert page.get_attribute("#verdict", "data-verdict") == "proven", page.inner_text("main")
    assert statuses(page) == dict.fromkeys(CHECKS, "ok")
    assert reason(page, "checkLogSig") == f"SM2 signature of {ORIGIN} verified"
    assert reason(page, "checkQuorum") == f"valid cosignatures from {WITNESS}; quorum witnesses met"
    assert "RFC 6962 inclusion (SM3)" in reason(page, "checkInclusion")
    assert URL_VALUE in page.inner_text("#view-record table")
    resolve(page, "88.123/NOT-THERE")
    page.wait_for_selector('#verdict[data-verdict="provenAbsent"]')
    page.context.close()


def test_the_same_in_chinese(browser: Any, sm_node: RootUnderTest) -> None:
    page = open_page(browser, sm_node, locale="zh-CN")
    resolve(page, PUMP_ASKED)
    assert page.inner_text("#verdict") == "已证明"
    assert reason(page, "checkLogSig") == f"{ORIGIN} 的 SM2 签名验证通过"
    assert "RFC 6962 包含证明（SM3）" in reason(page, "checkInclusion")
    page.context.close()


def _flip_log_signature(proof: Proof) -> None:
    edit_signature_line(proof, ORIGIN, lambda sig: sig[:-1] + bytes([sig[-1] ^ 1]))


def _flip_cosignature(proof: Proof) -> None:
    edit_signature_line(proof, WITNESS, lambda sig: sig[:-1] + bytes([sig[-1] ^ 1]))


def _swap_record_value(proof: Proof) -> None:
    raw = b64.decode(proof["record"]) or b""
    proof["record"] = b64.encode(raw.replace(URL_VALUE.encode(), URL_VALUE.replace("sm", "sn").encode()))


@pytest.mark.parametrize(
    ("tamper", "check", "why"),
    [
        (flip_sibling, "checkMap", "computed root is not the map head's"),
        (_swap_record_value, "checkMap", "does not end at this key and value"),
        (_flip_log_signature, "checkLogSig", f"signature of {ORIGIN} does not verify"),
        (_flip_cosignature, "checkQuorum", f"cosignature of witness {WITNESS} does not verify"),
        (flip_inclusion_hash, "checkInclusion", "computed root is not the checkpoint's"),
    ],
)
def test_a_tampered_sm_answer_fails_in_the_browser(
    browser: Any, sm_node: RootUnderTest, tamper: Callable[[Proof], None], check: str, why: str
) -> None:
    """An SM answer altered in transit (SM3 map or inclusion proof, the record, the SM2 log signature or
    the SM2 cosignature) fails exactly the check that covers the altered part, in the browser."""
    page = open_page(browser, sm_node)
    resolve_tampered(page, PUMP_ASKED, tamper)
    assert page.get_attribute("#verdict", "data-verdict") == "notProven"
    expected = dict.fromkeys(CHECKS, "ok") | {check: "bad"}
    if check == "checkInclusion":
        expected["checkMap"] = "skipped"
    assert statuses(page) == expected
    assert why in reason(page, check)
    page.context.close()


def test_without_its_sm_code_the_page_proves_nothing(browser: Any, sm_node: RootUnderTest) -> None:
    """If the vendored SM2/SM3 files cannot be loaded, every SM check fails saying so: never "ok", never
    left to the server."""
    page = open_page(browser, sm_node)
    page.route("**/console/vendor/**", lambda route: route.abort())
    resolve(page, PUMP_ASKED)
    assert page.get_attribute("#verdict", "data-verdict") == "notProven"
    checks = statuses(page)
    assert checks["checkLogSig"] == checks["checkQuorum"] == checks["checkInclusion"] == "bad", checks
    assert "SM2/SM3 code (sm2.js) could not be loaded" in reason(page, "checkLogSig")
    page.context.close()


def test_a_record_for_another_identifier_is_refused(browser: Any, sm_node: RootUnderTest) -> None:
    """An answer whose record bytes are another identifier's fails the map check."""
    page = open_page(browser, sm_node)
    pump = httpx.get(sm_node.url + routes.RESOLVE.replace("{identifier:path}", PUMP)).json()

    def swap(route: Any) -> None:
        # The pump's true answer, served for the valve: its record names the pump.
        route.fulfill(status=200, content_type="application/json", json=pump)

    page.route("**/v1/resolve/88.123/valve-9*", swap)
    resolve(page, "88.123/valve-9")
    assert statuses(page)["checkMap"] == "bad"
    assert "record is for 88.123/pump-0042" in reason(page, "checkMap")
    assert page.get_attribute("#verdict", "data-verdict") == "notProven"
    page.context.close()


def test_a_policy_pinning_sha256_refuses_an_sm3_checkpoint(browser: Any, sm_node: RootUnderTest) -> None:
    """The policy says which hash the log uses; a checkpoint declaring another is not that log's: refused,
    never checked with the wrong hash."""
    text = httpx.get(sm_node.url + routes.POLICY).text
    line = next(x for x in text.splitlines() if x.startswith("log-hash sm3 "))
    page = open_page(
        browser, sm_node, policy=text.replace(line, "log-hash sha256 " + line[len("log-hash sm3 ") :])
    )
    resolve(page, PUMP_ASKED)
    assert statuses(page)["checkInclusion"] == "bad"
    assert "pins the log's hash as sha256, the checkpoint declares sm3" in reason(page, "checkInclusion")
    assert page.get_attribute("#verdict", "data-verdict") == "notProven"
    page.context.close()
