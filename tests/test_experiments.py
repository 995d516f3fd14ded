"""Running experiments: cells written atomically, resume after kill -9, reuse, invalidation."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lowdiff import results
from lowdiff.config import load_experiment
from lowdiff.experiments import batches, execute, plan

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
        (c.run.name, c.dataset, c.seed): results.read_cell(c.directory, c.config_hash)["metrics"]
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


BATCHED = TINY.replace("max_models_per_batch = 1", "max_models_per_batch = 2")
CELL_ARRAYS = ("losses.npy", "samples.npy", "weights.npz", "model_ema.npz")
WALL_CLOCK = {"training_time", "inference_time"}


def cell_contents(cell):
    """A finished cell's record (its wall clocks left out) and every array it holds."""
    record = results.read_cell(cell.directory, cell.config_hash)
    assert record is not None, cell.directory
    record["metrics"] = {k: v for k, v in record["metrics"].items() if k not in WALL_CLOCK}
    arrays = {}
    for name in CELL_ARRAYS:
        if (cell.directory / name).exists():
            if name.endswith(".npy"):
                arrays[name] = np.load(cell.directory / name, allow_pickle=False)
            else:
                for key, value in results.read_npz(cell.directory / name).items():
                    arrays[f"{name}:{key}"] = value
    return {k: record[k] for k in ("config_hash", "run", "dataset", "seed", "metrics")}, arrays


def assert_cell_equal(got, expected, exact=True):
    """Bit-identical (exact) or equal to float rounding: record, metrics and arrays."""
    (record, arrays), (expected_record, expected_arrays) = (
        cell_contents(got),
        cell_contents(expected),
    )
    metrics, expected_metrics = record.pop("metrics"), expected_record.pop("metrics")
    assert record == expected_record and arrays.keys() == expected_arrays.keys(), got.directory
    if exact:
        assert metrics == expected_metrics, got.directory
    else:
        assert metrics == pytest.approx(expected_metrics, rel=1e-6, abs=1e-9), got.directory
    for key, value in expected_arrays.items():
        if exact:
            assert np.array_equal(arrays[key], value), (got.directory, key)
        else:
            np.testing.assert_allclose(arrays[key], value, rtol=1e-5, atol=1e-6)


def batch_sizes(cells):
    """How many models each cell was trained with, batching `cells` as the runner does."""
    return {c.directory.parts[-3:]: len(b) for b in batches(cells, 2) for c in b}


@pytest.fixture(scope="module")
def uninterrupted_batched(tmp_path_factory):
    root = tmp_path_factory.mktemp("batched")
    (root / "exp.toml").write_text(BATCHED)
    config = load_experiment(root / "exp.toml")
    execute(config, root / "out", progress=False)
    return config, root / "out"


def test_kill_and_resume_matches_uninterrupted(uninterrupted_batched, tmp_path):
    """kill -9 part-way through an experiment that trains two models per batch, then resume.

    No finished cell is redone, and every cell is bit-identical to the uninterrupted run's,
    except (today) a cell whose batch the kill cut and that was retrained in a batch of another
    size: a batch of 1 rounds differently from a batch of 2 (see the xfail below), so such a
    cell is only equal to float rounding. Same-size batches of other members are bit-identical.
    """
    config, reference = uninterrupted_batched
    (tmp_path / "exp.toml").write_text(BATCHED)
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
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = {p.parent: p.stat().st_mtime_ns for p in out.rglob("cell.json")}
    assert 1 <= len(finished) < 8, "the kill should land part-way"
    cells = plan(config, out)
    missing = [c for c in cells if c.directory not in finished]
    redone = execute(config, out, progress=False)
    assert {c.directory for c in redone} == {c.directory for c in missing}
    for directory, mtime in finished.items():
        assert (directory / "cell.json").stat().st_mtime_ns == mtime  # never redone
    before, after = batch_sizes(cells), batch_sizes(missing)
    for got, expected in zip(cells, plan(config, reference), strict=True):
        key = got.directory.parts[-3:]
        assert_cell_equal(got, expected, exact=after.get(key, before[key]) == before[key])


def test_a_batch_cut_short_is_retrained_bit_identically(uninterrupted_batched, tmp_path):
    """The second cell of every two-model batch lost: they are retrained together, in batches
    of two of another composition, and come out bit-identical."""
    config, reference = uninterrupted_batched
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    lost = plan(config, out)[1::2]
    for cell in lost:
        shutil.rmtree(cell.directory)
    redone = execute(config, out, progress=False)
    assert {c.directory for c in redone} == {c.directory for c in lost}
    for got, expected in zip(plan(config, out), plan(config, reference), strict=True):
        assert_cell_equal(got, expected)


def retrain_one_cell_alone(config, reference, out):
    """Lose baseline moons/1, line/0 and line/1: resumed as [moons/1, line/0] and [line/1], so
    line/1 is retrained alone where it was trained beside line/0. Returns (got, expected)."""
    shutil.copytree(reference, out)
    cells = plan(config, out)
    for cell in cells[1:4]:
        shutil.rmtree(cell.directory)
    execute(config, out, progress=False)
    return cells[3], plan(config, reference)[3]


def test_a_cell_retrained_alone_equals_its_batched_original(uninterrupted_batched, tmp_path):
    config, reference = uninterrupted_batched
    assert_cell_equal(*retrain_one_cell_alone(config, reference, tmp_path / "out"), exact=False)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="a model trained in a batch of 1 differs in the last bits from the same model "
    "trained in a batch of 2 (baddbmm rounds differently), so a cut batch resumed in a smaller "
    "batch is equal only to float rounding; exact resume needs the same batch composition",
)
def test_a_cell_retrained_alone_is_bit_identical(uninterrupted_batched, tmp_path):
    config, reference = uninterrupted_batched
    assert_cell_equal(*retrain_one_cell_alone(config, reference, tmp_path / "out"))


def test_truncated_file_is_redone_and_changed_run_only_invalidates_itself(tmp_path):
    (tmp_path / "exp.toml").write_text(TINY.replace("num_steps = 300", "num_steps = 20"))
    config = load_experiment(tmp_path / "exp.toml")
    out = tmp_path / "out"
    execute(config, out, progress=False)
    victim = results.cell_dir(out, "baseline", "moons", 1)
    samples = victim / "samples.npy"
    samples.write_bytes(samples.read_bytes()[:50])  # as if a write had been cut off
    assert [(c.run.name, c.dataset, c.seed) for c in execute(config, out, progress=False)] == [
        ("baseline", "moons", 1)
    ]
    changed = load_experiment(tmp_path / "exp.toml", ["runs.gated.model.gate=enhanced"])
    assert {c.run.name for c in execute(changed, out, progress=False)} == {"gated"}
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
    assert execute(later, tmp_path / "out", progress=False) == []
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
