"""Reading a service's TOML configuration: once, at start, every error with its key path (STYLE 8).

Shared by the root node (``root.toml``) and the gateway (``gateway.toml``); each package raises its
own :class:`ConfigError` subclass, so callers catch their package's error type.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """The configuration is invalid; the message names the file, the key path and the reason."""

    def __init__(self, path: object, key: str, reason: str) -> None:
        super().__init__(f"{path}: {key}: {reason}")
        self.key = key
        self.reason = reason


class Table:
    """A TOML table read with its key path, so each error says exactly where."""

    def __init__(
        self, data: dict[str, Any], path: Path, where: str = "", error: type[ConfigError] = ConfigError
    ) -> None:
        self.data, self.path, self.where, self.error = data, path, where, error

    @classmethod
    def read(cls, path: Path, hint: str, error: type[ConfigError] = ConfigError) -> Table:
        """Parse ``path``; ``hint`` tells the operator what to do when the file is missing."""
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise error(path, "(file)", f"cannot read: {exc.strerror} ({hint})") from exc
        except tomllib.TOMLDecodeError as exc:
            raise error(path, "(file)", f"not valid TOML: {exc}") from exc
        return cls(data, path, "", error)

    def fail(self, key: str, reason: str) -> ConfigError:
        return self.error(self.path, f"{self.where}{key}", reason)

    def get(self, key: str, kind: type, default: Any = None, *, required: bool = False) -> Any:
        if key not in self.data:
            if required:
                raise self.fail(key, "is required")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise self.fail(key, f"must be {kind.__name__}, not {type(value).__name__}")
        return value

    def number(self, key: str, kind: type, default: Any, low: float, high: float) -> Any:
        value = self.get(key, kind, default)
        if not low <= value <= high:
            raise self.fail(key, f"must be between {low:g} and {high:g}")
        return value

    def table(self, key: str) -> Table:
        return Table(self.get(key, dict, {}), self.path, f"{self.where}{key}.", self.error)

    def tables(self, key: str) -> list[Table]:
        """An array of tables (``[[key]]``), each with its index in the key path."""
        out = []
        for i, item in enumerate(self.get(key, list, [])):
            if not isinstance(item, dict):
                raise self.fail(f"{key}[{i}]", "must be a table")
            out.append(Table(item, self.path, f"{self.where}{key}[{i}].", self.error))
        return out

    def check_known(self, known: set[str]) -> None:
        for key in self.data:
            if key not in known:
                raise self.fail(key, f"unknown key (known: {', '.join(sorted(known))})")
