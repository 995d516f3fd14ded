"""The command line end to end, and its errors for bad input."""

import csv
import io
import json

import numpy as np
import pytest
from fake_results import write_fake_results

from lowdiff import cli
from lowdiff.cli import main

FAST = [
    "--set",
    "experiment.num_points=2000",
    "--set",
    "train.num_steps=30",
    "--set",
    "eval.num_samples=300",
    "--set",
    "eval.ground_truth=false",
    "--set",
    "experiment.oracle_draws=1",
    "--set",
    "model.hidden_dim=32",
    "--set",
    "model.embedding_dim=16",
]


def test_train_end_to_end_writes_results_and_report(tmp_path, capsys):
    out = tmp_path / "mlp"
    assert (
        main(
            [
                "train",
                "--model",
                "mlp",
                "--datasets",
                "moons,dino",
                "--seeds",
                "0,1",
                "--out",
                str(out),
                "--quiet",
                *FAST,
            ]
        )
        == 0
    )
    info = json.loads((out / "mlp" / "final_info.json").read_text())
    assert set(info) == {"moons", "dino"}
    for key in ("training_time", "eval_loss", "inference_time", "kl_divergence"):
        assert key in info["dino"]["means"]
    assert (out / "report.md").is_file() and (out / "figures" / "generated_images.png").is_file()
    assert str(out / "report.md") in capsys.readouterr().out
    assert main(["report", str(out)]) == 0


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["--datasets", "mars"], "unknown dataset 'mars'"),
        (["--model", "transformer"], "--model: unknown architecture 'transformer'"),
        (["--seeds", "a,b"], "--seeds: expected comma-separated integers"),
        (["--set", "train.num_steps=-3"], "num_steps must be a positive integer"),
        (["--set", "eval.num_samples=0"], "num_samples must be a positive integer"),
        (["--set", "train.num_steps=ten"], "train.num_steps: expected int"),
        (["--set", "train.warp=1"], "unknown key 'warp'"),
    ],
)
def test_bad_input_fails_before_any_work(tmp_path, capsys, arguments, message):
    out = tmp_path / "never"
    assert main(["train", "--out", str(out), "--quiet", *arguments]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_report_of_a_foreign_directory_is_an_error(tmp_path, capsys):
    (tmp_path / "final_info.json").write_text("{}")
    assert main(["report", str(tmp_path)]) == 2
    assert "lowdiff" in capsys.readouterr().err


def test_divergence_is_named_and_finished_cells_are_kept(tmp_path, capsys):
    experiment = tmp_path / "boom.toml"
    experiment.write_text(
        '[experiment]\nname = "boom"\ndatasets = ["moons"]\nseeds = [0]\nnum_points = 1000\n'
        "oracle_draws = 1\n[train]\nnum_steps = 200\nbatch_size = 32\n"
        "[eval]\nnum_samples = 200\nground_truth = false\n"
        '[model]\nhidden_dim = 16\nembedding_dim = 8\n[runs.baseline]\nmodel = { arch = "mlp" }\n'
        '[runs.boom]\nmodel = { arch = "mlp" }\ntrain = { learning_rate = 1e30 }\n'
    )
    out = tmp_path / "out"
    assert main(["run", str(experiment), "--out", str(out), "--quiet"]) == 3
    error = capsys.readouterr().err
    assert "run 'boom'" in error and "moons/seed 0" in error and "NaN" in error
    assert (out / "baseline" / "moons" / "seed_0" / "cell.json").is_file()
    record = json.loads((out / "boom" / "moons" / "seed_0" / "cell.json").read_text())
    assert record["status"] == "diverged" and record["metrics"] == {}  # C3: a diverged cell


# --- help, version, "did you mean" -----------------------------------------------------------

COMMANDS = [
    "run",
    "train",
    "report",
    "sample",
    "export",
    "compare",
    "remeasure",
    "datasets",
    "keys",
]


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_every_help_page_has_examples_and_no_internal_docstring(capsys, command):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "examples:\n  lowdiff " in text
    assert "parse, call, print" not in text
    if not command:
        assert all(name in text for name in COMMANDS)
        assert "-v, --verbose  also log" in text


def test_version(capsys):
    from lowdiff import __version__

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"lowdiff {__version__}"


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["trian"], "invalid choice: 'trian'"),
        (
            ["train", "--out", "x", "--sede", "1"],
            "unrecognized arguments: --sede 1; did you mean '--seeds'?",
        ),
    ],
)
def test_unknown_command_or_flag_gets_a_suggestion(capsys, arguments, message):
    with pytest.raises(SystemExit) as exit_:
        main(arguments)
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert message in error
    if arguments == ["trian"]:
        assert "did you mean 'train'?" in error


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["--model", "dual_expret"], "--model: unknown architecture 'dual_expret'; did you mean "),
        (["--datasets", "moons,dnio"], "--datasets: unknown dataset 'dnio'; did you mean 'dino'?"),
        (["--set", "train.num_step=3"], "unknown key 'num_step'; did you mean 'num_steps'?"),
        (["--set", "trian.num_steps=3"], "unknown table 'trian'; did you mean 'train'?"),
    ],
)
def test_errors_name_the_flag_and_suggest(tmp_path, capsys, arguments, message):
    assert main(["train", "--out", str(tmp_path / "never"), *arguments]) == 2
    error = capsys.readouterr().err
    assert message in error
    assert "runs." not in error  # not the internal key path of the one-run experiment
    assert not (tmp_path / "never").exists()


