"""The report answer first: contents that land, the answer figure and the verdict marks at the
top, figures before the long tables, wide tables split to fit, and a sweep's response curves."""

from __future__ import annotations

import re
import shutil
import tomllib
import zlib
from pathlib import Path

import numpy as np
import pytest
from fake_results import default_metrics, write_fake_results

from lowdiff import plots, report
from lowdiff.report import document
from lowdiff.report.document import Heading, Table
from lowdiff.report.figures import Context
from lowdiff.report.load import load_results
from lowdiff.report.options import ReportOptions
from lowdiff.report.sweep_figures import _curves
from lowdiff.report.tables import metric_tables
from lowdiff.report.text import STAR, WORSE_MARK

ROOT = Path(__file__).resolve().parents[1]
LAMBDAS = [0, 0.01, 0.02, 0.05, 0.1, 0.2]
SEEDS = [0, 1, 2, 3, 4]


def sweep_metrics(run: str, dataset: str, seed: int) -> dict[str, float]:
    """KL grows with lambda on circle (a clear cost at 0.2) and falls a little on dino."""
    value = float(run.rsplit("=", 1)[1])
    noise = np.random.default_rng([zlib.crc32(f"{run}/{dataset}".encode()), seed]).normal()
    slope = 10.0 if dataset == "circle" else -1.0
    return default_metrics(run, dataset, seed) | {
        "kl_divergence": 0.5 + slope * value + 0.01 * noise
    }


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tomllib.loads((ROOT / "experiments" / "diversity_sweep.toml").read_text())
    raw["experiment"] |= {"num_points": 2000, "seeds": SEEDS}
    root = tmp_path_factory.mktemp("sweep") / "diversity_sweep"
    write_fake_results(root, raw, metrics=sweep_metrics, process=False)
    (root / "figures").mkdir()
    # the answer figure as the verdicts' code draws it; any PNG stands in for it here
    fig = plots.loss_curves({"baseline": {"dino": np.ones((1, 30))}})
    plots.save_figure(fig, root / "figures" / "effects.png")
    report.write_report(root, ReportOptions(process=False))
    return root


def test_the_page_opens_with_contents_answer_and_marks(sweep):
    markdown = (sweep / "report.md").read_text()
    order = [line for line in markdown.splitlines() if line.startswith(("## ", "**Contents"))]
    assert order[:4] == ["**Contents**", "## Verdicts", "## Summary", "## Figures"]
    assert order.index("## Setup") > order.index("## Figures")
    verdicts = markdown.split("## Verdicts")[1].split("\n## ")[0]
    assert verdicts.lstrip().startswith("![Paired effects](figures/effects.png)")
    assert markdown.count("(figures/effects.png)") == 1
    summary = markdown.split("## Summary")[1].split("\n## ")[0]
    rows = {line.split(" | ")[0][2:]: line for line in summary.splitlines() if "| larger" in line}
    assert WORSE_MARK in rows["larger_experts-diversity_weight=0.2"].split(" | ")[2]  # circle
    assert STAR in rows["larger_experts-diversity_weight=0.2"].split(" | ")[1]  # dino
    assert WORSE_MARK not in rows["larger_experts-diversity_weight=0"]


def test_every_contents_link_lands_on_a_heading(sweep):
    markdown = (sweep / "report.md").read_text()
    page = (sweep / "report.html").read_text()
    links = re.findall(r"^- \[.+\]\(#([^)]+)\)$", markdown, flags=re.M)
    assert len(links) >= 5 and len(set(links)) == len(links)
    ids = set(re.findall(r'<h[1-6] id="([^"]+)"', page))
    assert set(re.findall(r'href="#([^"]+)"', page)) == set(links) <= ids
    headings = [h[3:] for h in markdown.splitlines() if h.startswith("## ")]
    assert [document.slug(h) for h in headings] == links  # GitHub's anchors of report.md


