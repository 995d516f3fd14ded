"""One reader: final_info.json and the report count the same cells; floors per (samples, k);
reading a results folder (and `lowdiff report`) never imports torch."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lowdiff import cells, data, oracle, results, summary
from lowdiff.config import resolve
from lowdiff.metrics import load_reference, measure

SRC = Path(__file__).parent.parent / "src"

RAW = {
    "experiment": {
        "name": "made",
        "datasets": ["moons", "line"],
        "seeds": [0, 1],
        "num_points": 500,
        "oracle_draws": 1,
    },
    "train": {"num_steps": 30},
    "eval": {"num_samples": 200},
    "runs": {"baseline": {}, "wide": {"model": {"hidden_dim": 64}}},
}


def write_results(config, root):
    """A results folder as the runner leaves it, without training: noisy true draws as samples."""
    cells.write_configs(config, root)
    values = {}
    for cell in cells.plan(config, root):
        rng = np.random.default_rng(cell.seed)
        samples = data.load(cell.dataset, 200, seed=10 + cell.seed) + rng.normal(0, 0.05, (200, 2))
        truth = load_reference(cell.dataset, config.experiment.num_points)
        metrics = measure(samples.astype(np.float32), truth, 5)
        losses = np.linspace(1.0, 0.3, 30, dtype=np.float32) + 0.01 * cell.seed
        metrics |= {"eval_loss": float(losses[-1]), "training_time": 1.0, "inference_time": 0.1}
        arrays = {"losses.npy": losses, "samples.npy": samples.astype(np.float32)}
        cells.write_finished(cell, arrays, metrics, {"models": 1, "device": "cpu"})
        values[cell.key] = metrics
    truths = {
        d: load_reference(d, config.experiment.num_points) for d in config.experiment.datasets
    }
    oracle.write_floors(config, truths, root)
    summary.write_final_info(config, root)
    return values


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("made")
    config = resolve(RAW)
    return config, root, write_results(config, root)


def test_final_info_is_the_mean_of_the_cells(made):
    config, root, values = made
    info = json.loads((root / "wide" / "final_info.json").read_text())
    assert set(info) == {"moons", "line"}
    kl = [values[("wide", "line", seed)]["kl_divergence"] for seed in (0, 1)]
    assert info["line"]["per_seed"]["kl_divergence"] == {"0": kl[0], "1": kl[1]}
    assert info["line"]["means"]["kl_divergence"] == pytest.approx(np.mean(kl))
    assert info["line"]["stds"]["kl_divergence"] == pytest.approx(np.std(kl, ddof=1))
    assert info["line"]["seeds"] == [0, 1]


def test_stale_and_foreign_cells_never_count_in_final_info_or_report(made, tmp_path):
    config, root, _ = made
    changed = resolve({**RAW, "runs": {**RAW["runs"], "baseline": {"train": {"num_steps": 5}}}})
    summary.write_final_info(changed, root, ["baseline"])
    assert json.loads((root / "baseline" / "final_info.json").read_text()) == {}
    loaded = summary.read(changed, root)
    assert loaded.finished("baseline", "moons") == []
    assert {m.reason for m in loaded.missing} == {cells.STALE}
    assert len(loaded.finished("wide", "moons")) == 2
    # a cell.json of another seed copied over this one (hash of this config) is foreign
    wide = {c.key: c for c in cells.plan(config, root)}
    target = wide[("wide", "moons", 1)]
    copy = tmp_path / "copy"
    results.copy_cell(wide[("wide", "moons", 0)].directory, copy, {})
    record = results.read_json(copy / "cell.json")
    results.write_json(copy / "cell.json", {**record, "config_hash": target.config_hash})
    foreign = summary.read(config, root)
    assert foreign.finished("wide", "moons")[1].seed == 1  # the original still counts
    cells.write_finished(target, {}, {}, {})  # now replaced by the foreign record:
    results.write_json(target.directory / "cell.json", results.read_json(copy / "cell.json"))
    loaded = summary.read(config, root)
    assert [c.seed for c in loaded.finished("wide", "moons")] == [0]
    (missing,) = loaded.missing
    assert missing.reason.startswith("foreign")
    info = summary.final_info(loaded, "wide")
    assert info["moons"]["seeds"] == [0]


def test_a_diverged_cell_is_missing_with_its_step(made, tmp_path):
    config = resolve(RAW)
    root = tmp_path / "r"
    write_results(config, root)
    cell = cells.plan(config, root)[0]
    cells.write_diverged(cell, 12, {"models": 2})
    loaded = summary.read(config, root)
    (missing,) = loaded.missing
    assert (missing.run, missing.dataset, missing.seed) == cell.key
    assert missing.diverged_at_step == 12 and missing.reason == "diverged at step 12"
    assert loaded.diverged("baseline", "moons") == {0: 12}
    info = summary.final_info(loaded, "baseline")
    assert info["moons"]["diverged"] == {"0": 12} and info["moons"]["seeds"] == [1]


def floor_by_hand(dataset, num_points, num_samples, k):
    draw = data.load(dataset, num_samples, seed=1000)  # the one oracle draw
    return measure(draw, load_reference(dataset, num_points), k)


def test_oracle_floors_per_sample_count_and_k(tmp_path):
    raw = {
        **RAW,
        "experiment": {**RAW["experiment"], "datasets": ["moons"]},
        "runs": {"a": {}, "b": {"eval": {"num_samples": 300, "knn_k": 3}}},
    }
    config = resolve(raw)
    oracle.write_floors(config, {"moons": load_reference("moons", 500)}, tmp_path)
    floors = oracle.read_floors(config, tmp_path)
    assert set(floors) == {(200, 5), (300, 3)}
    cells.write_configs(config, tmp_path)
    loaded = summary.load(tmp_path)
    for run, (num_samples, k) in (("a", (200, 5)), ("b", (300, 3))):
        expected = floor_by_hand("moons", 500, num_samples, k)["kl_divergence"]
        assert loaded.oracle_mean("moons", "kl_divergence", run) == pytest.approx(expected)
    assert loaded.oracle_mean("moons", "kl_divergence", "a") != loaded.oracle_mean(
        "moons", "kl_divergence", "b"
    )
    assert loaded.oracle is loaded.oracle_for("a") and loaded.oracle_num_samples == 200
    # another number of draws: the entries are stale and not read
    more = resolve({**raw, "experiment": {**raw["experiment"], "oracle_draws": 2}})
    assert oracle.read_floors(more, tmp_path) == {}


def test_the_single_entry_oracle_file_of_earlier_versions_is_read(tmp_path):
    config = resolve({**RAW, "experiment": {**RAW["experiment"], "datasets": ["moons"]}})
    key = results.config_hash(  # the key earlier versions wrote
        {"n": 500, "m": 200, "k": 5, "draws": 1, "format": results.FORMAT}
    )
    floors = {"moons": {"kl_divergence": {"mean": 0.01, "std": 0.0, "values": [0.01]}}}
    results.write_json(
        tmp_path / "oracle.json", {"key": key, "num_samples": 200, "k": 5, "datasets": floors}
    )
    assert oracle.read_floors(config, tmp_path) == {(200, 5): floors}


NO_TORCH = """\
import sys
class NoTorch:  # any import of torch fails (sys.modules["torch"] = None would upset scipy)
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, NoTorch())
"""


def run_python(code):
    return subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_reading_results_never_imports_torch():
    done = run_python(
        "import sys, lowdiff.report, lowdiff.summary, lowdiff.cells, lowdiff.oracle, lowdiff.cli\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    assert done.returncode == 0, done.stderr


def test_lowdiff_report_runs_with_torch_blocked(made):
    _, root, _ = made
    done = run_python(
        NO_TORCH + f"from lowdiff.cli import main\ncode = main(['report', {str(root)!r}])\n"
        "assert 'torch' not in sys.modules\nsys.exit(code)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "report:" in done.stdout and (root / "report.md").is_file()
    assert "wide" in (root / "report.md").read_text()


def test_an_oracle_floor_missing_a_metric_is_measured_again(tmp_path):
    """A floor written before a metric existed is not current: it is measured again."""
    from lowdiff import oracle
    from lowdiff.config import resolve
    from lowdiff.metrics import load_reference

    config = resolve(
        {
            "experiment": {"name": "o", "datasets": ["moons"], "seeds": [0], "num_points": 300},
            "eval": {"num_samples": 200},
            "runs": {"baseline": {}},
        }
    )
    references = {"moons": load_reference("moons", 300)}
    floors = oracle.write_floors(config, references, tmp_path)
    (pair,) = floors
    assert set(floors[pair]["moons"]) >= oracle.SAMPLE_METRICS
    raw = results.read_json(tmp_path / "oracle.json")
    (entry,) = raw["entries"].values()
    del entry["datasets"]["moons"]["coverage"]
    results.write_json(tmp_path / "oracle.json", raw)
    again = oracle.write_floors(config, references, tmp_path)
    assert "coverage" in again[pair]["moons"]
