"""Reading a service's TOML configuration: once, at start, every error with its key path (STYLE 8).

Shared by the root node (``root.toml``) and the gateway (``gateway.toml``); each package raises its
own :class:`ConfigError` subclass, so callers catch their package's error type.
"""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
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

    def strings(self, key: str, default: Any = None, *, required: bool = False) -> Any:
        """An array of strings, as a tuple; each wrong item named by its index (``prefixes[1]``)."""
        items = self.get(key, list, default, required=required)
        if items is None or isinstance(items, tuple):
            return items
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise self.fail(f"{key}[{i}]", f"must be str, not {type(item).__name__}")
        return tuple(items)

    def check_known(self, known: set[str]) -> None:
        for key in self.data:
            if key not in known:
                raise self.fail(key, f"unknown key (known: {', '.join(sorted(known))})")


class Secret(str):
    """A string that never shows itself in logs or reprs (passwords, tokens)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')"


# --- declared keys: one place for each key's type, default, range and help --------------------------------
#
# A service's config dataclass declares each key once, on the field that holds it:
#
#     max_seconds: float = setting("block.max_seconds", 5.0, help="...", range=(0.05, 3600))
#
# The same declaration validates the file (:func:`read_settings`) and writes the commented sample that
# ``init`` installs (:func:`render`), so the default in the code and the one in the file cannot drift.

_SPEC = "edgeroot.setting"
_NO_DEFAULT: Any = object()
TOML_KINDS = (str, int, float, bool)


@dataclass(frozen=True, slots=True)
class Setting:
    """One key of a TOML file, as declared on a config dataclass field.

    ``kind`` is the TOML type: ``str``, ``int``, ``float`` or ``bool`` for a value; ``tuple`` for an array of
    strings (``["a", "b"]``, read as a tuple); ``dict`` for a free-form table of strings (read by its owner);
    ``list`` for an array of tables whose items are described by the dataclass ``item(table)`` returns. A
    key without a default is ``required``, or optional with an ``example`` shown commented out in the sample.
    """

    attr: str
    key: str
    kind: type
    help: str
    default: Any = None
    required: bool = False
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()
    example: Any = None
    secret: bool = False
    item: Callable[[Mapping[str, Any]], type] | None = None

    @property
    def section(self) -> tuple[str, ...]:
        return tuple(self.key.split(".")[:-1])

    @property
    def name(self) -> str:
        return self.key.rpartition(".")[2]

    @property
    def has_default(self) -> bool:
        return self.default is not None

    def read(self, table: Table) -> Any:
        """This key's value in ``table`` (its section), checked; the default when absent."""
        if self.kind is dict:
            return table.table(self.name)
        if self.kind is list:
            return table.tables(self.name)
        if self.kind is tuple:
            return table.strings(self.name, self.default, required=self.required)
        if self.range is not None:
            value = table.number(self.name, self.kind, self.default, *self.range)
        else:
            value = table.get(self.name, self.kind, self.default, required=self.required)
        if self.choices and value not in self.choices:
            raise table.fail(self.name, f"must be one of {', '.join(repr(c) for c in self.choices)}")
        if self.secret and value is not None:
            value = Secret(value)
        return value


