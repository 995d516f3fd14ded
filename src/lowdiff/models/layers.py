"""Batched building blocks: every layer holds the weights of M independent models.

A tensor that flows through these layers has the model axis first: (M, B, features). A linear
layer is one `baddbmm` over the M models, so M small networks train as one computation while
staying mathematically independent (no weight or gradient is shared between models).

Initialisation matches PyTorch's `nn.Linear` default in distribution (weight and bias uniform in
±1/sqrt(fan_in)) and draws each model's numbers from that model's own generator, so a model's
initial weights do not depend on which other models share its batch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

SIMD_MULTIPLE = 64  # elements: a multiple of every CPU vector width


def elementwise(function: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """function(x) for an elementwise function, computed the same way for every element.

    PyTorch's CPU kernels compute the last (size mod vector width) elements of a tensor in a
    scalar loop whose exp/sin/cos round differently from the vectorised loop. A model's values
    would then depend on whether they sit at the end of the batched tensor, i.e. on its
    batch-mates. Padding the flattened tensor to a multiple of every vector width removes the
    tail (at one thread; other devices are passed through).
    """
    flat = x.reshape(-1)
    padding = -flat.numel() % SIMD_MULTIPLE
    if x.device.type != "cpu" or padding == 0:
        return function(x)
    padded = torch.cat([flat, flat.new_zeros(padding)])
    return function(padded)[: flat.numel()].view(x.shape)


def column_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x (M, B, in) @ weight (M, in, 1) + bias (M, 1, 1) as a product and a last-axis sum.

    A one-column bmm goes to a BLAS kernel chosen by the batch size (a different one for one
    model than for several), so its sums would depend on the batch-mates; this does not.
    """
    return (x * weight.transpose(1, 2)).sum(dim=-1, keepdim=True) + bias


