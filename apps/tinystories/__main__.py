"""The whole flaxchat pipeline on TinyStories-sized data, end to end.

tokenizer -> pretrain -> SFT -> evals -> a chat sample -> LiteRT export -> the edge runner's answer,
then a report (markdown + plots of every stage) under <base>/runs/NAME/. With no flags it runs on
the embedded default story corpus, offline, in about ten minutes on a 2-core CPU. --data PATH (or
--data tinystories, when the network allows) trains on the real TinyStories text.

Each stage is the app of the same name, run as a subprocess with the flags below; stage flags
not covered here go through --pretrain-args / --sft-args / --eval-args ("--flag value ...").
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

APPS = Path(__file__).resolve().parents[1]
PROMPT = "Tell me a short story about a cat."


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tinystories", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="tinystories", help="tokenizer, run and model name prefix (default tinystories)")
    p.add_argument("--data", metavar="PATH|GLOB", help="training text for the tokenizer and pretraining (default: embedded corpus)")
    p.add_argument("--depth", type=int, default=4, help="model depth (default 4)")
    p.add_argument("--max-seq-len", type=int, default=256, help="context length (default 256)")
    p.add_argument("--vocab-size", type=int, default=2048, help="tokenizer vocabulary (default 2048)")
    p.add_argument("--steps", type=int, default=150, help="pretraining steps (default 150)")
    p.add_argument("--sft-steps", type=int, default=60, help="SFT steps (default 60)")
    p.add_argument("--eval-tasks", default="spellingbee,arithmetic", help="apps/eval tasks (default spellingbee,arithmetic)")
    p.add_argument("--max-problems", type=int, default=20, help="problems per eval task (default 20)")
    p.add_argument("--quantize", choices=("none", "int8"), default="int8", help="LiteRT export quantization (default int8)")
    p.add_argument("--prompt", default=PROMPT, help="the chat and edge-runner prompt")
    p.add_argument("--pretrain-args", default="", help="extra apps/pretrain flags, quoted")
    p.add_argument("--sft-args", default="", help="extra apps/sft flags, quoted")
    p.add_argument("--eval-args", default="", help="extra apps/eval flags, quoted")
    args = p.parse_args(argv)
    for name in ("depth", "max_seq_len", "vocab_size", "steps", "sft_steps", "max_problems"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    return args


def base_dir() -> Path:
    from flaxchat.tokenizer.paths import base_dir as resolve

    return resolve()


class Pipeline:
    """Runs the stages in order, timing each; stops at the first failing stage with its command."""

    def __init__(self):
        self.stages: list[dict] = []

    def run(self, name: str, argv: list[str], *, capture: bool = False) -> str:
        shown = shlex.join(["uv", "run", f"apps/{Path(argv[1]).name}", *argv[2:]] if argv[1] != "-m" else ["python", *argv[1:]])
        print(f"\n=== {name}: {shown}", flush=True)
        start = time.perf_counter()
        result = subprocess.run(argv, text=True, capture_output=capture)
        seconds = time.perf_counter() - start
        self.stages.append({"stage": name, "seconds": round(seconds, 1), "command": shown})
        if result.returncode != 0:
            if capture:
                sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
            raise SystemExit(f"tinystories: stage '{name}' failed (exit {result.returncode}); rerun it alone: {shown}")
        if capture:
            print(result.stdout, end="", flush=True)
        print(f"=== {name}: {seconds:.1f} s", flush=True)
        return result.stdout if capture else ""


def app(name: str, *flags: str) -> list[str]:
    return [sys.executable, str(APPS / name), *flags]


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def last_metric(metrics: Path, kind: str, field: str) -> str:
    """The last value of `field` among metrics.jsonl records of `kind`, formatted ("n/a" if absent)."""
    value = None
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("kind") == kind and field in record:
                value = record[field]
    return "n/a" if value is None else f"{value:.4f}"


def write_report(out: Path, args, pipeline: Pipeline, chat: str, edge: str, export_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    names = [s["stage"] for s in pipeline.stages]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.barh(names[::-1], [s["seconds"] for s in pipeline.stages][::-1])
    ax.set_xlabel("seconds")
    ax.set_title("wall time per stage")
    fig.tight_layout()
    fig.savefig(out / "stages.png", dpi=100)
    plt.close(fig)

    base, sft = args.name, f"{args.name}-sft"
    runs = base_dir() / "runs"
    evals = read_json(runs / sft / "eval.json") or read_json(base_dir() / "evals" / sft / "eval.json")
    rows = [f"| {s['stage']} | {s['seconds']:.1f} | `{s['command']}` |" for s in pipeline.stages]
    total = sum(s["seconds"] for s in pipeline.stages)
    lines = [
        f"# TinyStories pipeline: {args.name}",
        "",
        f"Data: {'`' + args.data + '`' if args.data else 'the embedded default story corpus (generated, not TinyStories)'}; "
        f"depth {args.depth}, context {args.max_seq_len}, vocabulary {args.vocab_size}.",
        "",
        "| stage | seconds | command |",
        "|---|---|---|",
        *rows,
        f"| total | {total:.1f} | |",
        "",
        "![stages](stages.png)",
        "",
        "## Results",
        "",
        f"- pretraining: final validation bits per byte {last_metric(runs / base / 'metrics.jsonl', 'val', 'bpb')}, "
        f"report [{base}/report.md](../{base}/report.md)",
        f"- SFT: final validation bits per byte {last_metric(runs / sft / 'metrics.jsonl', 'val', 'bpb')}, "
        f"report [{sft}/report.md](../{sft}/report.md)",
        f"- evals: see [{sft}/eval.md](../{sft}/eval.md)" if evals else "- evals: no eval.json found",
        f"- export: `{export_dir}`",
        "",
        "## Chat sample (JAX Engine)",
        "",
        "```",
        chat.strip(),
        "```",
        "",
        "## Edge runner (LiteRT, no jax)",
        "",
        "```",
        edge.strip(),
        "```",
        "",
    ]
    report = out / "report.md"
    tmp = report.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, report)
    return report


def main(argv=None) -> None:
    args = parse_args(argv)
    data = ["--data", args.data] if args.data else []
    base, sft = args.name, f"{args.name}-sft"
    export_dir = base_dir() / "exports" / f"{sft}.litert"
    pipeline = Pipeline()
    pipeline.run("tokenizer", app("tok_train", "--name", base, "--vocab-size", str(args.vocab_size), *data))
    pipeline.run("pretrain", app("pretrain", "--run", base, "--tokenizer", base, "--depth", str(args.depth),
                                 "--max-seq-len", str(args.max_seq_len), "--num-iterations", str(args.steps),
                                 *data, *shlex.split(args.pretrain_args)))
    pipeline.run("sft", app("sft", "--model", base, "--out", sft, "--num-iterations", str(args.sft_steps),
                            *shlex.split(args.sft_args)))
    pipeline.run("eval", app("eval", "--model", sft, "--tasks", args.eval_tasks, "--max-problems", str(args.max_problems),
                             "--offline", "--no-progress", *shlex.split(args.eval_args)))
    chat = pipeline.run("chat", app("chat_cli", "--model", sft, "-p", args.prompt, "--temperature", "0",
                                    "--max-tokens", "64", "--no-color"), capture=True)
    quantize = [] if args.quantize == "none" else ["--quantize", args.quantize]
    pipeline.run("export", app("export", "--model", sft, "--out", str(export_dir), *quantize))
    edge = pipeline.run("edge runner", [sys.executable, "-m", "flaxchat.export.run", str(export_dir), args.prompt,
                                        "--temperature", "0", "--max-tokens", "64"], capture=True)
    report = write_report(base_dir() / "runs" / f"{base}-pipeline", args, pipeline, chat, edge, export_dir)
    print(f"\nDone in {sum(s['seconds'] for s in pipeline.stages):.0f} s.")
    print(f"Report:    {report}")
    print(f"Models:    {base_dir() / 'models' / base}, {base_dir() / 'models' / sft}")
    print(f"Exported:  {export_dir}")
    print(f"Chat with it: uv run apps/chat_cli --model {sft}   |   python -m flaxchat.export.run {export_dir} \"...\"")


if __name__ == "__main__":
    main()
