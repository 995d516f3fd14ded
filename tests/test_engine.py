"""The batched engine: a model trained in a batch of M equals that model trained alone;
divergence stays with its model; a checkpoint resumes bit-identically."""

import json
import math

import numpy as np
import pytest
import torch

from lowdiff.engine import (
    BatchedEMA,
    BatchSource,
    Member,
    TrainConfig,
    Trainer,
    clip_grad_norm_per_model,
    clipped_adamw_,
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


ADAMW = {"lr": 0.05, "weight_decay": 0.1, "betas": (0.9, 0.999), "eps": 1e-8}


def numpy_clipped_adamw(params, grads_per_step, max_norm=0.5):
    """Per-model clipping to max_norm, then AdamW with decoupled weight decay (Loshchilov &
    Hutter; torch's defaults for betas and eps), literally, in float64: (params, m, v)."""
    lr, decay, (b1, b2), eps = (ADAMW[k] for k in ("lr", "weight_decay", "betas", "eps"))
    p = [x.astype(np.float64) for x in params]
    m, v = [np.zeros_like(x) for x in p], [np.zeros_like(x) for x in p]
    for step, grads in enumerate(grads_per_step, start=1):
        norms = np.sqrt(sum((g.astype(np.float64) ** 2).sum(axis=(1, 2)) for g in grads))
        scale = np.minimum(1.0, max_norm / (norms + 1e-6))[:, None, None]
        for i, g in enumerate(grads):
            g = g * scale
            p[i] = p[i] * (1 - lr * decay)
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g**2
            m_hat, v_hat = m[i] / (1 - b1**step), v[i] / (1 - b2**step)
            p[i] = p[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p, m, v


def clipping_cases():
    """Three models' parameters and four steps of gradients: the first model's gradient norm
    (about 0.05) under the clipping norm of 0.5, the other two over it (about 1.5 and 50)."""
    generator = torch.Generator().manual_seed(3)
    params = [torch.randn(3, 5, 4, generator=generator), torch.randn(3, 1, 4, generator=generator)]
    scales = torch.tensor([0.01, 0.3, 10.0]).view(3, 1, 1)
    grads = [[torch.randn(p.shape, generator=generator) * scales for p in params] for _ in range(4)]
    return params, grads


def test_the_one_pass_update_is_clipping_then_adamw():
    """`clipped_adamw_`, the update train.compile compiles, run eagerly against the literal
    float64 reference: parameters and both moments after four steps."""
    params, grads_per_step = clipping_cases()
    (b1, b2), lr = ADAMW["betas"], ADAMW["lr"]
    ours = [p.clone().requires_grad_() for p in params]
    m, v = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    for step, grads in enumerate(grads_per_step, start=1):
        for p, g in zip(ours, grads, strict=True):
            p.grad = g.clone()
        norms = clipped_adamw_(
            ours,
            [p.grad for p in ours],
            m,
            v,
            torch.tensor(lr / (1 - b1**step)),
            torch.tensor(math.sqrt(1 - b2**step)),
            torch.tensor(1 - lr * ADAMW["weight_decay"]),
            0.5,
            b1,
            b2,
            ADAMW["eps"],
            [],
            [],
        )
        expected = np.sqrt(sum((g.double() ** 2).sum(dim=(1, 2)).numpy() for g in grads))
        np.testing.assert_allclose(norms.numpy(), expected, rtol=1e-6)
    reference = numpy_clipped_adamw(
        [p.numpy() for p in params], [[g.numpy() for g in gs] for gs in grads_per_step]
    )
    for got, want in zip((ours, m, v), reference, strict=True):
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a.detach().numpy(), b, rtol=1e-5, atol=1e-8)


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


def trainer(config, members, datasets, **train_options):
    options = {
        "num_steps": 12,
        "batch_size": 64,
        "ema_update_every": 2,
        "ema_warmup_steps": 3,
    } | train_options
    schedule = NoiseSchedule(ScheduleConfig())
    return Trainer(config, members, datasets, schedule, TrainConfig(**options), DEVICE)


def test_a_diverging_model_is_recorded_and_its_batch_mates_are_unaffected(datasets):
    members = [Member("a", 0), Member("b", 1), Member("a", 5)]
    healthy = trainer(ARCHS["mlp"], members, datasets, num_steps=150).run()
    poisoned = trainer(ARCHS["mlp"], members, datasets, num_steps=150)
    with torch.no_grad():
        next(poisoned.model.parameters())[1, 0, 0] = float("inf")  # model 1's first weight
    result = poisoned.run()
    assert result.diverged == {1: 0}
    assert not np.isfinite(result.losses[1]).any()
    for m in (0, 2):  # the same bits as in a batch without the diverging model
        np.testing.assert_array_equal(result.losses[m], healthy.losses[m])
        for p, q in zip(result.ema_model.parameters(), healthy.ema_model.parameters(), strict=True):
            assert torch.equal(p[m], q[m])
    assert healthy.diverged == {}


def test_nan_data_diverges_only_its_model(datasets):
    broken = dict(datasets) | {"bad": torch.full((1000, 2), float("nan"))}
    result = run(ARCHS["mlp"], [Member("a", 0), Member("bad", 3)], broken)
    assert result.diverged == {1: 0}
    assert np.isfinite(result.losses[0]).all()


def test_divergence_records_the_first_non_finite_step_once(datasets):
    engine = trainer(ARCHS["mlp"], [Member("a", 0), Member("b", 1), Member("a", 2)], datasets)
    losses = torch.ones(100, 3)
    losses[37:, 2] = float("nan")
    losses[90, 0] = float("inf")
    engine._check_finite(losses, 200)
    assert engine.diverged == {0: 290, 2: 237}
    engine._check_finite(torch.full((100, 3), float("nan")), 300)
    assert engine.diverged == {0: 290, 1: 300, 2: 237}  # a model's first step is kept


# --- checkpoints --------------------------------------------------------------------------

CHECKPOINTED = {"num_steps": 300, "checkpoint_every": 100}


class Killed(Exception):
    """Stands for the process being killed right after a checkpoint was written."""


def kill_after(monkeypatch, step):
    original = Trainer.save_checkpoint

    def save_then_die(self, path, saved_step, losses, elapsed):
        original(self, path, saved_step, losses, elapsed)
        if saved_step == step:
            raise Killed

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_die)


