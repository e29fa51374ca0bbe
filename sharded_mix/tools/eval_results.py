"""One CSV from the lm-eval results that `litgpt evaluate` wrote for each checkpoint of a run.

``sharded-mix eval-results EVAL_DIR [--csv FILE]`` reads ``EVAL_DIR/<checkpoint>/results.json`` for
every ``step-N`` and ``final`` directory (as training_scripts/eval_checkpoints.sh lays them out) and writes one row per
checkpoint, task and metric, checkpoints by step and ``final`` last.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from sharded_mix.config import checkpoint_step

RESULTS_FILE = "results.json"
CSV_COLUMNS = ("checkpoint", "step", "task", "metric", "value", "stderr", "is_group")


@dataclass(frozen=True)
class EvalRow:
    checkpoint: str
    step: int | None
    task: str
    metric: str
    """lm-eval's metric name; ``name/filter`` when its filter is not ``none`` (e.g. ``exact_match/strict-match``)."""
    value: float
    stderr: float | None
    is_group: bool
    """A group's aggregate (e.g. ``mmlu``, ``mmlu_humanities``) rather than one task."""


def checkpoint_order(name: str) -> tuple:
    """Sort key: ``step-*`` by step, then other names, then ``final``."""
    step = checkpoint_step(name)
    return (0, step, "") if step is not None else (2 if name == "final" else 1, 0, name)


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _task_rows(checkpoint: str, task: str, metrics: dict, is_group: bool) -> list[EvalRow]:
    rows = []
    for key, value in metrics.items():
        name, _, filter_name = key.partition(",")
        if not filter_name or name.endswith("_stderr") or (number := _number(value)) is None:
            continue  # "alias", stderr entries and non-numeric values
        metric = name if filter_name == "none" else f"{name}/{filter_name}"
        stderr = _number(metrics.get(f"{name}_stderr,{filter_name}"))  # lm-eval writes "N/A" when it has none
        rows.append(EvalRow(checkpoint, checkpoint_step(checkpoint), task, metric, number, stderr, is_group))
    return rows


def parse_results(results: dict, checkpoint: str) -> list[EvalRow]:
    """The rows of one lm-eval results dict, in its task order.

    The dict is ``{"results": {task: {"acc,none": ..., ...}}, "groups": ...}``.

    Subtasks (mmlu's) are rows of their own; groups, also when they appear only under ``"groups"``, have ``is_group``.
    """
    tasks = results.get("results")
    if not isinstance(tasks, dict):
        raise ValueError(f"no 'results' mapping (keys: {sorted(results)}); it is not an lm-eval results file")
    groups = results.get("groups") if isinstance(results.get("groups"), dict) else {}
    subtasks = results.get("group_subtasks") if isinstance(results.get("group_subtasks"), dict) else {}
    rows = []
    for task, metrics in {**tasks, **{name: m for name, m in groups.items() if name not in tasks}}.items():
        if isinstance(metrics, dict):
            rows += _task_rows(checkpoint, task, metrics, task in groups or bool(subtasks.get(task)))
    return rows


def read_results(path: str | Path) -> dict:
    """A results.json as a dict; a ValueError naming the file when it is missing, not JSON or not lm-eval's."""
    path = Path(path)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(
            f"{path}: missing; the evaluation of this checkpoint did not finish (run eval_checkpoints.sh again)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable ({err}); delete it and run eval_checkpoints.sh again") from None
    if not isinstance(results, dict) or not isinstance(results.get("results"), dict):
        raise ValueError(
            f"{path}: not an lm-eval results file (no 'results' mapping); delete it and run eval_checkpoints.sh again"
        )
    return results


def checkpoint_dirs(eval_dir: str | Path) -> list[Path]:
    """The ``step-N`` and ``final`` directories of an eval dir, in checkpoint order."""
    eval_dir = Path(eval_dir)
    if not eval_dir.is_dir():
        raise ValueError(
            f"eval dir {str(eval_dir)!r} is not a directory; "
            "give the --eval-dir of eval_checkpoints.sh (default RUN_DIR/eval)"
        )
    found = [
        entry
        for entry in eval_dir.iterdir()
        if entry.is_dir() and (entry.name == "final" or checkpoint_step(entry.name) is not None)
    ]
    if not found:
        raise ValueError(
            f"eval dir {str(eval_dir)!r} has no step-* or final directories; run eval_checkpoints.sh first"
        )
    return sorted(found, key=lambda entry: checkpoint_order(entry.name))


def collect(eval_dir: str | Path) -> tuple[list[EvalRow], list[str]]:
    """Every checkpoint's rows, and one problem line for each checkpoint whose results.json is missing or broken."""
    rows, problems = [], []
    for directory in checkpoint_dirs(eval_dir):
        path = directory / RESULTS_FILE
        try:
            checkpoint_rows = parse_results(read_results(path), directory.name)
        except ValueError as err:
            problems.append(str(err))
            continue
        if not checkpoint_rows:
            problems.append(f"{path}: holds no metrics; delete it and run eval_checkpoints.sh again")
        rows += checkpoint_rows
    return rows, problems


def write_csv(rows: list[EvalRow], path: str | Path) -> None:
    """The rows as CSV (CSV_COLUMNS), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            stderr = "" if row.stderr is None or math.isnan(row.stderr) else row.stderr
            writer.writerow(
                [
                    row.checkpoint,
                    "" if row.step is None else row.step,
                    row.task,
                    row.metric,
                    row.value,
                    stderr,
                    "true" if row.is_group else "false",
                ]
            )
    os.replace(partial, path)
