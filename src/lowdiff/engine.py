"""Train M independent DDPMs of one architecture as one batched computation.

Every model m has its own dataset, seed, data order, noise, optimiser state, gradient clipping
and EMA (SPEC §1 "Training", §4 "Many models at once"). Independence comes from three things:
  * the layers are batched over a leading model axis and never mix models (models/layers.py);
  * the loss is the sum of the per-model losses, so model m's gradient is its own loss's;
  * all randomness of model m comes from generators seeded by (dataset, seed) alone, drawn in
    chunks of a fixed size, so the numbers a model sees do not depend on its batch-mates.
Clipping uses each model's own gradient norm; AdamW is elementwise, so one optimiser over the
stacked parameters keeps per-model state. A model trained in a batch of M therefore equals the
same model trained alone, up to floating-point noise (tests/test_engine.py).

The step itself has no host synchronisation: losses stay on the device and are checked for
divergence once per chunk.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lowdiff.models import Denoiser, ModelConfig, build_model
from lowdiff.progress import bar as tqdm
from lowdiff.schedule import NoiseSchedule
from lowdiff.settings import TrainConfig  # defined torch-free; re-exported here

log = logging.getLogger(__name__)

CHUNK_STEPS = 100  # random numbers are drawn this many steps at a time; losses checked as often
STREAMS = ("init", "data", "noise", "eval", "sample")


@dataclass(frozen=True)
class Member:
    """One model of a batch: which dataset it learns and its seed."""

    dataset: str
    seed: int

    def label(self) -> str:
        return f"{self.dataset}/seed {self.seed}"


class DivergenceError(RuntimeError):
    """Raised when a model's training loss becomes NaN or infinite."""


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def stream_generators(member: Member, device: torch.device) -> dict[str, torch.Generator]:
    """Independent generators for each use of randomness, seeded by (dataset, seed) alone."""
    sequence = np.random.SeedSequence([member.seed, zlib.crc32(member.dataset.encode())])
    generators = {}
    for name, child in zip(STREAMS, sequence.spawn(len(STREAMS)), strict=True):
        seed = int(child.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
        generators[name] = torch.Generator(device=device).manual_seed(seed)
    return generators


class BatchSource:
    """Per-model minibatches: data reshuffled every epoch, t ~ U{0..T-1}, eps ~ N(0, I).

    Each epoch uses floor(n / B) full batches (the last partial batch is dropped, so every
    step of every model has exactly B points).
    """

    def __init__(
        self,
        data: torch.Tensor,  # (D, n, 2) the datasets, stacked
        dataset_index: torch.Tensor,  # (M,) which dataset each model learns
        generators: Sequence[dict[str, torch.Generator]],
        batch_size: int,
        num_timesteps: int,
    ) -> None:
        self.data, self.dataset_index = data, dataset_index
        self.generators, self.batch_size, self.num_timesteps = generators, batch_size, num_timesteps
        num_points = data.shape[1]
        if batch_size > num_points:
            raise ValueError(f"batch_size {batch_size} exceeds the {num_points} training points")
        self.usable = (num_points // batch_size) * batch_size
        self.permutations: list[torch.Tensor | None] = [None] * len(generators)
        self.positions = [self.usable] * len(generators)

    def _indices(self, m: int, count: int) -> torch.Tensor:
        parts = []
        while count > 0:
            if self.positions[m] >= self.usable:
                self.permutations[m] = torch.randperm(
                    self.data.shape[1],
                    generator=self.generators[m]["data"],
                    device=self.data.device,
                )
                self.positions[m] = 0
            take = min(count, self.usable - self.positions[m])
            parts.append(self.permutations[m][self.positions[m] : self.positions[m] + take])
            self.positions[m] += take
            count -= take
        return torch.cat(parts)

    def next_chunk(self, steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x0 (steps, M, B, 2), t (steps, M, B), eps (steps, M, B, 2) for the next `steps` steps."""
        shape, device = (steps, self.batch_size), self.data.device
        indices = torch.stack(
            [self._indices(m, steps * self.batch_size) for m in range(len(self.generators))]
        )
        x0 = self.data[self.dataset_index.unsqueeze(1), indices]  # (M, steps*B, 2)
        t = torch.stack(
            [
                torch.randint(0, self.num_timesteps, shape, generator=g["noise"], device=device)
                for g in self.generators
            ]
        )  # (M, steps, B)
        eps = torch.stack(
            [torch.randn((*shape, 2), generator=g["noise"], device=device) for g in self.generators]
        )  # (M, steps, B, 2)
        x0 = x0.view(-1, steps, self.batch_size, 2)
        return (
            x0.transpose(0, 1).contiguous(),
            t.transpose(0, 1).contiguous(),
            eps.transpose(0, 1).contiguous(),
        )


class BatchedEMA:
    """EMA of the weights with the warm-up of `ema-pytorch` defaults (SPEC §1).

    update() is called once per optimiser step. On calls whose counter s is a multiple of
    `update_every`: a plain copy while s <= warmup (and once more on the first update after),
    then lerp with decay min(beta, 1 - (1 + e)^(-2/3)), e = s - warmup. All models share the
    step counter, so the decay is the same scalar for all of them.
    """

    def __init__(self, model: Denoiser, beta: float, update_every: int, warmup_steps: int) -> None:
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.beta, self.update_every, self.warmup_steps = beta, update_every, warmup_steps
        self.step, self.initialised = 0, False

    def decay(self) -> float:
        epoch = max(self.step - self.warmup_steps - 1, 0)
        if epoch <= 0:
            return 0.0
        return min(self.beta, max(0.0, 1.0 - (1.0 + epoch) ** (-2.0 / 3.0)))

    @torch.no_grad()
    def update(self, model: Denoiser) -> None:
        step = self.step
        self.step += 1
        if step % self.update_every:
            return
        shadow, current = list(self.model.parameters()), list(model.parameters())
        if step <= self.warmup_steps or not self.initialised:
            torch._foreach_copy_(shadow, current)
            self.initialised = step > self.warmup_steps
            if step <= self.warmup_steps:
                return
        torch._foreach_lerp_(shadow, current, 1.0 - self.decay())


def clip_grad_norm_per_model(parameters: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ applied to each model separately; returns the norms (M,)."""
    grads = [p.grad for p in parameters]
    num_models = grads[0].shape[0]
    per_tensor = [torch.linalg.vector_norm(g.reshape(num_models, -1), dim=1) for g in grads]
    norms = torch.linalg.vector_norm(torch.stack(per_tensor), dim=0)  # (M,)
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(num_models, *([1] * (g.dim() - 1))))
    return norms


def mean_pairwise_distance(eps_hat: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance over the batch's pairs i < j, per model: (M, B, 2) -> (M,)."""
    batch = eps_hat.shape[1]
    first, second = torch.triu_indices(batch, batch, offset=1, device=eps_hat.device)
    return (eps_hat[:, first] - eps_hat[:, second]).norm(dim=-1).mean(dim=1)


def cosine_lr(base_lr: float, step: int, num_steps: int) -> float:
    """Cosine annealing to 0 over num_steps (torch CosineAnnealingLR, eta_min = 0)."""
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * step / num_steps))


@dataclass
class TrainResult:
    members: list[Member]
    model: Denoiser  # the trained weights (used for eval_loss)
    ema_model: Denoiser  # the EMA weights (used for sampling)
    losses: np.ndarray  # (M, num_steps) training MSE per step
    training_time: float  # wall clock of the whole batched training loop, seconds
    generators: list[dict[str, torch.Generator]]  # each model's streams, for its evaluation


class Trainer:
    """Holds the models, optimiser, EMA and batch source of one batched training run."""

    def __init__(
        self,
        model_config: ModelConfig,
        members: Sequence[Member],
        datasets: dict[str, torch.Tensor],
        schedule: NoiseSchedule,
        config: TrainConfig,
        device: torch.device,
    ) -> None:
        self.members, self.schedule, self.config = list(members), schedule, config
        names = sorted({member.dataset for member in self.members})
        self.generators = [stream_generators(member, device) for member in self.members]
        self.model = build_model(model_config, len(self.members), schedule.num_timesteps).to(device)
        self.model.reset_parameters([g["init"] for g in self.generators])
        self.parameters = list(self.model.parameters())
        fused = {"fused": True} if device.type in ("cpu", "cuda") else {}
        self.optimizer = torch.optim.AdamW(self.parameters, lr=config.learning_rate, **fused)
        self.ema = BatchedEMA(
            self.model, config.ema_beta, config.ema_update_every, config.ema_warmup_steps
        )
        stacked = torch.stack([datasets[name] for name in names]).to(device)  # (D, n, 2)
        index = torch.tensor([names.index(m.dataset) for m in self.members], device=device)
        self.source = BatchSource(
            stacked, index, self.generators, config.batch_size, schedule.num_timesteps
        )

    def step(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """One optimiser step of all M models; returns their MSE losses (M,) on the device."""
        xt = self.schedule.add_noise(x0, eps, t)  # (M, B, 2)
        eps_hat = self.model(xt, t).eps
        mse = (eps_hat - eps).square().mean(dim=(1, 2))  # (M,)
        objective = mse
        if self.config.diversity_weight:
            objective = mse - self.config.diversity_weight * mean_pairwise_distance(eps_hat)
        objective.sum().backward()  # sum: each model gets exactly its own gradient
        clip_grad_norm_per_model(self.parameters, self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return mse.detach()

    def _check_finite(self, losses: torch.Tensor, first_step: int) -> None:
        finite = torch.isfinite(losses).all(dim=0)  # (M,), one sync per chunk
        if bool(finite.all()):
            return
        bad = [self.members[m].label() for m in torch.nonzero(~finite).flatten().tolist()]
        step = first_step + int(torch.nonzero(~torch.isfinite(losses).all(dim=1))[0])
        raise DivergenceError(
            f"training diverged (NaN/inf loss) at step {step} for {', '.join(bad)}; "
            "try a lower train.learning_rate or train.grad_clip"
        )

    def run(self, progress: str | None = None) -> TrainResult:
        config, num_models = self.config, len(self.members)
        losses = torch.empty(config.num_steps, num_models, device=self.source.data.device)
        bar = tqdm(
            total=config.num_steps,
            desc=progress,
            unit="step",
            disable=progress is None,
            postfix={"models": num_models},
            leave=False,
        )
        start = time.perf_counter()
        for first in range(0, config.num_steps, CHUNK_STEPS):
            steps = min(CHUNK_STEPS, config.num_steps - first)
            x0, t, eps = self.source.next_chunk(steps)
            for j in range(steps):
                self.optimizer.param_groups[0]["lr"] = cosine_lr(
                    config.learning_rate, first + j, config.num_steps
                )
                losses[first + j] = self.step(x0[j], t[j], eps[j])
                self.ema.update(self.model)
            self._check_finite(losses[first : first + steps], first)
            bar.update(steps)
        if losses.is_cuda:
            torch.cuda.synchronize()
        training_time = time.perf_counter() - start
        bar.close()
        return TrainResult(
            self.members,
            self.model,
            self.ema.model,
            losses.T.cpu().numpy(),
            training_time,
            self.generators,
        )
