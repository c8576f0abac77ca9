"""The evaluation suite behind apps/eval: named tasks, where their data comes from, and their outcomes.

A task whose data is not on this machine and cannot be downloaded is *skipped* with the reason
and how to provide it; malformed data or impossible settings are *errors*; neither stops the
other tasks. Local data: `data_dir/<task>.jsonl` (or .jsonl.gz, .json, .parquet, or a
directory `data_dir/<task>/` of parquet shards) is used when present; otherwise the hub copy
cached under the base dir, downloaded once when the network allows.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from flaxchat.evals.bundle import CORE_LABELS, ensure_bundle
from flaxchat.evals.chat_eval import CHAT_BASELINES, SamplingConfig, Score, centered, chatcore, chatcore_cat, run_chat_eval
from flaxchat.evals.core import TaskResult, evaluate_core
from flaxchat.evals.errors import CoreError, DataUnavailable, TaskDataError, TaskError
from flaxchat.evals.names import TASK_NAMES
from flaxchat.evals.tasks import ARC, GSM8K, MMLU, ArithmeticWordProblems, HumanEval, SmolTalk, SpellingBee, Task
from flaxchat.evals.tasks.data import SUFFIXES
from flaxchat.infer.errors import GenerationError

ARITHMETIC_EVAL_SEED = 2  # apps/sft trains on seed 0 and validates on seed 1
SPELLINGBEE_EVAL_SIZE = 256  # nanochat's chat_eval size


def local_data(data_dir: Path | None, name: str) -> Path | None:
    """data_dir/<name>.<suffix> or the directory data_dir/<name>, if present."""
    if data_dir is None:
        return None
    for candidate in [data_dir / f"{name}{suffix}" for suffix in SUFFIXES] + [data_dir / name]:
        if candidate.exists():
            return candidate
    return None


# name -> task built from a data dir (names.CHAT_TASK_NAMES lists the same names, for the app's --help)
CHAT_TASKS: dict[str, Callable[[Path | None], Task]] = {
    "mmlu": lambda d: MMLU("all", "test", path=local_data(d, "mmlu")),
    "arc-easy": lambda d: ARC("ARC-Easy", "test", path=local_data(d, "arc-easy")),
    "arc-challenge": lambda d: ARC("ARC-Challenge", "test", path=local_data(d, "arc-challenge")),
    "gsm8k": lambda d: GSM8K("test", path=local_data(d, "gsm8k")),
    "arithmetic": lambda d: ArithmeticWordProblems(seed=ARITHMETIC_EVAL_SEED, size=256),
    "humaneval": lambda d: HumanEval(path=local_data(d, "humaneval")),
    "spellingbee": lambda d: SpellingBee(size=SPELLINGBEE_EVAL_SIZE, split="test"),
    "smoltalk": lambda d: SmolTalk("test", path=local_data(d, "smoltalk")),
}


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
    max_problems: int | None = None  # per task (CORE: per CORE task); None = all
    bundle: str | Path | None = None  # a bundle directory, "bigbench", or None for <base>/eval_bundle
    data_dir: Path | None = None
    batch_size: int = 8  # problems per forward (categorical and loss tasks)
    core_batch_rows: int = 32  # prompt rows per forward in CORE
    sampling: SamplingConfig = SamplingConfig()
    progress: bool = False


@dataclasses.dataclass(frozen=True)
class Outcome:
    task: str
    status: str  # "ok" | "skipped" | "error"
    metric: str | None = None  # "CORE", "accuracy" or "loss"
    value: float | None = None
    centered: float | None = None
    total: int | None = None
    seconds: float = 0.0
    source: str | None = None
    detail: str | None = None  # why skipped / the error / a caveat
    breakdown: tuple[dict[str, Any], ...] = ()  # CORE: one entry per CORE task

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Outcome:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if k == "breakdown" else v) for k, v in data.items() if k in fields})


def _run_core(model, tokenizer, cfg: SuiteConfig, on_core_task: Callable[[TaskResult], None] | None) -> Outcome:
    bundle = ensure_bundle(cfg.bundle)
    result = evaluate_core(model, tokenizer, bundle, cfg.max_problems or -1, cfg.core_batch_rows, cfg.progress,
                           on_task=on_core_task)
    detail = None
    if result.missing:
        covered = len(CORE_LABELS) - len(result.missing)
        detail = (f"{covered}/{len(CORE_LABELS)} CORE tasks (mean over the bundle's {len(result.tasks)} task(s)): "
                  "not comparable to nanochat's CORE")
    elif cfg.max_problems:
        detail = f"at most {cfg.max_problems} items per task"
    return Outcome("core", "ok", "CORE", result.core, total=sum(r.items for r in result.tasks), source=str(bundle.root),
                   detail=detail, breakdown=tuple(dataclasses.asdict(r) for r in result.tasks))


def _run_chat(name: str, model, tokenizer, engine, cfg: SuiteConfig) -> Outcome:
    task = CHAT_TASKS[name](cfg.data_dir)
    score: Score = run_chat_eval(task, model, tokenizer, engine, batch_size=cfg.batch_size, sampling=cfg.sampling,
                                 max_problems=cfg.max_problems, progress=cfg.progress)
    baseline = CHAT_BASELINES.get(name)
    return Outcome(name, "ok", score.metric, score.value,
                   centered=None if baseline is None else centered(score.value, baseline),
                   total=score.total, source=getattr(task, "source", None),
                   detail=None if cfg.max_problems is None else f"first {score.total} of {len(task)}")


def run_task(name: str, model, tokenizer, engine, cfg: SuiteConfig,
             on_core_task: Callable[[TaskResult], None] | None = None) -> Outcome:
    """One named task; data problems become skipped/error outcomes instead of exceptions."""
    if name not in TASK_NAMES:
        raise TaskError(f"unknown task {name!r}; known: {', '.join(TASK_NAMES)}")
    t0 = time.perf_counter()
    try:
        outcome = (_run_core(model, tokenizer, cfg, on_core_task) if name == "core"
                   else _run_chat(name, model, tokenizer, engine, cfg))
    except DataUnavailable as e:
        outcome = Outcome(name, "skipped", detail=str(e))
    except (TaskDataError, TaskError, CoreError, GenerationError) as e:
        outcome = Outcome(name, "error", detail=str(e))
    return dataclasses.replace(outcome, seconds=round(time.perf_counter() - t0, 2))


def aggregates(outcomes: Sequence[Outcome]) -> dict[str, float | None]:
    """CORE when all 22 CORE tasks were run, and ChatCORE / ChatCORE_cat when all of their tasks have results."""
    ok = {o.task: o for o in outcomes if o.status == "ok"}
    accuracies = {name: o.value for name, o in ok.items() if o.metric == "accuracy"}
    core = ok.get("core")
    complete = core is not None and set(CORE_LABELS) <= {part["label"] for part in core.breakdown}
    return {
        "core": core.value if complete else None,
        "chatcore": chatcore(accuracies),
        "chatcore_cat": chatcore_cat(accuracies),
    }
