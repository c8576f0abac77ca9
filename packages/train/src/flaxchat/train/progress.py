"""Progress display for training loops: a tqdm bar with loss, tok/s and MFU, optional wandb."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm


class TrainProgress:
    """Callable fed with the loop's records ({"kind": "train"|"val", "step": ..., ...})."""

    def __init__(self, run: str, total: int | None = None, wandb_project: str | None = None):
        self.run = run
        self.bar = tqdm(total=total, desc=run, unit="step", dynamic_ncols=True)
        self.wandb = None
        if wandb_project:
            try:
                import wandb
            except ImportError:
                raise SystemExit("error: --wandb needs the wandb package: pip install wandb") from None
            self.wandb = wandb.init(project=wandb_project, name=run)

    def __call__(self, record: dict[str, Any]) -> None:
        if record["kind"] == "plan":
            self.bar.reset(total=record["num_iterations"])
            self.bar.update(record["start"])
        elif record["kind"] == "train":
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{record['smooth_loss']:.3f}", tok_s=f"{record['tok_per_s']:,.0f}",
                                 mfu=f"{record['mfu']:.1f}%")
        elif record["kind"] == "val":
            self.bar.write(f"step {record['step']}: val bpb {record['bpb']:.4f}")
        elif record["kind"] == "model_eval":
            scores = ", ".join(f"{k} {_fmt(v)}" for k, v in record.items() if k not in ("kind", "step"))
            self.bar.write(f"step {record['step']}: {scores}")
        elif record["kind"] == "sample":
            self.bar.write(f"step {record['step']}: {record['prompt']!r} -> {record['completion']!r}")
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record.get("step"))

    def __enter__(self) -> "TrainProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
        if self.wandb is not None:
            self.wandb.finish()


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def print_summary(summary: dict[str, Any]) -> None:
    """A run's summary as aligned `key  value` lines (what apps/pretrain, sft and rl print at the end)."""
    width = max(map(len, summary), default=0)
    for key, value in summary.items():
        print(f"{key:<{width}}  {value}")
