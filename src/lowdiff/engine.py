"""Train M independent DDPMs of one architecture as one batched computation.

Every model m has its own dataset, seed, data order, noise, optimiser state, gradient clipping
and EMA (protocol §1 "Training", §4 "Many models at once"). Independence comes from three things:
  * the layers are batched over a leading model axis and never mix models (models/layers.py);
  * the loss is the sum of the per-model losses, so model m's gradient is its own loss's;
  * all randomness of model m comes from generators seeded by (dataset, seed) alone, drawn in
    chunks of a fixed size, so the numbers a model sees do not depend on its batch-mates.
Clipping uses each model's own gradient norm; AdamW is elementwise, so one optimiser over the
stacked parameters keeps per-model state. A model trained in a batch of M therefore equals the
same model trained alone; on the CPU at one thread it has the same bits (the gradient norm is
summed in a fixed order and no AdamW kernel has a batch-dependent tail: `make_optimizer`,
tests/test_faults.py).

With train.compile the clipping and the AdamW step are one compiled pass over the optimiser's
state (`CompiledUpdate`; in bf16 the product weights train through bf16 working copies): the
same arithmetic, rounded as inductor's loops round it, a new draw like the compiled network.

The step itself has no host synchronisation: losses stay on the device and are checked for
divergence once per chunk. A model whose loss becomes NaN/inf is recorded as diverged (with the
first such step) and its batch-mates train on unaffected: nothing couples the models.

With a checkpoint path, the whole training state (parameters, AdamW moments and step, EMA
shadow and counters, every generator's state, the data order and position, the losses so far,
the step and the elapsed time) is saved atomically at chunk boundaries every
`checkpoint_every` steps and when training ends, as one NumPy archive of numeric arrays whose
`meta` entry is JSON bytes (read back with `results.read_npz`, which refuses object
arrays). Resuming from it continues bit-identically to an uninterrupted run.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.func import functional_call

from lowdiff import compilation, runtime
from lowdiff.models import Denoiser, ModelConfig, build_model
from lowdiff.models.layers import SIMD_MULTIPLE, product_weights
from lowdiff.precision import autocast, check_precision, low_dtype
from lowdiff.progress import bar as tqdm
from lowdiff.results import ResultsError, atomic_write_with, config_hash, read_npz
from lowdiff.schedule import NoiseSchedule
from lowdiff.settings import TrainConfig  # defined torch-free; re-exported here

log = logging.getLogger(__name__)

CHUNK_STEPS = 100  # random numbers are drawn this many steps at a time; losses checked as often
STREAMS = ("init", "data", "noise", "eval", "sample")
CHECKPOINT_FORMAT = "lowdiff-checkpoint/1"
# train settings added after that format: left out of its fingerprint at their defaults
LATER_TRAIN_FIELDS = ("precision", "compile")


@dataclass(frozen=True)
class Member:
    """One model of a batch: which dataset it learns and its seed."""

    dataset: str
    seed: int

    def label(self) -> str:
        return f"{self.dataset}/seed {self.seed}"


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


def repeat_generator(member: Member, repeat: int, device: torch.device) -> torch.Generator:
    """The sampling generator of repeat `repeat` >= 1 of a model (eval.sample_repeats): seeded
    by (dataset, seed, repeat) alone, apart from every stream of `stream_generators` (repeat 0
    is the "sample" stream itself)."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1 (repeat 0 is the 'sample' stream), got {repeat}")
    crc = zlib.crc32(member.dataset.encode())
    sequence = np.random.SeedSequence([member.seed, crc, len(STREAMS), repeat])
    seed = int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
    return torch.Generator(device=device).manual_seed(seed)


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
    """EMA of the weights with the warm-up of `ema-pytorch` defaults (protocol §1).

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


def clip_scales(grads: list[torch.Tensor], max_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each model's gradient norm over `grads` (in float32) and the factor clip_grad_norm_ would
    scale its gradient by: (norms, scales), both (M,)."""
    num_models = grads[0].shape[0]
    per_tensor = [torch.linalg.vector_norm(g.float().reshape(num_models, -1), dim=1) for g in grads]
    # Summed tensor by tensor in a fixed order with elementwise ops, so a model's norm has the
    # same bits whatever its batch-mates: a reduction over a stacked (tensors, M) axis sums in
    # an order that depends on M (contiguous for M = 1, strided otherwise).
    squares = per_tensor[0].square()
    for norm in per_tensor[1:]:
        squares = squares + norm.square()
    norms = squares.sqrt()
    return norms, (max_norm / (norms + 1e-6)).clamp(max=1.0)


