"""The speed benchmarks' own logic: the aims' verdicts over repeats (benchmarks/aims.py), the
step's phase timers (benchmarks/step_phases.py), which must leave torch and lowdiff as found, and
the command and environment through which the pipeline is timed (benchmarks/train_speed.py)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lowdiff import cli, engine

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def benchmarks(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import each other by name
    return importlib


def test_an_aim_is_judged_on_the_median_and_counts_the_repeats_that_held(benchmarks):
    aims = benchmarks.import_module("aims")
    Repeats = benchmarks.import_module("repeats").Repeats
    at_most = aims.Aim("one model", Repeats.of([0.62, 0.81, 0.74, 1.05, 0.90]), lambda r: r <= 0.75)
    assert at_most.met is False  # median 0.81, though two repeats were below 0.75
    assert at_most.verdict == "not met (2/5)"
    assert at_most.measured == "0.81x (repeats 0.62 to 1.05x)"
    share = aims.Aim(
        "fp32", Repeats.of([0.67, 0.87, 0.81]), lambda v: v >= 0.8, ".0f", 100, " %", "compiled"
    )
    assert share.met is True and share.verdict == "met (2/3)"
    assert share.measured == "81 % (repeats 67 to 87 %); compiled"
    gap = aims.Aim("pipeline", Repeats.of([-0.256, 0.132, -0.008]), lambda g: g <= 0.10)
    assert gap.verdict == "met (2/3)"  # faster than the bare step is within the aim
    absent = aims.Aim("bf16", None, context="no native bf16 here")
    assert absent.met is None and absent.verdict == "-" and absent.measured == absent.context


def test_a_paired_aim_is_judged_on_the_interval_of_its_median(benchmarks):
    """Met when the whole interval meets the aim, not met when none of it does, undecided when
    it straddles the aim; the interval is the bootstrap's of the per-pair ratios."""
    aims = benchmarks.import_module("aims")
    paired_steps = benchmarks.import_module("paired_steps")
    Repeats = benchmarks.import_module("repeats").Repeats
    ratios = Repeats.of([0.80, 0.83, 0.85, 0.84, 0.86])

    def aim(interval: tuple[float, float]) -> object:
        return aims.Aim("one model", ratios, lambda r: r <= 0.75, interval=interval, context="c")

    assert aim((0.81, 0.86)).verdict == "not met" and aim((0.81, 0.86)).met is False
    assert aim((0.70, 0.74)).verdict == "met" and aim((0.70, 0.74)).met is True
    assert aim((0.74, 0.77)).verdict == "undecided" and aim((0.74, 0.77)).met is None
    assert aim((0.81, 0.86)).measured == (
        "0.84x (95 % interval of the median 0.81-0.86x, 5 pairs); c"
    )
    rng = np.random.default_rng(0)
    a = tuple(rng.uniform(4.9e-3, 5.1e-3, 400))
    b = tuple(0.8 * np.array(a) * rng.uniform(0.97, 1.03, 400))
    low, high = paired_steps.Paired(a, b).median_interval()
    assert 0.79 < low < 0.8 < high < 0.81
    assert paired_steps.Paired(a, b).median_interval() == (low, high)  # seeded


def test_a_bf16_aim_is_judged_on_an_amx_cpu_and_only_printed_elsewhere(benchmarks):
    aims = benchmarks.import_module("aims")
    Repeats = benchmarks.import_module("repeats").Repeats
    variant = benchmarks.import_module("throughput").EAGER_FP32
    ratio = Repeats.of([2.9, 3.1, 3.2])
    judged = aims.bf16_aim("bf16 training", ratio, 3, variant, amx=True)
    assert judged.met is True and judged.verdict == "met (2/3)"
    assert aims.bf16_aim("bf16 sampling", ratio, 4, variant, amx=True).verdict == "not met (0/3)"
    printed = aims.bf16_aim("bf16 training", ratio, 3, variant, amx=False)
    assert printed.met is None and printed.verdict == "-"
    assert printed.measured.startswith("3.10x (repeats 2.90 to 3.20x)")
    assert printed.measured.endswith("not judged: the aim is for AMX-BF16")


