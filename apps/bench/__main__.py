"""Benchmarks: a readable table, then one JSON document as the last line.

    uv run apps/bench forward --depth 4 --max-seq-len 512
    uv run apps/bench train            # nanochat's CPU run config: d6, head dim 64, window L, seq 512, batch 32
    uv run apps/bench decode           # same model, random weights: decode per mode and batch, prefill, MBU
    uv run apps/bench decode --model d12 --draft-model d4 --batch-sizes 1,8 --prompt "The capital of France is"
    uv run apps/bench export           # same model: .tflite size and decode tok/s (fp32, int8) beside JAX CPU
    uv run apps/bench serve            # same model behind the server: aggregate tok/s and TTFT at 1, 4, 16 streams
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from flaxchat.model.checkpoint import CheckpointError
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
        ("model", describe(config)),
        ("batch", f"{args.device_batch_size} x {result['devices']} devices x {args.grad_accum} micro-steps "
                  f"= {result['tokens_per_step']:,} tokens"),
        ("train step", f"{result['step_s']:.2f} s  {result['tokens_per_s']:,.0f} tok/s  MFU {result['mfu_percent']}%"),
        ("compile", f"{result['compile_s']:.1f} s"),
        ("peak memory", f"{result['peak_memory_bytes'] / 2**30:.2f} GiB"),
    ])
    return result


def run_decode(args) -> dict:
    from flaxchat.infer.benchmark import DecodeBenchConfig, bench_decode
    from flaxchat.model.benchmark import device_name, measure_matmul_peak, measure_memory_bandwidth

    # The settings are checked before a model is loaded or built (seconds for d6).
    if args.prompt is not None and not args.model:
        raise ValueError("--prompt needs --model (a checkpoint with its tokenizer)")
    cfg = DecodeBenchConfig(
        batch_sizes=args.batch_sizes, context=args.context, steps=args.steps, prefill_tokens=args.prefill_tokens,
        padded_max_batch=args.padded_max_batch, spec_k=args.spec_k, temperature=args.temperature,
        repeats=args.repeats,
    )
    dtype = dtype_from_args(args)
    model, tokenizer, source = load_or_build(args.model, lambda: config_from_args(args, vocab_size=32768), dtype, seed=0)
    if args.prompt is not None:
        cfg = dataclasses.replace(cfg, prompt_ids=tuple(tokenizer.encode(args.prompt, prepend=tokenizer.bos_id)))
    draft, draft_source = None, None
    if not args.no_speculative:
        draft, _, draft_source = load_or_build(
            args.draft_model, lambda: draft_config(model.config, args.draft_depth, args.aspect_ratio), dtype, seed=1)
    start = time.perf_counter()

    def progress(line: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {line}", file=sys.stderr, flush=True)

    progress(f"measuring memory bandwidth ({args.bandwidth_mib} MiB in place) and matmul peak")
    bandwidth = measure_memory_bandwidth(args.bandwidth_mib << 20)
    peak = measure_matmul_peak()
    result = bench_decode(model, cfg, memory_bandwidth=bandwidth, matmul_peak=peak, draft_model=draft, progress=progress)
    config = model.config
    result |= {"device": device_name(), "model": source, "draft_model": draft_source}
    rows = [
        ("device", result["device"]),
        ("memory bandwidth", f"{bandwidth / 1e9:.1f} GB/s (measured: in-place read+write of {args.bandwidth_mib} MiB)"),
        ("matmul peak", f"{peak / 1e9:.1f} GFLOP/s (measured, jitted 2048x2048 fp32 matmul)"),
        ("model", f"{source}: {describe(config)} {result['dtype']}"),
        ("bytes per step", f"{result['weight_bytes'] / 1e6:.1f} MB weights + {result['kv_read_bytes_per_row'] / 1e6:.2f} MB "
                           f"KV per row at context {cfg.mean_context}; "
                           f"batch-1 ceiling {result['ceiling_batch1_tok_per_s']:,.0f} tok/s"),
    ]
    for e in result["decode"]:
        rows.append((f"{e['mode']} batch {e['batch_size']}", f"{e['ms_per_step']:8.2f} ms/token {e['tok_per_s']:9,.1f} tok/s  "
                                                               f"MBU {e['mbu_percent']:5.1f}%"))
    p = result["prefill"]
    rows.append((f"prefill {p['tokens']} tokens", f"{p['tok_per_s']:,.0f} tok/s  {p['ms']:.1f} ms  MFU {p['mfu_percent']}%"))
    if "speculative" in result:
        s = result["speculative"]
        pairs = ", ".join(f"{r['speedup']:.2f}" for r in s["runs"])
        rows.append((f"speculative k={s['k']}", f"draft {draft_source}: acceptance {s['acceptance_rate']:.1%}, "
                                                 f"{s['tokens_per_round']:.2f} tokens/round, {s['tok_per_s']:,.1f} tok/s, "
                                                 f"{s['speedup']:.2f}x cached batch 1 (median of {pairs})"))
    print_table(rows)
    return result


def run_export(args) -> dict:
    from flaxchat.export.benchmark import ExportBenchConfig, bench_export
    from flaxchat.model.benchmark import device_name

    cfg = ExportBenchConfig(quantizations=args.quantizations, context=args.context, steps=args.steps,
                            max_len=args.max_len, threads=args.threads)
    model, _, source = load_or_build(args.model, lambda: config_from_args(args, vocab_size=32768), dtype_from_args(args),
                                     seed=0)
    result = bench_export(model, cfg, progress=lambda line: print(line, file=sys.stderr, flush=True))
    config, jax_run = model.config, result["jax"]
    result |= {"device": device_name(), "model": source}
    rows = [
        ("device", result["device"]),
        ("model", f"{source}: {describe(config)}"),
        ("request", f"batch 1, prompt {result['prompt_tokens']} tokens + {result['steps']} decode steps, "
                    f"KV cache {result['max_len']}"),
        ("convert", f"{result['convert_s']:.1f} s (prefill lengths {result['prefill_lengths']} + decode)"),
        ("JAX", f"{jax_run['ms_per_token']:8.2f} ms/token {jax_run['decode_tok_per_s']:8.1f} tok/s  "
                f"prefill {jax_run['prefill_tok_per_s']:,.0f} tok/s"),
    ]
    for e in result["litert"]:
        rows.append((f"LiteRT {e['quantization']}", f"{e['ms_per_token']:8.2f} ms/token {e['decode_tok_per_s']:8.1f} tok/s  "
                                                    f"prefill {e['prefill_tok_per_s']:,.0f} tok/s  {e['size_bytes'] / 1e6:,.1f} MB  "
                                                    f"greedy agreement {e['greedy_agreement']:.1%}"))
    print_table(rows)
    return result


def run_serve(args) -> dict:
    from flaxchat.infer.serve_benchmark import ServeBenchConfig, bench_serve, synthetic_tokenizer
    from flaxchat.model.benchmark import device_name

    cfg = ServeBenchConfig(
        concurrency=args.concurrency, prompt_tokens=args.prompt_tokens, max_tokens=args.max_tokens,
        requests_per_stream=args.requests_per_stream, temperature=args.temperature, slots=args.slots,
        cache_len=args.cache_len, seed=args.seed,
    )
    model, tokenizer, source = load_or_build(args.model, lambda: config_from_args(args, vocab_size=32768),
                                             dtype_from_args(args), seed=0)
    if tokenizer is None:  # random weights: any tokenizer of the model's vocabulary
        tokenizer = synthetic_tokenizer(model.config.vocab_size)
    start = time.perf_counter()
    result = bench_serve(model, tokenizer, cfg, progress=lambda line: print(
        f"[{time.perf_counter() - start:6.1f}s] {line}", file=sys.stderr, flush=True))
    config = model.config
    result |= {"device": device_name(), "model": source}
    rows = [
        ("device", result["device"]),
        ("model", f"{source}: {describe(config)} {result['dtype']}"),
        ("server", f"{result['slots']} slots x {result['cache_len']} positions; streaming /v1/completions, prompt "
                   f"{cfg.prompt_tokens} tokens, max_tokens {cfg.max_tokens}, temperature {cfg.temperature}, "
                   f"{cfg.requests_per_stream} requests per stream"),
    ]
    for e in result["levels"]:
        rows.append((f"{e['concurrency']} streams", f"{e['aggregate_tok_per_s']:8.1f} tok/s aggregate  "
                                                    f"{_number(e['per_stream_tok_per_s'])} tok/s per stream  "
                                                    f"TTFT p50 {_number(e['ttft_ms_p50'])} ms p95 "
                                                    f"{_number(e['ttft_ms_p95'])} ms  peak active {e['peak_active']}  "
                                                    f"({e['requests']} requests, {e['completion_tokens']} tokens, "
                                                    f"{e['wall_s']:.1f} s)"))
    if "aggregate_speedup" in result:
        speedup = result["aggregate_speedup"]
        rows.append(("speedup", f"{_number(speedup['ratio'], '.2f')}x aggregate tok/s at {speedup['concurrency']} "
                                f"streams vs {speedup['baseline']}"))
    print_table(rows)
    return result


def _number(value, spec: str = "7.1f") -> str:
    return "-" if value is None else format(value, spec)


def load_or_build(name, config, dtype, seed: int):
    """(model, tokenizer, description): the named checkpoint with its tokenizer, else random weights
    (from `seed`) for config() and no tokenizer."""
    from flax import nnx
    from flaxchat.model import GPT
    from flaxchat.model.checkpoint import load_checkpoint

    if name:
        model, tokenizer, _ = load_checkpoint(name, dtype=dtype)
        return model, tokenizer, name
    return GPT(config(), rngs=nnx.Rngs(seed), dtype=dtype), None, "random weights"


def draft_config(target, depth: int, aspect_ratio: int):
    """A smaller random draft: nanochat's sizing at `depth`, everything else as the target."""
    from flaxchat.model.config import GPTConfig

    sized = GPTConfig.from_depth(depth, aspect_ratio, target.head_dim)
    return target.replace(n_layer=sized.n_layer, n_embd=sized.n_embd, n_head=sized.n_head, n_kv_head=sized.n_kv_head)


def batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be integers >= 1, got {text!r}")
    return sizes


def describe(config) -> str:
    return (f"d{config.n_layer} n_embd {config.n_embd} heads {config.n_head}x{config.head_dim} "
            f"seq {config.sequence_len} window {config.window_pattern} vocab {config.vocab_size}")


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
    decode = sub.add_parser("decode", help="KV-cache decode per mode and batch size, prefill, MBU, speculative")
    decode.add_argument("--model", help="checkpoint name under <base>/models or a path "
                                        "(default: random weights, config below)")
    add_model_args(decode, depth=6, max_seq_len=512)
    decode.set_defaults(head_dim=64, window_pattern="L")
    decode.add_argument("--batch-sizes", type=batch_sizes, default=(1, 4, 16, 64), help="comma-separated (default 1,4,16,64)")
    decode.add_argument("--context", type=int, default=384, help="mean context while decoding (default 384, as nanochat)")
    decode.add_argument("--steps", type=int, default=32, help="timed decode steps per mode and batch size (default 32)")
    decode.add_argument("--prompt", help="decode from this text (needs --model: its tokenizer), e.g. to measure a trained "
                                         "draft's acceptance on real text; the context is then its length + steps/2 "
                                         "(default: random tokens at --context)")
    decode.add_argument("--prefill-tokens", type=int, default=256,
                        help="batch-1 prompt for the prefill measurement (default 256)")
    decode.add_argument("--padded-max-batch", type=int, default=4, help="largest batch for the slow padded mode (default 4)")
    decode.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0: greedy)")
    decode.add_argument("--draft-model", help="speculative draft checkpoint (default: random weights at --draft-depth)")
    decode.add_argument("--draft-depth", type=int, default=2, help="depth of the random draft model (default 2)")
    decode.add_argument("--spec-k", type=int, default=4, help="draft tokens per speculative round (default 4)")
    decode.add_argument("--no-speculative", action="store_true", help="skip the speculative measurement")
    decode.add_argument("--repeats", type=int, default=3,
                        help="timed runs of the fast loop and of prefill, and speculative/cached pairs, each run "
                             "right after its pair so machine drift cancels (medians reported; default 3)")
    decode.add_argument("--bandwidth-mib", type=int, default=1024, help="buffer for the bandwidth measurement (default 1024)")
    decode.set_defaults(run=run_decode)
    export = sub.add_parser("export", help="LiteRT export: .tflite size and batch-1 decode tok/s beside JAX CPU")
    export.add_argument("--model", help="checkpoint name under <base>/models or a path "
                                        "(default: random weights, config below)")
    add_model_args(export, depth=6, max_seq_len=512)
    export.set_defaults(head_dim=64, window_pattern="L")
    export.add_argument("--quantizations", type=lambda text: tuple(q for q in text.split(",") if q),
                        default=("fp32", "int8"),
                        help="comma-separated among fp32,int8,int8-weight-only (default fp32,int8)")
    export.add_argument("--context", type=int, default=384, help="mean context while decoding (default 384)")
    export.add_argument("--steps", type=int, default=32, help="timed decode steps (default 32)")
    export.add_argument("--max-len", type=int, default=None,
                        help="KV cache length of the export (default: --max-seq-len)")
    export.add_argument("--threads", type=int, default=None, help="LiteRT CPU threads (default: all cores)")
    export.set_defaults(run=run_export)
    serve = sub.add_parser("serve", help="the OpenAI-compatible server under 1, 4, 16 concurrent streams: "
                                         "aggregate tok/s, TTFT p50/p95")
    serve.add_argument("--model", help="checkpoint name under <base>/models or a path "
                                       "(default: random weights, config below, and a synthetic tokenizer)")
    add_model_args(serve, depth=6, max_seq_len=512)
    serve.set_defaults(head_dim=64, window_pattern="L")
    serve.add_argument("--concurrency", type=batch_sizes, default=(1, 4, 16),
                       help="comma-separated concurrent streams per level (default 1,4,16)")
    serve.add_argument("--prompt-tokens", type=int, default=128, help="prompt length of each request (default 128)")
    serve.add_argument("--max-tokens", type=int, default=64, help="max_tokens of each request (default 64)")
    serve.add_argument("--requests-per-stream", type=int, default=2,
                       help="requests each stream sends back to back (default 2)")
    serve.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0: greedy)")
    serve.add_argument("--slots", type=int, default=None, help="scheduler rows (default: the largest concurrency)")
    serve.add_argument("--cache-len", type=int, default=None,
                       help="KV cache positions per row (default: the server's, --max-seq-len rounded up to 64)")
    serve.add_argument("--seed", type=int, default=0, help="prompts and per-request seeds (default 0)")
    serve.set_defaults(run=run_serve)
    args = parser.parse_args(argv)
    if getattr(args, "device_batch_size", 1) <= 0 or getattr(args, "steps", 1) <= 0:
        parser.error("--device-batch-size and --steps must be positive")
    try:
        result = args.run(args)
    except (ConfigError, ValueError) as e:
        parser.error(str(e))
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"bench": args.bench, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
