"""Figures of lowdiff experiments: numpy arrays in, `matplotlib.figure.Figure` out.

This package is the only place that imports matplotlib; nothing in it imports torch. One
concern per module:

- `style`: colours (`run_colors`), sizes, the shared panel layout, and `save_figure`
  (compressed, atomic);
- `common`: `loss_curves`, `loss_differences` (paired by seed), `sample_grid` (with a
  ground-truth row), `metric_bars`, `mode_bars`, `hanning_smooth`;
- `mixing`: `weight_evolution`, `gated_samples`, `gate_histograms`, `gate_field`;
- `effects`: `forest_plot`, the paired effects with their verdicts (`effects.png`);
- `process`: `process_grid` and `save_process_animation` (the reverse process);
- `sweep`: `response_curves` (each metric against a swept setting).
"""

from lowdiff.plots.common import (
    hanning_smooth,
    loss_curves,
    loss_differences,
    metric_bars,
    mode_bars,
    sample_grid,
)
from lowdiff.plots.effects import EffectRow, forest_plot
from lowdiff.plots.mixing import gate_field, gate_histograms, gated_samples, weight_evolution
from lowdiff.plots.process import process_grid, save_process_animation, step_label
from lowdiff.plots.style import BASELINE_COLOR, run_colors, save_figure
from lowdiff.plots.sweep import Point, response_curves

__all__ = [
    "BASELINE_COLOR",
    "EffectRow",
    "forest_plot",
    "Point",
    "gate_field",
    "gate_histograms",
    "gated_samples",
    "hanning_smooth",
    "loss_curves",
    "loss_differences",
    "metric_bars",
    "mode_bars",
    "process_grid",
    "response_curves",
    "run_colors",
    "sample_grid",
    "save_figure",
    "save_process_animation",
    "step_label",
    "weight_evolution",
]