def test_sweep_figure_draws_each_seed_mean_against_lambda(sweep):
    markdown = (sweep / "report.md").read_text()
    assert "(figures/sweep_diversity_weight.png)" in markdown.split("## Setup")[0]
    loaded = load_results(sweep)
    ctx = Context(loaded, metric_tables(loaded), plots.run_colors(loaded.run_names), None)
    curves = _curves(ctx, "train.diversity_weight", [str(v) for v in LAMBDAS], ["kl_divergence"])
    for dataset in ("dino", "circle"):
        (points,) = curves["KL"][dataset].values()
        runs = [f"larger_experts-diversity_weight={v}" for v in LAMBDAS]
        expected = [
            np.mean([sweep_metrics(r, dataset, s)["kl_divergence"] for s in SEEDS]) for r in runs
        ]
        np.testing.assert_allclose([p.mean for p in points], expected)
        assert all(p.low < p.mean < p.high for p in points)


def test_response_curves_put_values_in_order_with_whiskers():
    points = [plots.Point(1.0, 0.5, 1.5), None, plots.Point(3.0, 2.0, 4.5)]
    fig = plots.response_curves(
        {"KL": {"dino": {"run": points}}}, values=["0", "0.1", "0.2"], xlabel="train.x",
        oracle={"KL": {"dino": 0.25}},
    )  # fmt: skip
    (ax,) = fig.axes
    (container,) = ax.containers
    assert container.get_label() == "run"
    line = container.lines[0]
    np.testing.assert_allclose(line.get_xdata(), [0, 2])  # the missing value leaves a gap
    np.testing.assert_allclose(line.get_ydata(), [1.0, 3.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "0.1", "0.2"]
    bars = container.lines[2][0].get_segments()
    np.testing.assert_allclose([s[:, 1] for s in bars], [[0.5, 1.5], [2.0, 4.5]])
    assert any(set(line.get_ydata()) == {0.25} for line in ax.get_lines())  # the floor


def test_wide_tables_are_split_with_the_first_column_repeated():
    header = ("run", *(f"column {i}" for i in range(1, 14)))
    table = Table(header, (("r", *("x" * 30 for _ in range(13))),))  # 13 x 237 px: too wide
    parts = document.split_wide(table, width=1150)
    assert len(parts) > 1 and all(p.header[0] == "run" for p in parts)
    assert [c for p in parts for c in p.header[1:]] == list(header[1:])
    for part in parts:  # each part fits unwrapped: padding + 7.5 px per character
        columns = zip(part.header, *part.rows, strict=True)
        widths = [12 + 7.5 * max(len(c) for c in column) for column in columns]
        assert sum(widths) <= 1150
    narrow = Table(("a", "b"), (("1", "2"),))
    assert document.split_wide(narrow) == [narrow]
    markdown = document.render_markdown([Heading(2, "T"), table])
    assert markdown.count("| run |") == len(parts)


def test_repeated_headings_get_github_suffixes():
    blocks = [Heading(2, "Run 0: a=0.1"), Heading(2, "Run 0: a=0.1"), document.Contents()]
    assert list(document.anchors(blocks).values()) == ["run-0-a01", "run-0-a01-1"]


def test_report_without_an_answer_figure_keeps_the_summary_first(tmp_path, sweep):
    root = tmp_path / "copy"
    shutil.copytree(sweep, root)
    (root / "figures" / "effects.png").unlink()
    report.write_report(root, ReportOptions(process=False))
    summary = (root / "report.md").read_text().split("## Summary")[1].split("\n## ")[0]
    assert "effects.png" not in summary


def test_a_copied_folder_gets_its_claims_from_the_claims_flag(tmp_path, sweep, capsys):
    from lowdiff.cli import main

    root = tmp_path / "copy"
    shutil.copytree(sweep, root)
    claims = tmp_path / "mine.claims.toml"
    claims.write_text(
        '[[claim]]\nid = "L1"\ntext = "lambda 0.2 costs circle"\n'
        'candidates = ["larger_experts-diversity_weight=0.2"]\n'
        'comparison = "larger_experts-diversity_weight=0"\n'
    )
    assert main(["report", str(root)]) == 0
    assert "## Claims" not in (root / "report.md").read_text()  # a copy far from experiments/
    assert main(["report", str(root), "--claims", str(claims)]) == 0
    assert "lambda 0.2 costs circle" in (root / "report.md").read_text()
    assert main(["report", str(root), "--claims", str(tmp_path / "none.toml")]) == 2
    assert "--claims" in capsys.readouterr().err