def affine(bias: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """bias + x @ weight over the model axis: (M, 1 or B, out), (M, B, in), (M, in, out).

    One `baddbmm`, as every eager result was computed. Under torch.compile (train.compile,
    eval.compile) the product and the bias are added apart, so the compiler folds the addition
    into the element-wise kernel that follows instead of first copying the broadcast bias into
    the product's output: some 10 % of a compiled bf16 sampling pass, and with the joint
    embedding written in bf16 (`Embedded.joint`) 3-8 % of a compiled training step
    (docs/speed.md).
    """
    if torch.compiler.is_compiling():
        product = torch.bmm(x, weight)
        return product + bias.to(product.dtype)
    return torch.baddbmm(bias, x, weight)


def built_once(build: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """`build` called once per arguments in eager runs (a constant each step would otherwise
    build again: a one-model eager step took 0.986x the time without them, docs/speed.md).
    Under torch.compile it is traced as written: dynamo warns about a cache, and inductor folds
    such constants into its kernels anyway. Built outside inference mode, as a constant met
    first under `torch.inference_mode()` could not then be saved for a backward pass."""

    def outside_inference_mode(*args: object) -> torch.Tensor:
        with torch.inference_mode(False):
            return build(*args)

    cached = functools.cache(outside_inference_mode)

    @functools.wraps(build)
    def call(*args: object) -> torch.Tensor:
        return build(*args) if torch.compiler.is_compiling() else cached(*args)

    return call


@built_once
def frequencies(half: int, device: torch.device) -> torch.Tensor:
    """f_i = exp(-ln(10000) i / (half - 1)), i < half (float32)."""
    exponent = -math.log(10000.0) / (half - 1)
    return torch.exp(exponent * torch.arange(half, device=device, dtype=torch.float32))


@built_once
def first_rows(num_models: int, num_timesteps: int, device: torch.device) -> torch.Tensor:
    """(M, 1): the row at which model m's block starts in a flattened (M * T, F) table."""
    return num_timesteps * torch.arange(num_models, device=device).unsqueeze(1)


def sinusoidal_embedding(values: torch.Tensor, dim: int, scale: float) -> torch.Tensor:
    """[sin(s v f), cos(s v f)] with f_i = exp(-ln(10000) i / (half - 1)), i < half = dim // 2.

    values: (...,) -> (..., dim). Frequencies as in protocol §1 (and tiny-diffusion).
    """
    angles = (values * scale).unsqueeze(-1) * frequencies(dim // 2, values.device)  # (..., half)
    return torch.cat([elementwise(torch.sin, angles), elementwise(torch.cos, angles)], dim=-1)


class BatchedLinear(nn.Module):
    """M independent `nn.Linear(in_features, out_features)` layers applied as one bmm."""

    def __init__(self, num_models: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        # stored transposed, (M, in, out), so that forward is x @ W without a transpose copy
        self.weight = nn.Parameter(torch.empty(num_models, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(num_models, 1, out_features))

    def reset_parameters(self, generators: list[torch.Generator]) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            for m, generator in enumerate(generators):
                # same order as nn.Linear: weight (out, in) first, then bias
                weight = torch.empty(self.out_features, self.in_features, device=self.weight.device)
                weight.uniform_(-bound, bound, generator=generator)
                self.weight[m].copy_(weight.T)
                self.bias[m].uniform_(-bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.out_features == 1:
            return column_linear(x, self.weight, self.bias)  # (M, B, 1)
        return affine(self.bias, x, self.weight)  # (M, B, in) -> (M, B, out)


def product_weights(module: nn.Module) -> list[str]:
    """Names (as `module.named_parameters` gives them) of the weights that enter only matrix
    products: every BatchedLinear's with more than one output, whose forward is `affine`'s
    product (a one-output layer multiplies element-wise, `column_linear`). The architectures
    that read such a weight themselves do so in `torch.matmul`. A compiled bf16 training
    trains these through bf16 working copies (`engine.CompiledUpdate`)."""
    return [
        f"{name}.weight" if name else "weight"
        for name, layer in module.named_modules()
        if isinstance(layer, BatchedLinear) and layer.out_features > 1
    ]


def reset_all(module: nn.Module, generators: list[torch.Generator]) -> None:
    """Initialise every BatchedLinear below `module`, in registration order, model by model."""
    for layer in module.modules():
        if isinstance(layer, BatchedLinear):
            layer.reset_parameters(generators)


@dataclass
class Embedded:
    """The sinusoidal input of a denoiser, kept factorised so t costs a table look-up.

    coords: (M, B, 2E) embedding of the two coordinates.
    t: (M, B) integer timesteps, or a Python int shared by the whole batch (sampling).
    time_table: (T, E) embedding of every timestep 0..T-1.
    """

    coords: torch.Tensor
    t: torch.Tensor | int
    time_table: torch.Tensor

    def time(self) -> torch.Tensor:
        """The time embedding itself, (M, B, E) or (1, 1, E) for a shared t."""
        if isinstance(self.t, int):
            return self.time_table[self.t].view(1, 1, -1)
        return self.time_table[self.t]

    def joint(self) -> torch.Tensor:
        """The concatenated embedding e = [emb(x0), emb(x1), emb(t)], (M, B, 3E).

        Under autocast in the product's lower precision: the pieces are cast before they are
        joined, to the values autocast would give e at the product, so a compiler writes e once
        in that precision instead of in fp32 and then again cast.
        """
        coords, time = self.coords, self.time().expand(*self.coords.shape[:2], -1)
        device = coords.device.type
        if torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)
            coords, time = coords.to(dtype), time.to(dtype)
        return torch.cat([coords, time], dim=-1)


def gather_by_timestep(per_timestep: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
    """Pick row t of a per-timestep table (M, T, F) for every sample: -> (M, B, F) or (M, 1, F).

    The rows are taken from the flattened (M * T, F) table with `index_select`: the same values
    as `torch.gather` along the T axis, and a backward (`index_add_`) that sums each row's
    gradients in the same order as gather's (`scatter_add_`), so the same bits, at about a tenth
    of their time on the CPU (tests/test_layers.py, docs/speed.md).
    """
    if isinstance(t, int):
        return per_timestep[:, t : t + 1]
    num_models, num_timesteps, features = per_timestep.shape
    rows = (t + first_rows(num_models, num_timesteps, t.device)).reshape(-1)  # (M * B,)
    table = per_timestep.reshape(num_models * num_timesteps, features)
    if torch.compiler.is_compiling():
        return table_rows(table, rows).view(*t.shape, features)
    return table.index_select(0, rows).view(*t.shape, features)  # (M, B, F)


# Under torch.compile the same look-up is one opaque operator whose backward is ATen's
# `index_add_`: inductor would otherwise generate the backward as a scatter of atomic adds,
# which took 15 % of a compiled bf16 step (M = 16, CPU; docs/speed.md).
@torch.library.custom_op("lowdiff::table_rows", mutates_args=())
def table_rows(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """table.index_select(0, rows), opaque to the compiler."""
    return table.index_select(0, rows)


@table_rows.register_fake
def _table_rows_shape(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return table.new_empty(rows.shape[0], *table.shape[1:])


@torch.library.custom_op("lowdiff::table_rows_backward", mutates_args=())
def table_rows_backward(grad: torch.Tensor, rows: torch.Tensor, num_rows: int) -> torch.Tensor:
    """The gradient of the table: each selected row's gradient added into its row (index_add_,
    as autograd's backward of index_select)."""
    return grad.new_zeros(num_rows, *grad.shape[1:]).index_add_(0, rows, grad)


@table_rows_backward.register_fake
def _table_rows_backward_shape(
    grad: torch.Tensor, rows: torch.Tensor, num_rows: int
) -> torch.Tensor:
    return grad.new_empty(num_rows, *grad.shape[1:])


def _table_rows_setup(
    ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: torch.Tensor
) -> None:
    table, rows = inputs
    ctx.save_for_backward(rows)
    ctx.num_rows = table.shape[0]


def _table_rows_grad(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple:
    (rows,) = ctx.saved_tensors
    return table_rows_backward(grad.contiguous(), rows, ctx.num_rows), None


table_rows.register_autograd(_table_rows_grad, setup_context=_table_rows_setup)


class _SplitRows(torch.autograd.Function):
    """The two row blocks of a weight, whose gradient is the two blocks' gradients joined."""

    @staticmethod
    def forward(weight: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        return weight[:, :rows], weight[:, rows:]

    @staticmethod
    def setup_context(
        ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: tuple
    ) -> None:
        ctx.set_materialize_grads(True)  # a block used alone: the other's gradient is zeros

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, first: torch.Tensor, second: torch.Tensor
    ) -> tuple[torch.Tensor, None]:
        return torch.cat([first, second], dim=1), None


def split_rows(weight: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """weight[:, :rows] and weight[:, rows:] for weight (M, in, out).

    Two slices of a parameter would each give it a zero-filled full-size gradient, which
    autograd then adds: three passes over the weight's size. Joining the two blocks' gradients
    is one, with the same bits (each element of the sum was one block's value plus zero).
    Without autograd, plain slices.
    """
    if not (torch.is_grad_enabled() and weight.requires_grad):
        return weight[:, :rows], weight[:, rows:]
    return _SplitRows.apply(weight, rows)


class EmbeddingLinear(BatchedLinear):
    """Linear(3E, out) on the joint embedding e, computed without materialising e.

    e @ W = emb(x) @ W_x + emb(t) @ W_t. Since t takes only T values, emb(t) @ W_t is computed
    once for the whole time table (T rows instead of B) and gathered: the same numbers as the
    plain layer, fewer FLOPs. The parameter layout is that of BatchedLinear(3E, out). Under
    torch.compile with gradients (train.compile) it is the plain layer on e.
    """

    def forward(self, embedded: Embedded) -> torch.Tensor:  # type: ignore[override]
        if torch.compiler.is_compiling() and torch.is_grad_enabled():
            # compiled training: the plain layer on the materialised joint embedding, one
            # product whose weight gradient is one product too (the factorised form's sliced
            # weight gradient and its scattered time rows cost more once the rest is fused;
            # docs/speed.md). Sampling keeps the factorised form: its t is one row.
            return affine(self.bias, embedded.joint(), self.weight)
        weight_x, weight_t = split_rows(self.weight, embedded.coords.shape[-1])  # (M, 2E|E, out)
        per_timestep = torch.matmul(embedded.time_table, weight_t) + self.bias  # (M, T, out)
        offset = gather_by_timestep(per_timestep, embedded.t)  # (M, B, out) or (M, 1, out)
        return affine(offset, embedded.coords, weight_x)  # (M, B, out)


class ResidualBlock(nn.Module):
    """h + Linear(ReLU(h)), as in the baseline network."""

    def __init__(self, num_models: int, width: int) -> None:
        super().__init__()
        self.linear = BatchedLinear(num_models, width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # the sum into the product's own fresh output: h + y and y + h round alike, and no
        # new (M, B, H) buffer is written (sampling 10,000 points: 0.955x the time; docs/speed.md)
        return self.linear(torch.relu(h)).add_(h)


class Trunk(nn.Module):
    """The baseline network's structure on the joint embedding, batched over M models.

    EmbeddingLinear(3E, H) -> hidden_layers x ResidualBlock(H) -> ReLU -> Linear(H, out).
    With `extra_layer` (the "larger experts" of protocol §3 run 3) the head is
    ReLU -> Linear(H, H) -> ReLU -> Linear(H, out).
    """

    def __init__(
        self,
        num_models: int,
        embedding_dim: int,
        hidden_dim: int,
        hidden_layers: int,
        out_features: int = 2,
        extra_layer: bool = False,
    ) -> None:
        super().__init__()
        self.input = EmbeddingLinear(num_models, 3 * embedding_dim, hidden_dim)
        self.blocks = nn.ModuleList(
            ResidualBlock(num_models, hidden_dim) for _ in range(hidden_layers)
        )
        self.extra = BatchedLinear(num_models, hidden_dim, hidden_dim) if extra_layer else None
        self.output = BatchedLinear(num_models, hidden_dim, out_features)

    def forward(self, embedded: Embedded) -> torch.Tensor:
        h = self.input(embedded)  # (M, B, H)
        for block in self.blocks:
            h = block(h)
        # h is this method's own from here on: its ReLU in place (autograd saves the result,
        # which nothing else changes; the sum that made h saves nothing)
        if self.extra is not None:
            h = self.extra(torch.relu_(h))
        return self.output(torch.relu_(h))  # (M, B, out)
