"""Faults and hostile input: each numbered failure of a careful user's trials, reproduced.

1 concurrent runs (lock) · 2 paths that escape · 3 divergence · 4 bad values accepted ·
5 tracebacks instead of messages · 6 one bad file stops the report · 7 typos accepted ·
8 messages · 9 a kill loses the whole batch.
"""

import contextlib
import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_experiments import load_tiny

from lowdiff import cells, results
from lowdiff.cli import main
from lowdiff.config import (
    ConfigError,
    activation_floats,
    check_device_available,
    check_memory,
    check_threads,
    estimate_memory,
    load_experiment,
)
from lowdiff.engine import Member, TrainConfig, Trainer, clip_grad_norm_per_model
from lowdiff.experiments import cell_hash, execute, plan
from lowdiff.lock import LOCK_NAME, LockedError, RunLock
from lowdiff.models import ModelConfig
from lowdiff.schedule import NoiseSchedule, ScheduleConfig

SRC = str(Path(__file__).resolve().parent.parent / "src")

TINY = """\
[experiment]
name = "tiny"
datasets = ["moons", "line"]
seeds = [0]
num_points = 500
oracle_draws = 1
[train]
num_steps = 30
batch_size = 32
[eval]
num_samples = 200
field_resolution = 4
ground_truth = false  # on where a test is about it
[model]
hidden_dim = 32
embedding_dim = 16
[runs.baseline]
[runs.again]
description = "repeats the baseline"
"""


def experiment(tmp_path, text=TINY, overrides=()):
    return load_tiny(tmp_path, text, overrides)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny results directory (run `again` repeats `baseline`: copied cells)."""
    root = tmp_path_factory.mktemp("finished")
    config = experiment(root)
    execute(config, root / "out", progress=False)
    return config, root / "out"


def snapshot(path):
    status = path.stat()
    return path.read_bytes(), status.st_mode, status.st_ino


# --- 1: two runs on one results directory --------------------------------------------------

HOLD = """
import sys, time
sys.path.insert(0, {src!r})
from lowdiff.lock import RunLock
with RunLock({root!r}, command="holder"):
    print("held", flush=True)
    time.sleep(60)
