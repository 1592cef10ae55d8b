"""The root console at ``/`` in a real headless Chromium: answers verified in the browser, or refused."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chain_lite import b64
from chain_lite.keys import NoteKey
from chain_lite.note import SIGTYPE_SM2, SIGTYPE_SM2_COSIGNATURE, key_id
from chain_lite.registry import Value
from chain_lite.sparse_map import MapProof
from rootclient import codecs, routes
from tests.root_harness import ORIGIN, RootUnderTest, running_root

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser tests need the playwright package: pip install -e '.[test]'"
)

INSTALL_HINT = "install Debian's headless Chromium: apt-get install -y chromium-headless-shell"
CHROMIUM = shutil.which("chromium-headless-shell") or next(
    (str(p) for p in [Path("/usr/lib/chromium/chromium-headless-shell")] if p.exists()), None
)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=f"no headless Chromium: {INSTALL_HINT}")

PUMP = "88.123/pump-0042"
PUMP_ASKED = "88.123/PUMP-0042"  # the console folds the suffix's case as the registry does
CHECKS = ["checkPolicy", "checkLogSig", "checkQuorum", "checkInclusion", "checkMap"]
Proof = dict[str, Any]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RootUnderTest]:
    """A root holding two records (so map proofs have siblings), one of them changed twice."""
    tmp = tmp_path_factory.mktemp("console")
    with running_root(tmp, f"sqlite:///{tmp / 'root.db'}") as root:
        admin = root.admin_signer()
        writes = [
            ("create", PUMP, [Value(1, "URL", "string", "https://plant.example/pump-0042")]),
            ("create", "88.123/valve-7", [Value(1, "URL", "string", "https://plant.example/valve-7")]),
            ("update", PUMP, [Value(1, "URL", "string", "https://plant.example/pump-0042/v2")]),
        ]
        with root.client() as c:
            for op, identifier, values in writes:
                c.write(root.write(op, identifier, values, admin))
                root.settle()
        yield root


@pytest.fixture(scope="module")
def browser(node: RootUnderTest) -> Iterator[Any]:
    # Playwright's sync API runs an event loop on this thread, where the root's sync client (its own
    # asyncio runner) cannot run: the node is set up first, and the tests read it with plain httpx.
    del node
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, node: RootUnderTest) -> Iterator[Any]:
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    page.goto(node.url + routes.WEB_PAGE)
    page.wait_for_selector("body[data-ready]")
    yield page
    context.close()


def open_page(browser: Any, node: RootUnderTest, policy: str | None = None, locale: str = "en-US") -> Any:
    """A fresh browser context on the node's page, ready; ``policy`` replaces the policy the node serves.
    Close it with ``page.context.close()``."""
    page = browser.new_context(locale=locale).new_page()
    if policy is not None:
        page.route(f"**{routes.POLICY}", lambda route: route.fulfill(status=200, body=policy))
    page.goto(node.url + routes.WEB_PAGE)
    page.wait_for_selector("body[data-ready]")
    return page


def resolve_tampered(page: Any, identifier: str, tamper: Callable[[Proof], None]) -> None:
    """Like :func:`resolve`, with every resolution answer's proof altered in transit by ``tamper``."""

    def intercept(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        tamper(body["proof"])
        route.fulfill(response=response, body=json.dumps(body))

    page.route(f"**{routes.RESOLVE_PREFIX}**", intercept)
    resolve(page, identifier)


def resolve(page: Any, identifier: str) -> None:
    page.fill("#identifier", identifier)
    page.click("#go")
    page.wait_for_selector("#verdict")


def statuses(page: Any) -> dict[str, str]:
    items = page.query_selector_all("li.check")
    return {li.get_attribute("data-check"): li.get_attribute("data-status") for li in items}


def reason(page: Any, check: str) -> str:
    text: str = page.inner_text(f'li.check[data-check="{check}"] .reason')
    return text


def test_registered_identifier_shows_its_record_proven(page: Any) -> None:
    """Every check of a registered identifier passes and the proven record's values are shown."""
    resolve(page, PUMP_ASKED)
    assert page.get_attribute("#verdict", "data-verdict") == "proven"
    assert page.inner_text("#verdict") == "Proven"
    assert statuses(page) == dict.fromkeys(CHECKS, "ok")
    assert "https://plant.example/pump-0042/v2" in page.inner_text("#view-record table")
    assert reason(page, "checkQuorum") == "valid cosignatures from witness.test; quorum witnesses met"


def test_absent_identifier_is_proven_absent(page: Any) -> None:
    """An unregistered identifier is proven absent by the map proof, checked in the browser."""
    resolve(page, "88.123/NOT-THERE")
    assert page.get_attribute("#verdict", "data-verdict") == "provenAbsent"
    assert page.inner_text("#verdict") == "Proven absent"
    assert statuses(page) == dict.fromkeys([*CHECKS[:-1], "checkMapAbsent"], "ok")
    assert page.query_selector("#view-record table") is None


def test_history_lists_each_change_with_its_log_index(page: Any, node: RootUnderTest) -> None:
    """The history view lists every change of the identifier with the log index the node reports."""
    changes = httpx.get(node.url + routes.history(PUMP)).json()["changes"]
    indexes = [str(change["log_index"]) for change in changes]
    assert len(indexes) == 2
    resolve(page, PUMP_ASKED)
    page.wait_for_selector("#view-history table")
    cells = page.eval_on_selector_all(
        "#view-history tbody tr td:first-child", "tds => tds.map(t => t.textContent)"
    )
    assert cells == indexes


def test_language_switch_changes_labels_and_survives_reload(page: Any) -> None:
    """Choosing 中文 relabels the page, and a reload keeps the choice."""
    assert page.inner_text("h1") == "Identifier resolution"
    page.select_option("#lang", "zh-CN")
    assert page.inner_text("h1") == "标识解析"
    assert page.inner_text("label[for=identifier]") == "标识"
    page.reload()
    page.wait_for_selector("body[data-ready]")
    assert page.inner_text("h1") == "标识解析"
    assert page.get_attribute("html", "lang") == "zh-CN"
    resolve(page, PUMP_ASKED)
    assert page.inner_text("#verdict") == "已证明"
    page.wait_for_selector("#view-history h2")
    assert page.inner_text("#view-history h2") == "历史记录"


def test_language_defaults_from_the_browser(browser: Any, node: RootUnderTest) -> None:
    """A browser set to Chinese opens the console in Chinese."""
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    page.goto(node.url + routes.WEB_PAGE)
    page.wait_for_selector("body[data-ready]")
    assert page.inner_text("h1") == "标识解析"
    context.close()


def flip_sibling(proof: Proof) -> None:
    mp = MapProof.from_bytes(b64.decode(proof["map_proof"]) or b"")
    first = bytes([mp.siblings[0][0] ^ 1]) + mp.siblings[0][1:]
    proof["map_proof"] = b64.encode(MapProof((first, *mp.siblings[1:]), mp.terminal).to_bytes())


def edit_signature_line(proof: Proof, name: str, edit: Callable[[bytes], bytes | None]) -> None:
    """Rewrite (or, when ``edit`` returns None, drop) the receipt's signature line of key ``name``."""
    lines = proof["receipt"].split("\n")
    prefix = f"\u2014 {name} "
    (at,) = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    edited = edit(b64.decode(lines[at][len(prefix) :]) or b"")
    if edited is None:
        del lines[at]
    else:
        lines[at] = prefix + b64.encode(edited)
    proof["receipt"] = "\n".join(lines)


def _flip_log_signature(proof: Proof) -> None:
    edit_signature_line(proof, ORIGIN, lambda sig: sig[:-1] + bytes([sig[-1] ^ 1]))


def _drop_cosignature(proof: Proof) -> None:
    edit_signature_line(proof, "witness.test", lambda _sig: None)


def flip_inclusion_hash(proof: Proof) -> None:
    lines = proof["receipt"].split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith("index ")) + 1
    digest = b64.decode(lines[at]) or b""
    lines[at] = b64.encode(bytes([digest[0] ^ 1]) + digest[1:])
    proof["receipt"] = "\n".join(lines)


