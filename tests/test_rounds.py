"""--until-decided: the rounds' seed arithmetic, merging with a results directory, bad input,
and one tiny end-to-end run that resumes and stops at its budget."""

from __future__ import annotations

import json

import pytest
from fake_results import TINY_EXPERIMENT, TINY_SECOND_RUN

from lowdiff import rounds
from lowdiff.cli import main
from lowdiff.config import ConfigError, load_experiment

TINY, WIDE = TINY_EXPERIMENT, TINY_SECOND_RUN


def test_next_seeds_adds_one_round_up_to_the_budget():
    assert rounds.next_seeds((0, 1, 2, 3, 4), 5, 15) == tuple(range(10))
    assert rounds.next_seeds(tuple(range(10)), 5, 12) == tuple(range(12))
    assert rounds.next_seeds((0, 3), 2, 10) == (0, 3, 4, 5)


def test_bad_input_one_line_errors(tmp_path):
    (tmp_path / "one.toml").write_text(TINY)
    single = load_experiment(tmp_path / "one.toml", ["experiment.until_decided=true"])
    with pytest.raises(ConfigError, match="needs a baseline and at least one other run"):
        rounds.check_until_decided(single, tmp_path / "out")
    (tmp_path / "two.toml").write_text(TINY + WIDE)
    with pytest.raises(ConfigError, match="max_seeds \\(1\\) is below the 2 seeds"):
        load_experiment(tmp_path / "two.toml", ["experiment.max_seeds=1"])
    with pytest.raises(ConfigError, match="unknown metric 'kl'"):
        load_experiment(tmp_path / "two.toml", ["experiment.margins={kl=0.1}"])
    with pytest.raises(ConfigError, match="finite number >= 0"):
        load_experiment(tmp_path / "two.toml", ["experiment.margins={kl_divergence=-0.1}"])


def test_until_decided_end_to_end_keeps_other_datasets_and_resumes(tmp_path, capsys):
    (tmp_path / "two.toml").write_text(TINY + WIDE)
    out = tmp_path / "out"
    common = [str(tmp_path / "two.toml"), "--out", str(out), "--quiet", "--threads", "1"]
    assert main(["run", *common]) == 0  # seeds 0, 1 on both datasets
    restricted = ["--until-decided", "--max-seeds", "4", "--set", 'experiment.datasets=["moons"]']
    assert main(["run", *common, *restricted]) == 0
    said = capsys.readouterr().out
    assert "until-decided:" in said
    settings = json.loads((out / "experiment.json").read_text())["experiment"]
    assert settings["datasets"] == ["moons", "line"]  # line kept, with its two seeds
    assert settings["until_decided"] and settings["max_seeds"] == 4
    assert not (out / "wide" / "line" / "seed_2").exists()
    if "budget of 4 seeds is spent" in said:
        assert (out / "wide" / "moons" / "seed_3" / "cell.json").is_file()
    # again: every cell is found finished, nothing is trained, the same decision comes out
    assert main(["run", *common, *restricted]) == 0
    assert "nothing to run" in capsys.readouterr().out
    assert "Group-sequential design" in (out / "report.md").read_text()
    assert main(["run", *common, "--until-decided", "--max-seeds", "3"]) != 0
    assert "below the 4 seeds" in capsys.readouterr().err


def test_api_runs_the_same_rounds(tmp_path):
    import lowdiff

    (tmp_path / "two.toml").write_text(TINY + WIDE)
    settings = ["experiment.until_decided=true", "experiment.max_seeds=4", "train.num_steps=5"]
    table = lowdiff.run_experiment(tmp_path / "two.toml", tmp_path / "api", settings)
    assert table is not None
    listed = json.loads((tmp_path / "api" / "experiment.json").read_text())["experiment"]
    seeds_of_moons = sorted(p.name for p in (tmp_path / "api" / "wide" / "moons").iterdir())
    assert len(listed["seeds"]) in (2, 4) and len(seeds_of_moons) <= 4


def test_design_scope_sequential_only_where_rounds_may_add_seeds(tmp_path):
    from lowdiff import summary

    (tmp_path / "two.toml").write_text(TINY + WIDE)
    scoped = [
        "experiment.until_decided=true",
        "experiment.max_seeds=6",
        'experiment.sequential_datasets=["moons"]',
        'experiment.sequential_runs=["baseline", "wide"]',
    ]
    loaded = summary.read(load_experiment(tmp_path / "two.toml", scoped), tmp_path)
    assert loaded.design_for("wide", "baseline", "moons").max_seeds == 6
    assert not loaded.design_for("wide", "baseline", "line").sequential
    narrowed = [*scoped[:3], 'experiment.sequential_runs=["wide"]']
    loaded = summary.read(load_experiment(tmp_path / "two.toml", narrowed), tmp_path)
    assert not loaded.design_for("wide", "baseline", "moons").sequential