"""


def hold_lock(root):
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD.format(src=SRC, root=str(root))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_run_is_refused_naming_the_holder(tmp_path):
    holder = hold_lock(tmp_path)
    try:
        with (
            pytest.raises(LockedError, match=rf"in use by pid {holder.pid} on .*holder"),
            RunLock(tmp_path),
        ):
            pytest.fail("two holders")
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_holder_is_taken_over(tmp_path, caplog):
    holder = hold_lock(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / LOCK_NAME).exists()  # left behind by kill -9
    with caplog.at_level("WARNING", logger="lowdiff.lock"), RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert "stale lock" in caplog.text and str(holder.pid) in caplog.text
    assert not (tmp_path / LOCK_NAME).exists()


def test_sigterm_releases_the_lock(tmp_path):
    holder = hold_lock(tmp_path)
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(timeout=10) == 128 + signal.SIGTERM
    assert not (tmp_path / LOCK_NAME).exists()


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_the_lock_is_released_on_errors(tmp_path, error):
    with pytest.raises(error), RunLock(tmp_path):
        raise error
    with RunLock(tmp_path):  # free again
        pass


def test_a_lock_of_another_host_is_never_taken_over(tmp_path):
    holder = {"pid": 1, "host": "elsewhere.example", "start": time.time(), "command": "x"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(holder))
    with pytest.raises(LockedError, match="elsewhere.example"):
        RunLock(tmp_path).acquire()


def test_cli_refuses_a_second_run_on_one_directory(tmp_path, capsys):
    (tmp_path / "exp.toml").write_text(TINY)
    holder = hold_lock(tmp_path / "out")
    try:
        code = main(["run", str(tmp_path / "exp.toml"), "--out", str(tmp_path / "out"), "--quiet"])
    finally:
        holder.kill()
        holder.wait()
    assert code == 2 and "in use by" in capsys.readouterr().err
    assert not (tmp_path / "out" / "tiny").exists()


def test_the_report_reads_while_a_run_holds_the_lock(finished):
    from lowdiff.report import write_report

    _, root = finished
    with RunLock(root):
        assert write_report(root).is_file()


# --- 2: paths that escape -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "", "a/b", ".hidden", "a\\b"])
def test_unsafe_experiment_names_are_rejected(tmp_path, name):
    text = TINY.replace('name = "tiny"', f"name = {json.dumps(name)}")
    with pytest.raises(ConfigError, match="experiment.name"):
        experiment(tmp_path, text)


@pytest.mark.parametrize("name", ["..", "a/b", "-x"])
def test_unsafe_run_names_are_rejected(tmp_path, name):
    text = TINY.replace("[runs.again]", f"[runs.{json.dumps(name)}]")
    with pytest.raises(ConfigError, match="run name"):
        experiment(tmp_path, text)


@pytest.mark.parametrize("name", ["../../victim", "/abs/victim", "", "sub/../../victim"])
def test_confined_refuses_names_that_leave_the_directory(tmp_path, name):
    with pytest.raises(results.ResultsError, match="refusing"):
        results.confined(tmp_path / "cell", name)
    assert results.confined(tmp_path / "cell", "samples.npy") == (tmp_path / "cell").resolve() / (
        "samples.npy"
    )


def crafted_cell(directory, files):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "losses.npy").write_bytes(b"x" * 10)
    record = {"format": results.FORMAT, "config_hash": "h", "metrics": {}, "files": files}
    (directory / "cell.json").write_text(json.dumps(record))


def test_a_crafted_cell_never_touches_a_file_outside(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("secret")
    victim.chmod(0o600)
    before = snapshot(victim)
    source = tmp_path / "results" / "run" / "moons" / "seed_0"
    crafted_cell(source, {"losses.npy": 10, "../../../../victim": 6})
    target = tmp_path / "results" / "copy" / "moons" / "seed_0"
    assert results.read_cell(source) is None  # not a finished cell
    with pytest.raises(results.ResultsError):
        results.copy_cell(source, target, {"run": "copy"})
    assert snapshot(victim) == before
    assert not (tmp_path / "results" / "copy" / "victim").exists()


def test_symlinks_out_of_a_cell_are_refused(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"y" * 10)
    victim.chmod(0o600)
    before = snapshot(victim)
    cell = tmp_path / "results" / "run" / "moons" / "seed_0"
    crafted_cell(cell, {"losses.npy": 10, "samples.npy": 10})
    (cell / "samples.npy").symlink_to(victim)
    assert results.read_cell(cell) is None
    with pytest.raises(results.ResultsError):
        results.copy_cell(cell, tmp_path / "results" / "b" / "moons" / "seed_0", {})
    # a symlinked cell directory leading out of the results folder is refused for writing
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "results" / "run" / "line").symlink_to(outside, target_is_directory=True)
    with pytest.raises(results.ResultsError, match="outside"):
        results.write_cell(
            tmp_path / "results" / "run" / "line" / "seed_0",
            {"losses.npy": np.zeros(3)},
            {},
            root=tmp_path / "results",
        )
    assert list(outside.iterdir()) == [] and snapshot(victim) == before


def test_a_planted_symlink_in_a_cell_is_refused_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("secret")
    before = snapshot(victim)
    cell = tmp_path / "results" / "cell"
    cell.mkdir(parents=True)
    (cell / "losses.npy").symlink_to(victim)
    with pytest.raises(results.ResultsError, match="leads outside"):
        results.write_cell(cell, {"losses.npy": np.zeros(3)}, {}, root=tmp_path / "results")
    assert snapshot(victim) == before


def test_a_crafted_twin_cell_is_retrained_not_copied(tmp_path):
    """The runner's twin copy (run `again` repeats `baseline`) reads `files` of a cell.json."""
    config = experiment(tmp_path)
    root = tmp_path / "out"
    victim = tmp_path / "victim"
    victim.write_text("secret")
    victim.chmod(0o600)
    before = snapshot(victim)
    cells.write_configs(config, root)  # crafted inside a results directory of this experiment
    for cell in plan(config, root):
        if cell.run == "baseline":
            crafted_cell(cell.directory, {"losses.npy": 10, "../../../../victim": 6})
            record = json.loads((cell.directory / "cell.json").read_text())
            record["config_hash"] = cell.config_hash
            (cell.directory / "cell.json").write_text(json.dumps(record))
    execute(config, root, progress=False)
    assert snapshot(victim) == before
    for cell in plan(config, root):
        assert results.read_cell(cell.directory, cell.config_hash) is not None


