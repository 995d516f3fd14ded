"""Experiment files: strict parsing with errors that name the key, file, line and what is valid."""

from pathlib import Path

import pytest

from lowdiff.config import ConfigError, load_experiment

GOOD = """\
[experiment]
name = "t"
datasets = ["moons"]
seeds = [0, 1]

[train]
num_steps = 50

[runs.baseline]
model = { arch = "mlp" }

[runs.learned]
model = { arch = "dual_scale", weighting = "learned" }
train = { learning_rate = 1e-3 }
"""

SHIPPED = sorted(
    path
    for path in (Path(__file__).parent.parent / "experiments").glob("*.toml")
    if not path.name.endswith(".claims.toml")  # claims files are data for the report
)


def write(tmp_path, text):
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return path


def test_good_file_resolves_with_shared_and_run_values(tmp_path):
    config = load_experiment(write(tmp_path, GOOD))
    assert [r.name for r in config.runs] == ["baseline", "learned"]
    assert config.experiment.baseline == "baseline"
    assert config.run("learned").train.num_steps == 50  # shared table
    assert config.run("learned").train.learning_rate == 1e-3  # run override
    assert config.run("baseline").train.learning_rate == 3e-4  # protocol default


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_experiment_files_parse(path):
    assert load_experiment(path).runs


@pytest.mark.parametrize(
    "old,new,message",
    [
        (
            "num_steps = 50",
            "num_stepz = 50",
            r"line 7: train: unknown key 'num_stepz'; valid keys: num_steps",
        ),
        ("num_steps = 50", 'num_steps = "many"', r"train.num_steps: expected int"),
        ("num_steps = 50", "num_steps = -5", r"num_steps must be a positive integer"),
        (
            'weighting = "learned"',
            'weighting = "magic"',
            r"weighting: expected one of 'fixed', 'learned'",
        ),
        (
            'arch = "mlp"',
            'arch = "transformer"',
            r"unknown model arch 'transformer'; valid: mlp, dual_scale, dual_expert, or ",
        ),
        ('datasets = ["moons"]', 'datasets = ["mars"]', r"unknown dataset 'mars'; valid: circle"),
        ('name = "t"', 'name = "t"\nbaseline = "nope"', r"experiment.baseline: unknown run 'nope'"),
        ("[train]", "[trian]", r"unknown table \[trian\]; valid tables"),
        (
            'model = { arch = "mlp" }',
            'model = { arch = "mlp", gate = "enhanced" }',
            r"does not apply",
        ),
        ("seeds = [0, 1]", "seeds = [0, 0]", r"distinct"),
        ("seeds = [0, 1]", "seeds = 3", r"expected a list of int"),
        ("[runs.baseline]", "[runs.baseline]\nmodle = 1", r"runs.baseline: unknown key 'modle'"),
        ("num_steps = 50", "num_steps = [", r"not valid TOML"),
    ],
)
def test_bad_files_get_clear_errors(tmp_path, old, new, message):
    assert old in GOOD
    with pytest.raises(ConfigError, match=message):
        load_experiment(write(tmp_path, GOOD.replace(old, new, 1)))


