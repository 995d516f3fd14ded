"""Running experiments: cells written atomically, resume after kill -9, reuse, invalidation."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lowdiff import results
from lowdiff.config import load_experiment
from lowdiff.experiments import execute, plan

TINY = """\
[experiment]
name = "tiny"
datasets = ["moons", "line"]
seeds = [0, 1]
num_points = 2000
oracle_draws = 1
max_models_per_batch = 1
[train]
num_steps = 300
batch_size = 64
[eval]
num_samples = 400
field_resolution = 8
[runs.baseline]
model = { arch = "mlp", hidden_dim = 64, embedding_dim = 32 }
[runs.gated]
model = { arch = "dual_expert", hidden_dim = 64, embedding_dim = 32 }
"""


def metrics_of(root, config):
    return {
        (c.run, c.dataset, c.seed): results.read_cell(c.directory, c.config_hash)["metrics"]
        for c in plan(config, root)
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    (root / "exp.toml").write_text(TINY)
    config = load_experiment(root / "exp.toml")
    execute(config, root / "out", progress=False)
    return config, root / "out"


def test_every_cell_and_final_info_is_written(uninterrupted):
    config, root = uninterrupted
    for cell in plan(config, root):
        record = results.read_cell(cell.directory, cell.config_hash)
        assert record is not None
        assert np.load(cell.directory / "samples.npy").shape == (400, 2)
        assert np.load(cell.directory / "losses.npy").shape == (300,)
    info = json.loads((root / "gated" / "final_info.json").read_text())
    assert set(info) == {"moons", "line"}
    assert set(info["moons"]["per_seed"]["kl_divergence"]) == {"0", "1"}
    assert info["moons"]["means"]["kl_divergence"] == pytest.approx(
        np.mean(list(info["moons"]["per_seed"]["kl_divergence"].values()))
    )
    gated = results.read_npz(root / "gated" / "moons" / "seed_0" / "weights.npz")
    assert gated["trace"].shape == (100, 1) and gated["final"].shape == (400, 1)
    assert not list(root.rglob("*.tmp"))


def test_kill_and_resume_matches_uninterrupted(uninterrupted, tmp_path):
    config, reference = uninterrupted
    (tmp_path / "exp.toml").write_text(TINY)
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "lowdiff.cli",
        "run",
        str(tmp_path / "exp.toml"),
        "--out",
        str(out),
        "--quiet",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.rglob("cell.json")):
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = {p.parent: p.stat().st_mtime_ns for p in out.rglob("cell.json")}
    assert 1 <= len(finished) < 8, "the kill should land part-way"
    redone = execute(config, out, progress=False)
    assert {c.directory for c in redone}.isdisjoint(finished)
    assert len(redone) == 8 - len(finished)
    for directory, mtime in finished.items():
        assert (directory / "cell.json").stat().st_mtime_ns == mtime  # never redone
    got, expected = metrics_of(out, config), metrics_of(reference, config)
    for key in expected:
        for metric in ("kl_divergence", "eval_loss", "modes_captured"):
            assert got[key][metric] == pytest.approx(expected[key][metric], rel=1e-3, abs=1e-3), (
                key,
                metric,
            )


def test_truncated_file_is_redone_and_changed_run_only_invalidates_itself(tmp_path):
    (tmp_path / "exp.toml").write_text(TINY.replace("num_steps = 300", "num_steps = 20"))
    config = load_experiment(tmp_path / "exp.toml")
    out = tmp_path / "out"
    execute(config, out, progress=False)
    victim = results.cell_dir(out, "baseline", "moons", 1)
    samples = victim / "samples.npy"
    samples.write_bytes(samples.read_bytes()[:50])  # as if a write had been cut off
    assert [(c.run, c.dataset, c.seed) for c in execute(config, out, progress=False)] == [
        ("baseline", "moons", 1)
    ]
    changed = load_experiment(tmp_path / "exp.toml", ["runs.gated.model.gate=enhanced"])
    assert {c.run for c in execute(changed, out, progress=False)} == {"gated"}
    assert len(execute(changed, out, progress=False, force=True)) == 8


def test_repeated_run_config_is_trained_once(tmp_path):
    text = (
        TINY.replace("num_steps = 300", "num_steps = 20")
        + '[runs.again]\nmodel = { arch = "mlp", hidden_dim = 64, embedding_dim = 32 }\n'
    )
    (tmp_path / "exp.toml").write_text(text)
    config = load_experiment(tmp_path / "exp.toml")
    execute(config, tmp_path / "out", progress=False)
    for dataset in ("moons", "line"):
        a = np.load(results.cell_dir(tmp_path / "out", "baseline", dataset, 0) / "samples.npy")
        b = np.load(results.cell_dir(tmp_path / "out", "again", dataset, 0) / "samples.npy")
        assert np.array_equal(a, b)
    # a run added later that repeats a finished run's config is copied, not trained
    (tmp_path / "exp.toml").write_text(text + "[runs.later]\n" + text.split("[runs.again]\n")[1])
    later = load_experiment(tmp_path / "exp.toml")
    assert list(execute(later, tmp_path / "out", progress=False)) == [
        c for c in plan(later, tmp_path / "out") if c.run == "later"
    ]
    record = results.read_cell(results.cell_dir(tmp_path / "out", "later", "line", 1))
    assert record is not None and record["run"] == "later"


def test_corrupt_and_foreign_files_are_named(tmp_path):
    (tmp_path / "cell.json").write_text("{not json")
    with pytest.raises(results.ResultsError, match="not a finished lowdiff cell"):
        results.load_cell_record(tmp_path)
    (tmp_path / "x.npy").write_bytes(b"\x80\x04pickle")
    with pytest.raises(results.ResultsError, match="not a readable NumPy array"):
        results.read_npy(tmp_path / "x.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(results.ResultsError):
        results.read_npy(tmp_path / "obj.npy")  # object arrays would need pickle: refused


def test_cell_hash_keys_on_what_changes_results(uninterrupted):
    """The key moves with any protocol setting, not with memory-only settings; a default-valued
    setting leaves it where it was (so results survive new settings)."""
    import dataclasses

    from lowdiff.experiments import cell_hash

    config, _ = uninterrupted
    run = config.runs[0]
    base = cell_hash(config, run, "moons", 0)
    changed = {
        "model": dataclasses.replace(run.model, hidden_dim=65),
        "train": dataclasses.replace(run.train, learning_rate=1e-3),
        "schedule": dataclasses.replace(run.schedule, beta_schedule="quadratic"),
        "eval": dataclasses.replace(run.eval, num_samples=401),
    }
    for section, value in changed.items():
        other = dataclasses.replace(run, **{section: value})
        assert cell_hash(config, other, "moons", 0) != base, section
    assert cell_hash(config, run, "moons", 1) != base
    same = dataclasses.replace(run, eval=dataclasses.replace(run.eval, chunk_size=17))
    assert cell_hash(config, same, "moons", 0) == base
    described = dataclasses.replace(run, name="renamed", description="x")
    assert cell_hash(config, described, "moons", 0) == base


def test_a_cell_without_its_weights_still_counts_as_finished(uninterrupted, tmp_path):
    config, root = uninterrupted
    cell = plan(config, root)[0]
    target = tmp_path / "cell"
    results.copy_cell(cell.directory, target, {})
    (target / "model_ema.npz").unlink()
    assert results.read_cell(target, cell.config_hash) is not None
    (target / "samples.npy").unlink()
    assert results.read_cell(target, cell.config_hash) is None
