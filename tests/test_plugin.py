"""Plugin denoisers: a plain single-model nn.Module trained M at a time (lowdiff.models.plugin).

The reference is the built-in `mlp` architecture, whose conformance to the protocol is pinned in
tests/conformance: examples/plugin/mlp.py is the same network written as a plain module, its
layers created in the built-in's order, so the two draw the same initial weights from a model's
"init" stream (checked exactly) and train to the same losses (within 1e-5 relative over 200
steps; float rounding of the different summation orders gives ~2e-7).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lowdiff import data
from lowdiff.cells import cell_hash
from lowdiff.config import ConfigError, check_plugins, load_experiment
from lowdiff.engine import Member, Trainer, stream_generators
from lowdiff.models import build_model
from lowdiff.models.plugin import PluginError, check_plugin
from lowdiff.samplers import SAMPLERS, sample
from lowdiff.schedule import NoiseSchedule
from lowdiff.settings import ModelConfig, ScheduleConfig, TrainConfig

CPU = torch.device("cpu")
EXAMPLE = Path(__file__).parents[1] / "examples" / "plugin" / "mlp.py"
WIDTHS = {"embedding_dim": 16, "hidden_dim": 32}
MEMBERS = [Member("moons", 0), Member("dino", 3), Member("moons", 5)]


def plugin_config(**options: object) -> ModelConfig:
    return ModelConfig(
        arch=f"{EXAMPLE.name}:MLP", options={**WIDTHS, **options}, plugin_root=str(EXAMPLE.parent)
    )


def train(config: ModelConfig, members: list[Member], steps: int = 200) -> object:
    datasets = {name: torch.from_numpy(data.load(name, 600)) for name in ("moons", "dino")}
    schedule = NoiseSchedule(ScheduleConfig())
    trainer = Trainer(
        config, members, datasets, schedule, TrainConfig(num_steps=steps, batch_size=64), CPU
    )
    return trainer.run()


def test_initial_weights_are_the_built_in_mlps_drawn_from_each_models_stream():
    plugin, built_in = (
        build_model(plugin_config(), 3, 100),
        build_model(ModelConfig(**WIDTHS), 3, 100),
    )
    plugin.reset_parameters([stream_generators(m, CPU)["init"] for m in MEMBERS])
    built_in.reset_parameters([stream_generators(m, CPU)["init"] for m in MEMBERS])
    assert torch.equal(plugin.input__weight, built_in.network.input.weight.transpose(1, 2))
    assert torch.equal(plugin.output__bias, built_in.network.output.bias.squeeze(1))
    assert not torch.equal(plugin.input__weight[0], plugin.input__weight[1])  # own seeds


def test_the_plain_mlp_trains_like_the_built_in_mlp():
    plugin = train(plugin_config(), MEMBERS)
    built_in = train(ModelConfig(**WIDTHS), MEMBERS)
    np.testing.assert_allclose(plugin.losses, built_in.losses, rtol=1e-5)
    assert plugin.losses[:, -20:].mean() < plugin.losses[:, :20].mean()  # it does learn


def test_a_plugin_models_bits_do_not_depend_on_its_batch_mates():
    """At one thread a model trained in a batch of three has the bits it has alone."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        batch = train(plugin_config(), MEMBERS, steps=120)
        alone = train(plugin_config(), MEMBERS[1:2], steps=120)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(batch.losses[1], alone.losses[0])
    for (name, together), (_, single) in zip(
        batch.ema_model.named_parameters(), alone.ema_model.named_parameters(), strict=True
    ):
        assert torch.equal(together[1], single[0]), name


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_runs_a_plugin_model_per_model(sampler):
    model = build_model(plugin_config(), 2, 100)
    model.reset_parameters([torch.Generator().manual_seed(s) for s in (0, 1)])
    generators = [torch.Generator().manual_seed(s) for s in (7, 8)]
    drawn = sample(
        model,
        NoiseSchedule(ScheduleConfig()),
        generators,
        CPU,
        num_samples=64,
        sampler=sampler,
        sampling_steps=10,
    )
    assert drawn.points.shape == (2, 64, 2) and np.isfinite(drawn.points).all()
    single = build_model(plugin_config(), 1, 100)
    single.reset_parameters([torch.Generator().manual_seed(1)])
    alone = sample(
        single,
        NoiseSchedule(ScheduleConfig()),
        [torch.Generator().manual_seed(8)],
        CPU,
        num_samples=64,
        sampler=sampler,
        sampling_steps=10,
    )
    np.testing.assert_allclose(drawn.points[1], alone.points[0], atol=1e-5)


BAD_CLASSES = {
    "NotAModule": ("class NotAModule:\n    pass\n", "not a torch.nn.Module"),
    "NoForward": ("class NoForward(nn.Module):\n    pass\n", "defines no forward"),
    "WrongShape": (
        "class WrongShape(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.l = nn.Linear(2, 3)\n"
        "    def forward(self, x, t):\n        return self.l(x)\n",
        r"shape \(5, 3\).*expected float \(5, 2\)",
    ),
    "NotATensor": (
        "class NotATensor(nn.Module):\n    def forward(self, x, t):\n        return {'eps': x}\n",
        "returned dict, expected a tensor",
    ),
    "Counter": (
        "class Counter(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.register_buffer('calls', torch.zeros(1))\n"
        "    def forward(self, x, t):\n        self.calls += 1\n        return x\n",
        "forward changed buffer 'calls'",
    ),
    "DataDependent": (
        "class DataDependent(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.l = nn.Linear(2, 2)\n"
        "    def forward(self, x, t):\n        return self.l(x) * float(t.max().item())\n",
        "cannot be batched over models with torch.func.vmap",
    ),
    "Crashes": (
        "class Crashes(nn.Module):\n"
        "    def forward(self, x, t):\n        return x @ torch.ones(3, 2)\n",
        r"forward\(x \(B, 2\), t \(B,\)\) failed: RuntimeError",
    ),
}


