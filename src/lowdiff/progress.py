"""What the console shows while lowdiff works: progress bars that suit where output goes.

`bar(...)` is a drop-in for `tqdm(...)`. On a terminal it is tqdm; in a Jupyter kernel it is
`tqdm.auto`'s notebook bar. When the stream is not a
terminal (a log file, CI, `nohup`), tqdm's carriage returns and cursor moves become debris, so
`bar` returns a `PlainBar` instead: one plain line at the start, one every `interval` seconds
with the phase, count, rate and time left, and one when the phase ends — never the same line
twice. `phase(...)` wraps a step that has no count (oracle floors, figures) the same way.

The rate and the time left count only the work done since the bar started: work found already
finished (`initial=`) or skipped (`PlainBar.skip`) does not make the estimate optimistic.

`resume_line` and `summary_table` are the two sentences the command line prints around a run:
what it found on disk, and the headline metric of every run and dataset when it is done.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = [
    "PlainBar",
    "bar",
    "in_notebook",
    "is_terminal",
    "phase",
    "resume_line",
    "summary_table",
]

DEFAULT_INTERVAL = 10.0  # seconds between two plain progress lines


def is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether `stream` (default stderr) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class PlainBar:
    """A tqdm stand-in for non-terminals: a line at start, every `interval` s, and at the end."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: float | None = None,
        desc: str | None = None,
        unit: str = "it",
        initial: float = 0,
        disable: bool = False,
        interval: float = DEFAULT_INTERVAL,
        file: IO[str] | None = None,
        postfix: Mapping[str, Any] | str | None = None,
        clock: Any = time.monotonic,
        **_ignored: Any,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc or "", unit
        self.n, self.initial, self.disable, self.interval = initial, initial, disable, interval
        self.file, self.clock = file, clock
        self.postfix = "" if postfix is None else self._postfix_text(postfix)
        self._skipped = 0.0
        self._start = self._last_time = clock()
        self._last_line = ""
        self._closed = False
        self._emit(force=True)

    @staticmethod
    def _postfix_text(postfix: Mapping[str, Any] | str) -> str:
        if isinstance(postfix, str):
            return postfix
        return ", ".join(f"{key}={value}" for key, value in postfix.items())

    def _line(self, final: bool) -> str:
        done = self.n - self.initial - self._skipped  # work this bar has seen being done
        elapsed = self.clock() - self._start
        count = f"{self.n:g}/{self.total:g}" if self.total else f"{self.n:g}"
        parts = [f"{self.desc}: {count} {self.unit}" if self.desc else f"{count} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
        if rate:
            parts.append(f"{rate:.3g} {self.unit}/s")
        if final:
            parts.append(f"done in {_duration(elapsed)}")
        elif rate and self.total:
            parts.append(f"{_duration((self.total - self.n) / rate)} left")
        if self.postfix:
            parts.append(self.postfix)
        return ", ".join(parts)

    def _emit(self, force: bool = False, final: bool = False) -> None:
        if self.disable:
            return
        now = self.clock()
        if not force and (now - self._last_time < self.interval or self._complete()):
            return  # a complete bar says so once, when it is closed
        line = self._line(final)
        if line == self._last_line:
            return
        stream = sys.stderr if self.file is None else self.file
        print(line, file=stream, flush=True)
        self._last_line, self._last_time = line, now

    def _complete(self) -> bool:
        return bool(self.total) and self.n >= self.total

    def update(self, n: float = 1) -> None:
        self.n += n
        self._emit()

    def skip(self, n: float = 1) -> None:
        """Count `n` items done without work (copied, cached): they do not change the rate."""
        self._skipped += n
        self.n += n
        self._emit()

    def set_postfix(self, ordered_dict: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        self.postfix = self._postfix_text({**(ordered_dict or {}), **kwargs})

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = text

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def write(self, text: str) -> None:
        if not self.disable:
            print(text, file=sys.stderr if self.file is None else self.file, flush=True)

    def refresh(self) -> None:
        self._emit(force=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._emit(force=True, final=True)

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("this bar was made without an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> PlainBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (where tqdm.auto draws a widget, not lines)."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


def _use_plain(plain: bool | None, stream: IO[str] | None) -> bool:
    if plain is not None:
        return plain
    forced = os.environ.get("LOWDIFF_PROGRESS", "").lower()
    if forced in ("plain", "tty"):
        return forced == "plain"
    return not (is_terminal(stream) or in_notebook())


def bar(
    iterable: Iterable[Any] | None = None,
    *,
    plain: bool | None = None,
    interval: float | None = None,
    **kwargs: Any,
) -> Any:
    """A progress bar: tqdm on a terminal, a `PlainBar` elsewhere (same calls: update, close).

    `plain` forces one or the other (default: decided by the stream, `file=` or stderr; the
    environment variable LOWDIFF_PROGRESS=plain or =tty overrides). `interval`: seconds between
    plain lines (default 10). Other keyword arguments are tqdm's (total, desc, unit, initial,
    disable, leave, postfix, ...). Both have `skip(n)`: n items done without work.
    """
    if _use_plain(plain, kwargs.get("file")):
        return PlainBar(iterable, interval=interval or DEFAULT_INTERVAL, **kwargs)
    return _terminal_bar_class()(iterable, **kwargs)


@functools.cache
def _terminal_bar_class() -> type:
    """tqdm with `skip`: items done without work move the count, not the rate."""
    from tqdm.auto import tqdm

    class TerminalBar(tqdm):  # type: ignore[misc, valid-type]
        def skip(self, n: float = 1) -> None:
            self.n += n
            self.last_print_n += n  # the rate is estimated from the count's change since
            self.initial += n  # the last print, and the average from n - initial
            self.refresh()

    return TerminalBar


@contextmanager
def phase(
    desc: str,
    *,
    disable: bool = False,
    plain: bool | None = None,
    file: IO[str] | None = None,
    clock: Any = time.monotonic,
) -> Iterator[None]:
    """A step without a count (oracle floors, figures): says when it starts and how long it took.

    Off a terminal: "desc ..." then "desc: done in 12 s" (nothing more if the step fails); on a
    terminal, a tqdm line with the elapsed time.
    """
    if disable:
        yield
        return
    if not _use_plain(plain, file):
        with _terminal_bar_class()(total=1, desc=desc, file=file, bar_format="{desc}: {elapsed}"):
            yield
        return
    stream = sys.stderr if file is None else file
    print(f"{desc} ...", file=stream, flush=True)
    start = clock()
    yield
    print(f"{desc}: done in {_duration(clock() - start)}", file=stream, flush=True)


# --- the sentences around a run ------------------------------------------------------------


def resume_line(finished: int, total: int) -> str:
    """'N of M cells finished, K to run' (or 'M cells to run' when nothing was there)."""
    if finished == 0:
        return f"{total} cells to run"
    if finished == total:
        return f"all {total} cells finished, nothing to run"
    return f"{finished} of {total} cells finished, {total - finished} to run"


def _read_json(path: Path) -> Any:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _entry(info: Mapping[str, Any], metric: str) -> tuple[float, float | None, int] | None:
    """(mean, CI half-width or None, number of seeds) of `metric` in a final_info entry."""
    means = info.get("means", {}) if isinstance(info, Mapping) else {}
    if metric not in means or means[metric] is None:
        return None
    interval = (info.get("ci95") or {}).get(metric)
    half = None if not interval else (interval[1] - interval[0]) / 2
    return float(means[metric]), half, len(info.get("seeds", []) or [])


def summary_table(root: Path, metric: str = "kl_divergence", label: str = "KL (bits)") -> str:
    """A plain-text table runs x datasets of `metric`: mean ± 95% CI half-width over seeds.

    Read from the files alone (experiment.json for the order, each run's final_info.json);
    empty string when there is nothing finished to show.
    """
    root = Path(root)
    experiment = _read_json(root / "experiment.json") or {}
    runs = [run.get("name") for run in experiment.get("runs", []) if isinstance(run, dict)]
    datasets = list(experiment.get("experiment", {}).get("datasets", []))
    rows, seeds = [], set()
    for run in runs:
        info = _read_json(root / str(run) / "final_info.json") or {}
        cells = []
        for dataset in datasets:
            entry = _entry(info.get(dataset, {}), metric)
            if entry is None:
                cells.append("-")
                continue
            mean, half, count = entry
            seeds.add(count)
            cells.append(f"{mean:.3f}" if half is None else f"{mean:.3f} ± {half:.3f}")
        rows.append([str(run), *cells])
    if not any(cell != "-" for row in rows for cell in row[1:]):
        return ""
    header = [f"{label}", *datasets]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *rows]
    ]
    counts = ", ".join(str(c) for c in sorted(seeds))
    note = f"mean ± 95% CI half-width over seeds ({counts} seed{'s' if seeds != {1} else ''})"
    return "\n".join([*lines, note])