def assert_same_state(first, second, result_a, result_b):
    np.testing.assert_array_equal(result_a.losses, result_b.losses)
    for module_a, module_b in ((first.model, second.model), (first.ema.model, second.ema.model)):
        for p, q in zip(module_a.parameters(), module_b.parameters(), strict=True):
            assert torch.equal(p, q)
    state_a, state_b = first.optimizer.state_dict()["state"], second.optimizer.state_dict()["state"]
    for index in state_a:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(state_a[index][key], state_b[index][key])
    for streams_a, streams_b in zip(first.generators, second.generators, strict=True):
        for name in streams_a:
            assert torch.equal(streams_a[name].get_state(), streams_b[name].get_state())
    assert (first.ema.step, first.ema.initialised) == (second.ema.step, second.ema.initialised)
    assert first.source.positions == second.source.positions
    assert result_a.diverged == result_b.diverged


@pytest.mark.parametrize("name", ["mlp", "dual_expert_larger"])
@pytest.mark.parametrize("killed_at", [100, 200])
def test_resume_from_a_checkpoint_is_bit_identical(
    name, killed_at, datasets, tmp_path, monkeypatch
):
    members = [Member("a", 0), Member("b", 1)]
    uninterrupted = trainer(ARCHS[name], members, datasets, **CHECKPOINTED)
    expected = uninterrupted.run()
    path = tmp_path / "batch.ckpt.npz"
    kill_after(monkeypatch, killed_at)
    with pytest.raises(Killed):
        trainer(ARCHS[name], members, datasets, **CHECKPOINTED).run(checkpoint=path)
    monkeypatch.undo()
    resumed = trainer(ARCHS[name], members, datasets, **CHECKPOINTED)
    steps = []
    original_step = Trainer.step
    monkeypatch.setattr(
        Trainer, "step", lambda self, *a: steps.append(1) or original_step(self, *a)
    )
    result = resumed.run(checkpoint=path)
    assert len(steps) == 300 - killed_at  # only the lost steps were trained again
    assert_same_state(uninterrupted, resumed, expected, result)


def test_checkpoint_is_numpy_and_json_without_pickles(datasets, tmp_path):
    path = tmp_path / "c.npz"
    trainer(ARCHS["mlp"], [Member("a", 0)], datasets, **CHECKPOINTED).run(checkpoint=path)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(arrays["meta"].tobytes().decode())
    assert meta["format"] == "lowdiff-checkpoint/1" and meta["step"] == 300
    assert arrays["losses"].shape == (300, 1)
    assert {"rng/0/noise", "rng/0/sample", "order/0", "adam/0/exp_avg"} <= set(arrays)
    assert all(a.dtype != object for a in arrays.values())