def test_a_typo_in_an_experiment_file_gets_a_suggestion(tmp_path, capsys):
    experiment = tmp_path / "typo.toml"
    experiment.write_text('[experiment]\nname = "t"\n[train]\nnum_step = 3\n[runs.a]\n')
    assert main(["run", str(experiment), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "line 4" in error and "unknown key 'num_step'" in error
    assert error.rstrip().endswith("did you mean 'num_steps'?")


def test_keys_lists_every_setting_with_its_default_and_a_meaning(capsys):
    import dataclasses

    from lowdiff.config import SECTIONS, ExperimentSettings
    from lowdiff.executors import ExecutorConfig

    assert main(["keys"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0]: line for line in lines}
    tables = {"experiment": ExperimentSettings, **SECTIONS, "executor": ExecutorConfig}
    for section, cls in tables.items():
        for field in dataclasses.fields(cls):
            if f"{section}.{field.name}" == "executor.kind":  # that is experiment.executor
                assert "executor.kind" not in listed
                continue
            line = listed.pop(f"{section}.{field.name}")
            if field.default is not dataclasses.MISSING and not isinstance(field.default, tuple):
                assert line.split()[1] == repr(field.default)
            assert len(line.split(maxsplit=2)) == 3, f"{section}.{field.name} has no meaning"
    assert not listed
    assert "[dual_expert only]" in next(line for line in lines if line.startswith("model.gate"))
    assert main(["keys", "trian"]) == 2
    assert "did you mean 'train'?" in capsys.readouterr().err


def test_executor_settings_are_set_from_the_command_line(tmp_path, capsys):
    from lowdiff.config import load_experiment

    experiment = tmp_path / "e.toml"
    experiment.write_text('[experiment]\nname = "e"\n[runs.a]\n')
    settings = ['executor.ray_address="127.0.0.2:6379"', "executor.slurm_partition=debug"]
    cli._check_overrides(settings)  # what `lowdiff run --set` checks first
    config = load_experiment(experiment, [*settings, 'experiment.executor="ray"'])
    assert config.executor.kind == "ray" and config.executor.ray_address == "127.0.0.2:6379"
    assert config.executor.slurm_partition == "debug"
    out = tmp_path / "out"
    arguments = ["run", str(experiment), "--out", str(out), "--set"]
    assert main([*arguments, "executor.ray_adress=auto"]) == 2
    assert "unknown key 'ray_adress'; did you mean 'ray_address'?" in capsys.readouterr().err
    assert main([*arguments, "executor.kind=ray"]) == 2  # the kind is experiment.executor
    assert "unknown key 'kind'" in capsys.readouterr().err
    assert main(["keys", "executor"]) == 0
    assert "executor.slurm_partition" in capsys.readouterr().out
    assert not out.exists()


# --- a finished experiment: resume, sample, export, remeasure ----------------------------------


@pytest.fixture
def finished(tmp_path_factory):
    """A fresh copy of one tiny finished experiment (trained once per module)."""
    return _trained(tmp_path_factory)


_CACHE: dict = {}


def _trained(tmp_path_factory):
    import shutil

    if "root" not in _CACHE:
        root = tmp_path_factory.mktemp("cli") / "mlp"
        arguments = ["--datasets", "moons,line", "--seeds", "0,1", "--out", str(root)]
        assert main(["train", *arguments, "--quiet", *FAST]) == 0
        _CACHE["root"] = root
    copy = tmp_path_factory.mktemp("copy") / "mlp"
    shutil.copytree(_CACHE["root"], copy)
    return copy


def test_resume_says_what_it_found_and_ends_with_a_summary_table(finished, capsys):
    shutil = pytest.importorskip("shutil")
    shutil.rmtree(finished / "mlp" / "line" / "seed_1")
    arguments = ["--datasets", "moons,line", "--seeds", "0,1", "--out", str(finished)]
    assert main(["train", *arguments, "--quiet", *FAST]) == 0
    out = capsys.readouterr().out
    assert f"{finished}: 3 of 4 cells finished, 1 to run" in out
    header, row = out.split("\n\n")[1].splitlines()[:2]
    assert header.split() == ["KL", "(bits)", "moons", "line"]
    info = json.loads((finished / "mlp" / "final_info.json").read_text())
    low, high = info["line"]["ci95"]["kl_divergence"]
    assert row.split()[-3:] == [
        f"{info['line']['means']['kl_divergence']:.3f}",
        "±",
        f"{(high - low) / 2:.3f}",
    ]


def test_sample_writes_csv_or_npy(finished, tmp_path, capsys):
    cell = finished / "mlp" / "moons" / "seed_0"
    csv_path, npy_path = tmp_path / "x.csv", tmp_path / "x.npy"
    assert main(["sample", str(cell), "--n", "60", "--seed", "4", "--out", str(csv_path)]) == 0
    assert main(["sample", str(cell), "--n", "60", "--seed", "4", "--out", str(npy_path)]) == 0
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "x,y" and len(lines) == 61
    from_csv = np.loadtxt(csv_path, delimiter=",", skiprows=1)
    from_npy = np.load(npy_path, allow_pickle=False)
    assert from_npy.shape == (60, 2)
    np.testing.assert_array_equal(from_csv.astype(np.float32), from_npy)
    assert "60 points" in capsys.readouterr().out


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["--out", "x.txt"], "--out: unknown file type '.txt'; valid: .csv, .npy"),
        (["--out", "x.csv", "--sampler", "ancestrl"], "--sampler: unknown sampler 'ancestrl'"),
        (["--out", "x.csv", "--n", "0"], "--n: expected an integer >= 1, got 0"),
        (["--out", "x.csv", "--sampling-steps", "-1"], "--sampling-steps: expected an integer"),
        (["--out", "x.csv", "--sampling-steps", "500"], "--sampling-steps 500: the number"),
    ],
)
def test_sample_bad_input(finished, tmp_path, capsys, arguments, message):
    cell = finished / "mlp" / "moons" / "seed_0"
    assert main(["sample", str(cell), *arguments]) == 2
    assert message in capsys.readouterr().err


