"""Model flags shared by the apps: a config file plus kebab-case overrides, or nanochat's depth sizing."""

from __future__ import annotations

import argparse

import jax.numpy as jnp

from flaxchat.model.config import MLP_KINDS, GPTConfig

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def add_model_args(parser: argparse.ArgumentParser, *, depth: int = 4, max_seq_len: int = 512) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model-config", metavar="FILE", help="GPTConfig as .json/.yaml; the flags below override it")
    group.add_argument("--depth", type=int, default=None, help=f"number of layers; sets the width (default {depth})")
    group.add_argument("--aspect-ratio", type=int, default=64, help="width = depth * aspect ratio (default 64)")
    group.add_argument("--head-dim", type=int, default=128, help="attention head size (default 128)")
    group.add_argument("--max-seq-len", type=int, default=None, help=f"context length (default {max_seq_len})")
    group.add_argument("--window-pattern", default=None, help="sliding windows, tiled over layers (default SSSL)")
    group.add_argument("--vocab-size", type=int, default=None, help="vocabulary size (default: the tokenizer's)")
    group.add_argument("--mlp", choices=MLP_KINDS, default=None, help="MLP activation (default relu2)")
    group.add_argument("--tie-embeddings", action="store_true", default=None, help="share wte with the LM head")
    group.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="compute dtype (weights stay fp32)")
    group.add_argument("--remat", action="store_true", help="recompute each block's activations in the backward pass")
    parser.set_defaults(_default_depth=depth, _default_seq_len=max_seq_len)


def config_from_args(args: argparse.Namespace, vocab_size: int | None = None) -> GPTConfig:
    """A file config (if given) with explicit flags on top; otherwise from_depth with the flags."""
    overrides = {
        "mlp": args.mlp,
        "tie_embeddings": args.tie_embeddings,
        "vocab_size": args.vocab_size or vocab_size,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.model_config:
        config = GPTConfig.load(args.model_config)
        if args.max_seq_len is not None:
            overrides["sequence_len"] = args.max_seq_len
        if args.window_pattern is not None:
            overrides["window_pattern"] = args.window_pattern
        if args.depth is not None:
            sized = GPTConfig.from_depth(args.depth, args.aspect_ratio, args.head_dim)
            overrides |= {k: getattr(sized, k) for k in ("n_layer", "n_head", "n_kv_head", "n_embd")}
        return config.replace(**overrides)
    return GPTConfig.from_depth(
        args.depth if args.depth is not None else args._default_depth,
        aspect_ratio=args.aspect_ratio,
        head_dim=args.head_dim,
        max_seq_len=args.max_seq_len if args.max_seq_len is not None else args._default_seq_len,
        window_pattern=args.window_pattern or "SSSL",
        **overrides,
    )


def dtype_from_args(args: argparse.Namespace):
    return DTYPES[args.dtype]
