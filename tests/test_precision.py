"""train.precision / eval.precision: bf16 autocast with fp32 master state, refused without
native bf16 hardware, keyed only when set; fp32 stays the default and changes nothing."""

import dataclasses

import pytest
import torch
from tiny_experiments import refusal

from lowdiff import precision
from lowdiff.cells import _settings_key
from lowdiff.engine import Member, TrainConfig, Trainer
from lowdiff.models import ModelConfig, build_model
from lowdiff.models.reference import PlainMLPDenoiser
from lowdiff.samplers import sample
from lowdiff.schedule import NoiseSchedule, ScheduleConfig
from lowdiff.settings import EvalConfig

CPU = torch.device("cpu")
NATIVE = precision.bf16_missing("cpu") is None
needs_bf16 = pytest.mark.skipif(not NATIVE, reason="this CPU has no native bf16")


@pytest.mark.parametrize(
    ("flags", "missing"),
    [
        ({"avx512f", "amx_bf16", "amx_tile"}, False),
        ({"avx512f", "avx512_bf16"}, False),
        ({"avx2", "avx512f"}, True),
        (set(), True),
    ],
)
def test_bf16_needs_avx512_bf16_or_amx(flags, missing):
    found = precision.bf16_missing("cpu", flags)
    assert (found is not None) is missing
    if missing:
        assert "AVX512_BF16" in found and "AMX-BF16" in found


def test_unreadable_cpu_flags_say_so(tmp_path):
    assert precision.cpu_flags(tmp_path / "absent") is None
    (tmp_path / "cpuinfo").write_text("processor : 0\nflags : fpu sse avx512_bf16\n")
    assert precision.cpu_flags(tmp_path / "cpuinfo") == {"fpu", "sse", "avx512_bf16"}


def test_other_devices_are_refused_in_one_line():
    message = precision.bf16_missing("mps")
    assert message and "\n" not in message


@pytest.mark.parametrize("cls", [TrainConfig, EvalConfig])
def test_unknown_precision_is_an_error_naming_the_valid_ones(cls):
    with pytest.raises(ValueError, match=r"precision: 'fp16' is not one of fp32, bf16"):
        cls(precision="fp16")


def test_fp32_is_the_default_and_not_part_of_the_cell_key():
    assert TrainConfig().precision == "fp32" and EvalConfig().precision == "fp32"
    assert _settings_key("train", TrainConfig()) == {}
    assert _settings_key("eval", EvalConfig()) == {}
    assert _settings_key("train", TrainConfig(precision="bf16")) == {"precision": "bf16"}
    assert _settings_key("eval", EvalConfig(precision="bf16")) == {"precision": "bf16"}


@pytest.mark.parametrize("section", ["train", "eval"])
def test_bf16_without_hardware_is_refused_before_any_work(section, monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "fma"})
    message = refusal(**{section: {"precision": "bf16"}})
    assert f"{section}.precision" in message and "AVX512_BF16" in message
    with pytest.raises(ValueError, match="AVX512_BF16"):
        trainer(TrainConfig(num_steps=1, precision="bf16"))


POINTS = {"a": torch.randn(2000, 2, generator=torch.Generator().manual_seed(1))}


def trainer(train: TrainConfig) -> Trainer:
    members = [Member("a", 0), Member("a", 1)]
    return Trainer(ModelConfig(), members, POINTS, NoiseSchedule(ScheduleConfig()), train, CPU)


def first_step(train: TrainConfig) -> tuple[torch.Tensor, list[torch.Tensor], Trainer]:
    """Loss and gradients of the first step (before the optimiser moves anything)."""
    model = trainer(train)
    x0, t, eps = model.source.next_chunk(1)
    with precision.autocast(train.precision, CPU):
        eps_hat = model.model(model.schedule.add_noise(x0[0], eps[0], t[0]), t[0]).eps
        loss = (eps_hat - eps[0]).float().square().mean(dim=(1, 2))
    loss.sum().backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters], model


