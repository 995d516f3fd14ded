"""Command line: parse, call, print.

lowdiff run experiments/quickstart.toml [--set train.num_steps=2000] [--out DIR] [--force]
lowdiff train --model mlp --datasets circle,dino,line,moons --seeds 0,1,2 --out runs/mlp
lowdiff report RUN_DIR
lowdiff datasets
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lowdiff import config as config_module
from lowdiff.config import ConfigError
from lowdiff.engine import DivergenceError
from lowdiff.results import ResultsError, describe_os_error
from lowdiff.runtime import configure_cpu

log = logging.getLogger("lowdiff")


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _train_config(args: argparse.Namespace) -> config_module.ExperimentConfig:
    """`lowdiff train` is a one-run experiment built from flags (every value via --set)."""
    try:
        seeds = [int(s) for s in _csv(args.seeds)]
    except ValueError as error:
        raise ConfigError(
            f"--seeds: expected comma-separated integers, got {args.seeds!r}"
        ) from error
    raw = {
        "experiment": {
            "name": args.name or args.model,
            "datasets": _csv(args.datasets),
            "seeds": seeds,
            "device": args.device,
        },
        "runs": {
            args.model: {"description": f"the {args.model} denoiser", "model": {"arch": args.model}}
        },
    }
    return config_module.resolve(config_module.apply_overrides(raw, args.set), "lowdiff train")


def _run(experiment: config_module.ExperimentConfig, out: Path, args: argparse.Namespace) -> int:
    from lowdiff.experiments import execute  # heavy imports only once the input is valid
    from lowdiff.report import write_report

    configure_cpu(args.threads)
    execute(experiment, out, force=args.force, progress=not args.quiet)
    path = write_report(out)
    print(f"results: {out}\nreport:  {path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    experiment = config_module.load_experiment(args.experiment, args.set)
    out = Path(args.out) if args.out else Path("runs") / experiment.experiment.name
    return _run(experiment, out, args)


def cmd_train(args: argparse.Namespace) -> int:
    return _run(_train_config(args), Path(args.out), args)


def cmd_report(args: argparse.Namespace) -> int:
    from lowdiff.report import write_report

    print(f"report: {write_report(Path(args.run_dir))}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from lowdiff.data import DATASETS

    for name, spec in DATASETS.items():
        print(f"{name:12s} K={spec.components.num_components:<4d} {spec.description}")
    return 0


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. train.num_steps=2000 (repeatable)",
    )
    parser.add_argument("--force", action="store_true", help="re-run every cell, finished or not")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads for torch (default: torch's)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowdiff", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run an experiment file and write its report")
    run.add_argument("experiment", help="path to an experiment TOML file")
    run.add_argument("--out", help="results directory (default: runs/<experiment name>)")
    _add_run_options(run)
    run.set_defaults(handler=cmd_run)

    train = commands.add_parser(
        "train", help="train and evaluate one architecture on datasets x seeds"
    )
    train.add_argument("--model", default="mlp", help="architecture: mlp, dual_scale, dual_expert")
    train.add_argument("--datasets", default="circle,dino,line,moons")
    train.add_argument("--seeds", default="0")
    train.add_argument("--out", required=True, help="results directory")
    train.add_argument("--name", default="", help="experiment name (default: the model)")
    train.add_argument("--device", default="auto", help="auto, cpu or cuda")
    _add_run_options(train)
    train.set_defaults(handler=cmd_train)

    report = commands.add_parser(
        "report", help="(re)build report.md and report.html from a results directory"
    )
    report.add_argument("run_dir")
    report.set_defaults(handler=cmd_report)

    datasets = commands.add_parser("datasets", help="list the registered datasets")
    datasets.set_defaults(handler=cmd_datasets)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    try:
        return args.handler(args)
    except (ConfigError, ResultsError) as error:  # includes StorageError and LockedError
        print(f"lowdiff: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # disk full, read-only, not a directory...: one line, no traceback
        print(f"lowdiff: error: {describe_os_error(error)}", file=sys.stderr)
        return 2
    except (DivergenceError, FloatingPointError) as error:
        print(
            f"lowdiff: {error}\nfinished cells are kept; fix the config and run again to resume.",
            file=sys.stderr,
        )
        return 3
    except KeyboardInterrupt:
        print(
            "lowdiff: interrupted; finished cells are kept, run the same command to resume.",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
