"""The implementation of ``edgeroot bridge run`` (loaded only when it runs: pyserial, paho, aiocoap,
pymodbus)."""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

from chain_lite.cose import CoseSigner
from chain_lite.errors import ChainError
from chain_lite.identifier import normalize
from edgeroot.bridge import DEFAULT_GATEWAY
from edgeroot.output import CommandFailed, Reporter
from firmware_bridge.forward import Forwarder, forwarder_for
from firmware_bridge.frame_bridge import Bridge
from firmware_bridge.modbus import registers_from, run_modbus
from runtime.keyfiles import load_private_key
from runtime.logsetup import configure_logging
from runtime.service import run_service
from runtime.statelock import hold
from runtime.tomlconfig import ConfigError, Table


def run_bridge(args: argparse.Namespace, report: Reporter) -> int:

    gateway, baud, state_dir = DEFAULT_GATEWAY, 115200, None
    table = None
    if args.config is not None:
        try:
            table = Table.read(args.config, "give an existing --config file")
            table.check_known(
                {"gateway", "baud", "state", "mode", "bridge_id", "key", "timeout_s", "register"}
            )
            gateway = table.get("gateway", str, DEFAULT_GATEWAY)
            baud = table.number("baud", int, 115200, 50, 20_000_000)
            state_dir = table.get("state", str)
        except ConfigError as exc:
            raise CommandFailed(str(exc)) from exc
    gateway = args.gateway or gateway
    baud = args.baud or baud
    state = args.state or (Path(state_dir) if state_dir else None)
    with contextlib.ExitStack() as held:
        if state is not None:  # one bridge per state (the unit gives each port its own): before anything
            try:
                state.mkdir(parents=True, exist_ok=True)  # made at the first HELLO otherwise
            except OSError as exc:
                raise CommandFailed(f"cannot create the state directory {state}: {exc.strerror}") from exc
            held.enter_context(hold(state, "bridge"))
        try:
            forwarder = forwarder_for(
                str(gateway), client_id=f"edgeroot-bridge-{Path(args.port).name}-{os.getpid()}"
            )
        except ValueError as exc:
            raise CommandFailed(str(exc)) from exc
        configure_logging()
        if table is not None and table.get("mode", str, "frames") == "modbus":
            return _run_modbus(args, table, forwarder, baud)
        return run_service(Bridge(args.port, forwarder, baudrate=baud, state=state).run)


def _run_modbus(args: argparse.Namespace, table: Table, forwarder: Forwarder, baud: int) -> int:
    """``mode = "modbus"``: poll the register map, sign as the bridge on behalf of each device."""

    assert args.config is not None
    try:
        registers = registers_from(table)
        bridge_id = normalize(table.get("bridge_id", str, required=True))
        key_file = args.config.parent / table.get("key", str, required=True)
        timeout = table.number("timeout_s", float, 0.5, 0.01, 60)
    except (ConfigError, ChainError) as exc:
        raise CommandFailed(str(exc)) from exc
    if not registers:
        raise CommandFailed(f"{args.config}: modbus mode needs at least one [[register]]")
    signer = CoseSigner(bridge_id, load_private_key(key_file))
    return run_service(
        lambda: run_modbus(args.port, registers, signer, forwarder, baudrate=baud, timeout_s=timeout)
    )
