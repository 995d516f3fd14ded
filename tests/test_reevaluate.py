"""Changing only eval settings evaluates finished cells again from their saved EMA weights.

A cell trained once and evaluated again under new eval settings must equal, bit for bit, the
cell a fresh run with those settings makes (same sampling streams, same metrics, the same
ground truth); its losses, training time and eval_loss are those of its training. Weights
that are missing, changed or unusable, a changed train setting, or a record without a training
key mean training again.
"""

import json
import logging
import pickle
import shutil

import numpy as np
import pytest
from tiny_experiments import load_tiny

from lowdiff import cells, engine, ownership, results
from lowdiff.executors import LocalExecutor
from lowdiff.experiments import Pack, execute, plan

TINY = """\
[experiment]
name = "tiny"
datasets = ["moons", "line"]
seeds = [0]
num_points = 400
oracle_draws = 1
max_models_per_batch = 4
[train]
num_steps = 20
batch_size = 32
[eval]
num_samples = 150
field_resolution = 4
process_snapshots = 2
process_points = 50
ground_truth = false
[model]
hidden_dim = 16
embedding_dim = 8
[runs.baseline]
"""
SAMPLER = ['eval.sampler="ddim"']
WALL_CLOCK = ("training_time", "inference_time")


def experiment(folder, overrides=()):
    return load_tiny(folder, TINY, overrides)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A finished tiny results directory (tests copy it before changing it)."""
    folder = tmp_path_factory.mktemp("made")
    execute(experiment(folder), folder / "out", progress=False)
    return folder / "out"


@pytest.fixture
def copy(made, tmp_path):
    shutil.copytree(made, tmp_path / "out")
    return tmp_path / "out"


def trained(monkeypatch, forbid=False):
    """The models each Trainer.run trains from now on (forbid: training fails the test)."""
    labels = []
    original = engine.Trainer.run

    def run(self, *args, **kwargs):
        assert not forbid, f"trained {[m.label() for m in self.members]}"
        labels.extend(member.label() for member in self.members)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(engine.Trainer, "run", run)
    return labels


def record(root, dataset):
    return json.loads((root / "baseline" / dataset / "seed_0" / "cell.json").read_text())


def contents(cell):
    """Every array a cell holds, by file:array."""
    arrays = {}
    for name in results.read_cell(cell.directory, cell.config_hash)["files"]:
        path = cell.directory / name
        if name.endswith(".npz"):
            arrays |= {f"{name}:{k}": v for k, v in results.read_npz(path).items()}
        else:
            arrays[name] = results.read_npy(path)
    return arrays


@pytest.mark.parametrize(
    "overrides",
    [
        [*SAMPLER, "eval.ground_truth=true", "eval.ground_truth_points=50", "eval.ode_points=16"],
        ["eval.num_samples=120", "eval.knn_k=4", "eval.sample_repeats=2"],
    ],
    ids=["sampler", "num_samples"],
)
def test_eval_change_is_evaluated_again_and_equals_a_fresh_run(
    copy, made, tmp_path, monkeypatch, overrides
):
    changed = experiment(tmp_path, overrides)
    saved = {p: p.read_bytes() for p in copy.rglob("*") if p.name in cells.SAVED}
    with monkeypatch.context() as patch:
        trained(patch, forbid=True)
        done = execute(changed, copy, progress=False)
    assert len(done) == 2 and done.ok
    assert {p: p.read_bytes() for p in saved} == saved  # losses and weights left as they were
    execute(changed, tmp_path / "fresh", progress=False)
    for got, fresh in zip(plan(changed, copy), plan(changed, tmp_path / "fresh"), strict=True):
        again = results.read_cell(got.directory, got.config_hash)
        expected = results.read_cell(fresh.directory, fresh.config_hash)
        original = record(made, got.dataset)
        for key in ("config_hash", "training_hash", "eval_settings", "status"):
            assert again[key] == expected[key], key
        assert again["files"].keys() == expected["files"].keys()
        metrics = {k: v for k, v in again["metrics"].items() if k not in WALL_CLOCK}
        assert metrics == {k: v for k, v in expected["metrics"].items() if k not in WALL_CLOCK}
        assert again["metrics"]["training_time"] == original["metrics"]["training_time"]
        assert again["batch"]["training_time"] == original["batch"]["training_time"]
        assert again["evaluation_batch"]["models"] == 2
        got_arrays, fresh_arrays = contents(got), contents(fresh)
        assert got_arrays.keys() == fresh_arrays.keys()
        for key, value in fresh_arrays.items():
            assert np.array_equal(got_arrays[key], value), key


def test_the_change_is_named_before_and_while_evaluating(copy, tmp_path, caplog):
    changed = experiment(tmp_path, SAMPLER)
    assert ownership.claim(changed, copy) == [
        "run 'baseline': re-evaluating 2 finished cell(s) (moons/seed 0, line/seed 0) from "
        "their saved weights because eval.sampler: 'ancestral' -> 'ddim'"
    ]
    assert ownership.claim(changed, copy, force=True)[0].startswith(
        "run 'baseline': replacing 2 finished cell(s)"
    )
    with caplog.at_level(logging.INFO, logger="lowdiff"):
        execute(changed, copy, progress=False)
    assert (
        "re-evaluating 2 cells from saved weights (eval settings changed: "
        "eval.sampler: 'ancestral' -> 'ddim')" in caplog.text
    )


def flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda cell: flip_a_byte(cell / "model_ema.npz"), "content hash"),
        (lambda cell: (cell / "model_ema.npz").unlink(), "model_ema.npz is not there"),
        (lambda cell: flip_a_byte(cell / "losses.npy"), "content hash"),
    ],
    ids=["weights-changed", "weights-removed", "losses-changed"],
)
def test_unusable_saved_weights_are_trained_again_with_a_warning(
    copy, made, tmp_path, monkeypatch, caplog, damage, why
):
    damage(copy / "baseline" / "moons" / "seed_0")
    labels = trained(monkeypatch)
    execute(experiment(tmp_path, SAMPLER), copy, progress=False)
    assert labels == ["moons/seed 0"]
    assert "baseline moons/seed 0: training it again" in caplog.text and why in caplog.text
    assert "evaluation_batch" not in record(copy, "moons")
    assert "evaluation_batch" in record(copy, "line")
    ema = copy / "baseline" / "moons" / "seed_0" / "model_ema.npz"
    original = results.read_npz(made / "baseline" / "moons" / "seed_0" / "model_ema.npz")
    assert all(np.array_equal(results.read_npz(ema)[k], v) for k, v in original.items())


def test_a_changed_train_setting_trains_again(copy, tmp_path, monkeypatch, caplog):
    labels = trained(monkeypatch)
    execute(experiment(tmp_path, [*SAMPLER, "train.num_steps=21"]), copy, progress=False)
    assert sorted(labels) == ["line/seed 0", "moons/seed 0"]
    assert "re-evaluating" not in caplog.text
    assert results.read_npy(copy / "baseline" / "moons" / "seed_0" / "losses.npy").shape == (21,)


def test_a_record_without_a_training_key_is_trained_again(copy, tmp_path, monkeypatch):
    path = copy / "baseline" / "line" / "seed_0" / "cell.json"
    old = json.loads(path.read_text())
    del old["training_hash"]  # as written before training keys were recorded
    path.write_text(json.dumps(old))
    labels = trained(monkeypatch)
    execute(experiment(tmp_path, SAMPLER), copy, progress=False)
    assert labels == ["line/seed 0"]
    assert "training_hash" in record(copy, "line")


def test_eval_loss_measured_otherwise_means_training_again(copy, tmp_path, monkeypatch, caplog):
    """eval_loss needs the online weights (not saved): passes of another size of the training
    points draw other t and eps, so chunk_size below num_points trains again; above, the one
    pass is the same and the cells are evaluated again."""
    labels = trained(monkeypatch)
    execute(experiment(tmp_path, [*SAMPLER, "eval.chunk_size=5000"]), copy, progress=False)
    assert labels == []
    execute(experiment(tmp_path, [*SAMPLER, "eval.chunk_size=100"]), copy, progress=False)
    assert labels == []  # only chunk_size changed: not in the key, nothing to redo
    execute(experiment(tmp_path, ["eval.chunk_size=100"]), copy, progress=False)
    assert sorted(labels) == ["line/seed 0", "moons/seed 0"]
    assert "eval_loss was measured in passes of 400 points, now 100" in caplog.text


def test_a_cell_cut_short_while_evaluated_again_is_evaluated_again(copy, tmp_path, monkeypatch):
    """Killed between its new samples and its cell.json: the record still vouches for its
    losses and weights, so the next run evaluates it again instead of training it."""
    changed = experiment(tmp_path, SAMPLER)
    cell = plan(changed, copy)[0]
    np.save(cell.directory / "samples.npy", np.zeros((150, 2), np.float32))  # new, uncommitted
    assert not cells.is_done(cell)
    trained(monkeypatch, forbid=True)
    execute(changed, copy, progress=False)
    assert cells.is_done(cell)


def test_the_report_times_sampling_by_the_batch_that_sampled():
    record = {
        "batch": {"models": 4, "training_time": 8.0, "inference_time": 2.0},
        "evaluation_batch": {"models": 2, "inference_time": 1.0},
    }
    assert cells.batch_of(record, "training_time")["models"] == 4
    assert cells.batch_of(record, "inference_time") == record["evaluation_batch"]
    assert cells.batch_of({"batch": record["batch"]}, "inference_time")["models"] == 4


def test_an_executor_evaluates_the_packs_again(copy, tmp_path, monkeypatch):
    """The packs to evaluate again go through `executor.map` like any pack (picklable)."""
    changed = experiment(tmp_path, SAMPLER)
    trained(monkeypatch, forbid=True)
    done = execute(changed, copy, progress=False, executor=LocalExecutor())
    assert done.ok and all(cells.is_done(cell) for cell in plan(changed, copy))
    pack = Pack("baseline", tuple(plan(changed, copy)), reevaluate=True)
    assert pickle.loads(pickle.dumps(pack)) == pack