def test_repeats_refuse_none_and_print_one_value_once(benchmarks):
    Repeats = benchmarks.import_module("repeats").Repeats
    with pytest.raises(ValueError, match="at least one"):
        Repeats.of([])
    assert Repeats.of([0.85]).spread() == "0.85"
    assert Repeats.of([3.0, 1.0, 2.0]).median == 2.0


def test_the_aims_floor_counts_the_written_network_as_the_aim_did(benchmarks):
    throughput = benchmarks.import_module("throughput")
    batch, embedding, width, blocks = 256, 3 * 128, 256, 3  # SPEC's baseline, literally
    layers = embedding * width + blocks * width * width + width * 2  # in x out, per layer
    forward = 2 * batch * layers
    # the step: forward, every weight's gradient, every input's gradient but the first layer's
    step = 2 * forward + 2 * batch * (blocks * width * width + width * 2)
    assert throughput.written_network_flops(batch) == (forward, step)
    assert throughput.aim_floor_flops() == 3 * forward == 453_771_264  # the aim's 454 MFLOP
    trainer = throughput.make_trainer(1, throughput.EAGER_FP32, torch.device("cpu"))
    performed = throughput.step_flops(trainer)  # the factorised first layer does less
    time_rows = 2 * 100 * 128 * width  # the time embedding's product, once per timestep
    assert performed == step - 2 * batch * 128 * width * 2 + 2 * time_rows
    Repeats = benchmarks.import_module("repeats").Repeats
    assert Repeats.of([0.5, 0.7]).scaled(2.0) == Repeats.of([1.0, 1.4])


def test_step_phases_time_the_real_step_and_restore_what_they_wrapped(benchmarks):
    phases = benchmarks.import_module("step_phases")
    throughput = benchmarks.import_module("throughput")
    trainer = throughput.make_trainer(1, throughput.EAGER_FP32, torch.device("cpu"))
    run = throughput.stepper(trainer)
    backward, clip = torch.Tensor.backward, engine.clip_grad_norm_per_model
    release, optimizer_step = engine.release_grads, trainer.optimizer.step
    with phases.phases_of(trainer) as times:
        run()
        assert set(times) == set(phases.PHASES)
        parts = sum(times[name] for name in phases.PHASES if name != "step")
        assert 0 < parts <= times["step"]
        assert all(times[name] > 0 for name in phases.PHASES)
    assert torch.Tensor.backward is backward
    assert engine.clip_grad_norm_per_model is clip and engine.release_grads is release
    assert trainer.optimizer.step == optimizer_step
    assert "step" not in vars(trainer) and "step" not in vars(trainer.optimizer)
    run()  # the trainer steps on, unwrapped


def test_the_pipeline_is_timed_through_lowdiff_train_as_a_user_types_it(benchmarks, monkeypatch):
    train_speed = benchmarks.import_module("train_speed")
    arguments = train_speed.train_arguments(16, 300, Path("out"), threads=2)
    parsed = cli.build_parser().parse_args(arguments)
    assert parsed.command == "train" and parsed.threads == 2
    experiment = cli._train_config(parsed)
    assert experiment.experiment.datasets == ("circle", "dino", "line", "moons")
    assert experiment.experiment.seeds == (0, 1, 2, 3)  # 16 models in one batch
    ((run),) = experiment.runs
    assert run.model.arch == "mlp" and run.train.num_steps == 300
    assert "--threads" not in train_speed.train_arguments(1, 300, Path("out"))  # its own choice
    # the new process chooses its threads and OpenMP wait as from a fresh shell
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("GOMP_SPINCOUNT", "10000")
    monkeypatch.setenv("LOWDIFF_PROBE", "kept")
    fresh = benchmarks.import_module("concurrency").fresh_environment()
    assert "OMP_NUM_THREADS" not in fresh and "GOMP_SPINCOUNT" not in fresh
    assert fresh["LOWDIFF_PROBE"] == "kept"


