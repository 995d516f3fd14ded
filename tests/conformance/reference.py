"""The reference protocol written out plainly, one model at a time, from the protocol's tables.

Deliberately unclever: nothing here imports lowdiff's models, schedule, engine or evaluation.
Every network is `torch.nn.Linear` layers in an `nn.Sequential`, the way the template the series
come from writes them (protocol §1-§3); training is `torch.optim.AdamW`, `clip_grad_norm_` and
`CosineAnnealingLR`; the EMA is ema-pytorch's `EMA` transcribed line by line; sampling is the
template's ancestral loop. What lowdiff documents as a deviation of its own (docs/protocol.md:
per-model generators, each epoch dropping its last partial batch, eval loss as a per-point mean)
is reproduced here literally, so that the engine can be fed the very same numbers.

Tensors are float32 and single-model: x (B, 2), t (B,) integer.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from copy import deepcopy

import torch
from torch import nn
from torch.nn import functional as F

# ---------------------------------------------------------------------------------------------
# Noise schedule (protocol §1 "Noise schedule", "Evaluation")
# ---------------------------------------------------------------------------------------------


class Schedule:
    """DDPM coefficients from protocol §1's formulas (maths in float64, stored as float32)."""

    def __init__(
        self, kind: str = "linear", T: int = 100, start: float = 1e-4, end: float = 0.02
    ) -> None:
        if kind == "linear":
            betas = torch.linspace(start, end, T, dtype=torch.float64)
        elif kind == "quadratic":
            betas = torch.linspace(start**0.5, end**0.5, T, dtype=torch.float64) ** 2
        else:
            raise ValueError(kind)
        alpha_bar = torch.cumprod(1.0 - betas, dim=0)
        alpha_bar_prev = torch.cat([torch.tensor([1.0], dtype=torch.float64), alpha_bar[:-1]])
        self.T = T
        table = {
            "betas": betas,
            "alpha_bar": alpha_bar,
            "alpha_bar_prev": alpha_bar_prev,
            "sqrt_alpha_bar": torch.sqrt(alpha_bar),
            "sqrt_one_minus_alpha_bar": torch.sqrt(1.0 - alpha_bar),
            "sqrt_inv_alpha_bar": torch.sqrt(1.0 / alpha_bar),
            "sqrt_inv_alpha_bar_minus_one": torch.sqrt(1.0 / alpha_bar - 1.0),
            "posterior_coef_x0": betas * torch.sqrt(alpha_bar_prev) / (1.0 - alpha_bar),
            "posterior_coef_xt": (1.0 - alpha_bar_prev)
            * torch.sqrt(1.0 - betas)
            / (1.0 - alpha_bar),
            "posterior_variance": (betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)).clip(1e-20),
        }
        self.table = {name: value.float() for name, value in table.items()}

    def __getattr__(self, name: str) -> torch.Tensor:
        try:
            return self.__dict__["table"][name]
        except KeyError:
            raise AttributeError(name) from None

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s1 = self.sqrt_alpha_bar[t].reshape(-1, 1)
        s2 = self.sqrt_one_minus_alpha_bar[t].reshape(-1, 1)
        return s1 * x0 + s2 * noise

    def step(
        self, eps_hat: torch.Tensor, t: int, x: torch.Tensor, z: torch.Tensor | None
    ) -> torch.Tensor:
        """The template's NoiseScheduler.step, with its Gaussian z passed in."""
        x0 = self.sqrt_inv_alpha_bar[t] * x - self.sqrt_inv_alpha_bar_minus_one[t] * eps_hat
        mean = self.posterior_coef_x0[t] * x0 + self.posterior_coef_xt[t] * x
        if t > 0:
            mean = mean + self.posterior_variance[t] ** 0.5 * z
        return mean


# ---------------------------------------------------------------------------------------------
# Networks (protocol §1 baseline, §2 Series A, §3 Series B)
# ---------------------------------------------------------------------------------------------


class SinusoidalEmbedding(nn.Module):
    """emb(v) = [sin(s v f), cos(s v f)], f_i = exp(-ln(10000) i / (half - 1)) (the template's)."""

    def __init__(self, dim: int, scale: float = 1.0) -> None:
        super().__init__()
        self.dim, self.scale = dim, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.scale
        half_dim = self.dim // 2
        emb = torch.log(torch.tensor([10000.0])) / (half_dim - 1)
        emb = torch.exp(-emb * torch.arange(half_dim))
        emb = x.unsqueeze(-1) * emb.unsqueeze(0)
        return torch.cat((torch.sin(emb), torch.cos(emb)), dim=-1)


