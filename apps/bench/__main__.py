"""Benchmarks: a readable table, then one JSON document as the last line.

    uv run apps/bench forward --depth 4 --max-seq-len 512
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
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bench", required=True)
    forward = sub.add_parser("forward", help="model forward and forward+backward tokens/s, compile time")
    add_model_args(forward, depth=4, max_seq_len=512)
    forward.add_argument("--device-batch-size", type=int, default=8, help="sequences per step (default 8)")
    forward.add_argument("--steps", type=int, default=3, help="timed steps after warm-up (default 3)")
    forward.set_defaults(run=run_forward)
    args = parser.parse_args(argv)
    if getattr(args, "device_batch_size", 1) <= 0 or getattr(args, "steps", 1) <= 0:
        parser.error("--device-batch-size and --steps must be positive")
    try:
        result = args.run(args)
    except ConfigError as e:
        parser.error(str(e))
    print(json.dumps({"bench": args.bench, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
