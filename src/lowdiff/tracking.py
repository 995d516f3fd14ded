"""Results in the trackers researchers already use: MLflow runs and TensorBoard event files.

`to_mlflow(dirs, uri)` logs each results folder as one MLflow experiment (named after the
lowdiff experiment): a parent run holding the report, the figures and experiment.json as
artifacts and the provenance as tags, and one nested run per finished cell with the resolved
config as params (dotted keys, `train.learning_rate`), every metric, the training loss as the
step series `train_loss`, and its run, dataset and seed as tags. `uri` is any MLflow tracking
URI; the default is a local sqlite store (`lowdiff export DIR --mlflow`, sqlite:///mlflow.db).

`to_tensorboard(dirs, logdir)` writes event files under `logdir/<experiment>/<run>/<dataset>/
seed_<s>`: the loss curve (`train/loss`) and each metric (`metrics/<name>`) as scalars, and,
per experiment, the report's figures as images (`logdir/<experiment>/figures`).

Both read the folders through `summary.load` (the cells that count), and need their optional
extras: `pip install 'lowdiff[mlflow]'`, `'lowdiff[tensorboard]'`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lowdiff import results, summary
from lowdiff.config import to_dict
from lowdiff.summary import CellResult, ExperimentResults

BATCH = 1000  # MLflow's limit of metric values per log_batch call


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as dotted keys -> text (MLflow params are strings)."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def _finite_metrics(cell: CellResult) -> dict[str, float]:
    return {
        name: float(value)
        for name, value in cell.metrics.items()
        if isinstance(value, int | float) and math.isfinite(value)
    }


def _load_all(dirs: Sequence[str | Path]) -> Iterator[ExperimentResults]:
    for directory in dirs:
        yield summary.load(Path(directory))


def _provenance(loaded: ExperimentResults) -> dict[str, str]:
    raw = results.read_json(loaded.root / "experiment.json")
    record = raw.get("provenance") if isinstance(raw, dict) else None
    return flatten(record, "lowdiff.provenance.") if isinstance(record, dict) else {}


def _figures(loaded: ExperimentResults) -> list[Path]:
    return sorted((loaded.root / "figures").glob("*.png"))


def _mlflow_cell(
    client: Any, experiment_id: str, parent: str, loaded: ExperimentResults, cell: CellResult
) -> None:
    from mlflow.entities import Metric, Param, RunTag

    run = client.create_run(
        experiment_id,
        run_name=f"{cell.run}/{cell.dataset}/seed_{cell.seed}",
        tags={"mlflow.parentRunId": parent, "run": cell.run, "dataset": cell.dataset,
              "seed": str(cell.seed)},
    )  # fmt: skip
    run_id = run.info.run_id
    params = flatten(to_dict(loaded.config.run(cell.run))) | {
        "dataset": cell.dataset, "seed": str(cell.seed),
        "experiment.num_points": str(loaded.config.experiment.num_points),
    }  # fmt: skip
    client.log_batch(
        run_id,
        params=[Param(k, v) for k, v in params.items()],
        tags=[RunTag("cell", str(cell.directory))],
    )
    metrics = [Metric(k, v, 0, 0) for k, v in _finite_metrics(cell).items()]
    losses = cell.losses if cell.losses is not None else np.array([])
    metrics += [
        Metric("train_loss", float(v), 0, i) for i, v in enumerate(losses) if math.isfinite(v)
    ]
    for start in range(0, len(metrics), BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + BATCH])
    client.set_terminated(run_id)


def to_mlflow(dirs: Sequence[str | Path], uri: str) -> int:
    """Log every finished cell of `dirs` into the MLflow store at `uri`; the number of cells."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    logged = 0
    for loaded in _load_all(dirs):
        name = loaded.config.experiment.name
        found = client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found else client.create_experiment(name)
        parent = client.create_run(experiment_id, run_name=name, tags=_provenance(loaded))
        parent_id = parent.info.run_id
        for path in [loaded.root / "report.md", loaded.root / "experiment.json"]:
            if path.is_file():
                client.log_artifact(parent_id, str(path))
        for path in _figures(loaded):
            client.log_artifact(parent_id, str(path), artifact_path="figures")
        for cell in loaded.cells.values():
            _mlflow_cell(client, experiment_id, parent_id, loaded, cell)
            logged += 1
        client.set_terminated(parent_id)
    return logged


def to_tensorboard(dirs: Sequence[str | Path], logdir: str | Path) -> int:
    """Write event files of every finished cell of `dirs` under `logdir`; the number of cells."""
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    logged = 0
    for loaded in _load_all(dirs):
        base = Path(logdir) / loaded.config.experiment.name
        for cell in loaded.cells.values():
            with SummaryWriter(str(base / cell.run / cell.dataset / f"seed_{cell.seed}")) as writer:
                for step, value in enumerate(cell.losses if cell.losses is not None else []):
                    writer.add_scalar("train/loss", float(value), step)
                for name, value in _finite_metrics(cell).items():
                    writer.add_scalar(f"metrics/{name}", value, 0)
            logged += 1
        with SummaryWriter(str(base / "figures")) as writer:
            for path in _figures(loaded):
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB"))  # (H, W, 3)
                writer.add_image(path.stem, pixels, 0, dataformats="HWC")
    return logged
