"""The README's screenshots of the web pages, taken from real servers on loopback.

Run from the repository root: ``make screenshots`` (or ``.venv/bin/python docs/images/screenshots.py``).
It starts a root node and its witness (tests/root_harness.py) with a prefix and two devices registered,
opens the console at ``/`` in Debian's headless Chromium (driven by the ``playwright`` package, as the
browser tests do) and resolves an identifier so the in-browser checks show. Then it starts a plant
(tests/gateway_harness.py: a root, a broker and a real ``edgeroot gateway run``), publishes readings and
some inputs the gateway rejects, in three rounds so the reject chart has a history, and opens the gateway's
page. It writes, beside this file:

- ``console-en.png``, ``console-zh-CN.png``: desktop width, the whole page;
- ``console-phone-zh-CN.png``: phone width;
- ``gateway-en.png``, ``gateway-zh-CN.png``: desktop width, the whole page.

It takes under a minute: the gateway samples its reject counters at most every 10 s.

Needs ``apt-get install -y chromium-headless-shell fonts-noto-cjk pngquant``; says so and stops when one
is missing, rather than writing pictures with tofu boxes where the Chinese should be.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# The harness lives in the repository's tests package; this file is run as a script from docs/images/,
# so Python puts docs/images/ on the path, not the repository root.
sys.path.insert(0, str(HERE.parent.parent))

import httpx  # noqa: E402 (after the path fix above)

from chain_lite import envelope  # noqa: E402
from chain_lite.cose import CoseSigner  # noqa: E402
from chain_lite.keys import generate_p256  # noqa: E402
from chain_lite.registry import Value  # noqa: E402
from tests.gateway_harness import DEVICE, Plant, running_plant  # noqa: E402
from tests.mqtt_harness import Publisher, running_broker  # noqa: E402
from tests.root_harness import RootUnderTest, running_root  # noqa: E402

INSTALL = "apt-get install -y chromium-headless-shell fonts-noto-cjk pngquant"
PREFIX = "88.123.99"
SHOWN = f"{PREFIX}/PUMP-0042"
DESKTOP = {"width": 1200, "height": 900}
PHONE = {"width": 390, "height": 844}
LANGUAGES = ("en", "zh-CN")


class MissingTool(Exception):
    """A program or font the screenshots need is not installed."""


@dataclass(frozen=True)
class Shot:
    """One picture: which page state, in which language, at which viewport size."""

    name: str
    locale: str
    viewport: dict[str, int]
    full_page: bool


CONSOLE_SHOTS = [
    *(Shot(f"console-{lang}.png", lang, DESKTOP, full_page=True) for lang in LANGUAGES),
    Shot("console-phone-zh-CN.png", "zh-CN", PHONE, full_page=False),
]
GATEWAY_SHOTS = [Shot(f"gateway-{lang}.png", lang, DESKTOP, full_page=True) for lang in LANGUAGES]
TOPIC = "edgeroot/readings/pump-0042"
WAIT_S = 60.0


@dataclass(frozen=True)
class Tools:
    """The programs the screenshots are made with, found before any server starts."""

    chromium: str
    pngquant: str


def find_tools() -> Tools:
    """The headless Chromium (where tests/test_console.py looks for it) and pngquant; fails when either,
    or a CJK font, is missing."""
    chromium = shutil.which("chromium-headless-shell") or next(
        (str(p) for p in [Path("/usr/lib/chromium/chromium-headless-shell")] if p.exists()), None
    )
    if chromium is None:
        raise MissingTool(f"no headless Chromium; install it: {INSTALL}")
    pngquant = shutil.which("pngquant")
    if pngquant is None:
        raise MissingTool(f"pngquant is missing (it keeps each picture small); install it: {INSTALL}")
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        raise MissingTool(f"fc-list (fontconfig) is missing, so no CJK font can be found; install: {INSTALL}")
    fonts = subprocess.run(  # noqa: S603 (the installed fc-list, fixed arguments)
        [fc_list, ":lang=zh"], capture_output=True, text=True, check=True
    ).stdout
    if not fonts.strip():
        raise MissingTool(f"no CJK font (fc-list :lang=zh lists none): Chinese would be boxes; {INSTALL}")
    return Tools(chromium, pngquant)


@contextmanager
def console_root(tmp: Path) -> Iterator[RootUnderTest]:
    """A root whose plant prefix holds a pump (changed once, so its history has two entries) and a valve."""
    with running_root(tmp, f"sqlite:///{tmp / 'root.db'}") as root:
        plant = root.add_prefix(PREFIX)
        root.settle()
        writes = [
            ("create", SHOWN, [
                Value(1, "URL", "string", "https://plant.example/pump-0042"),
                Value(2, "EMAIL", "string", "maintenance@plant.example"),
            ]),
            ("create", f"{PREFIX}/VALVE-7", [Value(1, "URL", "string", "https://plant.example/valve-7")]),
            ("update", SHOWN, [
                Value(1, "URL", "string", "https://plant.example/pump-0042/v2"),
                Value(2, "EMAIL", "string", "maintenance@plant.example"),
                Value(3, "DESC", "string", "Cooling water pump, hall 2 / 冷却水泵，二号车间"),
            ]),
        ]  # fmt: skip
        with root.client() as c:
            for op, identifier, values in writes:
                c.write(root.write(op, identifier, values, plant))
                root.settle()
        yield root


def shoot(browser: Any, url: str, shot: Shot, bring: Callable[[Any], None]) -> None:
    """Open the page at ``url`` in ``shot.locale``; once ``bring`` has it in the state to show, save it."""
    context = browser.new_context(locale=shot.locale, viewport=shot.viewport)
    try:
        page = context.new_page()
        page.goto(url + "/")
        bring(page)
        page.screenshot(path=str(HERE / shot.name), full_page=shot.full_page)
    finally:
        context.close()


def pump_resolved(console: Any) -> None:
    """The console having resolved the pump: its record proven, the checks and the history drawn."""
    console.wait_for_selector("body[data-ready]")
    console.fill("#identifier", SHOWN)
    console.click("#go")
    console.wait_for_selector("#verdict[data-verdict=proven]")
    console.wait_for_selector("#view-history table")


def gateway_drawn(page: Any) -> None:
    """The gateway's page with its device table and reject chart drawn."""
    page.wait_for_selector("body[data-ready] #device-table table")
    page.wait_for_selector("#reject-chart svg polyline")


