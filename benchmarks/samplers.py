"""Sample quality against network evaluations (NFE) for every sampler: the figure to choose by.

For the baseline denoiser on each dataset, draws samples with every sampler of
`lowdiff.catalogue.SAMPLERS` at (at most) 10, 20, 50 and 100 network evaluations: the most steps
whose evaluations fit, from each sampler's declared evaluations per step (Heun: 2 per step but
the last, so 10 evaluations are 5 steps and 9 evaluations). It prints a Markdown
table of KL (bits), W2 and coverage (those of `lowdiff.metrics.measure`'s keys that exist) and
the sampling wall time per model, then writes `samplers.png` (each metric against NFE, one line
per sampler, one column per dataset) and `samplers.json` under --out.

Models come from a finished run directory (its `config.json` and each dataset's
`<dataset>/seed_<s>/model_ema.npz`), or, with --train-steps N, from a short baseline trained here:

    python benchmarks/samplers.py --results results/dual_scale/baseline [--seed 0]
    python benchmarks/samplers.py --train-steps 2000 [--nfe 10 20 50 100] [--threads 2]
"""

from __future__ import annotations

import argparse
import io
from dataclasses import asdict
from pathlib import Path

import torch
from matplotlib.figure import Figure

from lowdiff import catalogue, results
from lowdiff.engine import Member, TrainConfig, Trainer, resolve_device, stream_generators
from lowdiff.metrics import METRICS, Reference, load_reference, measure
from lowdiff.models import Denoiser, ModelConfig, build_model
from lowdiff.runtime import configure_cpu
from lowdiff.samplers import SAMPLERS, sample
from lowdiff.schedule import NoiseSchedule, ScheduleConfig

DATASETS = ("circle", "dino", "line", "moons")
SHOWN = ("kl_divergence", "w2", "coverage")  # the metrics shown, where measure() has them


def load_models(
    run_dir: Path, datasets: list[str], seed: int, device: torch.device
) -> tuple[Denoiser, ScheduleConfig, int]:
    """The EMA models of `datasets` (seed `seed`) of a finished run as one M-model module."""
    config = results.read_json(run_dir / "config.json")
    model_config, schedule = ModelConfig(**config["model"]), ScheduleConfig(**config["schedule"])
    model = build_model(model_config, len(datasets), schedule.num_timesteps)
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for m, dataset in enumerate(datasets):
            arrays = results.read_npz(
                results.cell_dir(run_dir.parent, run_dir.name, dataset, seed) / "model_ema.npz"
            )
            if set(arrays) != set(parameters):
                raise ValueError(
                    f"{dataset}/seed_{seed}: model_ema.npz does not match {model_config.arch}"
                )
            for name, value in arrays.items():
                parameters[name][m] = torch.from_numpy(value)
    return model.to(device), schedule, int(config["experiment"]["num_points"])


def train_models(
    datasets: list[str], seed: int, steps: int, args: argparse.Namespace, device: torch.device
) -> Denoiser:
    """A baseline trained for `steps` steps on each dataset (the protocol's settings otherwise)."""
    model_config = ModelConfig(hidden_dim=args.hidden_dim, embedding_dim=args.embedding_dim)
    points = {
        name: torch.from_numpy(load_reference(name, args.num_points).points) for name in datasets
    }
    members = [Member(name, seed) for name in datasets]
    schedule = NoiseSchedule(ScheduleConfig(), device)
    trainer = Trainer(model_config, members, points, schedule, TrainConfig(num_steps=steps), device)
    return trainer.run(progress="training the baseline").ema_model


def measure_all(
    model: Denoiser,
    schedule: NoiseSchedule,
    references: dict[str, Reference],
    args: argparse.Namespace,
    device: torch.device,
) -> list[dict]:
    """One row per dataset x sampler x NFE: the shown metrics and the wall time per model."""
    datasets, rows = list(references), []
    for name in SAMPLERS:
        for budget in args.nfe:
            steps = steps_within(name, budget)
            if steps < 1:
                continue
            generators = [
                stream_generators(Member(d, args.seed), device)["sample"] for d in datasets
            ]
            drawn = sample(
                model,
                schedule,
                generators,
                device,
                num_samples=args.num_samples,
                sampler=name,
                sampling_steps=steps,
            )
            for m, dataset in enumerate(datasets):
                measured = measure(drawn.points[m], references[dataset], args.knn_k)
                shown = {key: measured[key] for key in SHOWN if key in measured}
                rows.append(
                    {
                        "dataset": dataset,
                        "sampler": name,
                        "steps": steps,
                        "nfe": catalogue.SAMPLERS[name].evaluations(steps),
                        **shown,
                        "seconds": drawn.inference_time / len(datasets),
                    }
                )
    return rows