def test_sample_takes_any_catalogue_sampler_and_its_step_count(finished, tmp_path, capsys):
    cell, out = finished / "mlp" / "moons" / "seed_0", tmp_path / "x.npy"
    arguments = ["--n", "30", "--sampler", "heun", "--sampling-steps", "5", "--out", str(out)]
    assert main(["sample", str(cell), *arguments]) == 0
    assert "(heun, 5 steps" in capsys.readouterr().out
    assert np.isfinite(np.load(out, allow_pickle=False)).all()


def test_export_is_a_tidy_csv_of_finished_cells(finished, tmp_path, capsys):
    record = json.loads((finished / "mlp" / "line" / "seed_1" / "cell.json").read_text())
    stale = finished / "mlp" / "line" / "seed_0" / "cell.json"
    stale.write_text(json.dumps({**json.loads(stale.read_text()), "config_hash": "0" * 16}))
    out = tmp_path / "metrics.csv"
    assert main(["export", str(finished), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["experiment", "run", "dataset", "seed", "metric", "value", "source"]
    cells = {(r["dataset"], r["seed"]) for r in rows}
    assert cells == {("moons", "0"), ("moons", "1"), ("line", "1")}  # the stale cell is left out
    line_1 = {
        r["metric"]: float(r["value"]) for r in rows if (r["dataset"], r["seed"]) == ("line", "1")
    }
    assert line_1 == record["metrics"]
    assert "3 finished cells" in capsys.readouterr().out
    assert main(["export", str(finished)]) == 0
    assert capsys.readouterr().out == out.read_text()


def test_compare_writes_one_report_over_directories_or_names_the_bad_one(tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    experiment = {"name": "tiny", "datasets": ["moons"], "seeds": [0, 1], "num_points": 500}
    raw = {"experiment": experiment, "runs": {"baseline": {"model": {"arch": "mlp"}}}}
    write_fake_results(first, raw)
    write_fake_results(second, raw)
    out = tmp_path / "compared"
    assert main(["compare", str(first), str(second), "--out", str(out)]) == 0
    assert f"comparison: {out / 'report.md'}" in capsys.readouterr().out
    assert "second/baseline" in (out / "report.md").read_text()
    assert main(["compare", str(first), str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "nowhere" in capsys.readouterr().err


def _cell_json(root, dataset, seed):
    return root / "mlp" / dataset / f"seed_{seed}" / "cell.json"


def test_remeasure_restores_garbage_and_refreshes_the_summaries(finished, capsys):
    truth = json.loads(_cell_json(finished, "moons", 1).read_text())
    oracle = json.loads((finished / "oracle.json").read_text())
    garbage = {**truth, "metrics": {**truth["metrics"], "kl_divergence": 99.0}}
    _cell_json(finished, "moons", 1).write_text(json.dumps(garbage))
    (finished / "oracle.json").write_text("{}")
    (finished / "mlp" / "final_info.json").write_text("{}")
    assert main(["remeasure", str(finished), "--quiet", "--no-report"]) == 0
    assert "measured 4 cells again" in capsys.readouterr().out
    assert json.loads(_cell_json(finished, "moons", 1).read_text()) == truth
    assert json.loads((finished / "oracle.json").read_text()) == oracle
    info = json.loads((finished / "mlp" / "final_info.json").read_text())
    assert info["moons"]["per_seed"]["kl_divergence"]["1"] == truth["metrics"]["kl_divergence"]


def test_remeasure_adds_a_new_metric_and_skips_cells_without_samples(finished, monkeypatch, capsys):
    from lowdiff import metrics

    original = metrics.measure

    def measure_more(samples, reference, k):
        return {**original(samples, reference, k), "mean_x": float(np.mean(samples[:, 0]))}

    monkeypatch.setattr(metrics, "measure", measure_more)
    (finished / "mlp" / "line" / "seed_0" / "samples.npy").unlink()
    before = json.loads(_cell_json(finished, "moons", 0).read_text())
    assert main(["remeasure", str(finished), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "measured 3 cells again" in out and "skipped mlp line/seed 0" in out
    after = json.loads(_cell_json(finished, "moons", 0).read_text())
    samples = np.load(finished / "mlp" / "moons" / "seed_0" / "samples.npy")
    assert after["metrics"] == {**before["metrics"], "mean_x": float(np.mean(samples[:, 0]))}
    assert {k: v for k, v in after.items() if k != "metrics"} == {
        k: v for k, v in before.items() if k != "metrics"
    }
    info = json.loads((finished / "mlp" / "final_info.json").read_text())
    assert "mean_x" in info["moons"]["means"]
    assert (finished / "report.md").is_file()


# --- progress that suits where the output goes -------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_plain_progress_prints_lines_not_debris():
    from lowdiff.progress import PlainBar

    stream, clock = io.StringIO(), Clock()
    bar = PlainBar(total=100, desc="training", unit="step", file=stream, interval=10, clock=clock)
    for _ in range(100):
        clock.now += 0.5
        bar.update(1)
    bar.close()
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == len(set(lines)) == 1 + 4 + 1  # start, every 10 s, end
    assert lines[0] == "training: 0/100 step (0%)"
    assert lines[1] == "training: 20/100 step (20%), 2 step/s, 40 s left"
    assert lines[-1] == "training: 100/100 step (100%), 2 step/s, done in 50 s"


def test_plain_progress_rate_ignores_work_found_done():
    from lowdiff.progress import PlainBar

    stream, clock = io.StringIO(), Clock()
    bar = PlainBar(
        total=10, initial=4, desc="cells", unit="cell", file=stream, interval=0, clock=clock
    )
    bar.skip(2)  # copied cells: no work
    clock.now = 30.0
    bar.update(1)
    assert (
        stream.getvalue().splitlines()[-1]
        == "cells: 7/10 cell (70%), 0.0333 cell/s, 1 min 30 s left"
    )


def test_bar_is_plain_off_a_terminal_and_tqdm_on_one(monkeypatch):
    from lowdiff import progress

    monkeypatch.delenv("LOWDIFF_PROGRESS", raising=False)
    stream = io.StringIO()
    assert isinstance(progress.bar(total=3, file=stream), progress.PlainBar)
    terminal = progress.bar(total=3, file=stream, plain=False)
    assert not isinstance(terminal, progress.PlainBar)
    terminal.skip(1)
    terminal.close()
    monkeypatch.setenv("LOWDIFF_PROGRESS", "plain")
    assert isinstance(progress.bar(total=3, file=stream, plain=None), progress.PlainBar)
    assert list(progress.bar(range(3), file=io.StringIO())) == [0, 1, 2]


@pytest.mark.parametrize(
    "finished_cells,total,line",
    [(0, 8, "8 cells to run"), (3, 8, "3 of 8 cells finished, 5 to run"), (8, 8, "all 8 cells")],
)
def test_resume_line(finished_cells, total, line):
    from lowdiff.progress import resume_line

    assert resume_line(finished_cells, total).startswith(line)


def test_a_phase_says_when_it_starts_and_how_long_it_took():
    from lowdiff.progress import phase

    stream, clock = io.StringIO(), Clock()
    with phase("oracle floors", file=stream, plain=True, clock=clock):
        clock.now = 75.0
    assert stream.getvalue() == "oracle floors ...\noracle floors: done in 1 min 15 s\n"
    with pytest.raises(RuntimeError), phase("figures", file=stream, plain=True, clock=clock):
        raise RuntimeError("boom")
    assert stream.getvalue().endswith("figures ...\n")  # no "done" for a step that failed


@pytest.mark.parametrize(
    "setting,message",
    [
        ('experiment.datasets=["mons"]', "unknown dataset 'mons'; valid: "),
        ('experiment.baseline="basline"', "unknown run 'basline'; runs: baseline"),
    ],
)
def test_a_wrong_name_in_a_setting_gets_a_suggestion(tmp_path, capsys, setting, message):
    experiment = tmp_path / "e.toml"
    experiment.write_text('[experiment]\nname = "e"\n[runs.baseline]\n')
    assert main(["run", str(experiment), "--out", str(tmp_path / "out"), "--set", setting]) == 2
    error = capsys.readouterr().err
    assert message in error
    assert error.rstrip().endswith(("did you mean 'moons'?", "did you mean 'baseline'?"))