@needs_bf16
def test_bf16_training_keeps_fp32_state_and_fp32_like_gradients():
    loss32, grads32, _ = first_step(TrainConfig(num_steps=3))
    loss16, grads16, _ = first_step(TrainConfig(num_steps=3, precision="bf16"))
    assert not torch.equal(loss16, loss32)  # autocast was on
    assert torch.allclose(loss16, loss32, rtol=2e-2)
    for g16, g32 in zip(grads16, grads32, strict=True):
        assert g16.dtype == torch.float32
        cosine = torch.nn.functional.cosine_similarity(g16.flatten(), g32.flatten(), dim=0)
        assert cosine > 0.99
    model = trainer(
        TrainConfig(num_steps=3, ema_warmup_steps=0, ema_update_every=1, precision="bf16")
    )
    result = model.run()
    assert result.losses.dtype.name == "float32" and result.losses.shape == (2, 3)
    tensors = [*model.parameters, *result.ema_model.parameters()]
    tensors += [v for s in model.optimizer.state.values() for k, v in s.items() if k != "step"]
    assert {tensor.dtype for tensor in tensors} == {torch.float32}


@needs_bf16
def test_bf16_forward_matches_a_plain_autocast_module():
    """The batched network under autocast against nn.Linear layers under autocast (literal)."""
    batched = build_model(ModelConfig(), 1, 100)
    batched.reset_parameters([torch.Generator().manual_seed(3)])
    plain = PlainMLPDenoiser()
    layers = [batched.network.input, *[b.linear for b in batched.network.blocks]]
    pairs = zip(
        [*layers, batched.network.output], [plain.input, *plain.blocks, plain.output], strict=True
    )
    with torch.no_grad():
        for ours, theirs in pairs:
            theirs.weight.copy_(ours.weight[0].T)
            theirs.bias.copy_(ours.bias[0, 0])
    x, t = torch.randn(256, 2), torch.randint(0, 100, (256,))
    with torch.no_grad():
        exact = plain(x, t)
        with precision.autocast("bf16", CPU):
            ours, theirs = batched(x[None], t[None]).eps[0].float(), plain(x, t).float()
    scale = exact.abs().mean()
    assert (ours - exact).abs().mean() < 0.03 * scale  # bf16 keeps ~3 significant digits
    assert (ours - theirs).abs().mean() < 0.03 * scale
    assert not torch.equal(ours, exact)


@needs_bf16
def test_bf16_sampling_keeps_the_state_fp32_and_close_to_fp32():
    model = build_model(ModelConfig(embedding_dim=16, hidden_dim=32), 2, 100)
    model.reset_parameters([torch.Generator().manual_seed(s) for s in (0, 1)])
    schedule = NoiseSchedule(ScheduleConfig())

    def draw(name: str) -> torch.Tensor:
        generators = [torch.Generator().manual_seed(s) for s in (0, 1)]
        with precision.autocast(name, CPU):
            return torch.as_tensor(sample(model, schedule, generators, CPU, num_samples=300).points)

    exact, mixed = draw("fp32"), draw("bf16")
    assert mixed.dtype == torch.float32 and torch.isfinite(mixed).all()
    assert not torch.equal(mixed, exact)
    assert (mixed - exact).abs().mean() < 0.05 * exact.abs().mean()


def test_fp32_keeps_the_fingerprint_of_older_checkpoints():
    """A checkpoint written before the setting existed resumes: fp32 is left out of its key."""
    base = trainer(TrainConfig(num_steps=2))
    before = dataclasses.make_dataclass(
        "TrainConfigBefore",
        [
            (f.name, f.type, f)
            for f in dataclasses.fields(TrainConfig)
            if f.name not in ("precision", "compile")
        ],
    )
    base.config = before(num_steps=2)
    assert base._fingerprint(ModelConfig(), POINTS, ["a"], CPU) == base.fingerprint
    if NATIVE:
        assert trainer(TrainConfig(num_steps=2, precision="bf16")).fingerprint != base.fingerprint
