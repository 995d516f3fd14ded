"""Ground truth against closed forms: a Gaussian's Bayes floor and its exact ODE likelihood."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lowdiff import data, results, truth
from lowdiff.cli import main
from lowdiff.ground_truth import (
    ContinuousSchedule,
    excess_by_timestep,
    model_eps,
    ode_log_likelihood,
)
from lowdiff.remeasure import remeasure
from lowdiff.schedule import NoiseSchedule, ScheduleConfig

GROUND_TRUTH_METRICS = ("excess_eval_loss", "ode_nll_bits", "ode_kl_bits", "sample_log_density")

MU, STD = np.array([0.5, -1.0]), 0.3  # the test law: N(MU, STD² I)
ALPHA_BAR = NoiseSchedule(ScheduleConfig(), torch.device("cpu")).alpha_bar64.numpy()


def _gaussian_sampler(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (MU + STD * rng.normal(size=(n, 2))).astype(np.float32), np.zeros(n, dtype=np.int64)


@pytest.fixture
def gaussian(monkeypatch) -> str:
    """A registered dataset N(MU, STD² I) with its law (a one-component mixture)."""
    spec = data.get_dataset("ring8")
    name = "test_gaussian"
    monkeypatch.setitem(
        data.DATASETS,
        name,
        data.DatasetSpec(name, "N(mu, s²I)", _gaussian_sampler, spec.components),
    )
    law = truth.Mixture(MU[None], np.zeros(1), np.full(2, STD))
    monkeypatch.setitem(truth._LAWS, name, law)
    return name


class GaussianDenoiser(torch.nn.Module):
    """The exact E[eps | x_t] of N(MU, STD² I) at integer t (Ho et al. 2020 eq. 4, literally)."""

    def __init__(self, shift: float = 0.0) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, xt: torch.Tensor, t: int) -> SimpleNamespace:
        alpha, sigma = math.sqrt(ALPHA_BAR[t]), math.sqrt(1 - ALPHA_BAR[t])
        mu = torch.as_tensor(MU, dtype=xt.dtype)
        eps = sigma * (xt - alpha * mu) / (alpha**2 * STD**2 + sigma**2)
        return SimpleNamespace(eps=eps + self.shift)


def test_the_floor_is_the_gaussian_closed_form(gaussian: str) -> None:
    drawn = truth.timestep_draws(gaussian, ALPHA_BAR, 4000)
    # per coordinate: Var(eps | x_t) = ᾱ s² / (ᾱ s² + 1 − ᾱ)
    exact = ALPHA_BAR * STD**2 / (ALPHA_BAR * STD**2 + 1 - ALPHA_BAR)
    per_point = ((drawn.eps_star - drawn.eps) ** 2).mean(axis=2)  # (T, P)
    error = per_point.std(axis=1) / math.sqrt(per_point.shape[1])
    assert (np.abs(drawn.floor - exact) < 5 * error).all()


def test_the_exact_denoiser_has_no_excess_and_a_shifted_one_its_square(gaussian: str) -> None:
    drawn = truth.timestep_draws(gaussian, ALPHA_BAR, 200)
    _, excess = excess_by_timestep(GaussianDenoiser(), [drawn], torch.device("cpu"))
    assert np.abs(excess).max() < 1e-5  # float32 inputs only
    _, shifted = excess_by_timestep(GaussianDenoiser(0.1), [drawn], torch.device("cpu"))
    # E||eps* + 0.1 − eps||² − E||eps* − eps||² = 0.01 + 0.2·E[eps* − eps], per coordinate
    assert shifted.mean() == pytest.approx(0.01, abs=0.004)


def _gaussian_log_likelihood(x: torch.Tensor, schedule: ContinuousSchedule) -> torch.Tensor:
    """The ODE model's exact log-density: the flow is the affine map between the marginals."""
    a0, s0 = schedule.alpha(0), schedule.sigma(0)
    a1, s1 = schedule.alpha(schedule.last), schedule.sigma(schedule.last)
    mu = torch.as_tensor(MU, dtype=x.dtype)
    var0, var1 = a0**2 * STD**2 + s0**2, a1**2 * STD**2 + s1**2
    z = a1 * mu + math.sqrt(var1 / var0) * (x - a0 * mu)
    return -0.5 * (z**2).sum(-1) - math.log(2 * math.pi) + math.log(var1 / var0)


