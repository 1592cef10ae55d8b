"""The root console in a real browser against an all-SM node (`root init --suite sm`: SM3 log, SM2 log
key, SM2 witness). WebCrypto has neither SM2 nor SM3, so the page must say "checked by the server only"
for exactly what it cannot compute, still check what it can (the record is the asked identifier's), and
never check SM3 proofs with SHA-256."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from chain_lite.registry import Value
from chain_lite.suite import LOG_PROFILES
from rootclient import routes
from tests.root_harness import RootUnderTest, running_root
from tests.test_console import (
    CHROMIUM,
    INSTALL_HINT,
    PUMP,
    PUMP_ASKED,
    open_page,
    reason,
    resolve,
    statuses,
    sync_api,
)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=f"no headless Chromium: {INSTALL_HINT}")


@pytest.fixture(scope="module")
def sm_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RootUnderTest]:
    tmp = tmp_path_factory.mktemp("console-sm")
    with running_root(tmp, f"sqlite:///{tmp / 'root.db'}", profile=LOG_PROFILES["sm"]) as root:
        with root.client() as c:
            c.write(
                root.write(
                    "create",
                    PUMP,
                    [Value(1, "URL", "string", "https://plant.example/sm")],
                    root.admin_signer(),
                )
            )
            root.settle()
        yield root


@pytest.fixture(scope="module")
def browser(sm_node: RootUnderTest) -> Iterator[Any]:
    del sm_node  # set up first: the root's sync client cannot run inside Playwright's event loop
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


def test_an_all_sm_answer_is_checked_by_the_server_only(browser: Any, sm_node: RootUnderTest) -> None:
    """Signature, cosignature, inclusion and map proof are each "server"; the record shown is the asked
    one; the verdict is "checked by the server only", never "proven" (nor "not proven")."""
    page = open_page(browser, sm_node)
    resolve(page, PUMP_ASKED)
    assert page.get_attribute("#verdict", "data-verdict") == "serverOnly", page.inner_text("main")
    checks = statuses(page)
    assert checks["checkPolicy"] == "ok", reason(page, "checkPolicy")
    assert checks["checkLogSig"] == checks["checkQuorum"] == "server"
    assert checks["checkInclusion"] == checks["checkMap"] == "server"
    assert "the log hashes with SM3, which a browser cannot compute" in reason(page, "checkInclusion")
    assert "https://plant.example/sm" in page.inner_text("#view-record table")
    page.context.close()


def test_the_same_in_chinese(browser: Any, sm_node: RootUnderTest) -> None:
    page = open_page(browser, sm_node, locale="zh-CN")
    resolve(page, PUMP_ASKED)
    assert page.get_attribute("#verdict", "data-verdict") == "serverOnly"
    assert "浏览器无法计算：仅由服务器验证" in reason(page, "checkInclusion")
    page.context.close()


def test_a_record_for_another_identifier_is_refused_even_unproven(
    browser: Any, sm_node: RootUnderTest
) -> None:
    """What the page can check, it checks: an answer whose record bytes are another identifier's fails
    the map check although its proofs are left to the server."""
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