# --- 3: one diverging run -------------------------------------------------------------------

BOOM = TINY.replace(
    '[runs.again]\ndescription = "repeats the baseline"\n',
    "[runs.boom]\ntrain = { learning_rate = 1e30 }\n[runs.after]\nmodel = { hidden_dim = 16 }\n",
)


def test_a_diverging_model_keeps_its_batch_mates():
    datasets = {"a": torch.randn(300, 2), "bad": torch.full((300, 2), float("nan"))}
    config = TrainConfig(num_steps=20, batch_size=32)
    members = [Member("a", 0), Member("bad", 0), Member("a", 1)]
    trainer = Trainer(
        ModelConfig(embedding_dim=16, hidden_dim=32),
        members,
        datasets,
        NoiseSchedule(ScheduleConfig()),
        config,
        torch.device("cpu"),
    )
    result = trainer.run()
    assert result.diverged == {1: 0}
    assert np.isfinite(result.losses[[0, 2]]).all()


def test_a_diverging_run_does_not_stop_the_experiment(tmp_path):
    config = experiment(tmp_path, BOOM)
    root = tmp_path / "out"
    with contextlib.suppress(Exception):  # it may say something diverged; the work is done
        execute(config, root, progress=False)
    for cell in plan(config, root):
        record = results.read_cell(cell.directory, cell.config_hash)
        assert record is not None, cell.directory
        if cell.run == "boom":
            assert record["status"] == "diverged" and record["diverged_at_step"] >= 0
        else:
            assert record.get("status", "finished") == "finished"


