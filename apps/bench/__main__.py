"""Benchmarks: a readable table, then one JSON document as the last line.

    uv run apps/bench forward --depth 4 --max-seq-len 512
    uv run apps/bench train            # nanochat's CPU run config: d6, head dim 64, window L, seq 512, batch 32
"""

from __future__ import annotations

import argparse
import json
import sys

from flaxchat.model.cli import add_model_args, config_from_args, dtype_from_args
from flaxchat.model.config import ConfigError


def run_forward(args) -> dict:
    from flaxchat.model.benchmark import bench_forward, device_name, measure_matmul_peak

    config = config_from_args(args, vocab_size=32768)
    peak = measure_matmul_peak()
    result = bench_forward(config, args.device_batch_size, dtype=dtype_from_args(args), remat=args.remat, steps=args.steps)
    result["device"] = device_name()
    result["matmul_peak_flops_per_s"] = peak
    rows = [("device", result["device"]), ("matmul peak", f"{peak / 1e9:.1f} GFLOP/s")]
    rows.append(("model", f"d{config.n_layer} n_embd {config.n_embd} seq {config.sequence_len} batch {args.device_batch_size}"))
    for name in ("forward", "forward_backward"):
        r = result[name]
        r["mfu_percent"] = round(100 * r["flops_per_s"] / peak, 1)
        rows.append((name, f"{r['tokens_per_s']:,.0f} tok/s  {r['step_s'] * 1e3:,.0f} ms/step  "
                           f"MFU {r['mfu_percent']}%  compile {r['compile_s']:.1f} s"))
    print_table(rows)
    return result


def run_train(args) -> dict:
    from flaxchat.model.benchmark import device_name, measure_matmul_peak
    from flaxchat.train.benchmark import bench_train

    config = config_from_args(args, vocab_size=32768)
    result = bench_train(config, args.device_batch_size, args.grad_accum, dtype=dtype_from_args(args),
                         remat=args.remat, steps=args.steps, dp=args.dp, fsdp=args.fsdp)
    peak = measure_matmul_peak() * result["devices"]
    result |= {"device": device_name(), "matmul_peak_flops_per_s": peak,
               "mfu_percent": round(100 * result["flops_per_s"] / peak, 1)}
    print_table([
        ("device", result["device"]),
        ("matmul peak", f"{peak / 1e9:.1f} GFLOP/s (measured, jitted {2048}x{2048} fp32 matmul)"),
        ("model", f"d{config.n_layer} n_embd {config.n_embd} heads {config.n_head}x{config.head_dim} "
                  f"seq {config.sequence_len} window {config.window_pattern} vocab {config.vocab_size}"),
        ("batch", f"{args.device_batch_size} x {result['devices']} devices x {args.grad_accum} micro-steps "
                  f"= {result['tokens_per_step']:,} tokens"),
        ("train step", f"{result['step_s']:.2f} s  {result['tokens_per_s']:,.0f} tok/s  MFU {result['mfu_percent']}%"),
        ("compile", f"{result['compile_s']:.1f} s"),
        ("peak memory", f"{result['peak_memory_bytes'] / 2**30:.2f} GiB"),
    ])
    return result


def print_table(rows) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bench", required=True)
    forward = sub.add_parser("forward", help="model forward and forward+backward tokens/s, compile time")
    add_model_args(forward, depth=4, max_seq_len=512)
    forward.add_argument("--device-batch-size", type=int, default=8, help="sequences per step (default 8)")
    forward.add_argument("--steps", type=int, default=3, help="timed steps after warm-up (default 3)")
    forward.set_defaults(run=run_forward)
    train = sub.add_parser("train", help="the real training step (model + optimizer): tok/s, MFU, memory")
    add_model_args(train, depth=6, max_seq_len=512)
    train.set_defaults(head_dim=64, window_pattern="L")
    train.add_argument("--device-batch-size", type=int, default=32, help="sequences per device (default 32)")
    train.add_argument("--grad-accum", type=int, default=1, help="micro-steps per optimizer step (default 1)")
    train.add_argument("--steps", type=int, default=3, help="timed steps after warm-up (default 3)")
    train.add_argument("--dp", type=int, default=None, help="data-parallel size (default: all devices)")
    train.add_argument("--fsdp", type=int, default=1, help="FSDP size")
    train.set_defaults(run=run_train)
    args = parser.parse_args(argv)
    if getattr(args, "device_batch_size", 1) <= 0 or getattr(args, "steps", 1) <= 0:
        parser.error("--device-batch-size and --steps must be positive")
    try:
        result = args.run(args)
    except (ConfigError, ValueError) as e:
        parser.error(str(e))
    print(json.dumps({"bench": args.bench, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
