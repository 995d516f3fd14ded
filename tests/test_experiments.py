"""Running experiments: cells written atomically, resume after kill -9, reuse, invalidation."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import pytest

from lowdiff import cells, experiments, results, summary
from lowdiff.config import load_experiment
from lowdiff.experiments import Pack, execute, plan, plan_packs
from lowdiff.report import write_report

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
ground_truth = false  # tests/test_ground_truth.py measures it
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


BATCHED = TINY.replace("max_models_per_batch = 1", "max_models_per_batch = 2")
WALL_CLOCK = {"training_time", "inference_time"}
# The ground truth is off in these experiments; that its values (the ODE likelihood to the
# solver's tolerance) do not depend on batch-mates either is pinned in tests/test_faults.py.


def cell_contents(cell):
    """A finished cell's record (its wall clocks left out) and every array it holds."""
    record = results.read_cell(cell.directory, cell.config_hash)
    assert record is not None, cell.directory
    record["metrics"] = {k: v for k, v in record["metrics"].items() if k not in WALL_CLOCK}
    arrays = {}
    for path in sorted(cell.directory.iterdir()):
        if path.suffix == ".npy":
            arrays[path.name] = np.load(path, allow_pickle=False)
        elif path.suffix == ".npz":
            for key, value in results.read_npz(path).items():
                arrays[f"{path.name}:{key}"] = value
    return {k: record[k] for k in ("config_hash", "run", "dataset", "seed", "metrics")}, arrays


def assert_cell_equal(got, expected, exact=True):
    """Bit-identical (exact) or equal to float rounding: record, metrics and arrays."""
    (record, arrays), (expected_record, expected_arrays) = (
        cell_contents(got),
        cell_contents(expected),
    )
    metrics, expected_metrics = record.pop("metrics"), expected_record.pop("metrics")
    assert record == expected_record and arrays.keys() == expected_arrays.keys(), got.directory
    assert metrics.keys() == expected_metrics.keys(), got.directory
    if exact:
        assert metrics == expected_metrics, got.directory
    else:
        assert metrics == pytest.approx(expected_metrics, rel=1e-6, abs=1e-9), got.directory
    for key, value in expected_arrays.items():
        if exact:
            assert np.array_equal(arrays[key], value), (got.directory, key)
        else:
            np.testing.assert_allclose(arrays[key], value, rtol=1e-5, atol=1e-6)


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
    whatever batch its resume trains it in (at one thread a cell's bits do not depend on its
    batch-mates: see docs/protocol.md).
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
        "--threads",
        "1",
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
    all_cells = plan(config, out)
    missing = [c for c in all_cells if c.directory not in finished]
    redone = execute(config, out, progress=False)
    assert {c.directory for c in redone} == {c.directory for c in missing}
    for directory, mtime in finished.items():
        assert (directory / "cell.json").stat().st_mtime_ns == mtime  # never redone
    for got, expected in zip(all_cells, plan(config, reference), strict=True):
        assert_cell_equal(got, expected)


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
    lost = plan(config, out)[1:4]
    for cell in lost:
        shutil.rmtree(cell.directory)
    execute(config, out, progress=False)
    return lost[2], plan(config, reference)[3]


def test_a_cell_retrained_alone_equals_its_batched_original(uninterrupted_batched, tmp_path):
    config, reference = uninterrupted_batched
    assert_cell_equal(*retrain_one_cell_alone(config, reference, tmp_path / "out"), exact=False)


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

    from lowdiff.cells import cell_hash

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


SMALL = """\
[experiment]
name = "small"
datasets = ["moons", "line"]
seeds = [0, 1]
num_points = 500
oracle_draws = 1
max_models_per_batch = 3
[train]
num_steps = 20
batch_size = 32
[eval]
num_samples = 200
field_resolution = 4
ground_truth = false
[model]
hidden_dim = 32
embedding_dim = 16
[runs.baseline]
"""


def small(tmp_path, extra=""):
    (tmp_path / "exp.toml").write_text(SMALL + extra)
    return load_experiment(tmp_path / "exp.toml")


def test_packs_hold_the_missing_cells_of_one_run_within_the_batch_size(tmp_path):
    config = small(tmp_path, "[runs.wide]\nmodel = { hidden_dim = 48 }\n")
    out = tmp_path / "out"
    packs = plan_packs(config, out)
    assert [(p.run, len(p.cells)) for p in packs] == [
        ("baseline", 3),
        ("baseline", 1),
        ("wide", 3),
        ("wide", 1),
    ]
    assert [c for p in packs for c in p.cells] == plan(config, out)
    assert pickle.loads(pickle.dumps(packs)) == packs  # sent to worker processes
    assert pickle.loads(pickle.dumps(config)) == config  # with run_pack's other arguments
    execute(config, out, progress=False)
    assert plan_packs(config, out) == []
    victim = plan(config, out)[5]
    (victim.directory / "cell.json").unlink()
    assert plan_packs(config, out) == [Pack("wide", (victim,))]
    assert len(plan_packs(config, out, force=True)) == 4