@pytest.mark.parametrize("name", BAD_CLASSES)
def test_a_class_that_cannot_be_trained_is_refused_in_one_line(tmp_path, name):
    source, message = BAD_CLASSES[name]
    (tmp_path / "bad.py").write_text(f"import torch\nfrom torch import nn\n\n{source}")
    config = ModelConfig(arch=f"bad.py:{name}", plugin_root=str(tmp_path))
    with pytest.raises(PluginError, match=message) as error:
        check_plugin(config, 100)
    assert "\n" not in str(error.value)


EXPERIMENT = """
[experiment]
name = "p"
datasets = ["moons"]
seeds = [0]
[runs.mine]
model = { arch = "ARCH", options = { hidden_dim = 32 } }
"""


def experiment(tmp_path: Path, arch: str) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(EXPERIMENT.replace("ARCH", arch))
    return path


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ("missing.py:MLP", "plugin file .*missing.py' not found"),
        ("no_such_package.module:MLP", "module 'no_such_package.module' not found"),
        ("mlp.py:", "expected 'path/to/file.py:ClassName'"),
        ("mlp.py:Nope", "no class 'Nope'"),
    ],
)
def test_a_plugin_that_cannot_be_found_is_a_config_error(tmp_path, arch, message):
    shutil.copy(EXAMPLE, tmp_path / "mlp.py")
    with pytest.raises(ConfigError, match=message):
        check_plugins(load_experiment(experiment(tmp_path, arch)))


def test_relative_paths_resolve_against_the_experiment_files_folder(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    shutil.copy(EXAMPLE, tmp_path / "models" / "mlp.py")
    monkeypatch.chdir(Path(__file__).parent)  # not the experiment's folder
    config = load_experiment(experiment(tmp_path, "models/mlp.py:MLP"))
    assert config.runs[0].model.plugin_root == str(tmp_path.resolve())
    check_plugins(config)


def test_a_module_path_plugin_is_found_on_the_import_path(tmp_path, monkeypatch):
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    shutil.copy(EXAMPLE, package / "nets.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = load_experiment(experiment(tmp_path, "mypkg.nets:MLP"))
    check_plugins(config)
    assert config.runs[0].model.plugin_hash == data_hash(package / "nets.py")


def data_hash(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_cell_key_follows_the_plugin_files_content_class_and_options(tmp_path):
    shutil.copy(EXAMPLE, tmp_path / "mlp.py")

    def key(arch: str = "mlp.py:MLP") -> str:
        config = load_experiment(experiment(tmp_path, arch))
        return cell_hash(config, config.runs[0], "moons", 0)

    first = key()
    assert key() == first
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copy(EXAMPLE, moved / "mlp.py")
    assert key("elsewhere/mlp.py:MLP") != first  # the path as written is part of the key
    (tmp_path / "mlp.py").write_text(EXAMPLE.read_text() + "\n# changed\n")
    assert key() != first
    (tmp_path / "exp.toml").write_text(EXPERIMENT.replace("ARCH", "mlp.py:MLP").replace("32", "16"))
    changed = load_experiment(tmp_path / "exp.toml")
    assert cell_hash(changed, changed.runs[0], "moons", 0) != key()


def test_the_folder_of_the_plugin_is_not_in_the_cell_key(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(EXAMPLE, tmp_path / folder / "mlp.py")
    keys = []
    for folder in ("a", "b"):
        config = load_experiment(experiment(tmp_path / folder, "mlp.py:MLP"))
        keys.append(cell_hash(config, config.runs[0], "moons", 0))
    assert keys[0] == keys[1]


def test_built_in_options_do_not_apply_to_a_plugin_nor_plugin_options_to_a_built_in():
    with pytest.raises(ValueError, match="does not apply"):
        ModelConfig(arch="mlp.py:MLP", hidden_dim=64)
    with pytest.raises(ValueError, match="does not apply"):
        ModelConfig(arch="mlp", options={"hidden_dim": 64})


def test_the_shipped_plugin_example_runs_end_to_end(tmp_path):
    """examples/plugin/: a plain nn.Module and a CSV of points through `lowdiff run`, tiny."""
    from lowdiff.cli import main

    tiny = [
        "train.num_steps=20",
        "train.batch_size=32",
        "eval.num_samples=64",
        "eval.process_snapshots=0",
        "eval.ground_truth=false",
        "experiment.num_points=200",
        "experiment.seeds=[0]",
        "experiment.oracle_draws=1",
        "runs.mine.model.options.hidden_dim=16",
        "runs.baseline.model.hidden_dim=16",
    ]
    example = EXAMPLE.parent / "experiment.toml"
    arguments = [f"--set={assignment}" for assignment in tiny]
    assert main(["run", str(example), "--out", str(tmp_path), "--quiet", *arguments]) == 0
    for run in ("baseline", "mine"):
        for dataset in ("hexagon", "moons"):
            record = json.loads((tmp_path / run / dataset / "seed_0" / "cell.json").read_text())
            assert record["metrics"]["num_modes"] == (6 if dataset == "hexagon" else 2)
    report = (tmp_path / "report.md").read_text()
    assert "mlp.py:MLP" in report and "smoothed bootstrap" in report
    assert (tmp_path / "figures" / "generated_images.png").exists()
