"""Key files on disk: private keys are created 0600 and never overwritten by accident."""

from __future__ import annotations

import os
from pathlib import Path

from chain_lite.errors import ChainError
from chain_lite.keys import NoteKey, PrivateKey, PublicKey, load_private_pem, load_public_pem
from chain_lite.note import VerifierKey


class KeyFileError(Exception):
    """A key file cannot be read, parsed or written; the message names the file and the reason."""


def file_stem(name: str) -> str:
    """A file name for a key name or identifier (``/`` is not allowed in file names)."""
    return name.replace("/", "_")


def write_private(path: Path, data: bytes, *, force: bool = False) -> None:
    """Create ``path`` with mode 0600 from the start, so the key is never readable by others."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(f"{path} exists; refusing to overwrite a key (use --force)") from exc
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)  # O_TRUNC keeps an old mode; make sure it is ours


def write_public(path: Path, data: bytes, *, force: bool = False) -> None:
    if path.exists() and not force:
        raise KeyFileError(f"{path} exists; refusing to overwrite (use --force)")
    path.write_bytes(data)


def read_bytes(path: Path | str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {path}: {exc.strerror}") from exc


def load_private_key(path: Path | str) -> PrivateKey:
    try:
        return load_private_pem(read_bytes(path, "private key"))
    except ChainError as exc:
        raise KeyFileError(f"{path}: {exc}") from exc


def load_public_key(path: Path | str) -> PublicKey:
    try:
        return load_public_pem(read_bytes(path, "public key"))
    except ChainError as exc:
        raise KeyFileError(f"{path}: {exc}") from exc


def load_note_key(path: Path | str) -> NoteKey:
    try:
        return NoteKey.parse_skey(read_bytes(path, "signer key").decode())
    except (ChainError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: {exc}") from exc


def load_vkey(value: str) -> VerifierKey:
    """A verifier key given inline (``name+hexid+base64``) or as the path of a file holding one."""
    text = value
    if "+" not in value or Path(value).is_file():
        try:
            text = read_bytes(value, "verifier key").decode().strip()
        except UnicodeDecodeError as exc:
            raise KeyFileError(f"{value}: not a text file") from exc
    try:
        return VerifierKey.parse(text)
    except ChainError as exc:
        raise KeyFileError(f"{value}: {exc}") from exc
