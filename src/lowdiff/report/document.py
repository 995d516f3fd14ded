"""The report as a document: a few block types, rendered to Markdown and to HTML.

A report is a list of `Block`s (`Heading`, `Paragraph`, `Bullets`, `Table`, `Image`,
`Contents`) that the other modules build; a table wider than a 1280 px page (estimated from
its text) is split into several (first column repeated), and headings get GitHub's anchors
(`slug`) so that the table of contents links work in report.md and report.html alike.
`render_markdown` writes them as report.md (figures linked by path) and
`render_html` as a self-contained page (figures read from the results directory and inlined as
base64 data URLs of their own type). Both are pure functions of the blocks, so the same blocks
give the same bytes. `write_pages` writes several pages so that they never disagree: all are
written to temporaries first, then renamed one after the other. `comma_list` is the one text
helper the sections share. Nothing here knows about experiments.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lowdiff import results

IMAGE_TYPES = {
    ".png": "image/png",
    ".webp": "image/webp",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
}


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]  # a "\n" in a cell is a line break


@dataclass(frozen=True)
class Image:
    path: str  # relative to the results directory
    title: str
    caption: str


@dataclass(frozen=True)
class Contents:
    """The table of contents: a link to every heading of `level` (filled in by the renderers)."""

    level: int = 2


Block = Heading | Paragraph | Bullets | Table | Image | Contents

PAGE_WIDTH = 1150  # px of table a 1280 px window shows beside the page's margins
CHAR_WIDTH = 7.5  # px per character of table text (0.9 em of a 16 px sans-serif font)
CELL_PADDING = 12  # px of padding and border per cell


def slug(text: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces -> '-'."""
    kept = "".join(c for c in text.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def anchors(blocks: Iterable[Block]) -> dict[int, str]:
    """Index of each heading block -> its unique anchor (a repeat gets -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    found = {}
    for index, block in enumerate(blocks):
        if isinstance(block, Heading):
            base = slug(block.text)
            count = seen.get(base, 0)
            seen[base] = count + 1
            found[index] = base if count == 0 else f"{base}-{count}"
    return found


def _column_width(table: Table, column: int) -> float:
    """The natural width in px of a column: its longest line of text, unwrapped."""
    lines = [line for row in (table.header, *table.rows) for line in row[column].split("\n")]
    return CELL_PADDING + CHAR_WIDTH * max((len(line) for line in lines), default=0)


def split_wide(table: Table, width: float = PAGE_WIDTH) -> list[Table]:
    """`table` as tables that each fit `width` px unwrapped (as far as one column allows),
    every part repeating the first column: a wide table read across a page, not wrapped."""
    widths = [_column_width(table, c) for c in range(len(table.header))]
    groups: list[list[int]] = [[]]
    used = widths[0]
    for column in range(1, len(widths)):
        if groups[-1] and used + widths[column] > width:
            groups.append([])
            used = widths[0]
        groups[-1].append(column)
        used += widths[column]
    if len(groups) == 1:
        return [table]
    return [
        Table(
            tuple(table.header[c] for c in (0, *group)),
            tuple(tuple(row[c] for c in (0, *group)) for row in table.rows),
        )
        for group in groups
    ]


def _md_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("*", "\\*")


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|").replace("\n", "<br>")


def _md_one_table(table: Table) -> str:
    lines = ["| " + " | ".join(_md_cell(cell) for cell in table.header) + " |"]
    lines.append("|" + "|".join(["---"] * len(table.header)) + "|")
    lines += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in table.rows]
    return "\n".join(lines)


def _md_table(table: Table) -> str:
    return "\n\n".join(_md_one_table(part) for part in split_wide(table))


def _contents(blocks: list[Block], level: int) -> list[tuple[str, str]]:
    """(text, anchor) of every heading of `level`."""
    found = anchors(blocks)
    return [
        (block.text, found[i])
        for i, block in enumerate(blocks)
        if isinstance(block, Heading) and block.level == level
    ]


MARKDOWN: dict[type, Callable[[Any], str]] = {
    Heading: lambda block: "#" * block.level + " " + _md_text(block.text),
    Paragraph: lambda block: _md_text(block.text),
    Bullets: lambda block: "\n".join(f"- {_md_text(item)}" for item in block.items),
    Table: _md_table,
    Image: lambda block: f"![{_md_text(block.title)}]({block.path})\n\n{_md_text(block.caption)}",
}


def render_markdown(blocks: Iterable[Block]) -> str:
    blocks = list(blocks)

    def render(block: Block) -> str:
        if isinstance(block, Contents):
            entries = _contents(blocks, block.level)
            return "**Contents**\n\n" + "\n".join(
                f"- [{_md_text(text)}](#{anchor})" for text, anchor in entries
            )
        return MARKDOWN[type(block)](block)

    return "\n\n".join(render(block) for block in blocks) + "\n"


def _html_text(text: str) -> str:
    return html.escape(text).replace("\n", "<br>")


def _html_one_table(table: Table) -> str:
    head = "".join(f"<th>{_html_text(cell)}</th>" for cell in table.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_html_text(cell)}</td>" for cell in row) + "</tr>"
        for row in table.rows
    )
    table_html = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="wide">{table_html}</div>'


def _html_table(table: Table) -> str:
    return "".join(_html_one_table(part) for part in split_wide(table))


def _html_contents(blocks: list[Block], level: int) -> str:
    items = "".join(
        f'<li><a href="#{anchor}">{_html_text(text)}</a></li>'
        for text, anchor in _contents(blocks, level)
    )
    return f'<nav class="contents"><strong>Contents</strong><ul>{items}</ul></nav>'


def _html_image(block: Image, root: Path) -> str:
    path = root / block.path
    kind = IMAGE_TYPES.get(path.suffix.lower(), "application/octet-stream")
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:{kind};base64,{encoded}" alt="{html.escape(block.title)}">'
        f"<figcaption>{_html_text(block.caption)}</figcaption></figure>"
    )


HTML_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;"
    "line-height:1.45;color:#222}table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
    "th,td{border:1px solid #ccc;padding:0.3em 0.6em;text-align:left;vertical-align:top}"
    "th{background:#f3f3f3}figure{margin:1.5em 0}img{max-width:100%;height:auto}"
    "figcaption{color:#444;font-size:0.92em}.wide{max-width:100%;overflow-x:auto}"
    "td,th{overflow-wrap:anywhere}nav.contents ul{columns:2;margin:0.4em 0}"
)


def render_html(blocks: Iterable[Block], *, title: str, root: Path) -> str:
    """A self-contained HTML page; figures are read from `root` and inlined as base64."""
    blocks = list(blocks)
    ids = anchors(blocks)
    renderers: dict[type, Callable[[Any], str]] = {
        Paragraph: lambda b: f"<p>{_html_text(b.text)}</p>",
        Bullets: lambda b: "<ul>" + "".join(f"<li>{_html_text(i)}</li>" for i in b.items) + "</ul>",
        Table: _html_table,
        Image: lambda b: _html_image(b, root),
        Contents: lambda b: _html_contents(blocks, b.level),
    }
    body = "\n".join(
        f'<h{b.level} id="{ids[i]}">{_html_text(b.text)}</h{b.level}>'
        if isinstance(b, Heading)
        else renderers[type(b)](b)
        for i, b in enumerate(blocks)
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{HTML_STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def write_pages(root: Path, pages: dict[str, str]) -> None:
    """Write every page under `root` so that no reader sees them disagree for long.

    Each page goes to a hidden temporary beside its target first (fully written and flushed);
    only when all exist are they renamed into place, one right after the other. A failure
    before the renames leaves every old page as it was.
    """
    temporaries = {}
    try:
        for name, text in pages.items():
            temporary = root / f".{name}.next"
            results.atomic_write_bytes(temporary, text.encode())
            temporaries[name] = temporary
        for name, temporary in temporaries.items():
            os.replace(temporary, root / name)
    finally:
        for temporary in temporaries.values():
            temporary.unlink(missing_ok=True)


def comma_list(values: Iterable[object]) -> str:
    return ", ".join(str(value) for value in values)
