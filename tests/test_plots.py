"""Tests of lowdiff.plots: each figure's panels, labels and the data its artists carry."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_hex
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from lowdiff import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RUNS = ["baseline", "fixed", "learned"]
DATASETS = ["circle", "dino", "line", "moons"]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _panels(fig: Figure) -> list:
    """Data axes of a figure (colorbars left out)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def _bars(ax) -> list[BarContainer]:
    return [c for c in ax.containers if isinstance(c, BarContainer)]


def _legend_labels(fig: Figure) -> list[str]:
    return [text.get_text() for legend in fig.legends for text in legend.get_texts()]


# --- helpers ----------------------------------------------------------------------------------


def test_hanning_smooth_matches_hand_computation():
    # np.hanning(5) = [0, .5, 1, .5, 0] -> normalised [0, .25, .5, .25, 0]
    values = np.array([1.0, 2, 4, 8, 16, 32, 64])
    expected = [0.25 * 2 + 0.5 * 4 + 0.25 * 8, 0.25 * 4 + 0.5 * 8 + 0.25 * 16, 18.0]
    np.testing.assert_allclose(plots.hanning_smooth(values, 5), expected)


def test_hanning_smooth_rows_length_and_constants(rng):
    values = rng.normal(size=(3, 100))
    smooth = plots.hanning_smooth(values, 25)
    assert smooth.shape == (3, 100 - 25 + 1)
    np.testing.assert_allclose(smooth[1], plots.hanning_smooth(values[1], 25))
    np.testing.assert_allclose(plots.hanning_smooth(np.full(40, 0.7), 25), 0.7)  # weights sum to 1
    assert plots.hanning_smooth(np.arange(10.0), 25).shape == (1,)  # window shrinks to the series


def test_run_colors_baseline_fixed_others_distinct():
    colors = plots.run_colors(["fixed", "baseline", "learned", "deeper"])
    assert colors["baseline"] == plots.BASELINE_COLOR
    others = [colors[name] for name in ("fixed", "learned", "deeper")]
    assert len(set(others)) == 3 and plots.BASELINE_COLOR not in others
    assert plots.run_colors(["fixed", "baseline", "learned", "deeper"]) == colors
    many = plots.run_colors([f"run{i}" for i in range(15)])
    assert len(set(many.values())) == 15
    # colour-blind-safe: the first seven runs get Okabe & Ito's colours, exactly
    seven = plots.run_colors(["baseline", *(f"run{i}" for i in range(7))])
    okabe_ito = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#f0e442"]
    assert [seven[f"run{i}"] for i in range(7)] == okabe_ito