def steps_within(sampler: str, evaluations: int) -> int:
    """The most steps of `sampler` whose network evaluations do not exceed `evaluations`."""
    info = catalogue.SAMPLERS[sampler]
    return (evaluations - info.last_step_evaluations) // info.evaluations_per_step + 1


def label(key: str) -> str:
    if key == "seconds":
        return "time per model (s)"
    info = METRICS.get(key)
    if info is None:
        return key
    return f"{info.label} ({info.unit})" if info.unit else info.label


def markdown_table(rows: list[dict]) -> str:
    keys = [key for key in SHOWN if key in rows[0]]
    labels = [label(key) for key in [*keys, "seconds"]]
    lines = ["| dataset | sampler | steps | NFE | " + " | ".join(labels) + " |"]
    lines.append("|---|---|---:|---:|" + "---:|" * len(keys) + "---:|")
    for row in rows:
        cells = [row["dataset"], row["sampler"], str(row["steps"]), str(row["nfe"])]
        cells += [f"{row[key]:.3f}" for key in keys] + [f"{row['seconds']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(rows: list[dict]) -> bytes:
    """Each shown metric (rows of panels) against NFE for each dataset (columns), per sampler."""
    keys = [key for key in SHOWN if key in rows[0]] + ["seconds"]
    datasets = list(dict.fromkeys(row["dataset"] for row in rows))
    fig = Figure(figsize=(3.2 * len(datasets), 2.6 * len(keys)))
    axes = fig.subplots(len(keys), len(datasets), squeeze=False)
    for i, key in enumerate(keys):
        for j, dataset in enumerate(datasets):
            ax = axes[i, j]
            for name in SAMPLERS:
                mine = [row for row in rows if row["dataset"] == dataset and row["sampler"] == name]
                ax.plot(
                    [row["nfe"] for row in mine], [row[key] for row in mine], marker="o", label=name
                )
            ax.set_xscale("log")
            ax.set_title(dataset if i == 0 else "")
            ax.set_xlabel("network evaluations" if i == len(keys) - 1 else "")
            ax.set_ylabel(label(key) if j == 0 else "")
    axes[0, 0].legend(fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--results", type=Path, help="a finished run directory, e.g. results/dual_scale/baseline"
    )
    source.add_argument(
        "--train-steps", type=int, help="train a baseline for this many steps instead"
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--nfe", type=int, nargs="+", default=[10, 20, 50, 100], help="network evaluations"
    )
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument(
        "--num-points", type=int, default=100_000, help="reference points (with --train-steps)"
    )
    parser.add_argument("--knn-k", type=int, default=5)
    parser.add_argument("--hidden-dim", type=int, default=256, help="with --train-steps")
    parser.add_argument("--embedding-dim", type=int, default=128, help="with --train-steps")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    configure_cpu(args.threads)
    device = resolve_device(args.device)
    if args.results is not None:
        model, schedule_config, args.num_points = load_models(
            args.results, args.datasets, args.seed, device
        )
    else:
        model, schedule_config = (
            train_models(args.datasets, args.seed, args.train_steps, args, device),
            ScheduleConfig(),
        )
    too_many = [nfe for nfe in args.nfe if not 1 <= nfe <= schedule_config.num_timesteps]
    if too_many:
        raise SystemExit(
            f"--nfe must be between 1 and T = {schedule_config.num_timesteps}, got {too_many}"
        )
    references = {name: load_reference(name, args.num_points) for name in args.datasets}
    rows = measure_all(
        model.eval(), NoiseSchedule(schedule_config, device), references, args, device
    )
    rows.sort(key=lambda row: (row["dataset"], list(SAMPLERS).index(row["sampler"]), row["nfe"]))
    print(markdown_table(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    results.atomic_write_bytes(args.out / "samplers.png", figure(rows))
    settings = {key: str(value) for key, value in vars(args).items()} | {
        "schedule": asdict(schedule_config)
    }
    results.write_json(args.out / "samplers.json", {"settings": settings, "rows": rows})
    print(f"\nwrote {args.out / 'samplers.png'} and {args.out / 'samplers.json'}")


if __name__ == "__main__":
    main()