def clip_grad_norm_per_model(parameters: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ applied to each model separately; returns the norms (M,)."""
    grads = [p.grad for p in parameters]
    norms, scale = clip_scales(grads, max_norm)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))
    return norms


def release_grads(parameters: list[torch.Tensor]) -> None:
    """What `optimizer.zero_grad(set_to_none=True)` does, without its bookkeeping: a one-model
    eager step took 0.989x the time (docs/speed.md), with the same bits."""
    for parameter in parameters:
        parameter.grad = None


def mean_pairwise_distance(eps_hat: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance over the batch's pairs i < j, per model: (M, B, 2) -> (M,)."""
    batch = eps_hat.shape[1]
    first, second = torch.triu_indices(batch, batch, offset=1, device=eps_hat.device)
    return (eps_hat[:, first] - eps_hat[:, second]).norm(dim=-1).mean(dim=1)


def make_optimizer(
    parameters: list[torch.Tensor], learning_rate: float, device: torch.device
) -> torch.optim.AdamW:
    """AdamW over the stacked parameters (elementwise, so each model keeps its own state).

    On the CPU the fused kernel computes the last elements of a tensor (its SIMD tail) in a
    scalar loop that rounds differently, so a model's update would depend on where its
    batch-mates end the tensor. A tensor whose per-model size is a multiple of every vector
    width has no tail at any M: those (all the large ones) take the fused kernel, the few
    small ones (biases of one or two outputs) the foreach implementation, which has none.
    """
    if device.type != "cpu":
        return torch.optim.AdamW(parameters, lr=learning_rate, fused=device.type == "cuda")
    aligned = [p for p in parameters if p[0].numel() % SIMD_MULTIPLE == 0]
    small = [p for p in parameters if p[0].numel() % SIMD_MULTIPLE]
    groups = [{"params": aligned, "fused": True}]
    groups += [{"params": small, "foreach": True, "fused": False}] if small else []
    return torch.optim.AdamW(groups, lr=learning_rate)


@torch.no_grad()
def clipped_adamw_(
    parameters: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    step_size: torch.Tensor,
    bias_correction2_sqrt: torch.Tensor,
    decay: torch.Tensor,
    max_norm: float,
    beta1: float,
    beta2: float,
    eps: float,
    copies: list[torch.Tensor],
    copied: list[int],
) -> torch.Tensor:
    """`clip_grad_norm_per_model`, then one AdamW step, as one function of the state (in place).

    `grads[i]` is the gradient of `parameters[i]`, in its dtype or a lower one (a working
    copy's, see `CompiledUpdate`), taken to float32 before use. AdamW as torch computes it:
    p *= decay (= 1 - lr weight_decay); m = lerp(m, g, 1 - beta1); v = beta2 v + (1 - beta2) g^2;
    p -= step_size m / (sqrt(v) / bias_correction2_sqrt + eps), with step_size =
    lr / (1 - beta1^step) and bias_correction2_sqrt = sqrt(1 - beta2^step) given as 0-dim
    tensors, so that a new learning rate or step is not a new compiled variant. Then each
    `copies[k]` becomes `parameters[copied[k]]` in its own dtype. Written for `train.compile`
    (`CompiledUpdate`), where inductor makes it one pass over the state: the clipped gradient
    is never written back, and the per-tensor norms, scalings and AdamW kernels of the eager
    step become one loop. Returns the norms (M,).
    """
    norms, scale = clip_scales(grads, max_norm)
    for p, g, m, v in zip(parameters, grads, exp_avgs, exp_avg_sqs, strict=True):
        g = g.float() * scale.view(-1, *([1] * (g.dim() - 1)))
        p.mul_(decay)
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        p.sub_(step_size * m / (v.sqrt() / bias_correction2_sqrt + eps))
    for working, index in zip(copies, copied, strict=True):
        working.copy_(parameters[index])
    return norms


class CompiledUpdate:
    """train.compile: clipping and the AdamW step of `optimizer` as one compiled pass.

    The state stays the optimiser's own (its moments and step, as `AdamW` keeps them), so
    checkpoints save and restore it unchanged; the learning rate is read from its first group
    at every step. On the CPU (M = 16, bf16) the eager clipping and AdamW take 5.4 ms of a 17.9
    ms compiled step, this pass some 3.6 ms (docs/speed.md).

    With `low` (train.precision = "bf16") the weights that enter only matrix products
    (`layers.product_weights`) are trained through working copies in that dtype: leaves the
    network is called with (`forward`), so the backward pass leaves their gradients in bf16,
    and the pass writes them again after each update. Autocast casts those weights to bf16 at
    each product and their bf16 gradients back to fp32 anyway, so the values are the same; the
    fp32 master weights, gradients (in the arithmetic), moments and EMA stay fp32. What it saves
    is the casts: 0.86-0.88x the compiled bf16 step at M = 16 (docs/speed.md).
    """

    def __init__(
        self,
        optimizer: torch.optim.AdamW,
        max_norm: float,
        model: torch.nn.Module,
        low: torch.dtype | None = None,
    ) -> None:
        self.optimizer, self.max_norm, self.model = optimizer, max_norm, model
        self.parameters = [p for group in optimizer.param_groups for p in group["params"]]
        weights = dict(model.named_parameters())
        names = {id(p): name for name, p in weights.items()}
        self.names = [names[id(p)] for p in self.parameters]
        self.copies = {
            name: weights[name].detach().to(low).requires_grad_()
            for name in (product_weights(model) if low is not None else [])
        }
        self.copied = [self.names.index(name) for name in self.copies]
        # where each parameter's gradient arrives: on its working copy, or on itself
        self.holders = [
            self.copies.get(name, p) for name, p in zip(self.names, self.parameters, strict=True)
        ]
        self.update = compilation.compiled(clipped_adamw_, fullgraph=True)
        # the network with the working copies in place of their weights; the Trainer compiles
        # it together with the noising and the loss (`Trainer.losses`)
        self.forward = (
            (lambda *args: functional_call(model, self.copies, args)) if self.copies else model
        )

    def refresh(self) -> None:
        """The working copies from the master weights (after these were replaced)."""
        weights = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, working in self.copies.items():
                working.copy_(weights[name])

    def step(self) -> None:
        group, state = self.optimizer.param_groups[0], self.optimizer.state
        for p in self.parameters:  # AdamW's own lazy initialisation, in its layout
            if not state[p]:
                state[p]["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state[p]["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        steps = [state[p]["step"] for p in self.parameters]
        torch._foreach_add_(steps, 1.0)
        (beta1, beta2), lr = group["betas"], group["lr"]
        # the bias corrections in float64, as AdamW's kernels compute them: in float32,
        # 1 - 0.999^step loses some 5 digits to cancellation. Here, not in the compiled pass:
        # there inductor computes them again for every element, in float64 (std::pow in the
        # element loops), and the compiled bf16 step took 1.11x as long (docs/speed.md)
        step = steps[0].double()
        decay = torch.full((), 1 - lr * group["weight_decay"], device=step.device)  # no host copy
        self.update(
            self.parameters,
            [holder.grad for holder in self.holders],
            [state[p]["exp_avg"] for p in self.parameters],
            [state[p]["exp_avg_sq"] for p in self.parameters],
            (lr / (1 - beta1**step)).float(),
            (1 - beta2**step).sqrt().float(),
            decay,
            self.max_norm,
            beta1,
            beta2,
            group["eps"],
            list(self.copies.values()),
            self.copied,
        )
        for working in self.copies.values():
            working.grad = None


def cosine_lr(base_lr: float, step: int, num_steps: int) -> float:
    """Cosine annealing to 0 over num_steps (torch CosineAnnealingLR, eta_min = 0)."""
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * step / num_steps))