def _swap_record_value(proof: Proof) -> None:
    # A record the map does not hold: another value under the same identifier, as a lying node would send.
    raw = b64.decode(proof["record"]) or b""
    proof["record"] = b64.encode(raw.replace(b"/v2", b"/v3"))


@pytest.mark.parametrize(
    ("tamper", "check", "why"),
    [
        (flip_sibling, "checkMap", "computed root is not the map head's"),
        (_swap_record_value, "checkMap", "does not end at this key and value"),
        (_flip_log_signature, "checkLogSig", f"signature of {ORIGIN} does not verify"),
        (_drop_cosignature, "checkQuorum", "quorum witnesses not met"),
        (flip_inclusion_hash, "checkInclusion", "computed root is not the checkpoint's"),
    ],
)
def test_tampered_answer_is_not_proven(
    page: Any, tamper: Callable[[Proof], None], check: str, why: str
) -> None:
    """An answer altered in transit fails exactly the check that covers the altered part, with its reason."""
    resolve_tampered(page, PUMP_ASKED, tamper)
    assert page.get_attribute("#verdict", "data-verdict") == "notProven"
    assert page.inner_text("#verdict") == "Not proven"
    expected = dict.fromkeys(CHECKS, "ok") | {check: "bad"}
    if check == "checkInclusion":
        expected["checkMap"] = "skipped"  # a map root the checkpoint does not commit to proves nothing
    assert statuses(page) == expected
    assert why in reason(page, check)