def _level_zero_draws(schedule: ContinuousSchedule, n: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    x0 = torch.as_tensor(MU) + STD * torch.randn(1, n, 2, generator=generator, dtype=torch.float64)
    noise = torch.randn(1, n, 2, generator=generator, dtype=torch.float64)
    return schedule.alpha(0) * x0 + schedule.sigma(0) * noise


@pytest.mark.parametrize("tolerance", [1e-3, 1e-5, 1e-7])
def test_ode_likelihood_of_the_exact_flow_is_the_closed_form(tolerance: float) -> None:
    schedule = ContinuousSchedule(ALPHA_BAR)
    mu = torch.as_tensor(MU)

    def eps(x: torch.Tensor, u: float) -> torch.Tensor:  # exact at every continuous u
        alpha, sigma = schedule.alpha(u), schedule.sigma(u)
        return sigma * (x - alpha * mu) / (alpha**2 * STD**2 + sigma**2)

    x = _level_zero_draws(schedule, 50)
    found = ode_log_likelihood(eps, schedule, x, tolerance)
    # converged at every tolerance: the solver restarts at each kink of the schedule
    assert (found - _gaussian_log_likelihood(x, schedule)).abs().max() < 1e-5


def test_ode_likelihood_of_a_network_interpolated_between_timesteps() -> None:
    schedule = ContinuousSchedule(ALPHA_BAR)
    x = _level_zero_draws(schedule, 50)
    found = ode_log_likelihood(model_eps(GaussianDenoiser(), schedule), schedule, x)
    # the network exists at integer t only: linear interpolation (and float32) cost < 3e-3 nats
    assert (found - _gaussian_log_likelihood(x, schedule)).abs().max() < 3e-3


TINY = """\
[experiment]
name = "truth"
datasets = ["ring8"]  # its true law is quick to evaluate (moons' takes seconds)
seeds = [0]
num_points = 1000
oracle_draws = 1
[train]
num_steps = 40
batch_size = 32
[eval]
num_samples = 200
field_resolution = 4
process_snapshots = 0
ground_truth_points = 20
ode_points = 16
ode_tolerance = 1e-3  # the solver's accuracy is pinned above
[runs.baseline]
model = { arch = "mlp", hidden_dim = 16, embedding_dim = 8, hidden_layers = 1 }
"""


def test_a_trained_cell_records_its_ground_truth_and_remeasure_recovers_it(tmp_path) -> None:
    """`lowdiff run` end to end with the ground truth on (the other tests' runs turn it off)."""
    path = tmp_path / "truth.toml"
    path.write_text(TINY)
    arguments = ["--out", str(tmp_path / "out"), "--quiet", "--threads", "1"]
    assert main(["run", str(path), *arguments]) == 0
    assert (tmp_path / "out" / "figures" / "excess_loss_by_timestep.png").is_file()
    cell = tmp_path / "out" / "baseline" / "ring8" / "seed_0"
    record = json.loads((cell / "cell.json").read_text())
    metrics = record["metrics"]
    assert metrics["excess_eval_loss"] > 0.01  # 40 steps are far from Bayes-optimal
    entropy = truth.entropy_bits("ring8").bits
    assert metrics["ode_kl_bits"] == pytest.approx(metrics["ode_nll_bits"] - entropy, abs=0.5)
    arrays = results.read_npz(cell / "loss_by_timestep.npz")
    assert set(arrays) >= {"t", "model", "floor"} and arrays["model"].shape == (100,)
    assert metrics["excess_eval_loss"] == pytest.approx((arrays["model"] - arrays["floor"]).mean())
    assert record["batch"]["machine"]["cpu_capability"]
    oracle = json.loads((tmp_path / "out" / "oracle.json").read_text())["ground_truth"]
    assert oracle["datasets"]["ring8"]["eval_loss_floor"] == pytest.approx(arrays["floor"].mean())
    # a cell written without the ground truth gets the same numbers from its saved EMA weights
    stripped = {k: v for k, v in metrics.items() if k not in GROUND_TRUTH_METRICS}
    files = {k: v for k, v in record["files"].items() if k not in ("loss_by_timestep.npz",)}
    (cell / "loss_by_timestep.npz").unlink()
    results.write_json(cell / "cell.json", record | {"metrics": stripped, "files": files})
    remeasure(tmp_path / "out", ground_truth=True, report=False)
    again = json.loads((cell / "cell.json").read_text())["metrics"]
    for name in GROUND_TRUTH_METRICS:
        assert again[name] == pytest.approx(metrics[name], rel=1e-6, abs=1e-9)
    # a lost oracle.json gets its ground-truth block back, as the experiment asks for it
    written = json.loads((tmp_path / "out" / "oracle.json").read_text())
    (tmp_path / "out" / "oracle.json").write_text("{}")
    remeasure(tmp_path / "out", report=False)
    assert json.loads((tmp_path / "out" / "oracle.json").read_text()) == written
