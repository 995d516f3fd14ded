"""The batched engine: a model trained in a batch of M equals that model trained alone."""

import numpy as np
import pytest
import torch

from lowdiff.engine import (
    BatchedEMA,
    BatchSource,
    DivergenceError,
    Member,
    TrainConfig,
    Trainer,
    clip_grad_norm_per_model,
    cosine_lr,
    mean_pairwise_distance,
    stream_generators,
)
from lowdiff.models import ModelConfig, build_model
from lowdiff.schedule import NoiseSchedule, ScheduleConfig

SMALL = {"embedding_dim": 16, "hidden_dim": 32}
ARCHS = {
    "mlp": ModelConfig(**SMALL),
    "dual_scale_learned": ModelConfig(arch="dual_scale", **SMALL),
    "dual_scale_deep": ModelConfig(arch="dual_scale", weighting="learned_deep", **SMALL),
    "dual_expert_larger": ModelConfig(
        arch="dual_expert", gate="enhanced", larger_experts=True, **SMALL
    ),
}
DEVICE = torch.device("cpu")


@pytest.fixture(scope="module")
def datasets():
    generator = torch.Generator().manual_seed(0)
    return {
        "a": torch.randn(1000, 2, generator=generator),
        "b": torch.rand(1000, 2, generator=generator) * 4,
    }


def run(config, members, datasets, **train_options):
    options = {
        "num_steps": 12,
        "batch_size": 64,
        "ema_update_every": 2,
        "ema_warmup_steps": 3,
    } | train_options
    schedule = NoiseSchedule(ScheduleConfig())
    return Trainer(config, members, datasets, schedule, TrainConfig(**options), DEVICE).run()


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("diversity", [0.0, 0.1])
def test_batched_training_equals_training_alone(name, diversity, datasets):
    members = [Member("a", 0), Member("b", 1), Member("a", 5)]
    together = run(ARCHS[name], members, datasets, diversity_weight=diversity)
    for m, member in enumerate(members):
        alone = run(ARCHS[name], [member], datasets, diversity_weight=diversity)
        np.testing.assert_allclose(together.losses[m], alone.losses[0], rtol=1e-4, atol=1e-6)
        for batched_model, single_model in (
            (together.model, alone.model),
            (together.ema_model, alone.ema_model),
        ):
            for p, q in zip(batched_model.parameters(), single_model.parameters(), strict=True):
                torch.testing.assert_close(p[m], q[0], rtol=1e-4, atol=1e-5)


def test_models_with_different_seeds_differ(datasets):
    result = run(ARCHS["mlp"], [Member("a", 0), Member("a", 1)], datasets)
    first = next(result.model.parameters())
    assert not torch.allclose(first[0], first[1])


def test_training_reduces_the_loss(datasets):
    result = run(ModelConfig(), [Member("b", 0)], datasets, num_steps=150)
    assert result.losses[0, -30:].mean() < 0.9 * result.losses[0, :30].mean()


def reference_ema_decays(num_calls, beta=0.995, every=10, warmup=100):
    """ema-pytorch's EMA.update / get_current_decay with default arguments, written out."""
    decays = []
    step, initted = 0, False
    for _ in range(num_calls):
        current = step
        step += 1
        if current % every:
            decays.append(None)
        elif current <= warmup:
            decays.append("copy")
        else:
            if not initted:
                initted = True
                decays.append("copy")
                continue
            epoch = max(step - warmup - 1, 0)
            decays.append(0.0 if epoch <= 0 else min(beta, max(0.0, 1 - (1 + epoch) ** (-2 / 3))))
    return decays


def test_ema_follows_ema_pytorch_warmup():
    model = build_model(ModelConfig(**SMALL), 1, 100)
    model.reset_parameters([torch.Generator().manual_seed(0)])
    ema = BatchedEMA(model, 0.995, 10, 100)
    for expected in reference_ema_decays(400):
        before = [p.clone() for p in ema.model.parameters()]
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        ema.update(model)
        after = next(ema.model.parameters())
        if expected is None:
            assert torch.equal(after, before[0])
        elif expected == "copy":
            assert torch.equal(after, next(model.parameters()))
        else:
            lerp = before[0] + (1 - expected) * (next(model.parameters()) - before[0])
            torch.testing.assert_close(after, lerp)


def test_clipping_is_per_model():
    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(3, 5, 4, generator=generator) * s for s in (1.0, 0.01, 10.0)]
    params = [torch.zeros(3, 5, 4, requires_grad=True) for _ in grads]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    norms = clip_grad_norm_per_model(params, 0.5)
    for m in range(3):
        single = [torch.zeros(5, 4, requires_grad=True) for _ in grads]
        for p, g in zip(single, grads, strict=True):
            p.grad = g[m].clone()
        norm = torch.nn.utils.clip_grad_norm_(single, 0.5)
        assert norms[m].item() == pytest.approx(norm.item(), rel=1e-5)
        for p, q in zip(params, single, strict=True):
            torch.testing.assert_close(p.grad[m], q.grad)


def test_every_epoch_is_a_permutation_without_the_last_partial_batch():
    data = (
        torch.arange(10, dtype=torch.float32).repeat(2, 1).T[None]
    )  # (1, 10, 2), point i = (i, i)
    generators = [stream_generators(Member("a", 0), DEVICE)]
    source = BatchSource(data, torch.tensor([0]), generators, batch_size=3, num_timesteps=100)
    x0, t, eps = source.next_chunk(9)  # 3 epochs of 3 batches (9 of 10 points each)
    indices = x0[..., 0].reshape(3, 9).long()
    for epoch in indices:
        assert len(set(epoch.tolist())) == 9
    assert t.shape == (9, 1, 3) and eps.shape == (9, 1, 3, 2) and t.max() < 100


def test_cosine_lr_matches_torch_scheduler():
    parameter = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([parameter], lr=3e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=50)
    for step in range(50):
        assert cosine_lr(3e-4, step, 50) == pytest.approx(
            optimizer.param_groups[0]["lr"], rel=1e-9, abs=1e-15
        )
        optimizer.step()
        scheduler.step()


def test_mean_pairwise_distance_matches_pdist():
    eps = torch.randn(2, 30, 2)
    expected = torch.stack([torch.pdist(eps[m]).mean() for m in range(2)])
    torch.testing.assert_close(mean_pairwise_distance(eps), expected)


def test_divergence_names_the_model(datasets):
    broken = dict(datasets) | {"bad": torch.full((1000, 2), float("nan"))}
    with pytest.raises(DivergenceError, match=r"bad/seed 3"):
        run(ARCHS["mlp"], [Member("a", 0), Member("bad", 3)], broken)


@pytest.mark.parametrize(
    "field,value", [("num_steps", -5), ("num_steps", 0), ("batch_size", 0), ("learning_rate", 0.0)]
)
def test_bad_train_config_is_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})