FAKE_WORKER = """
import sys
print("ready", 1, "nowhere", flush=True)
for line in sys.stdin:
    with open({log!r}, "a") as log:
        log.write({side!r} + line.split()[1] + " ")
    print({seconds}, flush=True)
"""


def test_paired_steps_alternate_the_sides_and_take_each_pair_s_ratio(benchmarks, tmp_path):
    """Two workers that report fixed step times and log each turn they are asked for: each side
    takes one turn of the given steps per pair, the side that goes first alternates, and B / A
    is taken pair by pair."""
    paired_steps = benchmarks.import_module("paired_steps")
    log = tmp_path / "turns"
    fake = [sys.executable, "-c"]
    a = paired_steps.Worker([*fake, FAKE_WORKER.format(log=str(log), side="A", seconds=0.02)])
    b = paired_steps.Worker([*fake, FAKE_WORKER.format(log=str(log), side="B", seconds=0.05)])
    try:
        result = paired_steps.paired(a, b, 6, turn_steps=3)
    finally:
        a.close()
        b.close()
    assert log.read_text().split() == ["A3", "B3", "B3", "A3"] * 3
    assert result.a == (0.02,) * 6 and result.b == (0.05,) * 6
    assert np.allclose(result.ratios, 2.5)
    assert "median 2.500 of 6 pairs" in result.summary()
    reply = "print(os.environ['LOWDIFF_FAKE_SECONDS'])"
    told = [*fake, f"import os; print('ready 1 x'); input(); {reply}"]
    worker = paired_steps.Worker(told, {"LOWDIFF_FAKE_SECONDS": "0.07"})
    try:
        assert worker.steps(1) == 0.07  # --b-env: a variable set for one worker
    finally:
        worker.close()
    assert paired_steps.environment_setting("A_B=1=2") == ("A_B", "1=2")
    for bad in ("NOEQUALS", "1A=2", "=3"):
        with pytest.raises(Exception, match="is not NAME=VALUE"):
            paired_steps.environment_setting(bad)
    stopped = [*fake, "import sys; sys.exit(3)"]
    with pytest.raises(RuntimeError, match=r"a worker stopped \(exit 3\) before its start"):
        paired_steps.Worker(stopped)


def test_paired_steps_run_the_real_step_from_the_tree_they_are_given(benchmarks, tmp_path):
    """A worker imports lowdiff from the tree it is given and takes real training steps; a
    folder that is not a lowdiff tree is refused with one line."""
    paired_steps = benchmarks.import_module("paired_steps")
    tree = BENCHMARKS.parent
    worker = paired_steps.Worker(paired_steps.worker_command(tree, "fp32", 1, 1, 1))
    try:
        seconds = [worker.steps(2) for _ in range(2)]
    finally:
        worker.close()
    assert Path(worker.ready) == (tree / "src" / "lowdiff" / "__init__.py").resolve()
    assert worker.threads == 1  # as told (0 would be lowdiff's own choice)
    assert all(0 < s < 60 for s in seconds)
    with pytest.raises(Exception, match="is not a lowdiff source tree"):
        paired_steps.checked_tree(str(tmp_path))


def test_the_plain_loop_trains_across_epochs_and_pairs_as_one_model(benchmarks):
    """The plain single-model loop the one-model aim is measured against steps on through the end
    of an epoch (a new shuffled pass) and trains: its loss falls. As a paired worker it takes
    real steps from its tree."""
    train_speed = benchmarks.import_module("train_speed")
    torch.manual_seed(0)
    points = torch.randn(600, 2)  # two batches of 256 per epoch
    step = train_speed.plain_stepper(points, torch.device("cpu"))
    losses = torch.stack([step() for _ in range(60)])
    assert torch.isfinite(losses).all()
    assert losses[-10:].mean() < 0.9 * losses[:10].mean()
    paired_steps = benchmarks.import_module("paired_steps")
    command = paired_steps.worker_command(BENCHMARKS.parent, paired_steps.PLAIN, 16, 1, 1)
    worker = paired_steps.Worker(command)
    try:
        seconds = worker.steps(2)
    finally:
        worker.close()
    assert 0 < seconds < 60