def setting(
    key: str,
    default: Any = _NO_DEFAULT,
    *,
    help: str,
    kind: type | None = None,
    range: tuple[float, float] | None = None,
    choices: tuple[str, ...] = (),
    required: bool = False,
    example: Any = None,
    secret: bool = False,
    item: Callable[[Mapping[str, Any]], type] | None = None,
) -> Any:
    """A dataclass field that is also the declaration of TOML key ``key`` (dotted for sections).

    The field's default is ``default``; a :class:`~pathlib.Path` default is written as a string. Raises
    :class:`ValueError` on a declaration that could not produce a complete sample.
    """
    toml_default = None if default is _NO_DEFAULT else str(default) if isinstance(default, Path) else default
    kind = kind or (type(toml_default) if toml_default is not None else str)
    if kind not in (*TOML_KINDS, tuple, dict, list):
        raise ValueError(
            f"{key}: a TOML key holds str, int, float, bool, strings, a table or tables, not {kind}"
        )
    if toml_default is None and not required and example is None and kind is not list:
        raise ValueError(f"{key}: a key without a default is required or has an example for the sample")
    if range is not None and toml_default is None:
        raise ValueError(f"{key}: a ranged key has a default")
    if kind is list and item is None:
        raise ValueError(f"{key}: an array of tables names the dataclass of its items")
    spec = {
        "key": key,
        "kind": kind,
        "help": help,
        "default": toml_default,
        "required": required,
        "range": range,
        "choices": choices,
        "example": example,
        "secret": secret,
        "item": item,
    }
    metadata = {_SPEC: spec}
    if default is _NO_DEFAULT:
        # An optional key without a default reads as None when absent.
        return field(metadata=metadata) if required else field(default=None, metadata=metadata)
    if isinstance(default, dict | list):
        return field(default_factory=lambda: copy.copy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def settings(cls: type) -> list[Setting]:
    """The keys ``cls`` declares, in declaration order (which is the order of the sample file)."""
    return [Setting(f.name, **f.metadata[_SPEC]) for f in fields(cls) if _SPEC in f.metadata]


def read_settings(cls: type, top: Table) -> dict[str, Any]:
    """Every key ``cls`` declares, read from ``top`` and checked, by field name.

    Unknown keys are refused at the top and inside every declared section, each error with its key path.
    Free-form tables (``kind=dict``) and arrays of tables (``kind=list``) come back as :class:`Table` and
    ``list[Table]`` for their owner to read.
    """
    declared = settings(cls)
    sections: dict[tuple[str, ...], Table] = {(): top}
    known: dict[tuple[str, ...], set[str]] = {(): set()}
    for s in declared:
        for depth in range(1, len(s.section) + 1):
            part = s.section[:depth]
            if part not in sections:
                sections[part] = sections[part[:-1]].table(part[-1])
                known[part[:-1]].add(part[-1])
                known[part] = set()
        known[s.section].add(s.name)
    for part, table in sections.items():
        table.check_known(known[part])
    return {s.attr: s.read(sections[s.section]) for s in declared}


def toml_value(value: Any) -> str:
    """``value`` as a TOML literal (str, int, float, bool, or a list of those)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string (TOML 1.0 §String: the same escapes, \uXXXX included),
        # except that TOML also wants DEL escaped. Non-ASCII stays as is: JSON would write characters
        # outside the BMP as surrogate pairs, which TOML's \u does not allow.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML literal for {type(value).__name__}")


def toml_key(name: str) -> str:
    return name if name.replace("_", "").replace("-", "").isalnum() and name.isascii() else toml_value(name)


HELP_COLUMN = 36
Line = tuple[str, str]
"""A line of a sample file before layout: its TOML text and its help comment (maybe empty)."""


def render(cls: type, overrides: Mapping[str, Any], *, title: str) -> str:
    """A commented TOML file for ``cls``: every declared key with its help, defaults where nothing is given.

    ``overrides`` has the shape of the parsed file (``{"block": {"max_seconds": 1.0}, "connector": [...]}``).
    A key given there is written with that value; a required key must be given; a key without a default
    and not given is shown commented out with its example. Raises :class:`ValueError` naming the key
    path of an override that ``cls`` does not declare or of a missing required key, and
    :class:`TypeError` for an override of the wrong type.
    """
    lines = [f"# {line}" if line else "#" for line in title.splitlines()]
    for text, help_text in _render_table(cls, overrides, ""):
        lines.append(f"{text.ljust(HELP_COLUMN - 1)} # {help_text}" if help_text else text)
    return "\n".join(lines) + "\n"


def update(cls: type, path: Path, overrides: Mapping[str, Any], *, title: str) -> None:
    """Rewrite the TOML file at ``path`` (keys declared by ``cls``) with ``overrides`` merged in.

    Merging: a table merges key by key; an array of tables merges item by item, extra items are
    appended; ``None`` removes a key (so its default applies). The file is written again by
    :func:`render`, help comments included; it raises as :func:`render` does, and
    :class:`tomllib.TOMLDecodeError` when ``path`` is not valid TOML.
    """
    current = tomllib.loads(path.read_text())
    path.write_text(render(cls, merged(current, overrides), title=title))


def merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, as :func:`update` describes; neither argument changes."""
    out = dict(base)
    for key, value in overrides.items():
        old = out.get(key)
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(old, Mapping):
            out[key] = merged(old, value)
        elif isinstance(value, list) and isinstance(old, list):
            items = [merged(a, b) if isinstance(a, Mapping) and isinstance(b, Mapping) else b
                     for a, b in zip(old, value, strict=False)]  # fmt: skip
            out[key] = items + old[len(value) :] + value[len(old) :]
        else:
            out[key] = value
    return out


def _commented(lines: list[Line]) -> list[Line]:
    return [(text if not text or text.startswith("#") else f"# {text}", h) for text, h in lines]


def _render_table(cls: type, given: Mapping[str, Any], where: str) -> list[Line]:
    declared = settings(cls)
    _check_overrides(declared, given, where)
    out: list[Line] = []
    section: tuple[str, ...] = ()
    for s in declared:
        value = given
        for part in s.section:
            value = value.get(part, {})
        if s.section != section and s.kind not in (dict, list):
            if not s.section:
                raise ValueError(f"{where}{s.key}: declare top-level keys before any table")
            section = s.section
            out += [("", ""), (f"[{'.'.join(section)}]", "")]
        path = where + s.key
        if s.kind is dict:
            table = value.get(s.name)
            if table is not None and not isinstance(table, Mapping):
                raise TypeError(f"{path}: is a table")
            entries = [(f"{toml_key(k)} = {toml_value(v)}", "") for k, v in (table or s.example).items()]
            shown_entries = entries if table else _commented(entries)  # an empty table shows its example
            out += [("", ""), (f"[{s.key}]", s.help), *shown_entries]
            section = (*s.section, s.name)
        elif s.kind is list:
            out += _render_items(s, value.get(s.name), path)
            section = (*s.section, s.name)
        elif s.name in value:
            _check_value(s, value[s.name], path)
            out.append((f"{s.name} = {toml_value(value[s.name])}", s.help))
        elif s.required:
            raise ValueError(f"{path}: is required")
        elif s.has_default:
            out.append((f"{s.name} = {toml_value(s.default)}", s.help))
        else:
            out.append((f"# {s.name} = {toml_value(s.example)}", s.help))
    return out


def _render_items(s: Setting, items: list[Mapping[str, Any]] | None, path: str) -> list[Line]:
    assert s.item is not None  # setting() refuses an array of tables without one
    out: list[Line] = []
    shown: set[type] = set()
    if items is not None and not (isinstance(items, list) and all(isinstance(i, Mapping) for i in items)):
        raise TypeError(f"{path}: is a list of tables")
    for i, item in enumerate(items or []):
        cls = s.item(item)
        shown.add(cls)
        out += [("", ""), (f"[[{s.key}]]", s.help), *_render_table(cls, item, f"{path}[{i}].")]
    # Kinds of items not given are still shown, commented out, so the sample documents every key.
    for example in s.example or ():
        cls = s.item(example)
        if cls not in shown:
            shown.add(cls)
            body = _render_table(cls, example, f"{path}[example].")
            out += [("", ""), *_commented([(f"[[{s.key}]]", s.help), *body])]
    return out


def markdown_table(cls: type) -> str:
    """Every key ``cls`` declares (items of arrays of tables too) as a Markdown table, for the docs."""
    rows = ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    rows += [f"| {' | '.join(cells)} |" for cells in _describe(cls, "")]
    return "\n".join(rows) + "\n"


def _describe(cls: type, where: str) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for s in settings(cls):
        kinds: dict[type, str] = {dict: "table", list: "array of tables", tuple: "array of str"}
        kind = kinds.get(s.kind, s.kind.__name__)
        if s.required:
            default = "required"
        elif s.kind is list:
            default = "none"
        elif s.kind is dict:
            default = "empty" if not s.default else f"`{s.default}`"
        elif s.has_default:
            default = f"`{toml_value(s.default)}`"
        else:
            default = f"unset (e.g. `{toml_value(s.example)}`)"
        allowed = (
            f"{s.range[0]!r} to {s.range[1]!r}" if s.range
            else ", ".join(f"`{toml_value(c)}`" for c in s.choices)
        )  # fmt: skip
        out.append((f"`{where}{s.key}`", kind, default, allowed, s.help.replace("|", "\\|")))
        if s.kind is list:
            assert s.item is not None  # setting() refuses an array of tables without one
            classes = list(dict.fromkeys(s.item(example) for example in s.example or ()))
            for example in s.example or ():
                item = s.item(example)
                if item in classes:
                    classes.remove(item)
                    # Several kinds of items (connectors): name each kind by the example's keys.
                    label = ",".join(f"{k}={v}" for k, v in example.items()) if len(s.example) > 1 else ""
                    out += _describe(item, f"{where}{s.key}[{label}].")
    return out


def _check_overrides(declared: list[Setting], given: Mapping[str, Any], where: str) -> None:
    tree: dict[str, Any] = {}
    for s in declared:
        node = tree
        for part in s.section:
            node = node.setdefault(part, {})
        node[s.name] = s

    def walk(node: dict[str, Any], value: Mapping[str, Any], at: str) -> None:
        for key, item in value.items():
            if key not in node:
                raise ValueError(f"{at}{key}: not a declared key (known: {', '.join(sorted(node))})")
            if isinstance(node[key], dict):
                if not isinstance(item, Mapping):
                    raise TypeError(f"{at}{key}: is a table")
                walk(node[key], item, f"{at}{key}.")

    walk(tree, given, where)


def _check_value(s: Setting, value: Any, path: str) -> None:
    """The checks :meth:`Setting.read` makes, for a value about to be written."""
    if isinstance(value, bool):
        fits = s.kind is bool
    elif s.kind is tuple:
        fits = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
    elif s.kind is float:
        fits = isinstance(value, int | float)
    else:
        fits = isinstance(value, s.kind)
    if not fits:
        raise TypeError(f"{path}: {value!r} is not a valid {s.kind.__name__}")
    if s.range is not None and not s.range[0] <= value <= s.range[1]:
        raise ValueError(f"{path}: {value!r} is not between {s.range[0]:g} and {s.range[1]:g}")
    if s.choices and value not in s.choices:
        raise ValueError(f"{path}: {value!r} is not one of {', '.join(repr(c) for c in s.choices)}")