class ResidualBlock(nn.Module):
    """x + Linear(ReLU(x))."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.ff = nn.Linear(width, width)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ff(self.act(x))


def baseline_network(E: int, H: int, L: int, extra_layer: bool = False) -> nn.Sequential:
    """Linear(3E, H) -> L x ResidualBlock -> ReLU -> Linear(H, 2).

    extra_layer (protocol §3 run 3): ... -> ReLU -> Linear(H, H) -> ReLU -> Linear(H, 2).
    """
    layers = [nn.Linear(3 * E, H), *[ResidualBlock(H) for _ in range(L)], nn.ReLU()]
    if extra_layer:
        layers += [nn.Linear(H, H), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(H, 2))


class Embedding(nn.Module):
    """e = [emb(x[:, 0]; 25), emb(x[:, 1]; 25), emb(t; 1)], 3E wide."""

    def __init__(self, E: int) -> None:
        super().__init__()
        self.time_mlp = SinusoidalEmbedding(E, scale=1.0)
        self.input_mlp1 = SinusoidalEmbedding(E, scale=25.0)
        self.input_mlp2 = SinusoidalEmbedding(E, scale=25.0)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x1_emb = self.input_mlp1(x[:, 0])
        x2_emb = self.input_mlp2(x[:, 1])
        t_emb = self.time_mlp(t)
        return torch.cat([x1_emb, x2_emb, t_emb], dim=-1)


class MLPDenoiser(nn.Module):
    """protocol §1 baseline (Series A and B run 0). forward returns (eps_hat, None)."""

    def __init__(self, E: int = 128, H: int = 256, L: int = 3) -> None:
        super().__init__()
        self.embedding = Embedding(E)
        self.network = baseline_network(E, H, L)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.network(self.embedding(x, t)), None


class DualScaleFixed(nn.Module):
    """protocol §2 run 1: output = 0.5 global(emb(x)) + 0.5 local(emb(upscale(x))).

    upscale is a learnable nn.Linear(2, 2), or x * zoom when `zoom` is given.
    """

    def __init__(self, E: int = 128, H: int = 256, L: int = 3, zoom: float | None = None):
        super().__init__()
        self.embedding = Embedding(E)
        self.global_network = baseline_network(E, H, L)
        self.local_network = baseline_network(E, H, L)
        self.zoom = zoom
        self.upscale = nn.Linear(2, 2) if zoom is None else None

    def branches(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_local = self.upscale(x) if self.zoom is None else x * self.zoom
        global_eps = self.global_network(self.embedding(x, t))
        local_eps = self.local_network(self.embedding(x_local, t))
        return global_eps, local_eps

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, None]:
        global_eps, local_eps = self.branches(x, t)
        return 0.5 * global_eps + 0.5 * local_eps, None


class DualScaleLearned(DualScaleFixed):
    """protocol §2 runs 2-4: w(t) = Sigmoid(Linear(H,1)(ReLU(Linear(E,H)(emb(t))))).

    output = w global + (1 - w) local; returns the weights (w_global, w_local) = (w, 1 - w).
    """

    def __init__(self, E: int = 128, H: int = 256, L: int = 3, zoom: float | None = None):
        super().__init__(E, H, L, zoom)
        self.time_embedding = SinusoidalEmbedding(E, scale=1.0)
        self.weight_network = nn.Sequential(
            nn.Linear(E, H), nn.ReLU(), nn.Linear(H, 1), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        global_eps, local_eps = self.branches(x, t)
        w = self.weight_network(self.time_embedding(t))  # (B, 1)
        eps = w * global_eps + (1 - w) * local_eps
        return eps, torch.cat([w, 1 - w], dim=1)


class DualScaleDeep(DualScaleFixed):
    """protocol §2 run 5: Linear(E,H) -> LeakyReLU(0.2) -> Linear(H,H/2) -> LeakyReLU(0.2) ->
    Linear(H/2,2) -> Softmax; output = w0 global + w1 local; returns (w0, w1)."""

    def __init__(self, E: int = 128, H: int = 256, L: int = 3, zoom: float | None = None):
        super().__init__(E, H, L, zoom)
        self.time_embedding = SinusoidalEmbedding(E, scale=1.0)
        self.weight_network = nn.Sequential(
            nn.Linear(E, H),
            nn.LeakyReLU(0.2),
            nn.Linear(H, H // 2),
            nn.LeakyReLU(0.2),
            nn.Linear(H // 2, 2),
            nn.Softmax(dim=-1),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        global_eps, local_eps = self.branches(x, t)
        w = self.weight_network(self.time_embedding(t))  # (B, 2)
        eps = w[:, 0:1] * global_eps + w[:, 1:2] * local_eps
        return eps, w


class DualExpert(nn.Module):
    """protocol §3 run 1: g = Sigmoid(Linear(H/2,1)(ReLU(Linear(3E,H/2)(e)))).

    output = g expert1(e) + (1 - g) expert2(e); returns g (B, 1).
    """

    def __init__(self, E: int = 128, H: int = 256, L: int = 3, larger_experts: bool = False):
        super().__init__()
        self.embedding = Embedding(E)
        self.gating_network = nn.Sequential(
            nn.Linear(3 * E, H // 2), nn.ReLU(), nn.Linear(H // 2, 1), nn.Sigmoid()
        )
        self.expert1 = baseline_network(E, H, L, larger_experts)
        self.expert2 = baseline_network(E, H, L, larger_experts)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.embedding(x, t)
        g = self.gating_network(e)
        return g * self.expert1(e) + (1 - g) * self.expert2(e), g


class DualExpertEnhanced(DualExpert):
    """protocol §3 run 2: gate Linear(3E,H) -> ReLU -> Linear(H,H/2) -> ReLU -> Linear(H/2,1) ->
    Sigmoid. With larger_experts: protocol §3 run 3 (and run 4, which changes only the loss)."""

    def __init__(self, E: int = 128, H: int = 256, L: int = 3, larger_experts: bool = False):
        super().__init__(E, H, L, larger_experts)
        self.gating_network = nn.Sequential(
            nn.Linear(3 * E, H),
            nn.ReLU(),
            nn.Linear(H, H // 2),
            nn.ReLU(),
            nn.Linear(H // 2, 1),
            nn.Sigmoid(),
        )


# ---------------------------------------------------------------------------------------------
# EMA: ema-pytorch's EMA (the template's bundled copy), defaults beta given, update_after_step
# 100, update_every 10, inv_gamma 1, power 2/3, min_value 0, use_foreach False.
# ---------------------------------------------------------------------------------------------


class EMA(nn.Module):
    def __init__(
        self,
        model: nn.Module,
        beta: float = 0.9999,
        update_after_step: int = 100,
        update_every: int = 10,
        inv_gamma: float = 1.0,
        power: float = 2 / 3,
        min_value: float = 0.0,
    ) -> None:
        super().__init__()
        self.beta = beta
        self.online_model = [model]
        self.ema_model = deepcopy(model)
        for p in self.ema_model.parameters():
            p.detach_()
        self.update_every, self.update_after_step = update_every, update_after_step
        self.inv_gamma, self.power, self.min_value = inv_gamma, power, min_value
        self.register_buffer("initted", torch.tensor(False))
        self.register_buffer("step", torch.tensor(0))

    @property
    def model(self) -> nn.Module:
        return self.online_model[0]

    def _pairs(self, target: nn.Module, source: nn.Module) -> list[tuple[torch.Tensor, ...]]:
        pairs = list(zip(target.parameters(), source.parameters(), strict=True))
        buffers = zip(target.buffers(), source.buffers(), strict=True)
        return pairs + [(a, b) for a, b in buffers if a.is_floating_point()]

    def copy_params_from_model_to_ema(self) -> None:
        for ma, current in self._pairs(self.ema_model, self.model):
            ma.data.copy_(current.data)

    def get_current_decay(self) -> float:
        epoch = (self.step - self.update_after_step - 1).clamp(min=0.0)
        value = 1 - (1 + epoch / self.inv_gamma) ** -self.power
        if epoch.item() <= 0:
            return 0.0
        return value.clamp(min=self.min_value, max=self.beta).item()

    def update(self) -> None:
        step = self.step.item()
        self.step += 1
        if (step % self.update_every) != 0:
            return
        if step <= self.update_after_step:
            self.copy_params_from_model_to_ema()
            return
        if not self.initted.item():
            self.copy_params_from_model_to_ema()
            self.initted.data.copy_(torch.tensor(True))
        self.update_moving_average()

    @torch.no_grad()
    def update_moving_average(self) -> None:
        current_decay = self.get_current_decay()
        for ma, current in self._pairs(self.ema_model, self.model):
            ma.data.lerp_(current.data, 1.0 - current_decay)


# ---------------------------------------------------------------------------------------------
# Data order, training, evaluation
# ---------------------------------------------------------------------------------------------


def batches(
    points: torch.Tensor,
    data_generator: torch.Generator,
    noise_generator: torch.Generator,
    batch_size: int,
    num_timesteps: int,
    num_steps: int,
    chunk_steps: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(x0 (B, 2), t (B,), eps (B, 2)) for every step, in lowdiff's documented order.

    Data: a fresh torch.randperm of the n points (data generator) whenever an epoch starts; an
    epoch is floor(n / B) batches (the last partial batch is dropped). Noise: drawn
    `chunk_steps` steps at a time from the noise generator, first all t, then all eps.
    """
    n = points.shape[0]
    usable = (n // batch_size) * batch_size
    permutation, position = None, usable
    for first in range(0, num_steps, chunk_steps):
        steps = min(chunk_steps, num_steps - first)
        chosen = []
        for _ in range(steps):
            if position >= usable:
                permutation, position = torch.randperm(n, generator=data_generator), 0
            chosen.append(permutation[position : position + batch_size])
            position += batch_size
        t = torch.randint(0, num_timesteps, (steps, batch_size), generator=noise_generator)
        eps = torch.randn((steps, batch_size, 2), generator=noise_generator)
        for j in range(steps):
            yield points[chosen[j]], t[j], eps[j]


def mean_pairwise_distance(eps_hat: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance over the B (B - 1) / 2 pairs of the batch's predictions."""
    B = eps_hat.shape[0]
    i, j = torch.triu_indices(B, B, offset=1)  # every pair once, i < j
    return torch.sqrt(((eps_hat[i] - eps_hat[j]) ** 2).sum(dim=1)).mean()


def train(
    model: nn.Module,
    schedule: Schedule,
    stream: Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    num_steps: int,
    diversity_weight: float = 0.0,
    learning_rate: float = 3e-4,
    grad_clip: float = 0.5,
    ema_beta: float = 0.995,
    on_step: Callable[[EMA], None] | None = None,
    ema_warmup_steps: int = 100,
) -> tuple[list[float], EMA]:
    """The template's training loop (protocol §1 "Training"); returns the per-step MSEs and the EMA.

    With diversity_weight λ > 0 the loss is MSE − λ · mean pairwise distance (protocol §3 run 4);
    the MSE part is what is recorded. `on_step(ema)`, if given, is called after every step.
    """
    ema = EMA(model, beta=ema_beta, update_after_step=ema_warmup_steps, update_every=10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=num_steps)
    losses = []
    for batch, timesteps, noise in itertools.islice(stream, num_steps):
        noisy = schedule.add_noise(batch, noise, timesteps)
        noise_pred = model(noisy, timesteps)[0]
        mse = F.mse_loss(noise_pred, noise)
        loss = mse
        if diversity_weight:
            loss = mse - diversity_weight * mean_pairwise_distance(noise_pred)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad()
        ema.update()
        scheduler.step()
        losses.append(mse.item())
        if on_step is not None:
            on_step(ema)
    return losses, ema


@torch.no_grad()
def eval_loss(
    model: nn.Module,
    schedule: Schedule,
    points: torch.Tensor,
    generator: torch.Generator,
    batch_size: int,
) -> float:
    """Mean squared error of `model` over one in-order pass of the points, fresh t then eps per
    batch (lowdiff's deviation 2: the per-point mean, not the mean of the batch means)."""
    total, n = 0.0, points.shape[0]
    for start in range(0, n, batch_size):
        batch = points[start : start + batch_size]
        timesteps = torch.randint(0, schedule.T, (batch.shape[0],), generator=generator)
        noise = torch.randn(batch.shape, generator=generator)
        noise_pred = model(schedule.add_noise(batch, noise, timesteps), timesteps)[0]
        total += F.mse_loss(noise_pred, noise, reduction="sum").item()
    return total / (2 * n)


@torch.no_grad()
def sample(
    model: nn.Module, schedule: Schedule, num_samples: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The template's ancestral loop: points (N, 2), weight trace (T, K) (row 0 = t = T-1, the
    mean over samples) and the per-sample weights at t = 0 (N, K), or None without weights."""
    sample = torch.randn((num_samples, 2), generator=generator)
    trace, weights = [], None
    for t in range(schedule.T - 1, -1, -1):
        timesteps = torch.full((num_samples,), t, dtype=torch.long)
        residual, weights = model(sample, timesteps)
        if weights is not None:
            trace.append(weights.mean(dim=0))
        z = torch.randn((num_samples, 2), generator=generator) if t > 0 else None
        sample = schedule.step(residual, t, sample, z)
    return sample, (torch.stack(trace) if trace else None), weights


def linear_bound(layer: nn.Linear) -> float:
    """PyTorch's default nn.Linear initialisation bound, 1 / sqrt(fan_in)."""
    return 1.0 / math.sqrt(layer.in_features)
