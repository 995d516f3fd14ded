"""The catalogue: every registry matches it, everything derived follows it, and removing a
declaration breaks something (so no list can silently drift from it)."""

import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from lowdiff import catalogue, keys, metrics, schedule
from lowdiff.architectures import ArchName
from lowdiff.catalogue import check_registry
from lowdiff.cli import build_parser
from lowdiff.models import ARCHITECTURES as MODEL_CLASSES
from lowdiff.report import tables
from lowdiff.samplers import SAMPLERS
from lowdiff.settings import EvalConfig, ModelConfig, ScheduleConfig

SRC = str(Path(__file__).resolve().parent.parent / "src")


def test_every_torch_registry_implements_exactly_the_catalogue():
    assert list(SAMPLERS) == list(catalogue.SAMPLERS)
    assert list(schedule.BETA_SCHEDULES) == list(catalogue.SCHEDULES)
    assert list(MODEL_CLASSES) == list(catalogue.ARCHITECTURES)
    assert catalogue.METRICS is metrics.METRICS


def test_literal_types_keys_help_and_tables_are_derived():
    hints = typing.get_type_hints
    assert typing.get_args(hints(EvalConfig)["sampler"]) == tuple(catalogue.SAMPLERS)
    assert typing.get_args(hints(ScheduleConfig)["beta_schedule"]) == tuple(catalogue.SCHEDULES)
    assert typing.get_args(ArchName) == tuple(catalogue.ARCHITECTURES)
    with pytest.raises(ValueError, match="unknown model arch 'mpl'"):
        ModelConfig(arch="mpl")
    rows = {key: meaning for key, _, meaning in keys.key_rows()}
    assert all(name in rows["eval.sampler"] for name in catalogue.SAMPLERS)
    assert rows["eval.eta"].endswith("[ddim only]")
    assert "one more hidden layer" in rows["model.larger_experts"]
    sample_help = build_parser()._subparsers._group_actions[0].choices["sample"].format_help()
    assert all(name in sample_help for name in catalogue.SAMPLERS)
    assert tuple(m for m, info in metrics.METRICS.items() if info.table) == tables.TABLE_METRICS
    assert "sample_diversity" not in tables.TABLE_METRICS


def test_a_new_metric_reaches_the_report_table(monkeypatch):
    info = metrics.MetricInfo(label="new", description="a new metric", goal="lower")
    monkeypatch.setitem(metrics.METRICS, "new_metric", info)
    assert catalogue.table_metrics()[-1] == "new_metric"


def test_the_check_names_what_is_declared_but_missing_and_the_reverse():
    with pytest.raises(ImportError, match=r"declared but not implemented \['b'\]"):
        check_registry("sampler", ["a", "b"], {"a": 1})
    with pytest.raises(ImportError, match=r"implemented but not declared \['c'\]"):
        check_registry("sampler", ["a"], {"a": 1, "c": 2})


REMOVALS = [
    ("SAMPLERS", "heun", "lowdiff.samplers"),
    ("SAMPLERS", "ancestral", "lowdiff.samplers"),
    ("SCHEDULES", "quadratic", "lowdiff.schedule"),
]


@pytest.mark.parametrize(("table", "name", "module"), REMOVALS)
def test_removing_a_declaration_fails_at_import(table, name, module):
    # a fresh interpreter: the catalogue without the entry, then the torch registry's import
    script = f"import lowdiff.catalogue as c; del c.{table}[{name!r}]; import {module}"
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert done.returncode != 0
    assert f"implemented but not declared ['{name}']" in done.stderr
