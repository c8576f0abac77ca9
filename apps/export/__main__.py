"""Export a model checkpoint to LiteRT (.tflite) for edge devices: NAME.litert/ with the model,
its tokenizer and config; run it anywhere with `python -m flaxchat.export.run` (no jax needed).

    uv run apps/export                               # the newest model under <base>/models, fp32
    uv run apps/export --model d12 --quantize int8   # int8 weights: smaller and faster on CPU
    uv run apps/export --model d12 --out d12.litert --max-len 1024
"""

from __future__ import annotations

import argparse
import sys
import time

QUANTIZATIONS = ("fp32", "int8", "int8-weight-only")


def lengths(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one prefill length")
    return values


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="checkpoint name under <base>/models, or a path (default: the newest saved model)")
    p.add_argument("--quantize", choices=QUANTIZATIONS, default="fp32",
                   help="int8: dynamic-range int8 matmul weights; int8-weight-only: int8 weights, fp32 math "
                        "(default fp32)")
    p.add_argument("--out", help="package directory to write (default <base>/exports/NAME[-QUANT].litert)")
    p.add_argument("--max-len", type=int, default=None,
                   help="KV cache positions, prompt + reply (default: the model's sequence length)")
    p.add_argument("--prefill-lengths", type=lengths, default=(8, 32, 128),
                   help="tokens per prefill call, comma-separated (default 8,32,128)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from flaxchat.export.convert import ExportSettings, export_checkpoint
    from flaxchat.export.errors import ExportError, PackageError
    from flaxchat.infer.cli import newest_checkpoint
    from flaxchat.model.checkpoint import CheckpointError

    def progress(line: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {line}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    try:
        settings = ExportSettings(args.quantize, args.max_len, args.prefill_lengths)
        source = args.model or newest_checkpoint()
        result = export_checkpoint(source, args.out, settings, progress)
    except (CheckpointError, ExportError, PackageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {result.path}")
    print(f"model.tflite: {result.size_bytes / 1e6:,.1f} MB ({args.quantize}"
          + (f", fp32 {result.fp32_size_bytes / 1e6:,.1f} MB" if args.quantize != "fp32" else "") + ")")
    print(f"run it: python -m flaxchat.export.run {result.path} \"Hello!\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