def test_the_cli_writes_the_report_and_says_something_diverged(tmp_path, capsys):
    (tmp_path / "exp.toml").write_text(BOOM)
    code = main(["run", str(tmp_path / "exp.toml"), "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 3 and "boom" in capsys.readouterr().err
    assert "diverged at step" in (tmp_path / "out" / "report.md").read_text()


# --- 4: bad values accepted, then a crash after work started --------------------------------


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.batch_size=1000", "batch_size: 1000 is larger than the 500 training points"),
        ("train.learning_rate=inf", "learning_rate: must be a finite number"),
        ("train.learning_rate=nan", "learning_rate: must be a finite number"),
        ("schedule.num_timesteps=0", "num_timesteps must be >= 1"),
        ("schedule.beta_end=2.0", "beta_start <= beta_end < 1"),
        ("schedule.beta_start=0.0", "0 < beta_start"),
        ("schedule.beta_start=0.05", "beta_start <= beta_end"),
        ("experiment.device=foo", "'foo' is not a device"),
        ("model.hidden_dim=1e6", "expected int"),
        ("eval.field_extent=-1.0", "field_extent must be a finite number > 0"),
    ],
)
def test_bad_values_are_rejected_before_anything_is_written(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        experiment(tmp_path, overrides=[override])


@pytest.mark.parametrize(
    "override,part",
    [
        ("model.hidden_dim=1000000", "model, optimiser and EMA state"),
        ("experiment.num_points=10000000000000", "training data"),
        ("eval.num_samples=100000000000000", "samples"),
        ("train.num_steps=1000000000000", "losses"),
    ],
)
def test_huge_sizes_are_refused_saying_how_much_memory(tmp_path, override, part):
    config = experiment(tmp_path, overrides=[override])
    with pytest.raises(ConfigError, match=rf"need about [\d,.]+ GiB .*{part}.*GiB is available"):
        execute(config, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_the_memory_estimate_counts_what_a_batch_allocates(tmp_path):
    config = experiment(tmp_path)
    run = config.runs[0]
    parts = estimate_memory(config, run)
    params = sum(
        p.numel()
        for p in Trainer(
            run.model,
            [Member("moons", 0)],
            {"moons": torch.zeros(500, 2)},
            NoiseSchedule(run.schedule),
            run.train,
            torch.device("cpu"),
        ).model.parameters()
    )
    assert parts["model, optimiser and EMA state"] == 2 * params * 4 * 6  # 2 models
    assert parts["losses"] == 30 * 2 * 4 * 2
    bigger = experiment(tmp_path, overrides=["model.hidden_dim=64"])
    assert (
        estimate_memory(bigger, bigger.runs[0])["model, optimiser and EMA state"]
        > parts["model, optimiser and EMA state"]
    )
    check_memory(config, available=sum(parts.values()))  # fits exactly: accepted
    with pytest.raises(ConfigError, match="GiB"):
        check_memory(config, available=sum(parts.values()) - 1)


def test_activations_are_counted_from_the_model_itself():
    from lowdiff.settings import ModelConfig

    H, B = 32, 10  # noqa: N806

    def floats(**options):
        return activation_floats(ModelConfig(hidden_dim=H, **options), 100, B)[0]

    # a residual block h + Linear(ReLU(h)) makes two (B, H) tensors: ReLU and Linear, into
    # whose output the sum goes in place
    assert floats(hidden_layers=4) - floats(hidden_layers=3) == 2 * B * H
    # larger experts: one more hidden layer (Linear(H, H); the ReLU before it in place) in each
    # of the two experts, not twice the width (protocol §3 run 3)
    plain, larger = floats(arch="dual_expert"), floats(arch="dual_expert", larger_experts=True)
    assert larger - plain == 2 * B * H
    # the largest tensor (2E < H): a hidden layer's (points, H), or the (T, H) time table
    assert activation_floats(ModelConfig(hidden_dim=H, embedding_dim=8), 100, 1000)[1] == 1000 * H
    assert activation_floats(ModelConfig(hidden_dim=H, embedding_dim=8), 100, B)[1] == 100 * H


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="'cuda'.*use 'auto' or 'cpu'"):
        check_device_available("cuda")
    config = experiment(tmp_path, overrides=["experiment.device=cuda"])
    with pytest.raises(ConfigError, match="cuda"):
        execute(config, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_negative_threads_are_rejected():
    with pytest.raises(ConfigError, match="--threads must be >= 0"):
        check_threads(-3)
    check_threads(0)


def test_cli_rejects_negative_threads_before_writing(tmp_path, capsys):
    (tmp_path / "exp.toml").write_text(TINY)
    code = main(
        ["run", str(tmp_path / "exp.toml"), "--out", str(tmp_path / "o"), "--threads", "-3"]
    )
    assert code == 2 and "--threads" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# --- 5: tracebacks where a message belongs -------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        TINY.replace("tiny", "caf\u00e9").encode("latin-1"),
        TINY.encode("utf-16"),
        bytes(range(256)),
    ],
    ids=["latin-1", "utf-16", "binary"],
)
def test_non_utf8_experiment_files_get_one_line(tmp_path, content):
    path = tmp_path / "exp.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="not a UTF-8 text file") as error:
        load_experiment(path)
    assert "\n" not in str(error.value)


def test_out_that_is_a_file_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "exp.toml").write_text(TINY)
    (tmp_path / "out").write_text("a file")
    code = main(["run", str(tmp_path / "exp.toml"), "--out", str(tmp_path / "out"), "--quiet"])
    error = capsys.readouterr().err
    assert code == 2 and str(tmp_path / "out") in error and len(error.strip().splitlines()) == 1


def failing_writes(monkeypatch, code):
    def refuse(folder, name, data):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(results, "_write_in", refuse)


@pytest.mark.parametrize(
    "code,advice",
    [
        (errno.ENOSPC, "no space left"),
        (errno.EROFS, "read-only file system"),
        (errno.EACCES, "permission denied"),
        (errno.ENOTDIR, "not a directory"),
    ],
)
def test_storage_errors_are_one_line_naming_the_path(tmp_path, monkeypatch, code, advice):
    failing_writes(monkeypatch, code)
    with pytest.raises(results.StorageError, match=advice) as error:
        results.write_json(tmp_path / "x.json", {})
    assert str(tmp_path / "x.json") in str(error.value) and "\n" not in str(error.value)
    assert advice in results.describe_os_error(OSError(code, "x"), "p")


