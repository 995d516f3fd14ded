# PYTHON_ARGCOMPLETE_OK
"""Command line: parse, call, print (the work itself is in lowdiff.api and the library).

Every command has a help page with examples (`lowdiff COMMAND --help`). Unknown names
(commands, flags, datasets, architectures, samplers, config keys) get a "did you mean"; an
error names the flag the user typed. Shell completion comes from the optional `argcomplete`
package when it is installed (`eval "$(register-python-argcomplete lowdiff)"`).
"""

from __future__ import annotations

import argparse
import functools
import io
import logging
import re
import sys
import typing
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lowdiff import __version__, catalogue, cells, results
from lowdiff import config as config_module
from lowdiff.api import check_choice, did_you_mean
from lowdiff.catalogue import choices_text
from lowdiff.config import ConfigError
from lowdiff.executors import ExecutorError
from lowdiff.progress import phase, resume_line, summary_table
from lowdiff.results import ResultsError

log = logging.getLogger("lowdiff")

DESCRIPTION = (
    "lowdiff trains many small diffusion models (DDPMs) on 2-D datasets at once, measures "
    "them against the true distribution and compares runs with paired statistics over seeds."
)
EXAMPLES = """\
examples:
  lowdiff run experiments/quickstart.toml              # an experiment file -> results + report
  lowdiff train --model dual_expert --datasets moons --seeds 0,1,2 --out runs/de
  lowdiff sample runs/de/dual_expert/moons/seed_0 --n 1000 --out moons.csv
  lowdiff export runs/de --out metrics.csv             # tidy CSV of every metric
  lowdiff evaluate samples.csv --dataset moons          # metrics of any points + oracle floor
  lowdiff export-model CELL_DIR --out model.safetensors # plain single-model weights
  lowdiff keys                                         # every setting --set can change

`lowdiff COMMAND --help` shows each command's options and examples.
"""


class Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for unknown commands, choices and flags."""

    def _command_parser(self, name: str | None) -> argparse.ArgumentParser:
        if self._subparsers is not None and name is not None:
            for action in self._subparsers._group_actions:
                if name in getattr(action, "choices", {}):
                    return action.choices[name]
        return self

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        """As argparse, but an unknown flag is reported by the command it was given to."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            target = self._command_parser(getattr(parsed, "command", None))
            target.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed

    def error(self, message: str) -> typing.NoReturn:
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            hint = did_you_mean(choice.group(1), re.findall(r"'([^']*)'", choice.group(2)))
            message += f";{hint}" if hint else ""
        unknown = re.search(r"unrecognized arguments: (-[^\s=]+)", message)
        if unknown:
            hint = did_you_mean(unknown.group(1), list(self._option_string_actions))
            message += f";{hint}" if hint else ""
        super().error(message)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


# --- "did you mean" for settings and config-file errors -----------------------------------


def _check_overrides(assignments: Sequence[str]) -> None:
    """Each `--set KEY=VALUE` names a real key (checked before any file is read)."""
    sections = config_module.TABLES
    for assignment in assignments:
        path, _ = config_module.parse_override(assignment)
        where = f"--set {assignment}"
        if path[0] == "runs":  # runs.NAME.SECTION.KEY: a run's own table
            path = path[2:]
            if path[:1] == ["description"] or not path:
                continue
        check_choice(path[0], [*sections, "runs"], "table", where)
        if len(path) > 1 and path[0] in sections:
            fields = [f.name for f in config_module.table_fields(path[0])]
            check_choice(path[1], fields, "key", where)


_UNKNOWN = re.compile(
    r"unknown (?:key|table \[|dataset|run) '?([A-Za-z0-9_.-]+)'?\]?; "
    r"(?:valid(?: keys| tables)?|runs): ([A-Za-z0-9_., -]+)$"
)


def _with_suggestion(message: str) -> str:
    """Add a "did you mean" to a library error listing the valid names, where one is close."""
    match = _UNKNOWN.search(message)
    if not match or "did you mean" in message:
        return message
    choices = [name.strip() for name in match.group(2).split(",")]
    hint = did_you_mean(match.group(1), choices)
    return f"{message};{hint}" if hint else message


