"""The Chinese documents stay in step with the English ones they translate.

Pairs: ``README.md`` / ``README.zh-CN.md`` and ``docs/operations.md`` / ``docs/operations.zh-CN.md``.
Prose is translated freely; what a reader types or looks up must be the same in both:

- **Code blocks**: every fenced block (```` ```sh ````, ```` ```toml ````, a bare ```` ``` ````, ...), in
  order, with the same language tag and the same lines. Comments may be translated, so they are left
  out of the comparison: a line whose first non-blank character is ``#`` is dropped, and a trailing
  comment (whitespace, then ``#`` and a space or the line's end) is cut off. A ``#`` glued to other
  text (``edgeroot/readings/#``, ``'#'``) is not a comment and is compared. Blank lines are ignored.
- **Headings**: the same number, at the same levels, in the same order, with the same section number
  (``## 3. ...``) where the English has one, since the text refers to sections by number.
- **Tables**: the same tables in the same order; row by row, the same inline code spans (config keys,
  metric names, units, paths), in any order within the row.
- **Inline code**: the whole document's inline code spans (commands, options, keys, file names, metric
  names), as a multiset with runs of whitespace read as one space, so a span may wrap differently; a
  link to the other document of a pair counts as its English name.
- **Generated key tables**: the block between the ``config keys`` markers is byte-for-byte the English
  one, which ``tests/test_config_files.py`` checks against the declarations and
  ``python -m tests.test_config_files`` rewrites in both files, so a new key cannot be missing in Chinese.
- **Images**: the same pictures (screenshots), in any order, so a new one is shown in both.
- **Links**: each file links to the other at its top.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_config_files import BEGIN, END

REPO = Path(__file__).resolve().parent.parent
PAIRS = (
    (REPO / "README.md", REPO / "README.zh-CN.md"),
    (REPO / "docs" / "operations.md", REPO / "docs" / "operations.zh-CN.md"),
)
FIX = (
    "Copy the English block into the Chinese file as is; only `#` comments may be translated "
    "(tests/test_docs_zh.py's docstring says exactly what is compared)."
)

_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_HEADING = re.compile(r"^(#{1,6}) +(.*)$", re.MULTILINE)
_TRAILING_COMMENT = re.compile(r"\s+#(?:\s.*)?$")
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_INLINE_CODE = re.compile(r"`([^`]+)`")
_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)")
_ENGLISH_NAME = re.compile(r"\.zh-CN\.md\b")


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language tag, its compared lines, and where it starts."""

    lang: str
    lines: tuple[str, ...]
    line_no: int
    heading: str


def _without_fences(markdown: str) -> str:
    """The text with every fenced block blanked out, offsets kept, so `#` in code is no heading."""
    return _FENCE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), markdown)


def code_line(line: str) -> str:
    """The line as compared: a trailing comment cut off, trailing blanks dropped ('' for a comment line)."""
    if line.lstrip().startswith("#"):
        return ""
    return _TRAILING_COMMENT.sub("", line).rstrip()


def code_blocks(markdown: str) -> list[Block]:
    """Every fenced block in order, with its compared lines and the heading it sits under."""
    blocks = []
    headings = [(m.start(), m.group(2)) for m in _HEADING.finditer(_without_fences(markdown))]
    for match in _FENCE.finditer(markdown):
        lines = tuple(line for line in map(code_line, match.group(2).splitlines()) if line)
        under = [title for start, title in headings if start < match.start()]
        blocks.append(
            Block(
                lang=match.group(1).strip(),
                lines=lines,
                line_no=markdown.count("\n", 0, match.start()) + 1,
                heading=under[-1] if under else "(top)",
            )
        )
    return blocks


def heading_shapes(markdown: str) -> list[str]:
    """Each heading as its level marks and its section number, if any: '##', '## 3.'."""
    shapes = []
    for match in _HEADING.finditer(_without_fences(markdown)):
        number = re.match(r"\d+(?:\.\d+)*\.", match.group(2))
        shapes.append(match.group(1) + (f" {number.group(0)}" if number else ""))
    return shapes


def _outside_generated(markdown: str) -> str:
    head, _, rest = markdown.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return head + tail


def tables(markdown: str) -> list[list[Counter[str]]]:
    """Every table outside the generated block: per body row, the multiset of its inline code spans."""
    found: list[list[Counter[str]]] = []
    previous_was_row = False
    for line in _without_fences(_outside_generated(markdown)).splitlines():
        is_row = line.startswith("|")
        if is_row and not previous_was_row:
            found.append([])
        if is_row and not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line.strip()):
            found[-1].append(Counter(_CODE_SPAN.findall(line)))
        previous_was_row = is_row
    # The header row is words, translated freely; its code spans (if any) are compared with the rest.
    return found