def test_save_figure_writes_png_atomically(tmp_path):
    fig = plots.gate_histograms({"expert": np.linspace(0, 1, 50)})
    path = plots.save_figure(fig, tmp_path / "figs" / "hist.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    plots.save_figure(fig, path)  # overwriting is fine too
    assert sorted(p.name for p in path.parent.iterdir()) == ["hist.png"]


def test_save_figure_failure_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "fig.png"
    path.write_bytes(b"old")
    fig = plots.gate_histograms({"expert": np.linspace(0, 1, 50)})

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(RuntimeError):
        plots.save_figure(fig, path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


def test_figures_render_in_threads_without_pyplot(tmp_path, rng):
    def draw(index: int) -> bytes:
        fig = plots.sample_grid({"baseline": {"moons": rng.normal(size=(200, 2))}})
        return plots.save_figure(fig, tmp_path / f"{index}.png").read_bytes()

    with ThreadPoolExecutor(4) as pool:
        assert all(png.startswith(PNG_SIGNATURE) for png in pool.map(draw, range(4)))
    code = "import sys, lowdiff.plots; assert 'matplotlib.pyplot' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_empty_input_and_missing_colours_raise():
    with pytest.raises(ValueError, match="nothing to plot"):
        plots.loss_curves({})
    with pytest.raises(ValueError, match="learned"):
        curves = {run: {"dino": np.ones((1, 30))} for run in RUNS}
        plots.loss_curves(curves, colors={"baseline": "#000000", "fixed": "#ff0000"})


# --- figures ----------------------------------------------------------------------------------


def _curves(rng, steps=100, seeds=2) -> dict:
    return {
        run: {d: 0.4 + 0.1 * i + rng.uniform(0, 0.1, (seeds, steps)) for d in DATASETS}
        for i, run in enumerate(RUNS)
    }


def test_loss_curves_grid_of_smoothed_seed_means(rng):
    curves = _curves(rng)
    fig = plots.loss_curves(curves, window=25)
    panels = _panels(fig)
    assert [ax.get_title() for ax in panels] == DATASETS
    assert {ax.get_subplotspec().get_geometry()[:2] for ax in panels} == {(2, 2)}
    for ax, dataset in zip(panels, DATASETS, strict=True):
        lines = ax.get_lines()
        assert [line.get_label() for line in lines] == RUNS
        for line, run in zip(lines, RUNS, strict=True):
            assert len(line.get_ydata()) == 100 - 25 + 1
            expected = plots.hanning_smooth(curves[run][dataset].mean(axis=0), 25)
            np.testing.assert_allclose(line.get_ydata(), expected)
        assert ax.get_xlabel() and ax.get_ylabel()
        assert not ax.collections  # lines only: the differences have their own figure
        assert ax.get_yscale() == "linear"  # the curves span well under a factor 10
    assert _legend_labels(fig) == RUNS


def test_loss_differences_are_paired_by_seed_with_a_t_interval(rng):
    curves = _curves(rng, seeds=3)
    fig = plots.loss_differences(curves, baseline="baseline", window=25)
    window = np.hanning(25) / np.hanning(25).sum()  # protocol §2: Hanning window 25
    for ax, dataset in zip(_panels(fig), DATASETS, strict=True):
        assert ax.get_title() == dataset
        lines = [line for line in ax.get_lines() if line.get_label() in RUNS]
        assert [line.get_label() for line in lines] == ["fixed", "learned"]
        for line in lines:
            diff = curves[line.get_label()][dataset] - curves["baseline"][dataset]  # (3, 100)
            smooth = np.stack([np.convolve(row, window, mode="valid") for row in diff])
            np.testing.assert_allclose(line.get_ydata(), smooth.mean(axis=0))
        band = ax.collections[0].get_paths()[0].vertices[:, 1]  # the first run's interval
        diff = curves["fixed"][dataset] - curves["baseline"][dataset]
        smooth = np.stack([np.convolve(row, window, mode="valid") for row in diff])
        half = 4.302653 * smooth.std(axis=0, ddof=1) / np.sqrt(3)  # t(0.975, 2 df)
        assert band.max() == pytest.approx((smooth.mean(axis=0) + half).max(), rel=1e-6)
        zero = [line for line in ax.get_lines() if line not in lines]
        assert len(zero) == 1 and set(zero[0].get_ydata()) == {0.0}


def test_loss_curves_single_dataset_and_log_scale(rng):
    curves = _curves(rng)
    fig = plots.loss_curves(curves, datasets=["dino"])
    assert [ax.get_title() for ax in _panels(fig)] == ["dino"]
    falling = {"baseline": {"dino": np.geomspace(10, 0.01, 200)[None]}}
    assert _panels(plots.loss_curves(falling))[0].get_yscale() == "log"


def test_sample_grid_rows_runs_columns_datasets(rng):
    samples = {run: {d: rng.normal(size=(300, 2)) for d in DATASETS[:2]} for run in RUNS}
    fig = plots.sample_grid(samples, run_labels={"fixed": "0.5 / 0.5"}, max_points=200)
    panels = _panels(fig)
    assert len(panels) == len(RUNS) * 2
    assert [ax.get_title() for ax in panels[:2]] == DATASETS[:2]
    assert [panels[2 * row].get_ylabel() for row in range(3)] == [
        "baseline",
        "0.5 / 0.5",
        "learned",
    ]
    colors = plots.run_colors(RUNS)
    for index, ax in enumerate(panels):
        (points,) = ax.collections
        assert len(points.get_offsets()) == 200
        assert to_hex(points.get_facecolor()[0]) == colors[RUNS[index // 2]]
        assert ax.get_xlim() == (-6, 6) and ax.get_ylim() == (-6, 6)
        assert ax.get_aspect() == 1.0


def test_scatter_view_widens_for_wide_data_not_for_strays(rng):
    wide = {"baseline": {"line": rng.uniform(-9.5, 9.5, (500, 2))}}
    assert _panels(plots.sample_grid(wide))[0].get_xlim() == (-10, 10)
    strays = rng.normal(size=(500, 2))
    strays[:3] = 1e6
    ax = _panels(plots.sample_grid({"baseline": {"line": strays}}))[0]
    assert ax.get_xlim() == (-6, 6)
    assert any("3 of 500 outside view" in text.get_text() for text in ax.texts)


def test_metric_bars_grouped_with_ci_and_oracle_floor(rng):
    means = {
        run: {d: 0.1 * (i + 1) + j for j, d in enumerate(DATASETS)} for i, run in enumerate(RUNS)
    }
    ci = {run: {d: (v - 0.05, v + 0.02) for d, v in by_d.items()} for run, by_d in means.items()}
    oracle = {d: -0.01 * j for j, d in enumerate(DATASETS)}
    fig = plots.metric_bars(means, ci=ci, oracle=oracle, ylabel="KL (bits)", title="KL")
    (ax,) = _panels(fig)
    assert ax.get_title() == "KL" and ax.get_ylabel() == "KL (bits)"
    assert [t.get_text() for t in ax.get_xticklabels()] == DATASETS
    containers = _bars(ax)
    assert len(containers) == len(RUNS)
    for container, run in zip(containers, RUNS, strict=True):
        heights = [bar.get_height() for bar in container]
        np.testing.assert_allclose(heights, [means[run][d] for d in DATASETS])
        centres = [bar.get_x() + bar.get_width() / 2 for bar in container]
        assert all(abs(c - j) < 0.4 for j, c in enumerate(centres))  # inside its group
        assert container.errorbar is not None
    (floor,) = [c for c in ax.collections if c.get_label() == "oracle floor"]
    segments = floor.get_segments()
    np.testing.assert_allclose([seg[0][1] for seg in segments], list(oracle.values()))
    assert "oracle floor" in _legend_labels(fig)


def test_run_colour_is_the_same_across_figures(rng):
    curves = _curves(rng)
    means = {run: dict.fromkeys(DATASETS, 1.0) for run in RUNS}
    lines = _panels(plots.loss_curves(curves))[0].get_lines()
    bars = _bars(_panels(plots.metric_bars(means, ci=None, oracle=None, ylabel="y", title="t"))[0])
    for line, container in zip(lines, bars, strict=True):
        assert to_hex(line.get_color()) == to_hex(container[0].get_facecolor())
    # a figure of a subset of runs keeps each run's colour when given the experiment's colours
    colors = plots.run_colors(RUNS)
    subset = {"learned": curves["learned"]}
    (line,) = _panels(plots.loss_curves(subset, colors=colors))[0].get_lines()
    assert line.get_color() == colors["learned"]


@pytest.mark.parametrize("fraction", [True, False])
def test_mode_bars_mark_true_modes(fraction):
    true_modes = {"moons": 2, "dino": 142}
    modes = {"baseline": {"moons": 1, "dino": 71}, "dual": {"moons": 2, "dino": 142}}
    fig = plots.mode_bars(modes, true_modes=true_modes, fraction=fraction)
    (ax,) = _panels(fig)
    heights = [bar.get_height() for bar in _bars(ax)[0]]
    label = "all K modes" if fraction else "true modes K"
    (reference,) = [c for c in ax.collections if c.get_label() == label]
    marks = [seg[0][1] for seg in reference.get_segments()]
    if fraction:
        np.testing.assert_allclose(heights, [0.5, 0.5])
        np.testing.assert_allclose(marks, [1.0, 1.0])
    else:
        np.testing.assert_allclose(heights, [1, 71])
        np.testing.assert_allclose(marks, [2, 142])
    assert "K = 142" in ax.get_xticklabels()[1].get_text()
    with pytest.raises(ValueError, match="moons"):
        plots.mode_bars(modes, true_modes={"dino": 142})


def test_weight_evolution_runs_from_noise_to_data(rng):
    T, seeds = 100, 3
    weights = {
        run: {d: rng.uniform(0, 1, (seeds, T, 2)) for d in DATASETS}
        for run in ["learned", "deeper"]
    }
    fig = plots.weight_evolution(weights)
    panels = _panels(fig)
    assert [ax.get_title() for ax in panels] == DATASETS
    for ax, dataset in zip(panels, DATASETS, strict=True):
        assert ax.get_xlim() == (T - 1, 0)
        assert "timestep" in ax.get_xlabel()
        lines = [line for line in ax.get_lines() if len(line.get_xdata()) == T]
        assert len(lines) == 2 * 2  # (global, local) per run
        for branch, line in enumerate(lines[:2]):  # first run: global solid, local dashed
            assert line.get_linestyle() == ("-", "--")[branch]
            w = weights["learned"][dataset]
            assert line.get_xdata()[0] == T - 1  # index 0 was sampled at t = T-1
            np.testing.assert_allclose(line.get_ydata(), w[:, :, branch].mean(axis=0))
        assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color()
    assert {"w_global", "w_local", "learned", "deeper"} <= set(_legend_labels(fig))


def test_gated_samples_coloured_by_gate_with_one_colorbar(rng):
    samples = {run: rng.normal(size=(400, 2)) for run in RUNS}
    gates = {run: rng.uniform(0, 1, 400) for run in RUNS[1:]}
    fig = plots.gated_samples(samples, gates, title="dino")
    panels = _panels(fig)
    assert len(panels) == 3 and len(fig.axes) == 4  # one shared colorbar
    assert panels[0].get_title() == "baseline (no gate)"
    assert panels[0].collections[0].get_array() is None  # plain colour, no gate
    for ax, run in zip(panels[1:], RUNS[1:], strict=True):
        (points,) = ax.collections
        assert isinstance(points, PathCollection) and ax.get_title() == run
        np.testing.assert_allclose(points.get_array(), gates[run])
        assert points.get_cmap().name == "coolwarm" and points.get_clim() == (0, 1)
    assert fig.get_suptitle() == "dino"
    ungated = plots.gated_samples({"baseline": samples["baseline"]}, {}, title="t")
    assert len(ungated.axes) == 1


def test_gate_histograms_fixed_bins_and_annotations():
    gates = {"stuck": np.zeros(100), "split": np.r_[np.zeros(30), np.full(50, 0.5), np.ones(20)]}
    fig = plots.gate_histograms(gates)
    panels = _panels(fig)
    assert [ax.get_title() for ax in panels] == ["stuck", "split"]
    for ax in panels:
        assert len(ax.patches) == 20 and ax.get_xlim() == (0, 1)
        assert sum(p.get_height() for p in ax.patches) == pytest.approx(1.0)
    note = panels[1].texts[0].get_text()
    assert "mean 0.45" in note and "30.0%" in note and "20.0%" in note
    assert "100.0%" in panels[0].texts[0].get_text()


def test_gate_field_rows_datasets_columns_timesteps(rng):
    extent = (-6.0, 6.0, -4.0, 4.0)
    fields = {d: {t: rng.uniform(0, 1, (16, 16)) for t in (0, 50, 99)} for d in ("dino", "moons")}
    overlay = {"dino": rng.normal(size=(100, 2))}
    fig = plots.gate_field(fields, extent=extent, overlay=overlay)
    panels = _panels(fig)
    assert len(panels) == 6 and len(fig.axes) == 7
    assert [ax.get_title() for ax in panels[:3]] == ["t = 99", "t = 50", "t = 0"]
    assert [panels[0].get_ylabel(), panels[3].get_ylabel()] == ["dino", "moons"]
    (image,) = panels[1].get_images()
    np.testing.assert_allclose(image.get_array(), fields["dino"][50])
    assert image.origin == "lower" and image.get_extent() == list(extent)
    assert image.get_clim() == (0, 1) and image.get_cmap().name == "coolwarm"
    assert len(panels[0].collections) == 1 and not panels[3].collections  # overlay on dino only


# --- ground truth, seeds, clipping, compression, the reverse process ----------------------------


def test_sample_grid_has_a_ground_truth_row_and_notes(rng):
    samples = {"baseline": {"moons": rng.normal(size=(300, 2))}}
    truth = {"moons": rng.normal(size=(500, 2)), "line": rng.normal(size=(500, 2))}
    notes = {"deep": {"moons": "diverged at step 12 (seed 0)"}}
    fig = plots.sample_grid(samples, truth=truth, notes=notes, max_points=400)
    panels = _panels(fig)
    assert [ax.get_ylabel() for ax in panels] == ["data (training)", "baseline", "deep"]
    (points,) = panels[0].collections
    np.testing.assert_allclose(points.get_offsets(), truth["moons"][:400])
    assert to_hex(points.get_facecolor()[0]) == plots.style.TRUTH_COLOR
    assert [t.get_text() for t in panels[2].texts] == ["diverged at step 12 (seed 0)"]


def test_metric_bars_clip_whiskers_to_bounds_and_draw_seed_dots():
    means = {"baseline": {"moons": 0.98}, "dual": {"moons": 0.5}}
    ci = {"baseline": {"moons": (0.9, 1.06)}, "dual": {"moons": (-0.2, 1.2)}}
    seeds = {"baseline": {"moons": [0.97, 0.99, 0.98]}, "dual": {"moons": [0.1, 0.5, 0.9]}}
    fig = plots.metric_bars(
        means, ci=ci, oracle=None, ylabel="HQ", title="t", per_seed=seeds, bounds=(0.0, 1.0)
    )
    (ax,) = _panels(fig)
    for container, run in zip(_bars(ax), means, strict=True):
        (whisker,) = container.errorbar.lines[2]
        ends = np.concatenate([segment[:, 1] for segment in whisker.get_segments()])
        assert ends.min() >= 0.0 and ends.max() <= 1.0, run
    dots = [c for c in ax.collections if len(c.get_offsets()) == 3]
    np.testing.assert_allclose(dots[1].get_offsets()[:, 1], seeds["dual"]["moons"])
    assert "dots: seeds" in fig.legends[0].get_title().get_text()


def test_mode_bar_whiskers_stop_at_all_modes():
    fig = plots.mode_bars(
        {"baseline": {"dino": 140.0}},
        true_modes={"dino": 142},
        ci={"baseline": {"dino": (120, 160)}},
    )
    (container,) = _bars(_panels(fig)[0])
    (whisker,) = container.errorbar.lines[2]
    assert whisker.get_segments()[0][:, 1].max() == pytest.approx(1.0)


def test_save_figure_writes_a_full_colour_png_or_lossy_formats(tmp_path, rng):
    from PIL import Image

    runs = {f"run{i}": {"moons": rng.normal(size=(300, 2))} for i in range(6)}
    fig = plots.loss_curves({run: {"moons": rng.random((2, 200))} for run in runs})
    path = plots.save_figure(fig, tmp_path / "curves.png")
    with Image.open(path) as image:
        assert image.mode == "RGB" and image.info["dpi"][0] == pytest.approx(150, abs=1)
        present = {color for _, color in image.getcolors(maxcolors=1 << 20)}
    # every run's colour is in the file exactly (no palette merges neighbours)
    for color in plots.run_colors(runs).values():
        assert tuple(int(color[i : i + 2], 16) for i in (1, 3, 5)) in present, color
    assert plots.save_figure(fig, tmp_path / "grid.webp").read_bytes()[8:12] == b"WEBP"
    with pytest.raises(ValueError, match="valid: .png, .webp, .jpg"):
        plots.save_figure(fig, tmp_path / "grid.bmp")


def _process(rng, steps=(9, 5, 2, -1), n=120) -> tuple[np.ndarray, np.ndarray]:
    return np.array(steps), rng.normal(size=(len(steps), n, 2))


def test_process_grid_rows_runs_columns_snapshots(rng):
    processes = {"baseline": _process(rng), "dual": _process(rng, steps=(9, 4, 2, -1))}
    fig = plots.process_grid(processes, title="dino: reverse process", max_points=100)
    panels = _panels(fig)
    assert len(panels) == 8
    assert [ax.get_title() for ax in panels[:4]] == ["t = 9", "t = 5", "t = 2", "samples"]
    assert [ax.get_title() for ax in panels[4:]] == ["", "t = 4", "", ""]  # where it differs
    np.testing.assert_allclose(
        panels[5].collections[0].get_offsets(), processes["dual"][1][1][:100]
    )
    assert panels[4].get_ylabel() == "dual"
    with pytest.raises(ValueError, match="expected timesteps"):
        plots.process_grid({"bad": (np.arange(3), rng.normal(size=(4, 10, 2)))}, title="t")


def test_process_animation_is_a_gif_with_one_frame_per_snapshot(tmp_path, rng):
    from PIL import Image

    path = plots.save_process_animation(_process(rng), tmp_path / "a" / "p.gif", title="baseline")
    with Image.open(path) as image:
        assert image.format == "GIF" and image.n_frames == 4
    assert [p.name for p in path.parent.iterdir()] == ["p.gif"]


def test_weight_evolution_names_must_match_the_weights(rng):
    with pytest.raises(ValueError, match="3 weights for names"):
        plots.weight_evolution({"r": {"dino": rng.uniform(0, 1, (2, 10, 3))}})
    fig = plots.weight_evolution({"r": {"dino": rng.uniform(0, 1, (2, 10, 1))}}, names=("gate",))
    assert "gate" in _legend_labels(fig)
