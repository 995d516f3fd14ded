"""The look shared by every lowdiff figure: colours, sizes, panel layout, and compressed saving.

Figures are built on `Figure` with the Agg canvas directly, never through pyplot, so they render
headless and from worker threads and leave no global state behind. Conventions:

- a run keeps one colour everywhere: `run_colors` gives the baseline a fixed near-black and the
  other runs colour-blind-safe colours in order (Okabe & Ito 2008 up to 7 runs, Tol's "muted"
  up to 9, both beyond). Compute it once from all runs of an experiment and pass it as
  `colors=` to every figure (by default each figure colours only the runs it gets);
- legends sit outside the panels and the layout is constrained, so nothing covers data;
- 2-D scatters have equal aspect and one fixed square view, [-6, 6]² unless the data need more;
  points left outside the view are counted in the panel, never dropped silently;
- `save_figure` writes atomically: full-colour PNG at 150 dpi (a reduced palette merged
  neighbouring run colours and banded the gate colour map), or WebP/JPEG by the file's suffix.
"""

from __future__ import annotations

import io
import itertools
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.collections import PathCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FormatStrFormatter, NullFormatter
from PIL import Image

from lowdiff import results

Color = str  # a hex colour, "#rrggbb"
Nested = Mapping[str, Mapping[str, np.ndarray]]  # [run][dataset] -> array

BASELINE = "baseline"
BASELINE_COLOR: Color = "#222222"
NEUTRAL_COLOR: Color = "#7f7f7f"  # points of a run without a gate
TRUTH_COLOR: Color = "#9a9a9a"  # the dataset's training points (ground truth)
REFERENCE_COLOR: Color = "#111111"  # oracle floor / true-mode marks
GATE_CMAP = "coolwarm"
SCATTER_LIMIT = 6.0  # default half-width of every 2-D view
MAX_SCATTER_LIMIT = 20.0  # a diverged model must not shrink every other panel to a dot
PANEL_SIZE = (3.8, 3.0)  # inches (width, height) of one panel
SQUARE_PANEL = (2.4, 2.4)
SMALL_PANEL = (1.3, 1.3)  # reverse-process frames
DPI = 150
LOSSY_QUALITY = 80  # WebP / JPEG quality
# Colour-blind-safe qualitative palettes, without black/grey (the baseline's and the truth's):
# Okabe & Ito (2008), "Color Universal Design", and Paul Tol's "muted" scheme (2021).
OKABE_ITO: tuple[Color, ...] = (
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#f0e442",
)  # fmt: skip
TOL_MUTED: tuple[Color, ...] = (
    "#332288", "#cc6677", "#117733", "#88ccee", "#aa4499", "#44aa99", "#999933", "#882255",
    "#ddcc77",
)  # fmt: skip


def run_colors(run_names: Iterable[str], *, baseline: str = BASELINE) -> dict[str, Color]:
    """One colour per run: `baseline` near-black, the others in order from a colour-blind-safe
    palette (Okabe-Ito up to 7 runs, Tol muted up to 9, both together, 16, beyond; then they
    repeat). The result depends only on the order of `run_names`.
    """
    names = list(dict.fromkeys(run_names))
    others = [name for name in names if name != baseline]
    if len(others) <= len(OKABE_ITO):
        palette = OKABE_ITO
    elif len(others) <= len(TOL_MUTED):
        palette = TOL_MUTED
    else:
        palette = OKABE_ITO + TOL_MUTED
    cycle = itertools.cycle(palette)
    return {name: BASELINE_COLOR if name == baseline else next(cycle) for name in names}