def code_spans(markdown: str) -> Counter[str]:
    """Every inline code span outside fenced blocks, whitespace runs as one space, zh-CN names as English."""
    spans = Counter(" ".join(span.split()) for span in _INLINE_CODE.findall(_without_fences(markdown)))
    return Counter({_ENGLISH_NAME.sub(".md", span): count for span, count in spans.items()})


def generated_block(markdown: str) -> str | None:
    """The generated key tables between the markers, or None when the file has no markers."""
    if BEGIN not in markdown:
        return None
    return markdown.partition(BEGIN)[2].partition(END)[0]


def _name(path: Path) -> str:
    return str(path.relative_to(REPO))


def _block_diff(english: Block, chinese: Block) -> str:
    diff = difflib.unified_diff(
        [f"```{english.lang}", *english.lines],
        [f"```{chinese.lang}", *chinese.lines],
        "English (comments dropped)",
        "Chinese (comments dropped)",
        lineterm="",
    )
    return "\n".join(diff)


PAIR_IDS = [_name(zh) for _, zh in PAIRS]


@pytest.mark.parametrize(("en_path", "zh_path"), PAIRS, ids=PAIR_IDS)
def test_chinese_code_blocks_match_english(en_path: Path, zh_path: Path) -> None:
    """Every fenced block of the Chinese file has the English block's language tag and lines, in order."""
    english, chinese = code_blocks(en_path.read_text()), code_blocks(zh_path.read_text())
    for number, (en, zh) in enumerate(zip(english, chinese, strict=False), start=1):
        assert (en.lang, en.lines) == (zh.lang, zh.lines), (
            f"code block {number} differs: {_name(en_path)} line {en.line_no} (under '{en.heading}') "
            f"vs {_name(zh_path)} line {zh.line_no} (under '{zh.heading}').\n{_block_diff(en, zh)}\n{FIX}"
        )
    if len(english) != len(chinese):
        extra = english[len(chinese) :] or chinese[len(english) :]
        side = _name(en_path) if len(english) > len(chinese) else _name(zh_path)
        where = ", ".join(f"line {b.line_no} (under '{b.heading}')" for b in extra)
        assert len(english) == len(chinese), (
            f"{_name(en_path)} has {len(english)} code blocks, {_name(zh_path)} {len(chinese)}; "
            f"only {side} has the blocks at {where}. Add (or remove) them in the Chinese file. {FIX}"
        )


@pytest.mark.parametrize(("en_path", "zh_path"), PAIRS, ids=PAIR_IDS)
def test_chinese_headings_match_english(en_path: Path, zh_path: Path) -> None:
    """Same headings, same levels, same section numbers, in the same order."""
    english, chinese = heading_shapes(en_path.read_text()), heading_shapes(zh_path.read_text())
    titles = [m.group(0) for m in _HEADING.finditer(_without_fences(en_path.read_text()))]
    zh_titles = [m.group(0) for m in _HEADING.finditer(_without_fences(zh_path.read_text()))]
    for number, (en, zh) in enumerate(zip(english, chinese, strict=False), start=1):
        assert en == zh, (
            f"heading {number} differs: {_name(en_path)} has '{titles[number - 1]}', {_name(zh_path)} "
            f"has '{zh_titles[number - 1]}': translate the English heading in its place (same '#' level "
            "and section number)."
        )
    assert len(english) == len(chinese), (
        f"{_name(en_path)} has {len(english)} headings, {_name(zh_path)} {len(chinese)}: "
        f"English headings {titles}; Chinese headings {zh_titles}. Translate the missing ones in place."
    )


@pytest.mark.parametrize(("en_path", "zh_path"), PAIRS, ids=PAIR_IDS)
def test_chinese_tables_keep_every_code_span(en_path: Path, zh_path: Path) -> None:
    """Each table row keeps the English row's config keys, metric names and paths (its code spans)."""
    english, chinese = tables(en_path.read_text()), tables(zh_path.read_text())
    assert len(english) == len(chinese), (
        f"{_name(en_path)} has {len(english)} tables, {_name(zh_path)} {len(chinese)}: "
        "translate every table in place."
    )
    for number, (en_rows, zh_rows) in enumerate(zip(english, chinese, strict=True), start=1):
        assert len(en_rows) == len(zh_rows), (
            f"table {number}: {_name(en_path)} has {len(en_rows)} rows, {_name(zh_path)} {len(zh_rows)}."
        )
        for row, (en, zh) in enumerate(zip(en_rows, zh_rows, strict=True)):
            assert en == zh, (
                f"table {number} row {row} (0 is the header): code spans differ; only in English "
                f"{sorted((en - zh).elements())}, only in Chinese {sorted((zh - en).elements())}. "
                "Keep every `...` of the English row, unchanged, in the Chinese row."
            )