def test_a_repeated_run_is_trained_once_and_copied_once(tmp_path, monkeypatch):
    config = small(tmp_path, "[runs.again]\n")
    out = tmp_path / "out"
    assert {p.run for p in plan_packs(config, out)} == {"baseline"}
    copies = []
    copy = cells.copy
    monkeypatch.setattr(cells, "copy", lambda s, t: (copies.append((s.key, t.key)), copy(s, t)))
    made = execute(config, out, progress=False)
    assert sorted(copies) == sorted(
        (("baseline", d, s), ("again", d, s)) for d in ("moons", "line") for s in (0, 1)
    )
    assert len(made) == 8 and made.ok
    for cell in plan(config, out)[:4]:
        twin = cell.directory.parent.parent.parent / "again" / cell.dataset / f"seed_{cell.seed}"
        assert (twin / "samples.npy").read_bytes() == (cell.directory / "samples.npy").read_bytes()
    copies.clear()
    assert len(execute(config, out, progress=False)) == 0 and copies == []


def test_a_diverging_run_is_recorded_and_the_others_still_run(tmp_path):
    extra = (
        "[runs.boom]\ntrain = { learning_rate = 1e30 }\n[runs.after]\nmodel = { hidden_dim = 48 }\n"
    )
    config = small(tmp_path, extra)
    out = tmp_path / "out"
    executed = execute(config, out, progress=False)
    assert {c.run for c in executed.diverged} == {"boom"} and len(executed.diverged) == 4
    assert not executed.ok and len(executed) == 12
    for cell in plan(config, out):
        found = cells.read(cell)
        if cell.run == "boom":
            assert found.status == "diverged" and 0 <= found.diverged_at_step < 20
            assert found.record["metrics"] == {} and not (cell.directory / "samples.npy").exists()
        else:
            assert found.status == "finished" and np.isfinite(
                found.record["metrics"]["kl_divergence"]
            )
    info = json.loads((out / "boom" / "final_info.json").read_text())
    assert set(info["moons"]["diverged"]) == {"0", "1"} and info["moons"]["means"] == {}
    assert len(execute(config, out, progress=False)) == 0  # diverged counts as done
    assert "diverged at step" in (write_report(out).read_text())


def test_batch_mates_of_a_model_that_diverged_are_evaluated_and_kept(tmp_path, monkeypatch):
    config = small(tmp_path)
    out = tmp_path / "out"
    (pack, _) = plan_packs(config, out)
    train = experiments.Trainer.run

    def contained(self, progress=None, checkpoint=None):  # contains divergence (model 1)
        result = train(self, progress, checkpoint)
        result.diverged = {1: 7}
        return result

    monkeypatch.setattr(experiments.Trainer, "run", contained)
    experiments.run_pack(config, out, pack, progress=False)
    statuses = [cells.read(cell).status for cell in pack.cells]
    assert statuses == ["finished", "diverged", "finished"]
    assert cells.read(pack.cells[1]).diverged_at_step == 7


@dataclass
class Outcome:
    name: str
    ok: bool
    error: str | None = None
    attempts: int = 1


class InProcess:
    """An executor running each item here, failing the items named in `fail`."""

    def __init__(self, fail=()):
        self.fail, self.names = set(fail), []

    def map(self, fn, items, *, names):
        outcomes = []
        for item, name in zip(items, names, strict=True):
            self.names.append(name)
            if name in self.fail:
                outcomes.append(Outcome(name, False, "worker lost"))
                continue
            fn(item)
            outcomes.append(Outcome(name, True))
        return outcomes


def test_an_executor_runs_the_packs_and_failures_are_named(tmp_path):
    config = small(tmp_path)
    execute(config, tmp_path / "local", progress=False)
    executor = InProcess()
    executed = execute(config, tmp_path / "mapped", progress=False, executor=executor)
    assert executor.names == [p.name for p in plan_packs(config, tmp_path / "local", force=True)]
    assert executed.ok and len(executed) == 4
    for cell in plan(config, tmp_path / "local"):
        twin = tmp_path / "mapped" / cell.run / cell.dataset / f"seed_{cell.seed}"
        assert (twin / "samples.npy").read_bytes() == (cell.directory / "samples.npy").read_bytes()
    first = plan_packs(config, tmp_path / "failing")[0]
    failing = InProcess(fail={first.name})
    executed = execute(config, tmp_path / "failing", progress=False, executor=failing)
    assert executed.failed == [(first.name, "worker lost")]
    assert len(executed) == 1 and not executed.ok


def test_the_reverse_process_is_written_when_the_sampler_snapshots_it(tmp_path, monkeypatch):
    config = small(tmp_path)
    out = tmp_path / "out"
    pack = plan_packs(config, out)[0]
    draw = experiments.sample

    def snapshotting(*args, **kwargs):  # a sampler with C2 snapshots: (M, P, n, 2)
        drawn = draw(*args, **kwargs)
        drawn.snapshot_timesteps = np.array([99, 50, -1])
        drawn.snapshots = np.stack([drawn.points[:, :10]] * 3, axis=1)
        return drawn

    monkeypatch.setattr(experiments, "sample", snapshotting)
    experiments.run_pack(config, out, pack, progress=False)
    loaded = summary.read(config, out)
    for cell in pack.cells:
        process = loaded.cells[cell.key].process
        assert process["timesteps"].tolist() == [99, 50, -1]
        assert process["points"].shape == (3, 10, 2)
        np.testing.assert_array_equal(process["points"][-1], loaded.cells[cell.key].samples[:10])