def test_policy_is_pinned_on_first_use_and_a_changed_one_proves_nothing(page: Any) -> None:
    """The first answer pins the node's policy in this browser; if the node later publishes another one
    (it could name its own keys in it), the policy check fails and nothing is proven."""
    resolve(page, PUMP_ASKED)
    assert "first use: this browser pins it now" in reason(page, "checkPolicy")
    page.reload()
    page.wait_for_selector("body[data-ready]")
    resolve(page, PUMP_ASKED)
    assert page.get_attribute("#verdict", "data-verdict") == "proven"
    assert "the policy this browser pinned" in reason(page, "checkPolicy")

    def other_policy(route: Any) -> None:
        response = route.fetch()
        route.fulfill(response=response, body=response.text() + "\n")

    page.route(f"**{routes.POLICY}", other_policy)
    page.reload()
    page.wait_for_selector("body[data-ready]")
    resolve(page, PUMP_ASKED)
    assert page.get_attribute("#verdict", "data-verdict") == "notProven"
    assert statuses(page)["checkPolicy"] == "bad"
    assert "a different policy than the one this browser pinned" in reason(page, "checkPolicy")


def test_one_witness_listed_under_two_names_cannot_meet_a_quorum(browser: Any, node: RootUnderTest) -> None:
    """A policy listing one witness key under two names (a 2-of-2 group of the same witness) is refused,
    as chain_lite.policy refuses it: the quorum is never met by one witness counted twice."""
    text = httpx.get(node.url + routes.POLICY).text
    witness = next(line for line in text.splitlines() if line.startswith("witness "))
    name, vkey = witness.split()[1:3]
    lines = [line for line in text.splitlines() if not line.startswith("quorum ")]
    extra = [f"witness {name}-again {vkey}", f"group twice 2 {name} {name}-again", "quorum twice", ""]
    doubled = "\n".join([*lines, *extra])
    page = open_page(browser, node, doubled)
    resolve(page, PUMP_ASKED)
    assert page.get_attribute("#verdict", "data-verdict") == "notProven"
    assert statuses(page)["checkPolicy"] == "bad"
    assert "the same public key is listed twice" in reason(page, "checkPolicy")
    page.context.close()


def test_a_policy_pinning_sm3_refuses_a_sha256_checkpoint(browser: Any, node: RootUnderTest) -> None:
    """A policy pinning the log as SM3 (`log-hash sm3`) while the node's checkpoints are SHA-256: not this
    log's checkpoints, refused by the hash the policy pins (D-064); tests/test_console_sm.py has a real
    SM3 node, whose answers the page proves with SM3 and SM2."""
    text = httpx.get(node.url + routes.POLICY).text
    sm3_policy = text.replace("log ", "log-hash sm3 ", 1)
    assert sm3_policy != text
    page = open_page(browser, node, sm3_policy)
    resolve(page, PUMP_ASKED)
    assert page.get_attribute("#verdict", "data-verdict") == "notProven"
    assert statuses(page)["checkInclusion"] == "bad"
    assert "pins the log's hash as sm3, the checkpoint declares sha256" in reason(page, "checkInclusion")
    page.context.close()


@pytest.mark.parametrize("needed", [False, True])
def test_an_sm2_witness_in_the_policy_is_checked_in_the_browser(
    browser: Any, node: RootUnderTest, needed: bool
) -> None:
    """A policy that also lists an SM2 witness (docs/formats.md §20) works in the browser, which checks
    SM2 cosignatures itself (D-106): its Ed25519 checks pass as before; when the quorum needs the SM2
    witness, which never cosigned this log, the quorum is not met (never "checked by the server")."""
    text = httpx.get(node.url + routes.POLICY).text
    name = next(line for line in text.splitlines() if line.startswith("witness ")).split()[1]
    quorum = next(line for line in text.splitlines() if line.startswith("quorum "))
    lines = [line for line in text.splitlines() if line != quorum]
    sm2_witness = NoteKey.generate("sm2-witness.test", SIGTYPE_SM2_COSIGNATURE)
    lines.append(f"witness sm2-witness.test {sm2_witness.vkey()}")
    lines += [f"group both all {name} sm2-witness.test", "quorum both"] if needed else [quorum]
    policy = "\n".join(lines) + "\n"
    page = open_page(browser, node, policy)
    resolve(page, PUMP_ASKED)
    checks = statuses(page)
    assert checks["checkPolicy"] == checks["checkLogSig"] == "ok", reason(page, "checkPolicy")
    if needed:
        assert checks["checkQuorum"] == "bad"
        assert reason(page, "checkQuorum") == f"valid cosignatures from {name}; quorum both not met"
        assert page.get_attribute("#verdict", "data-verdict") == "notProven"
    else:
        assert page.get_attribute("#verdict", "data-verdict") == "proven"
    page.context.close()


