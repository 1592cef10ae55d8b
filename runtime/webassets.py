"""A service's web page assets, packaged with it and read once: each file with its content type.

Only the files found here are served, by their path relative to the page's folder, so no path a
client sends reaches the filesystem. Used by the root's console (``resolver/console/``) and the
gateway's page (``edge/console/``). What both pages share (the ``el`` builder, the language switch,
the base style sheet) lives here in ``runtime/web/`` and is served to each under ``shared/``: services
do not import each other, and this is the layer below both.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str


def _walk(folder: Traversable, base: str) -> dict[str, Asset]:
    found: dict[str, Asset] = {}
    for entry in folder.iterdir():
        name = base + entry.name
        if entry.is_dir():
            found.update(_walk(entry, name + "/"))
            continue
        suffix = entry.name[entry.name.rfind(".") :]
        if suffix in CONTENT_TYPES:
            found[name] = Asset(entry.read_bytes(), CONTENT_TYPES[suffix])
    return found


SHARED = "shared/"


def page_assets(package: str, folder: str) -> dict[str, Asset]:
    """Every servable file under ``package``'s ``folder`` by its path there (``views/record.js``, say),
    with the shared ones under ``shared/`` (``shared/i18n.js``)."""
    own = _walk(resources.files(package) / folder, "")
    clash = sorted(name for name in own if name.startswith(SHARED))
    if clash:  # a page's own file would hide a shared one, or be hidden by it
        raise ValueError(f"{package}/{folder} must not hold {SHARED}: {clash}")
    return {**_walk(resources.files("runtime") / "web", SHARED), **own}
