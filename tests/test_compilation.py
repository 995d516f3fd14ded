"""train.compile / eval.compile: the network through torch.compile, refused where the device
cannot compile, keyed only when set, close to the eager numbers, and writing nothing outside
the results directory."""

import dataclasses
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from test_engine import ADAMW, clipping_cases, numpy_clipped_adamw
from tiny_experiments import refusal

from lowdiff import compilation, precision
from lowdiff.cells import _settings_key
from lowdiff.engine import CompiledUpdate, Member, TrainConfig, Trainer, make_optimizer
from lowdiff.models import ModelConfig, build_model
from lowdiff.models.layers import BatchedLinear, gather_by_timestep, product_weights
from lowdiff.samplers import sample
from lowdiff.schedule import NoiseSchedule, ScheduleConfig
from lowdiff.settings import EvalConfig

CPU = torch.device("cpu")
CAN_COMPILE = compilation.compile_missing("cpu") is None
needs_compiler = pytest.mark.skipif(not CAN_COMPILE, reason="no C++ compiler for inductor")
SMALL = ModelConfig(embedding_dim=16, hidden_dim=32)
POINTS = {"a": torch.randn(2000, 2, generator=torch.Generator().manual_seed(1))}


def trainer(train: TrainConfig, scratch=None) -> Trainer:
    members = [Member("a", 0), Member("a", 1)]
    schedule = NoiseSchedule(ScheduleConfig())
    return Trainer(SMALL, members, POINTS, schedule, train, CPU, scratch)


def test_off_by_default_and_keyed_only_when_set():
    assert not TrainConfig().compile and not EvalConfig().compile
    assert _settings_key("train", TrainConfig()) == {}
    assert _settings_key("train", TrainConfig(compile=True)) == {"compile": True}
    assert _settings_key("eval", EvalConfig(compile=True)) == {"compile": True}


