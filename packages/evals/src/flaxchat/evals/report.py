"""Evaluation reports: eval.json and eval.md beside the model's run report, and the printed table.

A model trained by apps/pretrain has a run directory <base>/runs/<run>; its evaluations go
there. Any other model's go to <base>/evals/<name>. Results accumulate per task across
evaluations of the same weights (a new result replaces the task's old one); results of other
weights (a retrained model under the same name) are dropped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flaxchat.evals.download import write_atomic
from flaxchat.evals.suite import Outcome, aggregates
from flaxchat.tokenizer.paths import base_dir

JSON_NAME, MARKDOWN_NAME = "eval.json", "eval.md"


def report_dir(model_name: str, metadata: Mapping[str, Any]) -> Path:
    run = metadata.get("run")
    if isinstance(run, str) and run and (base_dir() / "runs" / run).is_dir():
        return base_dir() / "runs" / run
    return base_dir() / "evals" / model_name


def _previous(path: Path, weights_sha256: str | None) -> dict[str, Outcome]:
    try:
        data = json.loads(path.read_text())
        if data.get("weights_sha256") != weights_sha256:
            return {}
        return {name: Outcome.from_dict(o) for name, o in data["tasks"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # no usable earlier report: this one starts afresh


def merge_outcomes(directory: Path, weights_sha256: str | None, outcomes: Sequence[Outcome]) -> list[Outcome]:
    merged = _previous(directory / JSON_NAME, weights_sha256)
    merged.update({o.task: o for o in outcomes})
    return list(merged.values())


def _number(value: float | None, digits: int = 4) -> str:
    if value is None:
        return ""
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def table_rows(outcomes: Sequence[Outcome]) -> list[list[str]]:
    header = ["task", "status", "metric", "value", "centered", "n", "seconds"]
    rows = [header]
    for o in outcomes:
        rows.append([o.task, o.status, o.metric or "", _number(o.value), _number(o.centered),
                     "" if o.total is None else str(o.total), f"{o.seconds:.1f}"])
    return rows


def format_table(outcomes: Sequence[Outcome], summary: Mapping[str, float | None]) -> str:
    rows = table_rows(outcomes)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"{name}: {_number(value)}" for name, value in summary.items() if value is not None]
    lines += [f"{o.task}: {o.status}: {o.detail}" for o in outcomes if o.status != "ok"]
    lines += [f"{o.task}: note: {o.detail}" for o in outcomes if o.status == "ok" and o.detail]
    return "\n".join(lines)


def _markdown(title: str, outcomes: Sequence[Outcome], summary: Mapping[str, float | None], model: Mapping[str, Any]) -> str:
    rows = table_rows(outcomes)
    lines = [f"# {title}", "", f"Checkpoint: `{model.get('checkpoint')}`", ""]
    lines += ["| " + " | ".join(r) + " |" for r in rows[:1]] + ["|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]] + [""]
    lines += [f"- **{name}**: {_number(value)}" for name, value in summary.items() if value is not None]
    for o in outcomes:
        if o.status != "ok" or o.detail or o.source:
            note = o.detail or ""
            source = f" (data: {o.source})" if o.source else ""
            lines.append(f"- {o.task}: {o.status}{source}{': ' + note if note else ''}")
    core = next((o for o in outcomes if o.task == "core" and o.breakdown), None)
    if core:
        lines += ["", "## CORE tasks", "", "| task | accuracy | centered | items |", "|---|---|---|---|"]
        lines += [f"| {p['label']} | {_number(p['accuracy'])} | {_number(p['centered'])} | {p['items']} |"
                  for p in core.breakdown]
    return "\n".join(lines) + "\n"


def write_reports(directory: Path, model: Mapping[str, Any], outcomes: Sequence[Outcome]) -> tuple[Path, Path]:
    """Write eval.json and eval.md (atomically) for `outcomes` of the model described by `model`
    (keys: name, checkpoint, weights_sha256, metadata)."""
    summary = aggregates(outcomes)
    data = {
        **model,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "aggregates": summary,
        "tasks": {o.task: o.to_dict() for o in outcomes},
    }
    json_path, md_path = directory / JSON_NAME, directory / MARKDOWN_NAME
    write_atomic(json_path, json.dumps(data, indent=2, default=str) + "\n")
    write_atomic(md_path, _markdown(f"Evaluation of {model.get('name')}", outcomes, summary, model))
    return json_path, md_path