def test_report_on_a_read_only_folder_is_one_line_and_exit_2(finished, monkeypatch, capsys):
    _, root = finished
    failing_writes(monkeypatch, errno.EROFS)
    assert main(["report", str(root)]) == 2
    error = capsys.readouterr().err
    assert "read-only" in error and len(error.strip().splitlines()) == 1


def test_disk_full_while_writing_cells_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "exp.toml").write_text(TINY)
    failing_writes(monkeypatch, errno.ENOSPC)
    code = main(["run", str(tmp_path / "exp.toml"), "--out", str(tmp_path / "out"), "--quiet"])
    error = capsys.readouterr().err
    assert code == 2 and "no space left" in error and len(error.strip().splitlines()) == 1


def test_a_failed_report_write_leaves_md_and_html_in_step(finished, monkeypatch):
    from lowdiff.report import write_report

    _, root = finished
    for name in ("report.md", "report.html"):
        (root / name).unlink(missing_ok=True)
    original = results._write_in

    def html_fails(folder, name, data):  # the disk fills up while the html page is written
        if "report.html" in name:  # the page or a temporary file of it
            raise OSError(errno.ENOSPC, "full", name)
        original(folder, name, data)

    monkeypatch.setattr(results, "_write_in", html_fails)
    with pytest.raises(results.StorageError):
        write_report(root)
    monkeypatch.undo()
    pages = [(root / name).exists() for name in ("report.md", "report.html")]
    write_report(root)  # leave the shared results as they were
    assert pages == [False, False]  # both or neither


# --- 6: one bad file stops the whole report -------------------------------------------------


def damage_one_cell(root, how):
    cell = root / "baseline" / "moons" / "seed_0"
    record = json.loads((cell / "cell.json").read_text())
    if how in ("abc", "null", "nan"):
        text = json.dumps(record).replace(
            f'"kl_divergence": {record["metrics"]["kl_divergence"]}',
            {
                "abc": '"kl_divergence": "abc"',
                "null": '"kl_divergence": null',
                "nan": '"kl_divergence": NaN',
            }[how],
        )
        (cell / "cell.json").write_text(text)
    elif how == "cell_json_directory":
        (cell / "cell.json").unlink()
        (cell / "cell.json").mkdir()
    elif how == "string_samples":
        np.save(cell / "samples.npy", np.array(["a", "b"]))
    elif how == "losses_2d":
        np.save(cell / "losses.npy", np.zeros((3, 3)))
    elif how == "pickle":
        np.save(cell / "samples.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    elif how == "oracle_types":
        (root / "oracle.json").write_text(json.dumps({"key": 1, "datasets": [1, "x"]}))


@pytest.mark.parametrize(
    "how",
    [
        "abc",
        "null",
        "nan",
        "cell_json_directory",
        "string_samples",
        "losses_2d",
        "pickle",
        "oracle_types",
    ],
)
def test_a_bad_cell_is_marked_and_the_report_is_written(tmp_path, finished, how):
    import shutil

    from lowdiff.report import write_report

    _, source = finished
    root = tmp_path / "copy"
    shutil.copytree(source, root)
    damage_one_cell(root, how)
    path = write_report(root)
    assert path.is_file() and "line" in path.read_text()  # the healthy dataset is reported
    if how in ("abc", "null", "nan", "cell_json_directory"):  # listed as invalid, with why
        assert "baseline: moons / seed 0 (invalid: " in path.read_text()


# --- 7: typos accepted ----------------------------------------------------------------------


def test_override_of_an_unknown_run_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="no run named 'nosuch'.*baseline, again"):
        experiment(tmp_path, overrides=["runs.nosuch.train.num_steps=5"])
    config = experiment(tmp_path, overrides=["runs.again.train.num_steps=5"])
    assert config.run("again").train.num_steps == 5


def test_duplicate_datasets_are_rejected(tmp_path):
    text = TINY.replace('["moons", "line"]', '["moons", "line", "moons"]')
    with pytest.raises(ConfigError, match="moons listed more than once"):
        experiment(tmp_path, text)


