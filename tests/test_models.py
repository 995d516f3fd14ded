"""The batched architectures: the protocol's structure; a batch of M equals M separate models."""

import pytest
import torch

from lowdiff.models import ARCHITECTURES, ModelConfig, build_model
from lowdiff.models.layers import Embedded, gather_by_timestep, sinusoidal_embedding, split_rows
from lowdiff.models.reference import PlainMLPDenoiser

CONFIGS = {
    "mlp": ModelConfig(),
    "dual_scale_fixed": ModelConfig(arch="dual_scale", weighting="fixed"),
    "dual_scale_learned": ModelConfig(arch="dual_scale", weighting="learned"),
    "dual_scale_deep": ModelConfig(arch="dual_scale", weighting="learned_deep"),
    "dual_scale_zoom": ModelConfig(arch="dual_scale", upscale="fixed", zoom=3.0),
    "dual_expert_simple": ModelConfig(arch="dual_expert"),
    "dual_expert_enhanced": ModelConfig(arch="dual_expert", gate="enhanced"),
    "dual_expert_larger": ModelConfig(arch="dual_expert", gate="enhanced", larger_experts=True),
}


def make(config, seeds):
    model = build_model(config, len(seeds), 100)
    model.reset_parameters([torch.Generator().manual_seed(s) for s in seeds])
    return model


def test_every_architecture_is_covered():
    assert {c.arch for c in CONFIGS.values()} == set(ARCHITECTURES)


@pytest.mark.parametrize("name", CONFIGS)
def test_batched_forward_equals_separate_models(name):
    seeds = [3, 7, 11]
    batched = make(CONFIGS[name], seeds)
    x = torch.randn(3, 16, 2)
    t = torch.randint(0, 100, (3, 16))
    out = batched(x, t)
    for m, seed in enumerate(seeds):
        alone = make(CONFIGS[name], [seed])(x[m : m + 1], t[m : m + 1])
        assert torch.allclose(out.eps[m], alone.eps[0], atol=1e-5)
        if out.weights is not None:
            assert torch.allclose(out.weights[m], alone.weights[0], atol=1e-6)


@pytest.mark.parametrize("name", CONFIGS)
def test_shared_timestep_equals_per_sample_timesteps(name):
    model = make(CONFIGS[name], [0, 1])
    x = torch.randn(2, 8, 2)
    shared = model(x, 42)
    per_sample = model(x, torch.full((2, 8), 42))
    assert torch.allclose(shared.eps, per_sample.eps, atol=1e-5)


def test_baseline_matches_the_spec_network():
    batched = make(ModelConfig(), [5])
    reference = PlainMLPDenoiser()
    layers = [
        batched.network.input,
        *[b.linear for b in batched.network.blocks],
        batched.network.output,
    ]
    plain = [reference.input, *reference.blocks, reference.output]
    with torch.no_grad():
        for ours, theirs in zip(layers, plain, strict=True):
            theirs.weight.copy_(ours.weight[0].T)
            theirs.bias.copy_(ours.bias[0, 0])
    x, t = torch.randn(32, 2), torch.randint(0, 100, (32,))
    assert torch.allclose(batched(x[None], t[None]).eps[0], reference(x, t), atol=1e-5)
    assert sum(p.numel() for p in reference.parameters()) == sum(
        p.numel() for p in batched.parameters()
    )