def wait_for(what: str, condition: Callable[[], object]) -> None:
    """Poll ``condition`` until it holds; after ``WAIT_S`` stop, saying what did not happen."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"screenshots: {what} did not happen within {WAIT_S:.0f} s")
        time.sleep(0.2)


def rejected(plant: Plant) -> dict[str, int]:
    """The reject counts in the newest sample of the gateway's reject history (empty before the first)."""
    history = httpx.get(plant.http + "/v1/status", timeout=5).json()["reject_history"]
    return dict(history[-1]["rejected"]) if history else {}


@contextmanager
def busy_gateway(tmp: Path) -> Iterator[Plant]:
    """A running gateway with anchored readings and three rounds of rejects, each round in its own history
    sample, so the chart draws lines over time rather than one point."""
    for folder in ("mqtt", "plant"):
        (tmp / folder).mkdir(parents=True)
    with running_broker(tmp / "mqtt") as broker, running_plant(tmp / "plant", broker) as plant:
        plant.start()
        publisher = Publisher(*broker)
        try:
            flow = [{envelope.N: "flow", envelope.V: -1.0}]

            def good(n: int) -> list[bytes]:
                return [plant.reading() for _ in range(n)]

            def replays(*counters: int) -> list[bytes]:  # counters the pump already used, new contents
                return [envelope.encode_envelope(plant.device, flow, counter) for counter in counters]

            forged = envelope.encode_envelope(CoseSigner(DEVICE, generate_p256()), flow, 100)  # not its key
            ghost = envelope.encode_envelope(CoseSigner(f"{PREFIX}/GHOST-1", generate_p256()), flow, 1)
            # Each round: readings the gateway accepts, inputs it rejects, and the run's reject counters once
            # it has taken them all.
            rounds = [
                (good(6), [b"not an envelope"], {"malformed": 1}),
                (
                    good(4),
                    [*replays(1, 2, 3), forged, ghost, b"junk", b"junk"],
                    {"malformed": 3, "replay": 3, "bad-signature": 1, "unknown-device": 1},
                ),
                (
                    good(3),
                    [*replays(4), b"junk", b"junk"],
                    {"malformed": 5, "replay": 4, "bad-signature": 1, "unknown-device": 1},
                ),
            ]
            accepted = 0
            for number, (readings, rejects, counters) in enumerate(rounds, 1):
                for raw in [*rejects, *readings]:
                    publisher.publish(TOPIC, raw)
                accepted += len(readings)
                plant.wait_anchored(accepted)

                def sampled(want: dict[str, int] = counters) -> bool:
                    return rejected(plant) == want

                wait_for(f"a reject sample after round {number}", sampled)
            yield plant
        finally:
            publisher.close()
            plant.stop()


def shrink(pngquant: str, png: Path) -> None:
    """Quantise to a palette in place: these are flat UI pictures, 256 colours lose nothing one can see."""
    subprocess.run(  # noqa: S603 (the installed pngquant on our own file)
        [pngquant, "--force", "--strip", "--output", str(png), str(png)], check=True
    )


def main() -> int:
    try:
        tools = find_tools()
        from playwright.sync_api import sync_playwright  # noqa: PLC0415 (a test extra; the error says so)
    except MissingTool as exc:
        print(f"screenshots: {exc}", file=sys.stderr)
        return 2
    except ImportError:
        print("screenshots: the playwright package is missing: pip install -e '.[test]'", file=sys.stderr)
        return 2
    # The root is fully set up (console_root) before Playwright starts: its sync API runs an event loop on
    # this thread, where the harness's client (its own asyncio runner) cannot run.
    with (
        tempfile.TemporaryDirectory(prefix="edgeroot-shots-") as tmp,
        console_root(Path(tmp) / "console") as root,
        busy_gateway(Path(tmp) / "gateway") as plant,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=tools.chromium)
        try:
            for shot in CONSOLE_SHOTS:
                shoot(browser, root.url, shot, pump_resolved)
            for shot in GATEWAY_SHOTS:
                shoot(browser, plant.http, shot, gateway_drawn)
        finally:
            browser.close()
    for shot in [*CONSOLE_SHOTS, *GATEWAY_SHOTS]:
        shrink(tools.pngquant, HERE / shot.name)
        print(f"{shot.name}: {(HERE / shot.name).stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
