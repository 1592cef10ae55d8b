"""Commands whose implementation loads only when the command runs."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

from edgeroot.output import Reporter

Run = Callable[[argparse.Namespace, Reporter], int]


def lazy(module: str, name: str) -> Run:
    """``module.name`` as a command's ``run``, imported at call time: ``edgeroot --help`` and the light
    commands then never load FastAPI, paho, aiocoap or pymodbus (about 0.6 s of CPU here,
    seconds on a Raspberry Pi). This is the one place the CLI defers an import; the implementation
    modules import their libraries at the top."""

    def run(args: argparse.Namespace, report: Reporter) -> int:
        result: int = getattr(importlib.import_module(module), name)(args, report)
        return result

    run.__qualname__ = f"lazy({module}.{name})"
    return run
