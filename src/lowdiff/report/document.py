"""The report as a document: a few block types, rendered to Markdown and to HTML.

A report is a list of `Block`s (`Heading`, `Paragraph`, `Bullets`, `Table`, `Image`) that the
other modules build; `render_markdown` writes them as report.md (figures linked by path) and
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
import secrets
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


Block = Heading | Paragraph | Bullets | Table | Image


def _md_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("*", "\\*")


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|").replace("\n", "<br>")


def _md_table(table: Table) -> str:
    lines = ["| " + " | ".join(_md_cell(cell) for cell in table.header) + " |"]
    lines.append("|" + "|".join(["---"] * len(table.header)) + "|")
    lines += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in table.rows]
    return "\n".join(lines)


MARKDOWN: dict[type, Callable[[Any], str]] = {
    Heading: lambda block: "#" * block.level + " " + _md_text(block.text),
    Paragraph: lambda block: _md_text(block.text),
    Bullets: lambda block: "\n".join(f"- {_md_text(item)}" for item in block.items),
    Table: _md_table,
    Image: lambda block: f"![{_md_text(block.title)}]({block.path})\n\n{_md_text(block.caption)}",
}


def render_markdown(blocks: Iterable[Block]) -> str:
    return "\n\n".join(MARKDOWN[type(block)](block) for block in blocks) + "\n"


def _html_text(text: str) -> str:
    return html.escape(text).replace("\n", "<br>")


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{_html_text(cell)}</th>" for cell in table.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_html_text(cell)}</td>" for cell in row) + "</tr>"
        for row in table.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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
    "th{background:#f3f3f3}figure{margin:1.5em 0}img{max-width:100%}"
    "figcaption{color:#444;font-size:0.92em}"
)


def render_html(blocks: Iterable[Block], *, title: str, root: Path) -> str:
    """A self-contained HTML page; figures are read from `root` and inlined as base64."""
    renderers: dict[type, Callable[[Any], str]] = {
        Heading: lambda b: f"<h{b.level}>{_html_text(b.text)}</h{b.level}>",
        Paragraph: lambda b: f"<p>{_html_text(b.text)}</p>",
        Bullets: lambda b: "<ul>" + "".join(f"<li>{_html_text(i)}</li>" for i in b.items) + "</ul>",
        Table: _html_table,
        Image: lambda b: _html_image(b, root),
    }
    body = "\n".join(renderers[type(block)](block) for block in blocks)
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
    build = f"{os.getpid()}.{secrets.token_hex(4)}"  # one name per writer: no two collide
    temporaries = {}
    try:
        for name, text in pages.items():
            temporary = root / f".{name}.{build}.next"
            results.atomic_write_bytes(temporary, text.encode(), root=root)
            temporaries[name] = temporary
        with results.confined_directory(root, root) as folder:
            for name, temporary in temporaries.items():
                os.replace(temporary.name, name, src_dir_fd=folder, dst_dir_fd=folder)
    finally:
        for temporary in temporaries.values():
            results.remove(temporary, root=root)


def comma_list(values: Iterable[object]) -> str:
    return ", ".join(str(value) for value in values)
