"""Reinforcement learning on math word problems with GRPO (nanochat's chat_rl).

With no flags: trains the newest SFT model (e.g. `d4-sft`, what `uv run apps/sft` makes) on 320
generated arithmetic word problems in GSM8K's format (flaxchat's own, not GSM8K), sampling with
calculator tool calls, and saves it as `d4-sft-rl`; pass@k on 100 held-out problems at the start,
every --eval-every steps and at the end. nanochat's run, on real GSM8K from local copies (or the hub with --task gsm8k):
    uv run apps/rl --model d20-sft --data gsm8k/train.jsonl --val-data gsm8k/test.jsonl
The optimizer, sampling and batch settings default to nanochat's.
"""

from __future__ import annotations

import argparse
import logging
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="SFT checkpoint: a name under <base>/models or a path (default: the newest SFT model)")
    p.add_argument("--out", default=None, help="name (under <base>/models) or path of the result (default MODEL-rl)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype (weights stay fp32)")
    d = p.add_argument_group("data")
    d.add_argument("--task", choices=("arithmetic", "gsm8k"), default=None,
                   help="arithmetic: generated word problems, no download; gsm8k: GSM8K (default: gsm8k when --data "
                        "is given, else arithmetic)")
    d.add_argument("--data", metavar="PATH",
                   help="local GSM8K train split (jsonl/parquet with question/answer); implies --task gsm8k")
    d.add_argument("--val-data", metavar="PATH", help="local GSM8K test split (default: the hub)")
    d.add_argument("--train-size", type=int, default=320, help="arithmetic problems to train on (default 320)")
    d.add_argument("--val-size", type=int, default=100, help="held-out arithmetic problems (default 100)")
    t = p.add_argument_group("training (defaults: nanochat's)")
    t.add_argument("--num-epochs", type=int, default=1)
    t.add_argument("--num-steps", type=int, default=-1, help="optimizer steps; -1 = questions // examples-per-step x epochs")
    t.add_argument("--device-batch-size", type=int, default=8,
                   help="samples per Engine call and per training pass; k of pass@k")
    t.add_argument("--examples-per-step", type=int, default=16, help="questions per optimizer step")
    t.add_argument("--num-samples", type=int, default=16, help="samples per question")
    t.add_argument("--max-new-tokens", type=int, default=256)
    t.add_argument("--temperature", type=float, default=1.0)
    t.add_argument("--top-k", type=int, default=50, help="0 = off")
    t.add_argument("--embedding-lr", type=float, default=0.2)
    t.add_argument("--unembedding-lr", type=float, default=0.004)
    t.add_argument("--matrix-lr", type=float, default=0.02)
    t.add_argument("--weight-decay", type=float, default=0.0, help="Muon weight decay")
    t.add_argument("--init-lr-frac", type=float, default=0.05, help="LRs x this, then linearly down to 0 (default 0.05)")
    e = p.add_argument_group("evaluation and checkpoints")
    e.add_argument("--eval-every", type=int, default=60, help="pass@k every N steps (and at the end), -1 = only at the end")
    e.add_argument("--eval-examples", type=int, default=400, help="held-out questions per evaluation (default 400)")
    e.add_argument("--save-every", type=int, default=60,
                   help="save the model every N steps (and at the end), -1 = only at the end")
    e.add_argument("--wandb", action="store_true", help="log to Weights & Biases (needs `pip install wandb`)")
    args = p.parse_args(argv)
    for name in ("train_size", "val_size"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.task == "arithmetic" and (args.data or args.val_data):
        p.error("--data and --val-data belong to --task gsm8k")
    args.task = args.task or ("gsm8k" if args.data else "arithmetic")
    args._parser = p
    return args


def load_tasks(args):
    """(train task, val task, label)."""
    from flaxchat.evals.tasks import GSM8K, ArithmeticWordProblems

    if args.task == "arithmetic":
        # Seed 0 (train) and 1 (val) are the SFT mixture's: RL trains on new problems, evaluates on SFT's held-out ones.
        train, val = ArithmeticWordProblems(seed=2, size=args.train_size), ArithmeticWordProblems(seed=1, size=args.val_size)
        return train, val, f"{train.source}: {args.train_size} train / {args.val_size} val problems"
    train, val = GSM8K(split="train", path=args.data), GSM8K(split="test", path=args.val_data)
    return train, val, f"GSM8K main: train {train.source}, test {val.source}"


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("flaxchat").setLevel(logging.INFO)
    from flaxchat.evals.errors import EvalError
    from flaxchat.infer.errors import GenerationError
    from flaxchat.model.checkpoint import CheckpointError, read_meta
    from flaxchat.tokenizer import ConversationError
    from flaxchat.train.finetune import FinetuneError, newest_of_kind, output_for
    from flaxchat.train.progress import TrainProgress, print_summary
    from flaxchat.train.rl import RLConfig, rl

    class RLProgress(TrainProgress):
        """The training bar with the reward, pass@k lines at evaluations."""

        def __call__(self, record):
            if record["kind"] == "train":
                self.bar.update(1)
                self.bar.set_postfix(reward=f"{record['reward']:.3f}", tokens=f"{record['sequence_length']:.0f}")
            elif record["kind"] == "eval":
                passk = record["pass_at_k"]
                self.bar.write(f"step {record['step']}: " + ", ".join(f"pass@{k} {v:.3f}" for k, v in enumerate(passk, 1)))
                record = {"step": record["step"], **{f"pass@{k}": v for k, v in enumerate(passk, 1)}}
            else:
                return super().__call__(record)
            if self.wandb is not None:
                self.wandb.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record["step"])

    try:
        model = args.model or newest_of_kind("sft", "make one with `uv run apps/sft`")
        cfg = RLConfig(
            model=model, out=args.out, num_epochs=args.num_epochs, num_steps=args.num_steps,
            device_batch_size=args.device_batch_size, examples_per_step=args.examples_per_step,
            num_samples=args.num_samples, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
            top_k=args.top_k, embedding_lr=args.embedding_lr, unembedding_lr=args.unembedding_lr,
            matrix_lr=args.matrix_lr, weight_decay=args.weight_decay, init_lr_frac=args.init_lr_frac,
            eval_every=args.eval_every, eval_examples=args.eval_examples, save_every=args.save_every, dtype=args.dtype,
        )
        read_meta(cfg.model)  # a missing model fails before any data is built or downloaded
        train, val, label = load_tasks(args)
        print(f"data: {label}")
        wandb_project = "flaxchat-rl" if args.wandb else None
        with RLProgress(output_for(model, args.out, "-rl").name, wandb_project=wandb_project) as progress:
            summary = rl(cfg, train, val, data_label=label, progress=progress)
    except FinetuneError as e:
        args._parser.error(str(e))
    except (CheckpointError, ConversationError, EvalError, GenerationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