@pytest.mark.parametrize("extra_layer", [False, True])
def test_the_trunks_in_place_sums_and_relus_give_the_written_bits(extra_layer):
    """Trunk sums each block into its product's output and applies its last ReLUs in place;
    the values and every gradient must be those of the written h + Linear(ReLU(h))."""
    config = CONFIGS["dual_expert_larger" if extra_layer else "mlp"]
    model = make(config, [3, 4])
    trunk = model.network if not extra_layer else model.experts[0]
    x, t = torch.randn(2, 64, 2), torch.randint(0, 100, (2, 64))
    embedded = model.embed(x, t)

    def written() -> torch.Tensor:
        h = trunk.input(embedded)
        for block in trunk.blocks:
            h = h + block.linear(torch.relu(h))
        if trunk.extra is not None:
            h = trunk.extra(torch.relu(h))
        return trunk.output(torch.relu(h))

    grads = []
    for forward in (lambda: trunk(embedded), written):
        trunk.zero_grad(set_to_none=True)
        out = forward()
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((out.detach(), [p.grad for p in trunk.parameters()]))
    (ours, our_grads), (theirs, their_grads) = grads
    assert torch.equal(ours, theirs)
    assert all(torch.equal(a, b) for a, b in zip(our_grads, their_grads, strict=True))


def test_embedding_frequencies_follow_the_spec():
    emb = sinusoidal_embedding(torch.tensor([1.0]), 128, 25.0)[0]
    frequency = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(64) / 63)
    assert torch.allclose(emb[:64], torch.sin(25.0 * frequency), atol=1e-6)
    assert torch.allclose(emb[64:], torch.cos(25.0 * frequency), atol=1e-6)


def test_embedding_built_first_under_inference_mode_still_takes_gradients():
    """The frequencies are built once per size (`layers.built_once`): built first inside
    `torch.inference_mode()` (a size nothing else uses), they still serve a backward pass
    through the input, whose gradient is the derivative of sin and cos."""
    with torch.inference_mode():
        sinusoidal_embedding(torch.zeros(3), 130, 2.0)
    values = torch.tensor([0.3, -1.2, 2.5], requires_grad=True)
    sinusoidal_embedding(values, 130, 2.0).sum().backward()
    frequency = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(65) / 64)
    angles = 2.0 * values.detach().unsqueeze(-1) * frequency
    expected = (2.0 * frequency * (torch.cos(angles) - torch.sin(angles))).sum(-1)
    assert torch.allclose(values.grad, expected, rtol=1e-5, atol=1e-5)


def test_initialisation_matches_nn_linear_bounds():
    model = make(ModelConfig(), [0])
    weight = model.network.input.weight
    assert weight.abs().max() <= 1 / 384**0.5 and weight.abs().max() > 0.9 / 384**0.5


@pytest.mark.parametrize("name", ["dual_scale_learned", "dual_scale_deep"])
def test_dual_scale_weights_are_a_convex_mix(name):
    model = make(CONFIGS[name], [0])
    x, t = torch.randn(1, 20, 2), torch.randint(0, 100, (1, 20))
    out = model(x, t)
    assert torch.allclose(out.weights.sum(-1), torch.ones(1, 20), atol=1e-6)
    local_x = model.upscale(x)
    g = model.global_branch(model.embed(x, t))
    local = model.local_branch(model.embed(local_x, t))
    w = out.weights
    assert torch.allclose(out.eps, w[..., :1] * g + w[..., 1:] * local, atol=1e-5)


def test_dual_expert_mixes_with_its_gate():
    model = make(CONFIGS["dual_expert_simple"], [0])
    x, t = torch.randn(1, 20, 2), torch.randint(0, 100, (1, 20))
    out = model(x, t)
    e = model.embed(x, t)
    g = out.weights
    assert ((g > 0) & (g < 1)).all()
    assert torch.allclose(
        out.eps, g * model.experts[0](e) + (1 - g) * model.experts[1](e), atol=1e-5
    )


def test_options_of_another_architecture_are_rejected():
    with pytest.raises(ValueError, match="does not apply"):
        ModelConfig(arch="mlp", weighting="fixed")
    with pytest.raises(ValueError, match="valid"):
        ModelConfig(arch="transformer")  # type: ignore[arg-type]


