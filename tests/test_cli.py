"""The command line end to end, and its errors for bad input."""

import json

import pytest

from lowdiff.cli import main

FAST = [
    "--set",
    "experiment.num_points=2000",
    "--set",
    "train.num_steps=30",
    "--set",
    "eval.num_samples=300",
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
        (["--model", "transformer"], "expected one of 'mlp'"),
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
        "oracle_draws = 1\n[train]\nnum_steps = 200\nbatch_size = 32\n[eval]\nnum_samples = 200\n"
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