# --- 8: messages ----------------------------------------------------------------------------


def test_a_directory_as_the_experiment_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_experiment(tmp_path)


def test_override_errors_are_not_blamed_on_a_line(tmp_path):
    with pytest.raises(ConfigError) as error:
        experiment(tmp_path, overrides=["runs.nosuch.train.num_steps=5"])
    assert not re.search(r"line \d", str(error.value))


def test_the_file_name_is_printed_once(tmp_path):
    text = TINY.replace("[runs.baseline]\n[runs.again]\n", "").replace(
        'description = "repeats the baseline"\n', ""
    )
    with pytest.raises(ConfigError) as error:
        experiment(tmp_path, text)
    assert str(error.value).count("exp.toml") == 1


def test_interrupt_message_starts_its_own_line(tmp_path, monkeypatch, capsys):
    import lowdiff.experiments

    (tmp_path / "exp.toml").write_text(TINY)

    def interrupted(*args, **kwargs):
        sys.stderr.write("\rcells:  50%|#####     | 1/2")  # a progress bar mid-line
        raise KeyboardInterrupt

    monkeypatch.setattr(lowdiff.experiments, "execute", interrupted)
    assert main(["run", str(tmp_path / "exp.toml"), "--out", str(tmp_path / "o")]) == 130
    last = capsys.readouterr().err.split("\n")[-2]
    assert last.startswith("lowdiff: interrupted")


# --- 9: a kill loses the whole batch --------------------------------------------------------

KILLED = """
import os, signal, sys
sys.path.insert(0, {src!r})
import torch
torch.set_num_threads(1)
from pathlib import Path
from lowdiff.engine import Member, TrainConfig, Trainer
from lowdiff.models import ModelConfig
from lowdiff.schedule import NoiseSchedule, ScheduleConfig

original = Trainer.save_checkpoint
def save_then_die(self, path, step, losses, elapsed):
    original(self, path, step, losses, elapsed)
    if step == 300:  # 90 % of the way: killed without any chance to clean up
        os.kill(os.getpid(), signal.SIGKILL)
Trainer.save_checkpoint = save_then_die
{build}
trainer.run(checkpoint=Path({path!r}))
"""

BUILD = """
generator = torch.Generator().manual_seed(0)
datasets = {"a": torch.randn(400, 2, generator=generator),
            "b": torch.rand(400, 2, generator=generator)}
config = TrainConfig(num_steps=333, batch_size=32, checkpoint_every=100)
trainer = Trainer(ModelConfig(embedding_dim=16, hidden_dim=32), [Member("a", 0), Member("b", 1)],
                  datasets, NoiseSchedule(ScheduleConfig()), config, torch.device("cpu"))
"""


def test_kill_9_at_90_percent_resumes_byte_identical(tmp_path):
    path = tmp_path / "batch.ckpt.npz"
    script = KILLED.format(src=SRC, build=BUILD, path=str(path))
    process = subprocess.run(
        [sys.executable, "-c", script], env=os.environ | {"OMP_NUM_THREADS": "1"}
    )
    assert process.returncode == -signal.SIGKILL and path.is_file()
    scope: dict = {
        "torch": torch,
        "TrainConfig": TrainConfig,
        "Trainer": Trainer,
        "Member": Member,
        "ModelConfig": ModelConfig,
        "NoiseSchedule": NoiseSchedule,
        "ScheduleConfig": ScheduleConfig,
    }
    exec(textwrap.dedent(BUILD), scope)
    resumed = scope["trainer"].run(checkpoint=path)
    exec(textwrap.dedent(BUILD), scope)
    uninterrupted = scope["trainer"].run()
    assert resumed.losses.tobytes() == uninterrupted.losses.tobytes()
    for module_a, module_b in (
        (resumed.model, uninterrupted.model),
        (resumed.ema_model, uninterrupted.ema_model),
    ):
        for p, q in zip(module_a.parameters(), module_b.parameters(), strict=True):
            assert p.detach().numpy().tobytes() == q.detach().numpy().tobytes()