def test_the_architecture_list_is_the_declared_registry():
    import typing

    from lowdiff import architectures, settings

    assert typing.get_args(architectures.ArchName) == tuple(architectures.ARCHITECTURES)
    for name in architectures.ARCHITECTURES:  # ModelConfig accepts exactly the declared names
        assert settings.ModelConfig(arch=name).arch == name
    with pytest.raises(ValueError, match=", ".join(architectures.ARCHITECTURES)):
        settings.ModelConfig(arch="not_declared")
    assert list(ARCHITECTURES) == list(architectures.ARCHITECTURES)
    for name, cls in ARCHITECTURES.items():
        assert cls.__module__ == f"lowdiff.models.{name}"


def test_gather_by_timestep_has_the_values_and_gradient_bits_of_torch_gather():
    """The literal reference is torch.gather along T; many samples share a timestep, so the
    gradient sums several rows and its bits depend on the order of the sum."""
    generator = torch.Generator().manual_seed(0)
    table = torch.randn(3, 10, 64, generator=generator)
    t = torch.randint(0, 10, (3, 200), generator=generator)
    upstream = torch.randn(3, 200, 64, generator=generator)
    results = []
    for pick in (gather_by_timestep, _reference_gather):
        leaf = table.clone().requires_grad_()
        picked = pick(leaf, t)
        picked.backward(upstream)
        results.append((picked.detach(), leaf.grad))
    (values, grad), (expected_values, expected_grad) = results
    assert torch.equal(values, expected_values)
    assert torch.equal(grad, expected_grad)
    assert torch.equal(gather_by_timestep(table, 4), table[:, 4:5])  # a shared timestep


def test_the_joint_embedding_is_the_concatenation_and_under_autocast_its_bf16_rounding():
    """Literal reference: torch.cat of the coordinates' embedding and the time table's rows;
    under bf16 autocast the same tensor rounded to bf16, as autocast rounds a product's input,
    with the coordinates' gradient that of the fp32 concatenation rounded the same way."""
    generator = torch.Generator().manual_seed(0)
    coords = torch.randn(2, 5, 8, generator=generator, requires_grad=True)
    table = torch.randn(10, 4, generator=generator)
    t = torch.randint(0, 10, (2, 5), generator=generator)
    embedded = Embedded(coords, t, table)
    expected = torch.cat([coords, table[t]], dim=-1)
    assert torch.equal(embedded.joint(), expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        joint = embedded.joint()
    assert joint.dtype == torch.bfloat16
    assert torch.equal(joint, expected.to(torch.bfloat16))
    upstream = torch.randn(2, 5, 12, generator=generator).to(torch.bfloat16)
    (grad,) = torch.autograd.grad(joint, coords, upstream)
    (expected_grad,) = torch.autograd.grad(expected.to(torch.bfloat16), coords, upstream)
    assert grad.dtype == torch.float32 and torch.equal(grad, expected_grad)


def test_split_rows_has_the_values_and_gradient_bits_of_two_plain_slices():
    """The literal reference is weight[:, :r] and weight[:, r:] under plain autograd, whose
    gradient is each slice's zero-padded gradient added; the join must give the same bits,
    and a block used alone (the other's gradient none) its zeros."""
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(3, 12, 5, generator=generator)
    left = torch.randn(3, 7, 5, generator=generator)
    right = torch.randn(3, 5, 5, generator=generator)
    for uses in ((True, True), (True, False), (False, True)):
        grads = []
        for split in (split_rows, lambda w, r: (w[:, :r], w[:, r:])):
            leaf = weight.clone().requires_grad_()
            first, second = split(leaf, 7)
            assert torch.equal(first, weight[:, :7]) and torch.equal(second, weight[:, 7:])
            loss = sum(
                (block * upstream).sum()
                for block, upstream, used in zip((first, second), (left, right), uses, strict=True)
                if used
            )
            loss.backward()
            grads.append(leaf.grad)
        assert torch.equal(grads[0], grads[1]), uses


def _reference_gather(table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.gather(table, 1, t.unsqueeze(-1).expand(-1, -1, table.shape[-1]))
