"""`lowdiff evaluate` (any points, with oracle floors and verdicts) and `lowdiff export-model`
(a cell's EMA weights as a plain single-model safetensors state dict)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lowdiff import api, data
from lowdiff.cli import main
from lowdiff.models.reference import PlainMLPDenoiser
from lowdiff.models.single import SingleDenoiser

pytest.importorskip("safetensors", reason="the safetensors extra is not installed")

TINY = [
    "--datasets", "moons", "--seeds", "0", "--quiet",
    "--set", "experiment.num_points=300", "--set", "experiment.oracle_draws=1",
    "--set", "train.num_steps=30", "--set", "train.batch_size=16",
    "--set", "eval.num_samples=60", "--set", "eval.ground_truth=false",
    "--set", "model.hidden_dim=16",
    "--set", "model.embedding_dim=8",
]  # fmt: skip


@pytest.fixture(scope="module")
def cell(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "mlp"
    assert main(["train", "--out", str(out), *TINY]) == 0
    return out / "mlp" / "moons" / "seed_0"


def test_exported_weights_are_a_plain_state_dict_of_the_ema_model(cell, tmp_path, capsys):
    path = tmp_path / "model.safetensors"
    assert main(["export-model", str(cell), "--out", str(path)]) == 0
    assert "SingleDenoiser.from_file" in capsys.readouterr().out
    single = SingleDenoiser.from_file(path)
    trained = api.load(cell)
    x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    t = np.arange(50) % 100
    eps = single(torch.from_numpy(x), torch.from_numpy(t)).detach().numpy()
    np.testing.assert_allclose(eps, trained.denoise(x, t), rtol=0, atol=1e-6)
    # plain: the baseline's state dict maps onto nn.Linear layers written the ordinary way
    from safetensors.torch import load_file

    state = load_file(path)
    plain = PlainMLPDenoiser(embedding_dim=8, hidden_dim=16)
    mapping = {"input": "network.input", "output": "network.output"}
    mapping |= {f"blocks.{i}": f"network.blocks.{i}.linear" for i in range(3)}
    with torch.no_grad():
        for mine, theirs in mapping.items():
            getattr_path = plain.get_submodule(mine)
            getattr_path.weight.copy_(state[f"{theirs}.weight"].T)  # (in, out) -> (out, in)
            getattr_path.bias.copy_(state[f"{theirs}.bias"].reshape(-1))
        reference = plain(torch.from_numpy(x), torch.from_numpy(t)).numpy()
    np.testing.assert_allclose(eps, reference, rtol=0, atol=1e-5)


def test_export_model_refuses_a_wrong_suffix_and_a_foreign_file(cell, tmp_path):
    assert main(["export-model", str(cell), "--out", str(tmp_path / "m.pt")]) == 2
    assert not (tmp_path / "m.pt").exists()
    foreign = tmp_path / "x.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="not a lowdiff model export"):
        SingleDenoiser.from_file(foreign)


def test_evaluate_prints_every_metric_with_floor_and_verdict(tmp_path, capsys):
    true = tmp_path / "true.npy"
    np.save(true, data.load("moons", 1500, seed=7))
    shifted = tmp_path / "shifted.csv"
    np.savetxt(shifted, data.load("moons", 1500, seed=8) + 1.5, delimiter=",", header="x,y")
    args = ["--dataset", "moons", "--num-points", "5000"]
    assert main(["evaluate", str(true), *args]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "at the oracle floor" in lines["KL"] and "floor" in lines["W2"]
    expected = api.evaluate(np.load(true), "moons", num_points=5000)["kl_divergence"]
    assert f"{expected:.3f}" in lines["KL"]
    assert main(["evaluate", str(shifted), *args]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "short of the oracle floor" in lines["KL"] and "short" in lines["W2"]


@pytest.mark.parametrize(
    "content, message", [("1,2,3\n4,5,6\n", "shape (N, 2)"), ("a,b\nx,y\n", "not readable")]
)
def test_evaluate_bad_points_get_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "p.csv"
    path.write_text(content)
    assert main(["evaluate", str(path), "--dataset", "moons"]) == 2
    assert message in capsys.readouterr().err