def test_checkpoint_every_is_not_part_of_the_cell_key(tmp_path):
    config = experiment(tmp_path)
    changed = experiment(tmp_path, overrides=["train.checkpoint_every=7"])
    for run, other in zip(config.runs, changed.runs, strict=True):
        assert cell_hash(config, run, "moons", 0) == cell_hash(changed, other, "moons", 0)


def test_a_models_gradient_norm_does_not_depend_on_its_batch_mates():
    generator = torch.Generator().manual_seed(0)
    shapes = [(96, 64), (1, 64), (64, 64), (64, 2), (1, 2)]
    grads = [torch.randn(12, *shape, generator=generator) * 1e-2 for shape in shapes]
    alone = None
    for size in (1, 3, 12):
        params = [torch.zeros(size, *shape, requires_grad=True) for shape in shapes]
        for p, g in zip(params, grads, strict=True):
            p.grad = g[:size].clone()
        norms = clip_grad_norm_per_model(params, 0.5)
        clipped = [p.grad[0].clone() for p in params]
        alone = alone or (norms[0].clone(), clipped)
        assert torch.equal(norms[0], alone[0])  # the same bits, not merely close
        assert all(torch.equal(a, b) for a, b in zip(clipped, alone[1], strict=True))


def test_a_finished_batch_removes_its_checkpoints(finished):
    _, root = finished
    assert not [p for p in root.rglob("*") if "ckpt" in p.name or "checkpoint" in p.name]


def test_a_resumed_cell_is_bit_identical_to_its_batched_original(tmp_path):
    """A cell trained in a batch of two, lost and retrained alone (its batch-mate is done and not
    retrained), comes out with the same bits: at one thread a cell ignores its batch-mates.
    The lost cell's ground truth is measured (few points, and ring8 for moons: its true law is
    quick to evaluate): those values too are the cell's own."""
    text = TINY.replace("[runs.again]\n", "[runs.again]\nmodel = { hidden_dim = 16 }\n")
    text = text.replace('datasets = ["moons", "line"]', 'datasets = ["ring8", "line"]')
    measured = ["ground_truth=true", "ground_truth_points=20", "ode_points=16"]
    config = experiment(tmp_path, text, [f"runs.again.eval.{setting}" for setting in measured])
    root = tmp_path / "out"
    execute(config, root, progress=False)
    lost = next(c for c in plan(config, root) if c.run == "again")
    before = results.read_cell(lost.directory)
    arrays = cell_arrays(lost.directory)
    (lost.directory / "cell.json").unlink()
    assert list(execute(config, root, progress=False)) == [lost]
    after = results.read_cell(lost.directory, lost.config_hash)
    assert before["batch"]["models"] == 2 and after["batch"]["models"] == 1  # recorded as run
    timings = {"training_time", "inference_time"}  # wall clock: the only values allowed to move
    # the ODE likelihood: one adaptive step-size control per batch, equal to its tolerance only
    ode = {"ode_nll_bits", "ode_kl_bits", "likelihood.npz:log_model"}
    assert {k: v for k, v in after["metrics"].items() if k not in timings | ode} == {
        k: v for k, v in before["metrics"].items() if k not in timings | ode
    }
    assert {"excess_eval_loss", "ode_nll_bits"} <= before["metrics"].keys()  # measured
    for name in ode & before["metrics"].keys():
        assert after["metrics"][name] == pytest.approx(before["metrics"][name], rel=1e-3), name
    again = cell_arrays(lost.directory)
    assert again.keys() == arrays.keys() and len(arrays) >= 4
    assert "likelihood.npz:log_model" in arrays and "loss_by_timestep.npz:model" in arrays
    for name, value in arrays.items():
        if name in ode:
            np.testing.assert_allclose(again[name], value, atol=0.05)  # nats per point
            continue
        assert value.dtype == again[name].dtype and value.tobytes() == again[name].tobytes(), name