def test_an_sm2_log_key_that_did_not_sign_is_missing_and_an_unknown_type_is_left_to_the_server(
    browser: Any, node: RootUnderTest
) -> None:
    """A policy whose log key is SM2 (an SM log's key, D-084) but not the key that signed this node's
    checkpoints: the browser checks SM2, finds no line of that key, and fails the log signature. A log key
    of a type the page does not know (0x02, ECDSA) is "checked by the server only", neither passed nor
    failed, and the answer as a whole says so."""
    text = httpx.get(node.url + routes.POLICY).text
    log_line = next(line for line in text.splitlines() if line.startswith("log "))
    sm2_log = NoteKey.generate(ORIGIN, SIGTYPE_SM2)
    page = open_page(browser, node, text.replace(log_line, f"log {sm2_log.vkey()}"))
    resolve(page, PUMP_ASKED)
    assert statuses(page)["checkLogSig"] == "bad"
    assert reason(page, "checkLogSig") == f"no signature line of {ORIGIN}"
    page.context.close()

    public = b"\x02" + bytes(range(65))
    ecdsa = f"{ORIGIN}+{key_id(ORIGIN, 0x02, public[1:]):08x}+{b64.encode(public)}"
    page = open_page(browser, node, text.replace(log_line, f"log {ecdsa}"))
    resolve(page, PUMP_ASKED)
    checks = statuses(page)
    assert checks["checkPolicy"] == "ok", reason(page, "checkPolicy")
    assert checks["checkLogSig"] == "server"
    assert "signature type 0x02 cannot be checked in a browser" in reason(page, "checkLogSig")
    assert page.get_attribute("#verdict", "data-verdict") == "serverOnly"
    page.context.close()


def test_a_checkpoint_older_than_one_already_verified_is_a_rolled_back_view(page: Any) -> None:
    """Once this browser verified a larger checkpoint of the log, a smaller one is refused (a log only
    grows), however well it is signed."""
    page.evaluate(f"localStorage.setItem('edgeroot.verified-size.{ORIGIN}', '1000000')")
    resolve(page, PUMP_ASKED)
    assert page.get_attribute("#verdict", "data-verdict") == "notProven"
    assert statuses(page)["checkInclusion"] == "bad"
    assert "older than one this browser already verified (log size 1000000)" in reason(page, "checkInclusion")


def test_search_works_from_the_keyboard_alone(page: Any) -> None:
    """Tab reaches the identifier field and Enter resolves it."""
    for _ in range(5):
        if page.evaluate("document.activeElement.id") == "identifier":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "identifier"
    page.keyboard.type(PUMP_ASKED)
    page.keyboard.press("Enter")
    page.wait_for_selector("#verdict")
    assert page.get_attribute("#verdict", "data-verdict") == "proven"


def test_every_input_has_a_label(page: Any) -> None:
    """Each form control is named by a label element."""
    unlabelled = page.eval_on_selector_all(
        "input, select, textarea", "els => els.filter(e => e.labels.length === 0).map(e => e.id || e.name)"
    )
    assert page.query_selector_all("input, select")
    assert unlabelled == []


def test_console_assets_are_served_with_their_content_types(node: RootUnderTest, page: Any) -> None:
    """Modules are served as JavaScript and the style sheet as CSS, from the node itself."""
    js = page.request.get(node.url + routes.CONSOLE_PREFIX + "app.js")
    css = page.request.get(node.url + routes.CONSOLE_PREFIX + "console.css")
    missing = page.request.get(node.url + routes.CONSOLE_PREFIX + "../api.py")
    assert js.headers["content-type"].startswith("text/javascript")
    assert css.headers["content-type"].startswith("text/css")
    assert missing.status == 404


def test_policy_route_serves_the_policy_checkpoints_are_checked_against(node: RootUnderTest) -> None:
    """``/v1/policy`` is the node's tlog-policy, the one its checkpoints meet."""
    served = httpx.get(node.url + routes.POLICY)
    assert served.headers["content-type"].startswith("text/plain")
    assert codecs.parse_policy(served.content).to_text() == node.policy.to_text()


def test_console_fits_a_phone_screen(browser: Any, node: RootUnderTest) -> None:
    """On a 360-pixel-wide screen the page needs no sideways scrolling, record table included."""
    context = browser.new_context(locale="en-US", viewport={"width": 360, "height": 740})
    page = context.new_page()
    page.goto(node.url + routes.WEB_PAGE)
    page.wait_for_selector("body[data-ready]")
    resolve(page, PUMP_ASKED)
    page.wait_for_selector("#view-history table")
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    context.close()
    assert overflow <= 0
