"""The forest plot of paired effects (`effects.png`): the answer of an experiment at a glance.

One row per run x dataset: the mean paired difference of the distance to the oracle floor
(run - baseline; negative is closer to the floor, i.e. better) with its 95 % interval, the
row's equivalence band (+-margin) shaded, and the verdict written at the right. Rows come in as
plain numbers (`EffectRow`); the verdicts are decided elsewhere (`lowdiff.decisions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.figure import Figure

from lowdiff.plots.style import new_figure

VERDICT_COLORS = {
    "better": "#1b7837",
    "worse": "#b2182b",
    "equivalent": "#2166ac",
    "undecided": "#7f7f7f",
}


@dataclass(frozen=True)
class EffectRow:
    label: str  # "run on dataset"
    mean: float
    low: float | None  # 95 % interval; None with a single seed
    high: float | None
    margin: float | None  # equivalence band +-margin (None: no band)
    verdict: str  # one of VERDICT_COLORS' keys (anything else is drawn as undecided)
    note: str  # written at the right: "better", "undecided (about 14 seeds)", ...


def forest_plot(rows: Sequence[EffectRow], *, xlabel: str, title: str) -> Figure:
    """Rows top to bottom in the given order; a vertical line at 0 (no difference)."""
    if not rows:
        raise ValueError("nothing to plot: no comparison rows")
    fig, axes = new_figure(1, 1, panel_size=(7.5, 0.8 + 0.32 * len(rows)))
    ax = axes[0, 0]
    for position, row in enumerate(rows):
        y = len(rows) - 1 - position
        color = VERDICT_COLORS.get(row.verdict, VERDICT_COLORS["undecided"])
        if row.margin is not None and row.margin > 0.0:
            ax.fill_between(
                [-row.margin, row.margin], y - 0.4, y + 0.4, color="#d9e6f2", linewidth=0
            )
        if row.low is not None and row.high is not None:
            ax.plot([row.low, row.high], [y, y], color=color, linewidth=1.8)
        ax.plot([row.mean], [y], "o", color=color, markersize=5)
    ax.axvline(0.0, color="#444444", linewidth=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([row.label for row in reversed(rows)], fontsize=8)
    right = ax.secondary_yaxis("right")
    right.set_yticks(range(len(rows)))
    right.set_yticklabels([row.note for row in reversed(rows)], fontsize=7)
    for label, row in zip(right.get_yticklabels(), reversed(rows), strict=True):
        label.set_color(VERDICT_COLORS.get(row.verdict, VERDICT_COLORS["undecided"]))
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    return fig
