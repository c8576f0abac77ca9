"""Serve a chat model: a web UI at / and an OpenAI-compatible API at /v1 (nanochat's chat_web).

Requests are batched continuously: up to --slots conversations decode together in one batch.
With no checkpoint saved yet it serves an embedded tiny model with random weights (and says so).

    uv run apps/chat_web                               # the newest model under <base>/models
    uv run apps/chat_web --model d4-sft --port 8000 --slots 8
    uv run apps/chat_web --embedded                    # the tiny random model, e.g. to try the UI
Then open http://127.0.0.1:8000, or point an OpenAI client at http://127.0.0.1:8000/v1.
"""

from __future__ import annotations

import argparse
import logging
import sys

DTYPES = ("float32", "bfloat16")
EMBEDDED_NAME = "embedded-tiny"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="chat_web", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="checkpoint name under <base>/models, or a path (default: the newest saved model)")
    p.add_argument("--embedded", action="store_true", help="serve the embedded tiny random model, not a checkpoint")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 for every interface (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--slots", type=int, default=16, help="conversations decoded together in one batch (default 16)")
    p.add_argument("--cache-len", type=int, default=None,
                   help="positions per conversation, prompt + reply (default: the model's sequence length)")
    p.add_argument("-t", "--temperature", type=float, default=0.8, help="default temperature, 0 = greedy (default 0.8)")
    p.add_argument("-k", "--top-k", type=int, default=50, help="default top-k, 0 = off (default 50)")
    p.add_argument("-m", "--max-tokens", type=int, default=512, help="default longest reply in tokens (default 512)")
    p.add_argument("--no-tools", action="store_true", help="do not run python blocks in chat replies")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="compute dtype (default float32)")
    p.add_argument("--log-level", choices=("debug", "info", "warning"), default="info")
    args = p.parse_args(argv)
    if args.model and args.embedded:
        p.error("--model and --embedded exclude each other")
    if not 0 <= args.port < 65536:
        p.error("--port must be in [0, 65535]")
    if args.slots < 1 or args.max_tokens < 1 or (args.cache_len is not None and args.cache_len < 2):
        p.error("--slots and --max-tokens must be >= 1, --cache-len >= 2")
    if not 0 <= args.temperature <= 2 or not 0 <= args.top_k <= 200:
        p.error("--temperature must be in [0, 2] and --top-k in [0, 200] (the limits requests have)")
    return args


def embedded_model(seed: int = 0):
    """A tiny GPT with random weights over the default tokenizer if one was trained, else a byte-level one."""
    import numpy as np
    from flax import nnx
    from flaxchat.model import GPT, GPTConfig
    from flaxchat.model.params import assign_params, named_params
    from flaxchat.tokenizer import Tokenizer, TokenizerFileError, tokenizer_dir
    from flaxchat.tokenizer.spec import nanochat_spec

    try:
        tokenizer, which = Tokenizer.load(tokenizer_dir()), f"the default tokenizer ({tokenizer_dir()})"
    except TokenizerFileError:
        tokenizer, which = Tokenizer(nanochat_spec({bytes([i]): i for i in range(256)})), "a byte-level tokenizer"
    config = GPTConfig(sequence_len=512, vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_kv_head=2,
                       n_embd=128, window_pattern="L")
    # Drawn with numpy into an abstract model: no JAX initializer to compile before serving.
    model = nnx.eval_shape(lambda: GPT(config, rngs=nnx.Rngs(seed)))
    rng = np.random.default_rng(seed)
    assign_params(model, {name: rng.normal(0.0, value.shape[0] ** -0.5, value.shape).astype(np.float32)
                          for name, value in named_params(model).items()})
    note = (f"no trained model: this is an embedded tiny model with RANDOM weights over {which}, so its replies "
            "are noise. Train one with `uv run apps/pretrain` and `uv run apps/sft`.")
    return model, tokenizer, note


def load(args):
    """(model, tokenizer, name, note) for the flags."""
    import jax.numpy as jnp
    from flaxchat.infer.cli import newest_checkpoint
    from flaxchat.model.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint

    if not args.embedded:
        try:
            path = resolve_checkpoint(args.model) if args.model else newest_checkpoint()
        except CheckpointError:
            path = None  # nothing saved yet
        if path is not None or args.model:
            model, tokenizer, _ = load_checkpoint(path, dtype=jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32)
            return model, tokenizer, path.name, None
    model, tokenizer, note = embedded_model()
    return model, tokenizer, EMBEDDED_NAME, note


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("flaxchat").setLevel(args.log_level.upper())
    import uvicorn
    from flaxchat.infer.batcher import SchedulerConfig
    from flaxchat.infer.errors import GenerationError
    from flaxchat.infer.server import ServerConfig, create_app
    from flaxchat.model.checkpoint import CheckpointError

    try:
        model, tokenizer, name, note = load(args)
        config = ServerConfig(temperature=args.temperature, top_k=args.top_k, max_tokens=args.max_tokens,
                              tools=not args.no_tools, note=note,
                              scheduler=SchedulerConfig(slots=args.slots, cache_len=args.cache_len))
        app = create_app(model, tokenizer, name, config)
    except (CheckpointError, GenerationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    c = model.config
    print(f"serving {name}: d{c.n_layer}, {c.n_embd} wide, vocab {c.vocab_size}, {args.slots} slots on "
          f"http://{args.host}:{args.port} (compiling first; GET /health turns 200 when ready)", flush=True)
    if note:
        print(f"WARNING: {note}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if args.log_level != "debug" else "info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