def _suggesting(handler: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ConfigError as error:
            raise ConfigError(_with_suggestion(str(error))) from error

    return wrapped


# --- run and train ------------------------------------------------------------------------


def _train_config(args: argparse.Namespace) -> config_module.ExperimentConfig:
    """`lowdiff train` is a one-run experiment built from flags (every value via --set)."""
    from lowdiff.api import train_config

    try:
        seeds = [int(s) for s in _csv(args.seeds)]
    except ValueError as error:
        raise ConfigError(
            f"--seeds: expected comma-separated integers, got {args.seeds!r}"
        ) from error
    _check_overrides(args.set)
    return train_config(
        args.model,
        _csv(args.datasets),
        seeds,
        name=args.name or None,
        device=args.device,
        overrides=_overrides(args),
        flags={"model": "--model", "datasets": "--datasets", "seeds": "--seeds"},
    )


def _sequential_overrides(args: argparse.Namespace) -> list[str]:
    """--until-decided, --max-seeds and --round-seeds as experiment settings."""
    extra = []
    if getattr(args, "until_decided", False):
        extra.append("experiment.until_decided=true")
    if getattr(args, "max_seeds", None) is not None:
        extra.append(f"experiment.max_seeds={args.max_seeds}")
    if getattr(args, "round_seeds", None) is not None:
        extra.append(f"experiment.round_seeds={args.round_seeds}")
    return extra


def _overrides(args: argparse.Namespace) -> list[str]:
    """The --set overrides, with the flags that are shorthands for a setting."""
    executor = [f'experiment.executor="{args.executor}"'] if args.executor else []
    return [*args.set, *executor, *_sequential_overrides(args)]


def _finished_cells(
    experiment: config_module.ExperimentConfig,
    out: Path,
    only: Collection[tuple[str, str]] | None = None,
) -> tuple[int, int]:
    planned = [
        cell
        for cell in cells.plan(experiment, out)
        if only is None or (cell.run, cell.dataset) in only
    ]
    return sum(cells.is_done(cell) for cell in planned), len(planned)


def _run(
    experiment: config_module.ExperimentConfig,
    out: Path,
    args: argparse.Namespace,
    only: Collection[tuple[str, str]] | None = None,
) -> int:
    from lowdiff import runtime

    config_module.check_threads(args.threads)  # before anything is written
    runtime.share_cpu_environment()  # first: OpenMP reads its wait policy when torch loads
    from lowdiff.executors import make_executor
    from lowdiff.experiments import execute  # torch only once the input is valid
    from lowdiff.report import write_report

    runtime.configure_cpu(args.threads)
    finished, total = _finished_cells(experiment, out, only)
    print(f"{out}: {resume_line(0 if args.force else finished, total)}", flush=True)
    local = experiment.executor.kind == "local"
    executor = None if local else make_executor(experiment.executor, root=out)
    executed = execute(
        experiment, out, force=args.force, progress=not args.quiet, executor=executor, only=only
    )
    with phase("report and figures", disable=args.quiet):
        path = write_report(out)
    table = summary_table(out)
    if table:
        print(f"\n{table}\n")
    print(f"results: {out}\nreport:  {path}")
    for cell in executed.diverged:
        step = cells.read(cell).diverged_at_step
        print(
            f"lowdiff: run {cell.run!r}: {cell.dataset}/seed {cell.seed} diverged (NaN/inf loss) "
            f"at step {step}; its batch-mates and the other runs are kept",
            file=sys.stderr,
        )
    by_error: dict[str, list[str]] = {}  # a refused submission fails every pack alike
    for name, error in executed.failed:
        by_error.setdefault(error, []).append(name)
    for error, names in by_error.items():
        packs = f"pack {names[0]}" if len(names) == 1 else f"packs {', '.join(names)}"
        print(f"lowdiff: {packs} failed after its retries: {error}", file=sys.stderr)
    return 3 if executed.diverged or executed.failed else 0


def cmd_run(args: argparse.Namespace) -> int:
    _check_overrides(args.set)
    experiment = config_module.load_experiment(args.experiment, _overrides(args), args.sweep)
    out = Path(args.out) if args.out else Path("runs") / experiment.experiment.name
    if experiment.experiment.until_decided:
        return _run_until_decided(experiment, out, args)
    return _run(experiment, out, args)


def _run_until_decided(
    experiment: config_module.ExperimentConfig, out: Path, args: argparse.Namespace
) -> int:
    """Rounds of seeds until every comparison of interest is decided (`lowdiff.rounds`)."""
    from lowdiff import rounds

    def once(config: config_module.ExperimentConfig, only: Collection[tuple[str, str]]) -> int:
        return _run(config, out, args, only)

    return rounds.until_decided(experiment, out, once, lambda line: print(line, flush=True))


def cmd_train(args: argparse.Namespace) -> int:
    return _run(_train_config(args), Path(args.out), args)


def cmd_report(args: argparse.Namespace) -> int:
    from lowdiff.report import ReportOptions, write_report

    claims = Path(args.claims) if args.claims else None
    if claims is not None and not claims.is_file():
        raise ConfigError(f"--claims {claims}: no such file; give a NAME.claims.toml file")
    print(f"report: {write_report(Path(args.run_dir), ReportOptions(claims=claims))}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from lowdiff.data import DATASETS

    for name, spec in DATASETS.items():
        print(f"{name:12s} K={spec.components.num_components:<4d} {spec.description}")
    return 0


# --- sample, export, compare, remeasure ---------------------------------------------------


def _points_bytes(points: np.ndarray, suffix: str) -> bytes:
    buffer = io.BytesIO()
    if suffix == ".npy":
        np.save(buffer, points, allow_pickle=False)
    else:
        np.savetxt(buffer, points, fmt="%.9g", delimiter=",", header="x,y", comments="")
    return buffer.getvalue()


def cmd_sample(args: argparse.Namespace) -> int:
    from lowdiff.api import check_count, check_device, check_sample_memory, load

    out = Path(args.out)
    check_choice(out.suffix, [".csv", ".npy"], "file type", "--out")
    check_count(args.n, "--n")
    check_count(args.sampling_steps, "--sampling-steps", minimum=0)
    check_device(args.device, "--device")
    model = load(args.cell, device=args.device)
    check_sample_memory(args.n, model.run.model.hidden_dim, "--n")
    try:
        points = model.sample(
            args.n,
            sampler=args.sampler,
            sampling_steps=args.sampling_steps,
            seed=args.seed,
            eta=args.eta,
        )
    except ConfigError as error:
        raise ConfigError(str(error).replace("sampler=", "--sampler")) from error
    except ValueError as error:
        flags = f"--sampler {args.sampler} --sampling-steps {args.sampling_steps}"
        raise ConfigError(f"{flags}: {error}") from error
    results.atomic_write_bytes(out, _points_bytes(points, out.suffix))
    steps = args.sampling_steps or model.schedule.num_timesteps
    print(
        f"{out}: {args.n} points from {model.directory} ({args.sampler}, {steps} steps, "
        f"seed {args.seed})"
    )
    return 0


def _read_points(path: Path) -> np.ndarray:
    """(N, 2) points from a .npy (plain numbers only) or a .csv with two columns (an x,y header or
    none), or a one-line ConfigError saying what is wrong."""
    check_choice(path.suffix, [".csv", ".npy"], "file type", "POINTS")
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; give a .csv (x,y) or .npy of shape (N, 2)")
    try:
        if path.suffix == ".npy":
            points = np.load(path, allow_pickle=False)
        else:
            text = path.read_text(encoding="utf-8").splitlines()
            skip = 1 if text and any(c.isalpha() for c in text[0]) else 0
            points = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2)
    except (ValueError, OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not readable as points: {error}") from error
    if points.ndim != 2 or points.shape[1] != 2 or not np.isfinite(points).all():
        raise ConfigError(f"{path}: expected finite points of shape (N, 2), got {points.shape}")
    return points


def cmd_evaluate(args: argparse.Namespace) -> int:
    from lowdiff import data
    from lowdiff.api import evaluate_against_floor
    from lowdiff.metrics import METRICS

    points = _read_points(Path(args.points))
    check_choice(args.dataset, data.DATASETS, "dataset", "--dataset")
    if args.k < 1 or args.draws < 1 or len(points) <= args.k:
        raise ConfigError(
            f"--k and --draws must be >= 1 and the file needs more than k points; got k = "
            f"{args.k}, draws = {args.draws}, {len(points)} points"
        )
    found = evaluate_against_floor(
        points, args.dataset, args.k, num_points=args.num_points, draws=args.draws
    )
    print(f"{args.points}: {len(points)} points against {args.dataset} (k = {args.k}; floor: "
          f"{args.draws} fresh draws of {len(points)} true points)")  # fmt: skip
    width = max(len(METRICS[m].label) for m in found)
    for metric, entry in found.items():
        info = METRICS[metric]
        value, floor = format(entry["value"], info.format), format(entry["floor"], info.format)
        spread = format(entry["floor_std"], info.format)
        print(f"  {info.label:<{width}}  {value:>9} {info.unit:<4}  floor {floor} ± {spread}  "
              f"{entry['verdict']}")  # fmt: skip
    return 0


def cmd_export_model(args: argparse.Namespace) -> int:
    from lowdiff.api import load

    out = Path(args.out)
    check_choice(out.suffix, [".safetensors"], "file type", "--out")
    try:
        from lowdiff.models.single import SingleDenoiser, save
    except ImportError as error:
        raise ConfigError(
            "export-model needs safetensors: pip install 'lowdiff[safetensors]'"
        ) from error
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: the directory {out.parent} does not exist")
    model = load(args.cell)
    single = SingleDenoiser.from_batched(
        model.network, model.run.model, model.run.schedule.num_timesteps
    )
    save(single, out)
    print(
        f"{out}: EMA weights of {model.directory} ({model.run.model.arch}); load with "
        f"lowdiff.models.single.SingleDenoiser.from_file({str(out)!r})"
    )
    return 0


def _export_tracking(args: argparse.Namespace) -> None:
    """`--mlflow URI` / `--tensorboard DIR`: every finished cell into the trackers."""
    from lowdiff import tracking

    for flag, extra, target, write in [
        ("--mlflow", "mlflow", args.mlflow, tracking.to_mlflow),
        ("--tensorboard", "tensorboard", args.tensorboard, tracking.to_tensorboard),
    ]:
        if target is None:
            continue
        try:
            count = write(args.dirs, target)
        except ImportError as error:
            raise ConfigError(
                f"{flag} needs the {extra} package: pip install 'lowdiff[{extra}]' ({error})"
            ) from error
        print(f"{flag} {target}: {count} finished cells")


def cmd_export(args: argparse.Namespace) -> int:
    from lowdiff.table import ResultsTable

    table = ResultsTable.from_dirs(args.dirs)  # checks every folder before anything is written
    if args.mlflow is not None or args.tensorboard is not None:
        _export_tracking(args)
        if args.out is None:
            return 0
    if args.out in (None, "-"):
        sys.stdout.write(table.to_csv())
        return 0
    table.to_csv(args.out)
    cells = len({(r["source"], r["run"], r["dataset"], r["seed"]) for r in table})
    print(
        f"{args.out}: {len(table)} rows, {cells} finished cells of {len(args.dirs)} "
        "results director" + ("y" if len(args.dirs) == 1 else "ies")
    )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from lowdiff.report.compare import write_comparison

    path = write_comparison([Path(d) for d in args.dirs], Path(args.out))
    print(f"comparison: {path}")
    return 0


def cmd_remeasure(args: argparse.Namespace) -> int:
    from lowdiff.remeasure import remeasure

    done = remeasure(
        Path(args.run_dir),
        progress=not args.quiet,
        report=not args.no_report,
        ground_truth=args.ground_truth,
    )
    print(f"{args.run_dir}: measured {len(done.measured)} cells again from their samples")
    for line in done.skipped:
        print(f"  skipped {line}")
    return 0


# --- keys -----------------------------------------------------------------------------------


def cmd_keys(args: argparse.Namespace) -> int:
    from lowdiff.keys import key_rows

    rows = key_rows()
    if args.section:
        sections = sorted({key.split(".")[0] for key, _, _ in rows})
        check_choice(args.section, sections, "section", "lowdiff keys")
        rows = [row for row in rows if row[0].startswith(f"{args.section}.")]
    width = max(len(key) for key, _, _ in rows)
    default_width = min(24, max(len(default) for _, default, _ in rows))
    for key, default, meaning in rows:
        print(f"{key:{width}s}  {default:{default_width}s}  {meaning}")
    return 0


# --- the parser -----------------------------------------------------------------------------


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. train.num_steps=2000 (repeatable; `lowdiff keys` lists "
        "them; runs.NAME.train.num_steps=... changes one run only)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="re-run every cell, finished or not; also write into a folder that holds other files "
        "or another experiment's results (refused without it)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for torch (default: shared among busy processes, or OMP_NUM_THREADS)",
    )
    parser.add_argument(
        "--executor",
        choices=["local", "ray", "slurm"],
        help="where packs of cells run (sets experiment.executor; options in [executor])",
    )


def _command(
    commands: Any, name: str, help_text: str, examples: str, handler: Callable[..., int]
) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=_suggesting(handler))
    return parser


def _add_run_commands(commands: Any) -> None:
    from lowdiff.architectures import ARCHITECTURES

    run = _command(
        commands,
        "run",
        "run an experiment file (resuming a finished part) and write its report",
        "  lowdiff run experiments/quickstart.toml\n"
        "  lowdiff run experiments/dual_expert.toml --set train.num_steps=2000 --out runs/short\n"
        "  lowdiff run experiments/quickstart.toml --force     # redo every cell\n"
        "  lowdiff run experiments/quickstart.toml --sweep train.diversity_weight=0,0.05\n",
        cmd_run,
    )
    run.add_argument("experiment", help="path to an experiment TOML file")
    run.add_argument("--out", help="results directory (default: runs/<experiment name>)")
    run.add_argument(
        "--until-decided",
        action="store_true",
        help="add rounds of seeds to undecided comparisons until decided or --max-seeds "
        "(sets experiment.until_decided; a group-sequential design keeps the error rates)",
    )
    run.add_argument(
        "--max-seeds", type=int, help="seed budget per run for --until-decided (default 15)"
    )
    run.add_argument("--round-seeds", type=int, help="seeds per round (default 5)")
    run.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="one run per value for each run, named RUN-LEAF=VALUE, e.g. "
        "train.diversity_weight=0,0.02,0.05 (repeatable: a grid; adds to the file's [sweep])",
    )
    _add_run_options(run)

    train = _command(
        commands,
        "train",
        "train and evaluate one architecture on datasets x seeds (a one-run experiment)",
        "  lowdiff train --out runs/mlp                       # mlp, 4 datasets, seed 0\n"
        "  lowdiff train --model dual_scale --datasets dino,moons --seeds 0,1,2 --out runs/ds\n"
        "  lowdiff train --out runs/quick --set train.num_steps=1000 --set model.hidden_dim=64\n",
        cmd_train,
    )
    train.add_argument(
        "--model", default="mlp", help=f"architecture: {', '.join(ARCHITECTURES)} (default mlp)"
    )
    train.add_argument(
        "--datasets",
        default="circle,dino,line,moons",
        help="comma-separated datasets (default circle,dino,line,moons; see `lowdiff datasets`)",
    )
    train.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2 (default 0)")
    train.add_argument("--out", required=True, help="results directory")
    train.add_argument("--name", default="", help="experiment name (default: the model)")
    train.add_argument("--device", default="auto", help="auto, cpu or cuda")
    _add_run_options(train)


