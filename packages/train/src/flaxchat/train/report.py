"""Run records: a metrics log (JSON lines, append-only) and a markdown report with PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class MetricsLog:
    """One JSON object per line; on resume, records past the resumed step are dropped first."""

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        else:
            keep = [r for r in self.read() if r.get("step", 0) < resume_step or r.get("kind") == "config"]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in keep))

    def write(self, **record: Any) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def plot_series(path: Path, title: str, series: list[tuple[str, list[float], list[float]]], ylabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for label, xs, ys in series:
        ax.plot(xs, ys, label=label, marker="o" if len(xs) < 30 else None, markersize=3)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def write_report(run_dir: str | Path, title: str, records: list[dict[str, Any]], summary: dict[str, Any]) -> Path:
    """report.md + train_loss.png, val_bpb.png, lr.png from the metrics records."""
    run_dir = Path(run_dir)
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    plots = []
    if train:
        steps = [r["step"] for r in train]
        plot_series(run_dir / "train_loss.png", "train loss", [("loss", steps, [r["loss"] for r in train]),
                                                        ("smoothed", steps, [r["smooth_loss"] for r in train])], "nats/token")
        plot_series(run_dir / "lr.png", "learning-rate multiplier", [("lrm", steps, [r["lrm"] for r in train])], "multiplier")
        plots += ["train_loss.png", "lr.png"]
    if val:
        plot_series(run_dir / "val_bpb.png", "validation bits per byte", [("val bpb", [r["step"] for r in val], [r["bpb"] for r in val])], "bits/byte")
        plots.append("val_bpb.png")
    lines = [f"# {title}", ""]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in summary.items()] + [""]
    evals = [r for r in records if r.get("kind") == "model_eval"]
    if evals:
        columns = list(dict.fromkeys(k for r in evals for k in r if k not in ("kind", "step")))
        lines += ["## Evaluations during training", "", "| step | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        lines += [f"| {r['step']} | " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in evals] + [""]
    samples = [r for r in records if r.get("kind") == "sample"]
    if samples:
        lines += [f"## Samples at step {samples[-1]['step']}", ""]
        lines += [f"- `{s['prompt']}` → {s['completion']!r}" for s in samples if s["step"] == samples[-1]["step"]] + [""]
    lines += [f"![{p}]({p})" for p in plots]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