@pytest.mark.parametrize(("en_path", "zh_path"), PAIRS, ids=PAIR_IDS)
def test_chinese_prose_keeps_every_inline_code_span(en_path: Path, zh_path: Path) -> None:
    """Every `command`, `key`, `file` and `metric` of the English prose appears, unchanged, in Chinese."""
    english, chinese = code_spans(en_path.read_text()), code_spans(zh_path.read_text())
    assert english == chinese, (
        f"inline code differs between {_name(en_path)} and {_name(zh_path)}: only in English "
        f"{sorted((english - chinese).elements())}, only in Chinese "
        f"{sorted((chinese - english).elements())}. "
        "Keep each `...` of the English text, unchanged and as often, in the Chinese text."
    )


@pytest.mark.parametrize(("en_path", "zh_path"), PAIRS, ids=PAIR_IDS)
def test_chinese_generated_key_tables_are_the_english_ones(en_path: Path, zh_path: Path) -> None:
    """The generated config key tables are copied verbatim, so a new key cannot be missing in Chinese."""
    english, chinese = generated_block(en_path.read_text()), generated_block(zh_path.read_text())
    assert (english is None) == (chinese is None), (
        f"the generated block's markers ({BEGIN.strip()} ... {END.strip()}) are in only one of "
        f"{_name(en_path)} and {_name(zh_path)}: put them in the same section of both."
    )
    assert english == chinese, (
        f"the generated key tables of {_name(zh_path)} differ from {_name(en_path)}: "
        "run `python -m tests.test_config_files`, which rewrites them in both files."
    )


@pytest.mark.parametrize(("en_path", "zh_path"), PAIRS, ids=PAIR_IDS)
def test_chinese_shows_the_same_pictures(en_path: Path, zh_path: Path) -> None:
    """Every image of the English file (the page screenshots) is shown in the Chinese one too."""
    english = sorted(_IMAGE.findall(_without_fences(en_path.read_text())))
    chinese = sorted(_IMAGE.findall(_without_fences(zh_path.read_text())))
    assert english == chinese, (
        f"images differ: only in {_name(en_path)} {sorted(set(english) - set(chinese))}, only in "
        f"{_name(zh_path)} {sorted(set(chinese) - set(english))}: show the same pictures in both."
    )


@pytest.mark.parametrize(("en_path", "zh_path"), PAIRS, ids=PAIR_IDS)
def test_each_language_links_to_the_other_at_the_top(en_path: Path, zh_path: Path) -> None:
    """The first lines of each file link to its other-language version."""
    english_top = "\n".join(en_path.read_text().splitlines()[:5])
    chinese_top = "\n".join(zh_path.read_text().splitlines()[:5])
    assert f"]({zh_path.name})" in english_top, f"{_name(en_path)}: link to {zh_path.name} at the top"
    assert f"]({en_path.name})" in chinese_top, f"{_name(zh_path)}: link to {en_path.name} at the top"


def test_extractors_drop_comments_but_keep_glued_hashes() -> None:
    """Comment lines and trailing comments are ignored; a `#` inside a word is compared."""
    text = (
        "# Title\n```sh\n# 注释\nedgeroot run --x 1   # why\n\ntopic read a/#\n```\n"
        "## 2. Part\n| k | m |\n|---|---|\n| `a.b` | x `c` |\n"
    )
    [block] = code_blocks(text)
    assert block == Block("sh", ("edgeroot run --x 1", "topic read a/#"), 2, "Title")
    assert heading_shapes(text) == ["#", "## 2."]
    assert tables(text) == [[Counter(), Counter({"a.b": 1, "c": 1})]]
    wrapped = "run `proof\nreceipt --json`, see [`docs/operations.zh-CN.md`](docs/operations.zh-CN.md)"
    assert _IMAGE.findall("![图](docs/images/a.png) and ![x](b.png)") == ["docs/images/a.png", "b.png"]
    assert code_spans(wrapped) == Counter({"proof receipt --json": 1, "docs/operations.md": 1})


def test_a_changed_command_is_reported_with_its_block() -> None:
    """A command that differs only in a flag makes the blocks unequal (the test can fail)."""
    english = code_blocks("```sh\nedgeroot gateway status --state gw/\n```\n")
    chinese = code_blocks("```sh\nedgeroot gateway status --state gw   # 状态\n```\n")
    assert english[0].lines != chinese[0].lines
    assert "-edgeroot gateway status --state gw/" in _block_diff(english[0], chinese[0])
