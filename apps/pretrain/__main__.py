"""Pretrain a base model (nanochat's base_train).

With no flags: a small model (depth 4, seq 256) on the embedded default story corpus, a few minutes
on a laptop CPU. nanochat's scale is a matter of flags, e.g. its CPU run:
    uv run apps/pretrain --depth 6 --head-dim 64 --window-pattern L --max-seq-len 512 \\
        --device-batch-size 32 --total-batch-size 16384 --eval-every 100 --num-iterations 5000
Resume an interrupted run with --resume (same --run). Multi-host: see docs on jax.distributed.
"""

from __future__ import annotations

import argparse
import logging
import sys

from flaxchat.model.cli import add_model_args, config_from_args
from flaxchat.model.config import ConfigError
from flaxchat.tokenizer import Tokenizer, TokenizerFileError, tokenizer_dir


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pretrain", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=None, help="run name: runs/RUN and models/RUN under the base dir (default d<depth>)")
    p.add_argument("--data", metavar="PATH|GLOB", help="training text (.parquet/.txt/.jsonl, dir, glob, climbmix[:N], tinystories); default: embedded corpus")
    p.add_argument("--tokenizer", default="default", help="tokenizer name under <base>/tokenizers (default: default)")
    add_model_args(p, depth=4, max_seq_len=256)
    p.set_defaults(head_dim=64, window_pattern="L")
    t = p.add_argument_group("training")
    t.add_argument("--device-batch-size", type=int, default=16, help="sequences per device per micro-step (default 16)")
    t.add_argument("--total-batch-size", type=int, default=4096, help="tokens per optimizer step, -1 = nanochat's automatic choice (default 4096)")
    t.add_argument("--num-iterations", type=int, default=150, help="optimizer steps; -1 = from --target-flops or the data ratio (default 150)")
    t.add_argument("--target-flops", type=float, default=-1.0, help="training FLOPs budget when --num-iterations is -1")
    t.add_argument("--target-param-data-ratio", type=float, default=12.0, help="tokens per scaling parameter (default 12)")
    t.add_argument("--embedding-lr", type=float, default=0.3)
    t.add_argument("--unembedding-lr", type=float, default=0.008)
    t.add_argument("--matrix-lr", type=float, default=0.02)
    t.add_argument("--scalar-lr", type=float, default=0.5)
    t.add_argument("--weight-decay", type=float, default=0.28, help="Muon weight decay before scaling (default 0.28)")
    t.add_argument("--warmup-steps", type=int, default=40)
    t.add_argument("--warmdown-ratio", type=float, default=0.65)
    t.add_argument("--final-lr-frac", type=float, default=0.05)
    t.add_argument("--seed", type=int, default=0, help="parameter init seed")
    e = p.add_argument_group("evaluation and checkpoints")
    e.add_argument("--eval-every", type=int, default=50, help="val bits-per-byte every N steps, -1 = never (default 50)")
    e.add_argument("--eval-tokens", type=int, default=32768, help="val tokens per evaluation (default 32768)")
    e.add_argument("--sample-every", type=int, default=50, help="greedy samples every N steps, -1 = never (default 50)")
    e.add_argument("--core-metric-every", type=int, default=-1,
                   help="CORE metric every N steps and at the last step, -1 = never (default -1; nanochat's is 2000, "
                        "but its DCLM eval bundle is often not on this machine: see --core-bundle)")
    e.add_argument("--core-metric-max-per-task", type=int, default=500, help="items per CORE task, -1 = all (default 500)")
    e.add_argument("--core-bundle", metavar="PATH|bigbench",
                   help="CORE bundle: an unpacked DCLM eval_bundle directory, or `bigbench` for CORE's 6 BIG-bench tasks "
                        "built from the bigbench PyPI sdist (default: <base>/eval_bundle, downloaded once)")
    e.add_argument("--save-every", type=int, default=-1, help="train-state checkpoint every N steps (always at the end)")
    e.add_argument("--keep-checkpoints", type=int, default=2)
    e.add_argument("--resume", action="store_true", help="continue --run from its latest checkpoint")
    e.add_argument("--wandb", action="store_true", help="log to Weights & Biases (needs `pip install wandb`)")
    s = p.add_argument_group("scale")
    s.add_argument("--dp", type=int, default=None, help="data-parallel size (default: devices / fsdp)")
    s.add_argument("--fsdp", type=int, default=1, help="FSDP size: parameters sharded over this many devices")
    s.add_argument("--coordinator", help="multi-host: coordinator host:port (or env JAX_COORDINATOR_ADDRESS)")
    s.add_argument("--num-processes", type=int, help="multi-host: number of processes")
    s.add_argument("--process-id", type=int, help="multi-host: this process's id")
    args = p.parse_args(argv)
    for name in ("device_batch_size", "eval_tokens", "keep_checkpoints"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    for name in ("total_batch_size", "num_iterations", "core_metric_every", "core_metric_max_per_task"):
        if getattr(args, name) == 0 or getattr(args, name) < -1:
            p.error(f"--{name.replace('_', '-')} must be positive or -1")
    args._parser = p
    return args


def load_or_train_tokenizer(args) -> Tokenizer:
    try:
        return Tokenizer.load(tokenizer_dir(args.tokenizer))
    except TokenizerFileError:
        if args.data or args.tokenizer != "default":
            raise
    from flaxchat.train.data.sources import iter_documents

    print("no default tokenizer yet: training one (vocab 2048) on the embedded corpus, as `uv run apps/tok_train` would")
    tok = Tokenizer.train(iter_documents(None, split="train"), vocab_size=2048)
    tok.save(tokenizer_dir("default"))
    return tok


def core_metric(args, tokenizer: Tokenizer):
    """pretrain's model_eval hook for --core-metric-every, or None. The bundle is resolved here, before
    training, so a missing one stops the run at once (flaxchat.evals is imported only when asked for)."""
    if args.core_metric_every < 0:
        return None
    from flaxchat.evals.bundle import CORE_LABELS, ensure_bundle
    from flaxchat.evals.core import evaluate_core

    bundle = ensure_bundle(args.core_bundle)
    covered = sum(t.label in CORE_LABELS for t in bundle.tasks)
    coverage = f"{covered}/{len(CORE_LABELS)}"
    print(f"CORE every {args.core_metric_every} steps and at the end: {bundle.root} ({coverage} CORE tasks, "
          f"at most {args.core_metric_max_per_task} items each)")

    def evaluate(model, step: int) -> dict:
        result = evaluate_core(model, tokenizer, bundle, args.core_metric_max_per_task)
        return {"core_metric": result.core, "core_tasks": coverage}

    return evaluate


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("flaxchat").setLevel(logging.INFO)  # our progress lines, not every library's
    from flaxchat.train.mesh import MeshError, maybe_initialize_distributed

    maybe_initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    from flaxchat.evals.errors import CoreError, DataUnavailable
    from flaxchat.train.checkpointing import TrainCheckpointError
    from flaxchat.train.data import DataSourceError
    from flaxchat.train.pretrain import PretrainConfig, PretrainError, pretrain
    from flaxchat.train.progress import TrainProgress, print_summary
    from flaxchat.train.sampling import greedy_samples

    try:
        tokenizer = load_or_train_tokenizer(args)
        model_config = config_from_args(args, vocab_size=tokenizer.vocab_size)
        cfg = PretrainConfig(
            run=args.run or f"d{model_config.n_layer}", model=model_config, data=args.data,
            device_batch_size=args.device_batch_size, total_batch_size=args.total_batch_size,
            num_iterations=args.num_iterations, target_flops=args.target_flops,
            target_param_data_ratio=args.target_param_data_ratio, embedding_lr=args.embedding_lr,
            unembedding_lr=args.unembedding_lr, matrix_lr=args.matrix_lr, scalar_lr=args.scalar_lr,
            weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, warmdown_ratio=args.warmdown_ratio,
            final_lr_frac=args.final_lr_frac, eval_every=args.eval_every, eval_tokens=args.eval_tokens,
            sample_every=args.sample_every, save_every=args.save_every, keep_checkpoints=args.keep_checkpoints,
            resume=args.resume, dtype=args.dtype, remat=args.remat, dp=args.dp, fsdp=args.fsdp, seed=args.seed,
            model_eval_every=args.core_metric_every,
        )
        try:
            core = core_metric(args, tokenizer)
        except (CoreError, DataUnavailable) as e:
            print(f"error: --core-metric-every needs a CORE bundle: {e}\n"
                  "Or pass --core-bundle bigbench (CORE's 6 BIG-bench tasks, built offline from the bigbench PyPI sdist), "
                  "or leave CORE off with --core-metric-every -1.", file=sys.stderr)
            return 1
        with TrainProgress(cfg.run, wandb_project="flaxchat" if args.wandb else None) as progress:
            summary = pretrain(cfg, tokenizer, progress=progress,
                               sample=lambda model, step: greedy_samples(model, tokenizer), model_eval=core)
    except (ConfigError, MeshError, PretrainError) as e:
        args._parser.error(str(e))
    except (DataSourceError, TokenizerFileError, TrainCheckpointError, CoreError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