def _add_result_commands(commands: Any) -> None:
    report = _command(
        commands,
        "report",
        "(re)build report.md and report.html from a results directory",
        "  lowdiff report runs/quickstart\n"
        "  lowdiff report /tmp/copy --claims experiments/dual_expert.claims.toml\n",
        cmd_report,
    )
    report.add_argument("run_dir", help="a results directory written by `lowdiff run`")
    report.add_argument(
        "--claims",
        metavar="FILE",
        help="the write-up's claims file (default: RESULTS/claims.toml, else "
        "experiments/NAME.claims.toml in a folder above; give it for a copied results folder)",
    )

    sample = _command(
        commands,
        "sample",
        "draw new points from the trained model of a finished cell",
        "  lowdiff sample runs/quickstart/baseline/moons/seed_0 --n 1000 --out moons.csv\n"
        "  lowdiff sample CELL_DIR --n 5000 --sampler ddim --sampling-steps 50 --out x.npy\n",
        cmd_sample,
    )
    sample.add_argument("cell", help="a cell directory, RESULTS/RUN/DATASET/seed_S")
    sample.add_argument("--n", type=int, default=1000, help="number of points (default 1000)")
    sample.add_argument(
        "--sampler",
        default="ancestral",
        help=f"{choices_text(catalogue.SAMPLERS)} (default ancestral)",
    )
    sample.add_argument(
        "--sampling-steps", type=int, default=0, help="sampler steps (default 0: all)"
    )
    sample.add_argument("--eta", type=float, default=0.0, help="DDIM's eta (default 0)")
    sample.add_argument("--seed", type=int, default=0, help="seed of the sampling noise")
    sample.add_argument("--out", required=True, help="x.csv (header x,y) or x.npy")
    sample.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")

    evaluate = _command(
        commands,
        "evaluate",
        "score points made elsewhere: every metric with its oracle floor and a verdict",
        "  lowdiff evaluate samples.csv --dataset moons\n"
        "  lowdiff evaluate samples.npy --dataset dino --k 5 --draws 5\n",
        cmd_evaluate,
    )
    evaluate.add_argument("points", help="POINTS: a .csv (x,y) or .npy of shape (N, 2)")
    evaluate.add_argument("--dataset", required=True, help="the dataset the points should follow")
    evaluate.add_argument("--k", type=int, default=5, help="neighbours of the kNN metrics (5)")
    evaluate.add_argument("--draws", type=int, default=5, help="oracle draws for the floor (5)")
    evaluate.add_argument(
        "--num-points", type=int, default=None, help="training points (default 100,000)"
    )
    export_model = _command(
        commands,
        "export-model",
        "write a cell's EMA weights as a plain single-model state dict (safetensors)",
        "  lowdiff export-model runs/quickstart/baseline/moons/seed_0 --out model.safetensors\n",
        cmd_export_model,
    )
    export_model.add_argument("cell", help="a cell directory, RESULTS/RUN/DATASET/seed_S")
    export_model.add_argument("--out", required=True, help="FILE.safetensors to write")

    export = _command(
        commands,
        "export",
        "write the metrics of results directories as one tidy CSV",
        "  lowdiff export runs/dual_scale runs/dual_expert --out metrics.csv\n"
        "  lowdiff export runs/quickstart | head     # to standard output\n"
        "columns: experiment, run, dataset, seed, metric, value (finished cells only)\n",
        cmd_export,
    )
    export.add_argument("dirs", nargs="+", metavar="DIR", help="results directories")
    export.add_argument("--out", help="CSV file to write (default: standard output)")
    export.add_argument(
        "--mlflow",
        nargs="?",
        const="sqlite:///mlflow.db",
        metavar="URI",
        help="log every cell as an MLflow run (default URI sqlite:///mlflow.db, a local "
        "store in the working directory; a server URI also works)",
    )
    export.add_argument(
        "--tensorboard", metavar="DIR", help="write TensorBoard event files under DIR"
    )

    compare = _command(
        commands,
        "compare",
        "one report over several results directories (matching datasets and seeds paired)",
        "  lowdiff compare runs/dual_scale runs/dual_expert --out runs/compared\n",
        cmd_compare,
    )
    compare.add_argument("dirs", nargs="+", metavar="DIR", help="results directories")
    compare.add_argument("--out", required=True, help="directory of the comparison report")

    remeasure = _command(
        commands,
        "remeasure",
        "measure every finished cell again from its saved samples (no training), then report",
        "  lowdiff remeasure results/dual_expert     # after a change to the metrics\n",
        cmd_remeasure,
    )
    remeasure.add_argument("run_dir", help="a results directory written by `lowdiff run`")
    remeasure.add_argument("--no-report", action="store_true", help="do not rebuild the report")
    remeasure.add_argument(
        "--ground-truth",
        action="store_true",
        help="also measure the ground truth (excess loss, ODE likelihood) from saved EMA weights",
    )
    remeasure.add_argument("--quiet", action="store_true", help="no progress output")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="lowdiff",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lowdiff {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also log what lowdiff is doing"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_commands(commands)
    _add_result_commands(commands)
    _command(
        commands, "datasets", "list the registered datasets", "  lowdiff datasets\n", cmd_datasets
    )
    keys = _command(
        commands,
        "keys",
        "list every setting with its default and meaning",
        "  lowdiff keys\n  lowdiff keys train\n",
        cmd_keys,
    )
    keys.add_argument("section", nargs="?", help="only this table: experiment, model, train, ...")
    try:
        import argcomplete  # optional: shell completion where it is installed
    except ImportError:
        pass
    else:
        argcomplete.autocomplete(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    try:
        return args.handler(args)
    except (ConfigError, ResultsError, ExecutorError) as error:  # StorageError, LockedError too
        print(f"lowdiff: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # disk full, read-only, not a directory...: one line, no traceback
        print(f"lowdiff: error: {results.describe_os_error(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # A progress bar (or the terminal's ^C) may have left the cursor mid-line: start a new one.
        print(
            "\nlowdiff: interrupted; finished cells are kept, run the same command to resume.",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