@dataclass
class TrainResult:
    members: list[Member]
    model: Denoiser | None  # the online weights (eval_loss); None: evaluated from saved EMA
    ema_model: Denoiser  # the EMA weights (used for sampling)
    losses: np.ndarray  # (M, num_steps) training MSE per step
    training_time: float  # wall clock of the whole batched training loop, seconds
    generators: list[dict[str, torch.Generator]]  # each model's streams, for its evaluation
    diverged: dict[int, int] = field(default_factory=dict)  # model index -> first NaN/inf step


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def _checked(arrays: dict[str, np.ndarray], key: str, like: torch.Tensor) -> torch.Tensor:
    """arrays[key] as a tensor on like's device, if it has like's shape and dtype."""
    value = arrays[key]
    expected = _numpy(like.new_empty(like.shape, device="cpu"))
    if value.shape != expected.shape or value.dtype != expected.dtype:
        raise ValueError(
            f"{key}: {value.dtype}{value.shape}, expected {expected.dtype}{expected.shape}"
        )
    return torch.from_numpy(np.array(value)).to(like.device)


def _check_tampering(
    arrays: dict[str, np.ndarray],
    meta: dict[str, Any],
    diverged: dict[int, int],
    num_points: int,
    num_models: int,
) -> None:
    """Values a checkpoint could only hold if damaged or tampered with: data orders that are not
    permutations, positions outside the data, a negative or non-finite elapsed time, NaN losses
    of a model not recorded as diverged. Any of them discards the checkpoint."""
    for m in range(num_models):
        order = arrays.get(f"order/{m}")
        if order is not None and not np.array_equal(np.sort(order), np.arange(num_points)):
            raise ValueError(f"order/{m} is not a permutation of the training points")
    if not all(0 <= int(p) <= num_points for p in meta["positions"]):
        raise ValueError("a data position lies outside the training points")
    elapsed = float(meta["elapsed"])
    if not (math.isfinite(elapsed) and elapsed >= 0):
        raise ValueError(f"elapsed time {elapsed} is not a duration")
    losses = np.asarray(arrays["losses"])  # (step, M)
    kept = [m for m in range(num_models) if m not in diverged]
    if losses.ndim == 2 and not np.isfinite(losses[:, kept]).all():
        raise ValueError("NaN or infinite losses of a model not recorded as diverged")


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
        scratch: Path | None = None,
    ) -> None:
        """`scratch`: the folder for the compiler's files, required with train.compile (the
        caller removes it; `lowdiff run` puts it inside the results directory)."""
        check_precision(config.precision, device, "train.precision")
        compilation.check_compile(config.compile, device, "train.compile")
        if config.compile and scratch is None:
            raise ValueError(
                "train.compile = true: the Trainer needs scratch=, a folder for the compiler's "
                "files (lowdiff run puts it inside the results directory)"
            )
        self.scratch = scratch if config.compile else None
        self.members, self.schedule, self.config = list(members), schedule, config
        self.device = device
        names = sorted({member.dataset for member in self.members})
        self.generators = [stream_generators(member, device) for member in self.members]
        self.model = build_model(model_config, len(self.members), schedule.num_timesteps).to(device)
        self.model.reset_parameters([g["init"] for g in self.generators])
        self.parameters = list(self.model.parameters())
        self.optimizer = make_optimizer(self.parameters, config.learning_rate, device)
        # train.compile: clipping and AdamW as one compiled pass over the optimiser's state,
        # and the network the step calls compiled (at its first call, which must come inside
        # compilation.scratch); in bf16 through working copies of the product weights
        low = low_dtype(config.precision)
        self.update = (
            CompiledUpdate(self.optimizer, config.grad_clip, self.model, low)
            if config.compile
            else None
        )
        self.network = self.update.forward if self.update is not None else self.model
        # train.compile: the noising, the network and the loss as one compiled graph
        self.losses = compilation.compiled(self._losses) if config.compile else self._losses
        self.ema = BatchedEMA(
            self.model, config.ema_beta, config.ema_update_every, config.ema_warmup_steps
        )
        stacked = torch.stack([datasets[name] for name in names]).to(device)  # (D, n, 2)
        index = torch.tensor([names.index(m.dataset) for m in self.members], device=device)
        self.source = BatchSource(
            stacked, index, self.generators, config.batch_size, schedule.num_timesteps
        )
        self.diverged: dict[int, int] = {}
        self.fingerprint = self._fingerprint(model_config, datasets, names, device)

    def _fingerprint(
        self,
        model_config: ModelConfig,
        datasets: dict[str, torch.Tensor],
        names: list[str],
        device: torch.device,
    ) -> str:
        """What a checkpoint must match to be resumed: everything that shapes the training."""
        train = dataclasses.asdict(self.config)
        train.pop("checkpoint_every")
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
        for name in LATER_TRAIN_FIELDS:  # at their defaults: keys of older checkpoints stay valid
            if train.get(name, defaults[name]) == defaults[name]:
                train.pop(name, None)
        digest = hashlib.sha256()
        for name in names:
            digest.update(_numpy(datasets[name].float()).tobytes())
        key = {
            "format": CHECKPOINT_FORMAT,
            "model": dataclasses.asdict(model_config),
            "train": train,
            "schedule": dataclasses.asdict(self.schedule.config),
            "members": [[m.dataset, m.seed] for m in self.members],
            "data": digest.hexdigest(),
            "device": device.type,
        }
        return config_hash(key)

    def step(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """One optimiser step of all M models; returns their MSE losses (M,) on the device.

        With train.precision = "bf16" the forward pass and the loss run under autocast (the
        loss itself in fp32: eps_hat - eps promotes to eps's fp32), the backward pass outside
        it; parameters, gradients and AdamW state are fp32 throughout.
        """
        mse, objective = self.losses(x0, t, eps)
        objective.backward()
        if self.update is not None:
            self.update.step()
        else:
            clip_grad_norm_per_model(self.parameters, self.config.grad_clip)
            self.optimizer.step()
        release_grads(self.parameters)
        return mse.detach()

    def _losses(
        self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The models' MSE losses (M,) and the objective the backward pass starts from: their
        sum, so that each model gets exactly its own gradient."""
        with autocast(self.config.precision, self.device):
            xt = self.schedule.add_noise(x0, eps, t)  # (M, B, 2)
            eps_hat = self.network(xt, t).eps
            mse = (eps_hat - eps).float().square().mean(dim=(1, 2))  # (M,)
            objective = mse
            if self.config.diversity_weight:
                objective = mse - self.config.diversity_weight * mean_pairwise_distance(
                    eps_hat.float()
                )
        return mse, objective.sum()

    def _check_finite(self, losses: torch.Tensor, first_step: int) -> None:
        """Record models whose loss became NaN/inf in this chunk (steps, M); one sync."""
        bad = ~torch.isfinite(losses)
        if not bool(bad.any()):
            return
        first_bad = bad.int().argmax(dim=0).tolist()  # first non-finite step of each model
        for m in torch.nonzero(bad.any(dim=0)).flatten().tolist():
            if m not in self.diverged:
                self.diverged[m] = first_step + first_bad[m]
                log.warning(
                    "%s diverged (NaN/inf loss) at step %d; its batch-mates train on",
                    self.members[m].label(),
                    self.diverged[m],
                )

    def run(self, progress: str | None = None, checkpoint: Path | None = None) -> TrainResult:
        """Train every model for config.num_steps steps.

        With `checkpoint`, resume from that file if it holds a state of this very training
        (another config's or a corrupt file is ignored) and save the state there every
        `checkpoint_every` steps and at the end. The caller removes it once the results are
        safely written.
        """
        if self.scratch is not None:
            log.info("train.compile: the network compiles at the first step (some seconds)")
        with compilation.scratch(self.scratch):
            return self._run(progress, checkpoint)

    def _run(self, progress: str | None, checkpoint: Path | None) -> TrainResult:
        config, num_models = self.config, len(self.members)
        losses = torch.empty(config.num_steps, num_models, device=self.source.data.device)
        done, elapsed = 0, 0.0
        if checkpoint is not None:
            done, elapsed = self.load_checkpoint(checkpoint, losses) or (0, 0.0)
        bar = tqdm(
            total=config.num_steps,
            initial=done,
            desc=progress,
            unit="step",
            disable=progress is None,
            postfix={"models": num_models},
            leave=False,
        )
        start = time.perf_counter()
        for first in range(done, config.num_steps, CHUNK_STEPS):
            steps = min(CHUNK_STEPS, config.num_steps - first)
            x0, t, eps = self.source.next_chunk(steps)
            for j in range(steps):
                lr = cosine_lr(config.learning_rate, first + j, config.num_steps)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                losses[first + j] = self.step(x0[j], t[j], eps[j])
                self.ema.update(self.model)
            self._check_finite(losses[first : first + steps], first)
            runtime.follow_sharing()  # another lowdiff run started or ended: re-divide the CPUs
            bar.update(steps)
            end = first + steps
            every = config.checkpoint_every
            if checkpoint is not None and (
                end // every > first // every or end == config.num_steps
            ):
                paused = time.perf_counter()
                self.save_checkpoint(checkpoint, end, losses, elapsed + paused - start)
                start += time.perf_counter() - paused  # saving is not training time
        if losses.is_cuda:
            torch.cuda.synchronize()
        training_time = elapsed + time.perf_counter() - start
        bar.close()
        return TrainResult(
            self.members,
            self.model,
            self.ema.model,
            losses.T.cpu().numpy(),
            training_time,
            self.generators,
            dict(self.diverged),
        )

    # --- checkpoints ----------------------------------------------------------------------

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The tensors of the training state, by name, as NumPy arrays (no losses, no meta)."""
        arrays = {f"model/{n}": _numpy(p) for n, p in self.model.named_parameters()}
        arrays |= {f"ema/{n}": _numpy(p) for n, p in self.ema.model.named_parameters()}
        for index, entry in self.optimizer.state_dict()["state"].items():
            arrays |= {f"adam/{index}/{key}": _numpy(value) for key, value in entry.items()}
        for m, streams in enumerate(self.generators):
            arrays |= {f"rng/{m}/{name}": _numpy(g.get_state()) for name, g in streams.items()}
        for m, order in enumerate(self.source.permutations):
            if order is not None:
                arrays[f"order/{m}"] = _numpy(order)
        return arrays

    def save_checkpoint(self, path: Path, step: int, losses: torch.Tensor, elapsed: float) -> None:
        """Write the whole state after `step` steps to `path` atomically: one .npz of numeric
        arrays, uncompressed (it is rewritten every `checkpoint_every` steps)."""
        meta = {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "step": step,
            "elapsed": elapsed,
            "ema_step": self.ema.step,
            "ema_initialised": self.ema.initialised,
            "positions": list(self.source.positions),
            "diverged": {str(m): s for m, s in self.diverged.items()},
        }
        arrays = self.state_arrays() | {"losses": _numpy(losses[:step])}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        atomic_write_with(Path(path), lambda buffer: np.savez(buffer, **arrays))
        log.info("checkpoint at step %d: %s", step, path)

    def load_checkpoint(self, path: Path, losses: torch.Tensor) -> tuple[int, float] | None:
        """Restore the state saved at `path` (and its losses into `losses`); returns (step,
        elapsed), or None, leaving the state untouched, if there is no usable checkpoint."""
        path = Path(path)
        if not path.exists():
            return None
        try:
            arrays = read_npz(path, finite=False)  # a diverged model may hold NaN
            meta = json.loads(arrays.pop("meta").tobytes().decode())
        except (ResultsError, KeyError, ValueError, UnicodeDecodeError) as error:
            log.warning(
                "ignoring unreadable checkpoint %s (%s); training from the start", path, error
            )
            return None
        if not isinstance(meta, dict) or meta.get("fingerprint") != self.fingerprint:
            log.info("ignoring checkpoint %s of another configuration", path)
            return None
        try:
            apply = self._restore_plan(arrays, meta, losses)
        except (KeyError, ValueError, TypeError, RuntimeError) as error:
            log.warning("ignoring corrupt checkpoint %s (%s); training from the start", path, error)
            return None
        apply()
        if self.update is not None:
            self.update.refresh()
        log.info("resuming from the checkpoint at step %d: %s", meta["step"], path)
        return int(meta["step"]), float(meta["elapsed"])

    def _restore_plan(
        self, arrays: dict[str, np.ndarray], meta: dict[str, Any], losses: torch.Tensor
    ) -> Any:
        """Check every part of a checkpoint first; return a function that applies it."""
        step, num_models = int(meta["step"]), len(self.members)
        if not (0 < step <= self.config.num_steps) or (
            step % CHUNK_STEPS and step != self.config.num_steps
        ):
            raise ValueError(f"step {step} is not a chunk boundary of this training")
        model = [(p, _checked(arrays, f"model/{n}", p)) for n, p in self.model.named_parameters()]
        ema = [(p, _checked(arrays, f"ema/{n}", p)) for n, p in self.ema.model.named_parameters()]
        adam_state = {
            i: {
                key: torch.from_numpy(np.array(arrays[f"adam/{i}/{key}"]))
                for key in ("step", "exp_avg", "exp_avg_sq")
            }
            for i in range(len(self.parameters))
        }
        in_optimizer_order = [p for group in self.optimizer.param_groups for p in group["params"]]
        for i, p in enumerate(in_optimizer_order):  # the state's index i is this order's
            _checked(arrays, f"adam/{i}/exp_avg", p), _checked(arrays, f"adam/{i}/exp_avg_sq", p)
        states = [
            [(g, arrays[f"rng/{m}/{name}"]) for name, g in streams.items()]
            for m, streams in enumerate(self.generators)
        ]
        for g, state in (pair for streams in states for pair in streams):
            if state.dtype != np.uint8 or state.shape != tuple(g.get_state().shape):
                raise ValueError("a generator state has the wrong size")
        source = self.source
        orders = [arrays.get(f"order/{m}") for m in range(num_models)]
        positions = [int(p) for p in meta["positions"]]
        if len(positions) != num_models or any(
            o is not None and o.shape != (source.data.shape[1],) for o in orders
        ):
            raise ValueError("the data order does not fit this training")
        saved_losses = _checked(arrays, "losses", losses[:step])
        diverged = {int(m): int(s) for m, s in meta["diverged"].items()}
        _check_tampering(arrays, meta, diverged, source.data.shape[1], num_models)
        ema_step, ema_initialised = int(meta["ema_step"]), bool(meta["ema_initialised"])

        @torch.no_grad()
        def apply() -> None:
            for target, value in model + ema:
                target.copy_(value)
            groups = self.optimizer.state_dict()["param_groups"]
            self.optimizer.load_state_dict({"state": adam_state, "param_groups": groups})
            for g, state in (pair for streams in states for pair in streams):
                g.set_state(torch.from_numpy(np.array(state)))
            source.permutations = [
                None if o is None else torch.from_numpy(np.array(o)).to(source.data.device)
                for o in orders
            ]
            source.positions = positions
            losses[:step] = saved_losses
            self.diverged = diverged
            self.ema.step, self.ema.initialised = ema_step, ema_initialised

        return apply
