"""Every setting an experiment file or `--set` can change: its key, default and meaning.

Derived from the config dataclasses (config.TABLES: experiment, the run sections, executor),
so a new field is listed as soon as it exists. Its meaning is the comment on its line in the
dataclass, or an entry of KEY_MEANINGS (a model option's meaning is declared in
`architectures.OPTION_MEANINGS`); choices come from its Literal type (derived from
`lowdiff.catalogue`), and a model or sampler option says which architectures or samplers read
it (their catalogue declarations). `lowdiff keys` prints this table.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from typing import Any

from lowdiff import config as config_module
from lowdiff.architectures import OPTION_MEANINGS
from lowdiff.catalogue import ARCHITECTURES, SAMPLERS

__all__ = ["KEY_MEANINGS", "key_rows"]

# Meanings of the settings whose definition carries no comment (the others come from it).
KEY_MEANINGS = {
    "experiment.name": "the experiment's name (default results directory runs/<name>)",
    "experiment.question": "the question the experiment answers, shown in the report",
    "experiment.datasets": "datasets every run is trained on (`lowdiff datasets` lists them)",
    "experiment.seeds": "seeds of every run x dataset cell: the replicates of the statistics",
    "experiment.num_points": "training points drawn from each dataset",
    "experiment.max_models_per_batch": "models trained together as one batched computation",
    "experiment.device": "auto (cuda when available), cpu or cuda",
    "model.arch": "the denoiser architecture",
    "model.options": "keyword arguments of your own denoiser class (arch = 'file.py:Class')",
    "model.plugin_root": "folder a relative plugin path is resolved in (set from the file)",
    "model.plugin_hash": "SHA-256 of the plugin class's source file (set when loaded)",
    "experiment.data_files": "path and SHA-256 of each file: dataset (set when loaded)",
    "train.num_steps": "optimiser steps per model",
    "train.batch_size": "training points per step and model",
    "train.learning_rate": "AdamW learning rate at the start (cosine-annealed to 0)",
    "train.grad_clip": "maximum gradient norm of each model",
    "train.ema_beta": "decay of the exponential moving average of the weights",
    "train.ema_update_every": "steps between two EMA updates",
    "train.ema_warmup_steps": "steps during which the EMA copies the weights",
    "train.checkpoint_every": "steps between two checkpoints of the training state (0: none)",
    "train.precision": "fp32, or bf16 autocast with fp32 weights (native bf16 hardware only)",
    "train.compile": "the network through torch.compile: fused kernels, not the eager bits",
    "schedule.num_timesteps": "diffusion timesteps T",
    "schedule.beta_schedule": "how beta grows from beta_start to beta_end",
    "schedule.beta_start": "noise variance beta at t = 0",
    "schedule.beta_end": "noise variance beta at t = T - 1",
    "eval.num_samples": "points sampled from each trained model",
    "eval.knn_k": "k of the k-nearest-neighbour metrics (KL, precision/recall, density/coverage)",
    "eval.sampler": "how samples are drawn",
    "eval.sampling_steps": "sampler steps (0: every timestep)",
    "eval.eta": "DDIM's eta: 0 deterministic, 1 as noisy as ancestral sampling",
    "eval.process_snapshots": "snapshots of the reverse process kept per model",
    "eval.process_points": "points kept in each reverse-process snapshot",
    "eval.precision": "fp32, or bf16 autocast of the network while sampling",
    "eval.compile": "the network through torch.compile while sampling",
}


def _field_comments(cls: type) -> dict[str, str]:
    """Trailing comments of a dataclass's field lines: `name: type = default  # comment`."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    pattern = re.compile(r"^\s+(\w+):[^#\n]*#\s*(.+)$", re.MULTILINE)
    return {name: comment.strip() for name, comment in pattern.findall(source)}


def _default_text(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "(required)"
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


def key_rows() -> list[tuple[str, str, str]]:
    """(key, default, meaning) of every setting, in the order of the config dataclasses."""
    users = {
        f"model.{option}": [name for name, info in ARCHITECTURES.items() if option in info.options]
        for info in ARCHITECTURES.values()
        for option in info.options
    }
    users |= {  # the sampler options, from their declarations
        f"eval.{option}": [name for name, info in SAMPLERS.items() if option in info.options]
        for info in SAMPLERS.values()
        for option in info.options
    }
    meanings = KEY_MEANINGS | {f"model.{o}": text for o, text in OPTION_MEANINGS.items()}
    rows = []
    for section, cls in config_module.TABLES.items():
        comments, hints = _field_comments(cls), typing.get_type_hints(cls)
        for field in config_module.table_fields(section):
            key = f"{section}.{field.name}"
            meaning = meanings.get(key) or comments.get(field.name, "")
            choices = typing.get_args(hints[field.name])
            if typing.get_origin(hints[field.name]) is typing.Literal:
                meaning += f" (one of: {', '.join(map(str, choices))})"
            if key in users:
                meaning += f" [{', '.join(users[key])} only]"
            rows.append((key, _default_text(field), meaning))
    return rows
