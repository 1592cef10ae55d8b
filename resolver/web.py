"""The engineer's console at ``/``: a page of plain ES modules that verifies every answer in the browser.

The assets live in ``resolver/console/`` (package data) and are read once, when the app is built; only
those files are served, each with its content type, so no path a client sends reaches the filesystem.
The page learns the node's routes from a JSON block the server renders from :mod:`rootclient.routes`,
so the browser never repeats a path by hand.
"""

from __future__ import annotations

import json

from rootclient import routes
from runtime.webassets import Asset, page_assets

PAGE_FILE = "index.html"


def console_assets() -> dict[str, Asset]:
    """Every file of the console by its path under ``/console/`` (``views/record.js``, say)."""
    return page_assets("resolver", "console")


def page_config(origin: str) -> dict[str, str]:
    """What the page needs from the server: the log's origin and the routes it calls."""
    return {
        "origin": origin,
        "resolve": routes.RESOLVE_PREFIX,
        "history": routes.HISTORY_PREFIX,
        "policy": routes.POLICY,
        "assets": routes.CONSOLE_PREFIX,
    }


def render_page(assets: dict[str, Asset], origin: str) -> str:
    """The console's HTML with its configuration inlined as JSON (``<`` escaped: it sits in a script
    element, and an origin holding ``</script>`` must not end it)."""
    config = json.dumps(page_config(origin)).replace("<", "\\u003c")
    return assets[PAGE_FILE].body.decode().replace("{{config}}", config)