def test_overrides_apply_and_are_checked(tmp_path):
    path = write(tmp_path, GOOD)
    config = load_experiment(
        path, ["train.num_steps=7", "runs.learned.model.weighting=learned_deep"]
    )
    assert config.run("baseline").train.num_steps == 7
    assert config.run("learned").model.weighting == "learned_deep"
    with pytest.raises(ConfigError, match="unknown key 'lr'"):
        load_experiment(path, ["train.lr=1"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_experiment(path, ["train.num_steps"])


def test_missing_file_and_no_runs(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="no runs"):
        load_experiment(write(tmp_path, '[experiment]\nname = "x"\n'))


def test_errors_carry_the_key_path_and_its_line(tmp_path):
    text = GOOD.replace("train = { learning_rate = 1e-3 }", "train = { learning_rate = -1.0 }")
    with pytest.raises(ConfigError) as caught:
        load_experiment(write(tmp_path, text))
    assert caught.value.key == "runs.learned.train"
    line = text.splitlines().index("train = { learning_rate = -1.0 }") + 1
    assert f"exp.toml, line {line}: runs.learned.train:" in str(caught.value)
    assert str(caught.value).count("exp.toml") == 1  # the file is named once
    with pytest.raises(ConfigError) as caught:  # a shared table's value: the shared table's line
        load_experiment(write(tmp_path, GOOD.replace("num_steps = 50", "num_steps = 0")))
    assert caught.value.key == "runs.baseline.train" and "line 6:" in str(caught.value)


def test_override_errors_name_the_override_not_a_line(tmp_path):
    path = write(tmp_path, GOOD)
    for assignment, key in (
        ("train.lr=1", "train.lr"),
        ("train.num_steps=0", "runs.baseline.train"),
        ("runs.learned.model.weighting=magic", "runs.learned.model.weighting"),
    ):
        with pytest.raises(ConfigError) as caught:
            load_experiment(path, ["train.batch_size=64", assignment])
        message = str(caught.value)
        assert message.startswith(f"--set {assignment}: "), message
        assert ", line " not in message and caught.value.key == key
    for old, new, line in (
        ('"learned" }', '"magic" }', 13),
        ("num_steps = 50", "num_steps = 0", 6),  # the override sets another key of [train]
    ):
        with pytest.raises(ConfigError, match=rf"exp.toml, line {line}: "):
            load_experiment(  # the file's own error is still the file's, whatever else is set
                write(tmp_path, GOOD.replace(old, new)), ["train.batch_size=64"]
            )


# --- sweeps -------------------------------------------------------------------------------


def test_sweep_table_expands_every_run_with_fixed_names(tmp_path):
    path = write(tmp_path, GOOD + '\n[sweep]\n"train.diversity_weight" = [0, 0.01, 0.2]\n')
    config = load_experiment(path)
    expected = [
        f"{run}-diversity_weight={value}"
        for run in ("baseline", "learned")
        for value in ("0", "0.01", "0.2")
    ]
    assert [r.name for r in config.runs] == expected
    assert [r.train.diversity_weight for r in config.runs] == [0.0, 0.01, 0.2] * 2
    assert config.run("learned-diversity_weight=0.2").train.learning_rate == 1e-3  # kept
    assert config.experiment.baseline == "baseline-diversity_weight=0"
    assert {r.source for r in config.sweep} == {"baseline", "learned"}


def test_cli_sweep_is_a_grid_in_the_order_given_and_adds_to_the_file(tmp_path):
    path = write(tmp_path, GOOD + '\n[sweep]\nruns = ["learned"]\ntrain.num_steps = [5, 6]\n')
    config = load_experiment(path, sweeps=["model.hidden_dim=16,32", "train.num_steps=7"])
    names = [r.name for r in config.runs]
    # the file's key first (its values replaced by the command line's), then the new key
    swept = ["learned-num_steps=7-hidden_dim=16", "learned-num_steps=7-hidden_dim=32"]
    assert names == ["baseline", *swept]
    assert config.run("learned-num_steps=7-hidden_dim=32").model.hidden_dim == 32
    assert config.run("learned-num_steps=7-hidden_dim=32").train.num_steps == 7
    assert config.run("baseline").model.hidden_dim == 256
    assert config.sweep[1].values == {"train.num_steps": 7, "model.hidden_dim": 32}


@pytest.mark.parametrize(
    "sweep, message",
    [
        (["train.lr=1,2"], "unknown key 'train.lr'"),
        (["train.num_steps=1.5,2"], r"sweep.train.num_steps\[0\]: expected int"),
        (["train.num_steps=2,2"], "values repeat"),
        (["train.num_steps"], "KEY=V1,V2"),
    ],
)
def test_bad_sweeps_get_clear_errors(tmp_path, sweep, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment(write(tmp_path, GOOD), sweeps=sweep)


def test_sweep_survives_experiment_json(tmp_path):
    from lowdiff.config import from_json, to_dict

    config = load_experiment(write(tmp_path, GOOD), sweeps=["train.diversity_weight=0,0.1"])
    again = from_json(to_dict(config))
    assert again.sweep == config.sweep
    assert [r.name for r in again.runs] == [r.name for r in config.runs]


def test_run_command_passes_its_sweeps(tmp_path, monkeypatch):
    from lowdiff import cli

    seen = {}
    monkeypatch.setattr(
        cli, "_run", lambda experiment, out, args: seen.setdefault("c", experiment) and 0
    )
    path = write(tmp_path, GOOD)
    assert cli.main(["run", str(path), "--sweep", "train.diversity_weight=0,0.05"]) == 0
    names = [run.name for run in seen["c"].runs]
    assert names[:2] == ["baseline-diversity_weight=0", "baseline-diversity_weight=0.05"]