@pytest.mark.parametrize("section", ["train", "eval"])
def test_no_compiler_is_refused_in_one_line_before_any_work(section, monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/g++")
    message = refusal(**{section: {"compile": True}})
    assert f"{section}.compile = true" in message and "/nonexistent/g++" in message
    with pytest.raises(ValueError, match="not on PATH"):
        trainer(TrainConfig(num_steps=1, compile=True))


def test_other_devices_are_refused_in_one_line():
    message = compilation.compile_missing("mps")
    assert message and "\n" not in message and "'mps'" in message
    compilation.check_compile(False, "mps", "train.compile")  # off: nothing to check


def test_a_compiled_training_needs_a_folder_for_the_compilers_files():
    if not CAN_COMPILE:
        pytest.skip("no C++ compiler for inductor")
    with pytest.raises(ValueError, match="scratch="):
        trainer(TrainConfig(num_steps=1, compile=True))


def test_scratch_points_every_writer_at_the_folder_and_restores_them(tmp_path):
    import tempfile

    before = {name: os.environ.get(name) for name in compilation.SCRATCH_VARIABLES}
    before_tempdir = tempfile.tempdir
    with compilation.scratch(tmp_path / "s"):
        for name, sub in compilation.SCRATCH_VARIABLES.items():
            assert os.environ[name] == str(tmp_path / "s" / sub)
        assert tempfile.gettempdir() == str(tmp_path / "s" / "tmp")
    assert {name: os.environ.get(name) for name in compilation.SCRATCH_VARIABLES} == before
    assert tempfile.tempdir == before_tempdir


def test_a_process_keeps_more_compiled_variants_than_torchs_default():
    """Training and sampling several packs in one process compiles the network for each grad
    mode, autocast state and batch size; past the limit dynamo would silently run eager."""
    import torch._dynamo.config

    with torch._dynamo.config.patch(recompile_limit=8):
        compilation.compiled(torch.nn.Linear(2, 2))
        assert torch._dynamo.config.recompile_limit == compilation.RECOMPILE_LIMIT >= 64


@needs_compiler
def test_compiled_timestep_rows_have_the_values_and_gradient_bits_of_torch_gather(tmp_path):
    """The compiled look-up (an opaque operator with index_add_ as its backward) against
    torch.gather along T, written out literally."""
    generator = torch.Generator().manual_seed(0)
    table = torch.randn(3, 10, 8, generator=generator, requires_grad=True)
    t = torch.randint(0, 10, (3, 50), generator=generator)
    upstream = torch.randn(3, 50, 8, generator=generator)
    with compilation.scratch(tmp_path):
        picked = torch.compile(gather_by_timestep, fullgraph=True)(table, t)
        (grad,) = torch.autograd.grad(picked, table, upstream)
    reference = torch.gather(table, 1, t.unsqueeze(-1).expand(-1, -1, 8))
    (reference_grad,) = torch.autograd.grad(reference, table, upstream)
    assert torch.equal(picked, reference)
    assert torch.equal(grad, reference_grad)


@needs_compiler
def test_compiled_training_follows_the_eager_one(tmp_path):
    """Fused kernels round differently, so not the same bits, but the same training: losses
    and weights within float32 rounding after 30 steps, and the compiler did run (its files
    are in the scratch folder, none were written elsewhere)."""
    train = TrainConfig(num_steps=30, ema_warmup_steps=0, ema_update_every=1, batch_size=64)
    eager = trainer(train).run()
    model = trainer(dataclasses.replace(train, compile=True), tmp_path / "scratch")
    assert isinstance(model.update, CompiledUpdate)  # clipping and AdamW in one compiled pass
    compiled = model.run()
    assert any((tmp_path / "scratch" / "inductor").rglob("*.py"))  # the generated graph
    assert torch.allclose(
        torch.as_tensor(compiled.losses), torch.as_tensor(eager.losses), rtol=1e-4, atol=1e-6
    )
    for ours, theirs in zip(
        compiled.ema_model.parameters(), eager.ema_model.parameters(), strict=True
    ):
        assert torch.allclose(ours, theirs, rtol=1e-3, atol=1e-5)


@needs_compiler
@pytest.mark.skipif(precision.bf16_missing("cpu") is not None, reason="no native bf16")
def test_compiled_bf16_training_follows_the_eager_bf16_one(tmp_path):
    """Compiled training joins the embedding in bf16 and adds each bias apart from its
    product; bf16 keeps some three digits, so the losses agree to bf16's rounding (a dropped
    bias or a wrong embedding would move them by far more) and the state stays fp32."""
    train = TrainConfig(num_steps=30, batch_size=64, precision="bf16")
    eager = trainer(train).run()
    model = trainer(dataclasses.replace(train, compile=True), tmp_path / "scratch")
    assert sorted(model.update.copies) == sorted(product_weights(model.model))
    compiled = model.run()
    weights = dict(model.model.named_parameters())  # the working copies follow the weights
    for name, working in model.update.copies.items():
        assert torch.equal(working, weights[name].detach().to(torch.bfloat16))
    assert any((tmp_path / "scratch" / "inductor").rglob("*.py"))  # the generated graph
    assert torch.allclose(
        torch.as_tensor(compiled.losses), torch.as_tensor(eager.losses), rtol=1e-2, atol=1e-3
    )
    assert {p.dtype for p in model.parameters} == {torch.float32}


@needs_compiler
@pytest.mark.parametrize("low", [None, torch.bfloat16])
def test_the_compiled_update_is_clipping_then_adamw_in_the_optimisers_own_state(tmp_path, low):
    """train.compile's one compiled pass (`CompiledUpdate`) against the literal float64
    clipping + AdamW: parameters after four steps at the learning rate of the optimiser's
    group, and the moments and step where AdamW keeps them (so checkpoints hold them). With a
    bf16 working copy (compiled bf16 training) the weight's gradient arrives in bf16 on the
    copy, and after each step the copy is the fp32 weight rounded to bf16."""
    params, grads_per_step = clipping_cases()
    layer = BatchedLinear(3, 5, 4)  # its weight and bias have the shapes of the cases
    with torch.no_grad():
        layer.weight.copy_(params[0])
        layer.bias.copy_(params[1])
    ours = [layer.weight, layer.bias]
    optimizer = make_optimizer(ours, 0.0, CPU)
    for group in optimizer.param_groups:
        group.update(ADAMW)
    update = CompiledUpdate(optimizer, 0.5, layer, low)
    assert list(update.copies) == ([] if low is None else ["weight"])
    if low is not None:  # the gradient autocast would have given: bf16, taken to fp32
        grads_per_step = [[g[0].to(low).float(), g[1]] for g in grads_per_step]
    with compilation.scratch(tmp_path / "scratch"):
        for grads in grads_per_step:
            ours[1].grad = grads[1].clone()
            if low is None:
                ours[0].grad = grads[0].clone()
            else:
                update.copies["weight"].grad = grads[0].to(low)
            update.step()
            if low is not None:
                assert torch.equal(update.copies["weight"], layer.weight.detach().to(low))
                assert update.copies["weight"].grad is None and layer.weight.grad is None
    reference = numpy_clipped_adamw(
        [p.numpy() for p in params], [[g.numpy() for g in gs] for gs in grads_per_step]
    )
    state = [optimizer.state[p] for p in ours]
    got = (ours, [s["exp_avg"] for s in state], [s["exp_avg_sq"] for s in state])
    for tensors, expected in zip(got, reference, strict=True):
        for a, b in zip(tensors, expected, strict=True):
            np.testing.assert_allclose(a.detach().numpy(), b, rtol=1e-5, atol=1e-8)
    assert [float(s["step"]) for s in state] == [4.0, 4.0]
    assert any((tmp_path / "scratch" / "inductor").rglob("*.py"))  # it was compiled


@needs_compiler
@pytest.mark.skipif(precision.bf16_missing("cpu") is not None, reason="no native bf16")
def test_a_resumed_compiled_bf16_training_takes_its_working_copies_from_the_checkpoint(tmp_path):
    """The working copies are derived from the weights: loading a checkpoint's weights
    rewrites them, or the resumed training would run on the new trainer's initial weights."""
    train = TrainConfig(
        num_steps=20, batch_size=64, precision="bf16", compile=True, checkpoint_every=10
    )
    path = tmp_path / "state.npz"
    trainer(train, tmp_path / "a").run(checkpoint=path)
    resumed = trainer(train, tmp_path / "b")
    step, _ = resumed.load_checkpoint(path, torch.empty(20, 2))
    assert step == 20
    weights = dict(resumed.model.named_parameters())
    for name, working in resumed.update.copies.items():
        assert torch.equal(working, weights[name].detach().to(torch.bfloat16))


@needs_compiler
def test_compiled_sampling_follows_the_eager_network(tmp_path):
    """A compiled layer adds its bias apart from the product (`layers.affine`), without
    gradients as with them: the same function, so the same samples within float32 rounding; a
    dropped or doubled bias would move them by far more."""
    model = build_model(SMALL, 2, 100)
    model.reset_parameters([torch.Generator().manual_seed(m) for m in range(2)])
    schedule = NoiseSchedule(ScheduleConfig())

    def draw(network):
        streams = [torch.Generator().manual_seed(m) for m in range(2)]
        return sample(network, schedule, streams, CPU, num_samples=300, sampling_steps=20)

    with compilation.scratch(tmp_path):
        compiled = draw(compilation.compiled(model))
    eager = draw(model)
    assert any(tmp_path.rglob("*.py"))  # the compiler did run
    np.testing.assert_allclose(compiled.points, eager.points, rtol=1e-4, atol=1e-4)


@needs_compiler
def test_a_compiled_run_writes_nothing_outside_its_results_directory(tmp_path):
    """`lowdiff run` with train.compile and eval.compile, in a process whose temporary folder
    is watched: the cells are written, the compiler's files are gone with the checkpoints, and
    nothing of them was left in the temporary folder."""
    (tmp_path / "exp.toml").write_text(
        textwrap.dedent(
            """\
            [experiment]
            name = "compiled"
            datasets = ["moons"]
            seeds = [0]
            num_points = 2000
            oracle_draws = 1
            device = "cpu"
            [train]
            num_steps = 20
            batch_size = 64
            compile = true
            [eval]
            num_samples = 300
            field_resolution = 8
            process_snapshots = 0
            ground_truth = false
            compile = true
            [runs.baseline]
            model = { arch = "mlp", hidden_dim = 32, embedding_dim = 16 }
            """
        )
    )
    watched = tmp_path / "tmp"
    watched.mkdir()
    environment = dict(os.environ, TMPDIR=str(watched))
    command = [sys.executable, "-m", "lowdiff.cli", "run", "exp.toml", "--out", "out", "--quiet"]
    done = subprocess.run(
        command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "baseline" / "moons" / "seed_0" / "cell.json").is_file()
    assert not (tmp_path / "out" / ".checkpoints").exists()
    # only the folder of lowdiff's registry of running processes (runtime.registry_dir), empty
    registry = watched / f"lowdiff-{os.getuid()}"
    assert [path for path in watched.rglob("*") if not path.is_dir()] == []
    assert {path for path in watched.rglob("*")} <= {registry, registry / "processes"}