def render(fig: Figure, *, dpi: int = DPI) -> Image.Image:
    """The figure as an RGB Pillow image on white."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    buffer.seek(0)
    with Image.open(buffer) as image:
        return image.convert("RGB")


def encode(image: Image.Image, suffix: str, *, dpi: int = DPI) -> bytes:
    """Full-colour PNG (default), or lossy WebP / JPEG, as bytes."""
    buffer = io.BytesIO()
    suffix = suffix.lower()
    if suffix == ".webp":
        image.save(buffer, format="WEBP", quality=LOSSY_QUALITY, method=6)
    elif suffix in (".jpg", ".jpeg"):
        image.save(buffer, format="JPEG", quality=LOSSY_QUALITY, optimize=True)
    elif suffix == ".png":
        image.save(buffer, format="PNG", optimize=True, dpi=(dpi, dpi))
    else:
        raise ValueError(f"unknown figure format {suffix!r}; valid: .png, .webp, .jpg")
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = DPI) -> Path:
    """Write `fig` compressed at `path` (format from the suffix, PNG by default) atomically.

    Readers never see a half-written figure (`results.atomic_write_bytes`); on failure any old
    file at `path` is left untouched. Missing parent directories are created.
    """
    path = Path(path)
    data = encode(render(fig, dpi=dpi), path.suffix or ".png", dpi=dpi)
    results.atomic_write_bytes(path, data)
    return path


# --- layout, legends, scatters shared by the figure modules ---------------------------------


def new_figure(
    nrows: int, ncols: int, *, panel_size: tuple[float, float] = PANEL_SIZE
) -> tuple[Figure, np.ndarray]:
    """A constrained-layout Figure on the Agg canvas with an (nrows, ncols) array of axes."""
    if nrows < 1 or ncols < 1:
        raise ValueError("nothing to plot: the figure would have no panels")
    fig = Figure(figsize=(ncols * panel_size[0], nrows * panel_size[1]), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def panel_grid(
    n_panels: int, *, panel_size: tuple[float, float] = PANEL_SIZE
) -> tuple[Figure, list[Axes]]:
    """About-square grid of `n_panels` axes: 1×n up to 3, then 2×2, 2×3, 3×3, ...; no spares."""
    if n_panels == 1:  # a lone panel is the whole figure: give it room for titles and legend
        panel_size = (1.6 * panel_size[0], 1.6 * panel_size[1])
    ncols = n_panels if n_panels <= 3 else math.ceil(math.sqrt(n_panels))
    nrows = math.ceil(n_panels / ncols) if n_panels else 0
    fig, axes = new_figure(nrows, ncols, panel_size=panel_size)
    flat = list(axes.flat)
    for ax in flat[n_panels:]:
        fig.delaxes(ax)
    return fig, flat[:n_panels]


def datasets_of(nested: Mapping[str, Mapping[str, object]]) -> list[str]:
    """Dataset names in order of first appearance over the runs."""
    return list(dict.fromkeys(dataset for by_dataset in nested.values() for dataset in by_dataset))


def colors_for(runs: Sequence[str], colors: Mapping[str, Color] | None) -> dict[str, Color]:
    """`colors` checked to cover every run, or `run_colors(runs)` when not given."""
    if colors is None:
        return run_colors(runs)
    missing = [run for run in runs if run not in colors]
    if missing:
        raise ValueError(f"colors has no entry for runs {missing}; give one for every run")
    return dict(colors)


def run_handles(
    runs: Sequence[str], colors: Mapping[str, Color], *, patch: bool = False
) -> list[Artist]:
    """Legend entries, one per run in its colour: lines, or patches for bars."""
    if patch:
        return [Patch(facecolor=colors[run], label=run) for run in runs]
    return [Line2D([], [], color=colors[run], lw=2, label=run) for run in runs]


def figure_legend(fig: Figure, handles: Sequence[Artist], title: str | None = None) -> None:
    """One legend for the whole figure, below the panels (it covers no data), in as many
    columns as fit the figure's width."""
    if not handles:
        return
    widest = max(len(handle.get_label()) for handle in handles)
    entry_width = 0.8 + 0.09 * widest  # inches per entry at the default 10 pt font
    columns = max(1, min(len(handles), int(fig.get_figwidth() // entry_width)))
    fig.legend(
        handles=list(handles), loc="outside lower center", ncols=columns, frameon=False, title=title
    )


def scatter_limit(point_sets: Iterable[np.ndarray]) -> float:
    """Half-width of the shared square view: 6, or up to 20 where 1 % of some set lies beyond.

    A few stray points (a model that diverged on some samples) do not widen the view for every
    panel; `scatter` counts them instead.
    """
    limit = SCATTER_LIMIT
    for points in point_sets:
        points = np.asarray(points, dtype=float).reshape(-1, 2)
        finite = np.abs(points[np.isfinite(points).all(axis=1)])
        if finite.size:
            limit = max(limit, float(np.ceil(np.quantile(finite, 0.99))))
    return min(limit, MAX_SCATTER_LIMIT)


def set_view(ax: Axes, limit: float) -> None:
    """The square view [-limit, limit]² with equal aspect and five ticks per axis."""
    ax.set(xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal")
    ax.set_xticks(np.linspace(-limit, limit, 5))
    ax.set_yticks(np.linspace(-limit, limit, 5))


def scatter(
    ax: Axes,
    points: np.ndarray,
    *,
    limit: float,
    max_points: int,
    color: Color | None = None,
    values: np.ndarray | None = None,
    size: float = 2.0,
) -> PathCollection:
    """Small-point scatter of the first `max_points` of (N, 2) `points` on [-limit, limit]².

    Coloured by `color`, or by `values` in [0, 1] on the gate colormap. The number of shown
    points outside the view (or not finite) is written in the panel's corner.
    """
    shown = np.asarray(points, dtype=float).reshape(-1, 2)[:max_points]  # (n, 2)
    if values is None:
        style = {"color": color}
    else:
        gate = np.asarray(values, dtype=float).reshape(-1)[:max_points]  # (n,)
        if len(gate) != len(shown):
            raise ValueError(f"{len(gate)} gate values for {len(shown)} points")
        style = {"c": gate, "cmap": GATE_CMAP, "vmin": 0.0, "vmax": 1.0}
    collection = ax.scatter(
        shown[:, 0], shown[:, 1], s=size, linewidths=0, rasterized=True, **style
    )
    set_view(ax, limit)
    outside = int(np.sum(~(np.abs(shown) <= limit).all(axis=1)))  # NaN counts as outside
    if outside:
        note = f"{outside} of {len(shown)} outside view"
        ax.text(0.02, 0.02, note, transform=ax.transAxes, fontsize=7, color="0.3")
    return collection


def panel_note(ax: Axes, text: str) -> None:
    """A grey message in the middle of an empty panel ("not run", "diverged at step N"); parts
    separated by "; " go on their own lines, and the text never changes the layout."""
    note = ax.text(
        0.5, 0.5, text.replace("; ", "\n"), transform=ax.transAxes, ha="center", va="center",
        color="0.35", fontsize=8,
    )  # fmt: skip
    note.set_in_layout(False)


def mean_with_band(
    ax: Axes, x: np.ndarray, per_seed: np.ndarray, *, color: Color, ls: str = "-"
) -> Line2D:
    """Seed mean of (seeds, n) `per_seed` as a line, its min-max over seeds as a light band."""
    (line,) = ax.plot(x, per_seed.mean(axis=0), color=color, ls=ls, lw=1.4)
    if len(per_seed) > 1:
        band = (per_seed.min(axis=0), per_seed.max(axis=0))
        ax.fill_between(x, *band, color=color, alpha=0.18, linewidth=0)
    return line


def label_grid(axes: np.ndarray, row_labels: Sequence[str], column_titles: Sequence[str]) -> None:
    """Bold row labels down the first column, titles along the first row of an axes array."""
    for ax, label in zip(axes[:, 0], row_labels, strict=True):
        ax.set_ylabel(label, fontweight="bold")
    for ax, title in zip(axes[0, :], column_titles, strict=True):
        ax.set_title(title)


def gate_colorbar(fig: Figure, axes: Sequence[Axes] | np.ndarray, label: str) -> None:
    """One colorbar for every gate-coloured panel: coolwarm over the fixed range [0, 1]."""
    mappable = ScalarMappable(Normalize(0.0, 1.0), GATE_CMAP)
    fig.colorbar(mappable, ax=axes, shrink=0.8, label=label)


def log_y_if_wide(ax: Axes, ratio: float = 10.0) -> None:
    """Log y axis, with plain tick labels, when the panel's positive lines span > `ratio`×."""
    ys = [np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()]
    ys = np.concatenate(ys) if ys else np.array([])
    ys = ys[np.isfinite(ys)]
    if ys.size and ys.min() > 0 and ys.max() / ys.min() > ratio:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