def test_finished_checkpoint_returns_the_result_without_training(datasets, tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    first = trainer(ARCHS["mlp"], [Member("a", 0)], datasets, **CHECKPOINTED)
    expected = first.run(checkpoint=path)
    monkeypatch.setattr(Trainer, "step", lambda *a: pytest.fail("trained again"))
    again = trainer(ARCHS["mlp"], [Member("a", 0)], datasets, **CHECKPOINTED)
    result = again.run(checkpoint=path)
    assert_same_state(first, again, expected, result)
    assert result.training_time == pytest.approx(expected.training_time, abs=0.05)


def test_checkpoint_of_another_config_is_ignored(datasets, tmp_path, caplog):
    path = tmp_path / "c.npz"
    members = [Member("a", 0)]
    trainer(ARCHS["mlp"], members, datasets, learning_rate=1e-3, **CHECKPOINTED).run(
        checkpoint=path
    )
    fresh = trainer(ARCHS["mlp"], members, datasets, **CHECKPOINTED)
    expected = fresh.run()
    again = trainer(ARCHS["mlp"], members, datasets, **CHECKPOINTED)
    with caplog.at_level("INFO", logger="lowdiff.engine"):
        result = again.run(checkpoint=path)
    assert "another configuration" in caplog.text
    assert_same_state(fresh, again, expected, result)


def test_checkpoint_every_does_not_change_the_result_or_the_fingerprint(datasets, tmp_path):
    members = [Member("a", 0)]
    every_100 = trainer(ARCHS["mlp"], members, datasets, **CHECKPOINTED)
    every_7 = trainer(ARCHS["mlp"], members, datasets, num_steps=300, checkpoint_every=7)
    assert every_100.fingerprint == every_7.fingerprint
    assert_same_state(every_100, every_7, every_100.run(), every_7.run(checkpoint=tmp_path / "c"))


@pytest.mark.parametrize(
    "damage",
    [
        "garbage",
        "wrong_shape",
        "missing_array",
        "bad_step",
        "order",
        "positions",
        "elapsed",
        "nan_losses",
    ],
)
def test_corrupt_checkpoint_is_ignored_with_a_warning(damage, datasets, tmp_path, caplog):
    path = tmp_path / "c.npz"
    members = [Member("a", 0)]
    trainer(ARCHS["mlp"], members, datasets, **CHECKPOINTED).run(checkpoint=path)
    if damage == "garbage":
        path.write_bytes(b"PK\x03\x04 not really a zip")
    else:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        meta = json.loads(arrays["meta"].tobytes().decode())
        if damage == "wrong_shape":
            arrays["ema/network.output.bias"] = np.zeros((1, 1, 3), np.float32)
        elif damage == "missing_array":
            del arrays["rng/0/noise"]
        elif damage == "order":  # a tampered data order: same shape, not a permutation
            arrays["order/0"] = np.zeros_like(arrays["order/0"])
        elif damage == "positions":
            meta["positions"] = [10**9]
        elif damage == "elapsed":
            meta["elapsed"] = -5.0
        elif damage == "nan_losses":
            arrays["losses"][3, 0] = np.nan
        else:
            meta["step"] = 150
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        np.savez(path, **arrays)
    fresh = trainer(ARCHS["mlp"], members, datasets, **CHECKPOINTED)
    expected = fresh.run()
    again = trainer(ARCHS["mlp"], members, datasets, **CHECKPOINTED)
    with caplog.at_level("WARNING", logger="lowdiff.engine"):
        result = again.run(checkpoint=path)
    assert "ignoring" in caplog.text and "training from the start" in caplog.text
    assert_same_state(fresh, again, expected, result)


@pytest.mark.parametrize(
    "field,value",
    [
        ("num_steps", -5),
        ("num_steps", 0),
        ("batch_size", 0),
        ("learning_rate", 0.0),
        ("learning_rate", float("inf")),
        ("learning_rate", float("nan")),
        ("grad_clip", float("inf")),
        ("checkpoint_every", 0),
        ("diversity_weight", float("inf")),
    ],
)
def test_bad_train_config_is_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})