def test_a_pack_stopped_while_writing_resumes_from_its_checkpoint(finished, tmp_path, monkeypatch):
    """Killed after training, with one of its two cells written: the resume trains the same
    pack from its checkpoint (no step retrained), writes only the missing cell, and that cell
    equals the uninterrupted run's."""
    import lowdiff.experiments as experiments

    config, reference = finished
    root = tmp_path / "out"
    original = experiments.write_model_cell
    written = []

    def die_after_one(outputs, m, cell, *args, **kwargs):
        if written:
            raise KeyboardInterrupt  # as if killed while the second cell was written
        original(outputs, m, cell, *args, **kwargs)
        written.append(cell)

    monkeypatch.setattr(experiments, "write_model_cell", die_after_one)
    with pytest.raises(KeyboardInterrupt):
        execute(config, root, progress=False)
    monkeypatch.undo()
    first, second = plan(config, root)[:2]  # baseline's pack: moons/0, line/0
    assert written == [first] and not results.read_cell(second.directory)
    mtime = (first.directory / "cell.json").stat().st_mtime_ns
    packs = experiments.plan_packs(config, root)
    assert packs[0].cells == (first, second) and packs[0].done == (first,)
    resumed_at = []
    load = Trainer.load_checkpoint

    def spy(self, path, losses):
        found = load(self, path, losses)
        resumed_at.append(None if found is None else found[0])
        return found

    monkeypatch.setattr(Trainer, "load_checkpoint", spy)
    assert list(execute(config, root, progress=False)) == [second, *plan(config, root)[2:]]
    assert resumed_at == [config.run("baseline").train.num_steps]  # nothing trained again
    assert (first.directory / "cell.json").stat().st_mtime_ns == mtime  # not rewritten
    after = results.read_cell(second.directory)
    expected = results.read_cell(plan(config, reference)[1].directory)
    assert after["batch"]["models"] == 2
    timings = {"training_time", "inference_time"}
    assert {k: v for k, v in after["metrics"].items() if k not in timings} == {
        k: v for k, v in expected["metrics"].items() if k not in timings
    }


def cell_arrays(directory):
    """Every array of a cell's .npy and .npz files, by file (and key) name."""
    arrays = {}
    for path in sorted(directory.iterdir()):
        if path.suffix == ".npy":
            arrays[path.name] = results.read_npy(path)
        elif path.suffix == ".npz":
            arrays |= {f"{path.name}:{k}": v for k, v in results.read_npz(path).items()}
    return arrays


@pytest.mark.parametrize(
    "options",
    [
        {"arch": "mlp"},
        {"arch": "dual_scale"},
        {"arch": "dual_scale", "weighting": "learned_deep"},
        {"arch": "dual_expert", "gate": "enhanced", "larger_experts": True},
    ],
    ids=["mlp", "dual_scale", "dual_scale_deep", "dual_expert"],
)
def test_a_cell_has_the_same_bits_alone_and_in_a_batch(options):
    """On the CPU at one thread a model's training and samples ignore its batch-mates."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        outcomes = batch_outcomes(options)
    finally:
        torch.set_num_threads(threads)
    assert outcomes[1] == outcomes[0] and outcomes[2] == outcomes[0]


def batch_outcomes(options):
    from lowdiff.samplers import sample

    generator = torch.Generator().manual_seed(0)
    datasets = {
        "a": torch.randn(300, 2, generator=generator),
        "b": torch.rand(300, 2, generator=generator),
    }
    schedule = NoiseSchedule(ScheduleConfig())
    config = TrainConfig(num_steps=30, batch_size=32, ema_update_every=2, ema_warmup_steps=3)
    model = ModelConfig(embedding_dim=20, hidden_dim=24, **options)  # odd sizes: vector tails
    target = Member("a", 0)
    outcomes = []
    for members in ([target], [target, Member("b", 1), Member("a", 2)], [Member("b", 3), target]):
        result = Trainer(model, members, datasets, schedule, config, torch.device("cpu")).run()
        m = members.index(target)
        drawn = sample(
            result.ema_model,
            schedule,
            [g["sample"] for g in result.generators],
            torch.device("cpu"),
            num_samples=150,
        )
        params = [p.detach()[m].numpy().tobytes() for p in result.model.parameters()]
        outcomes.append((result.losses[m].tobytes(), params, drawn.points[m].tobytes()))
    return outcomes
