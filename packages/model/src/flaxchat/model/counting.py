"""Parameter and FLOP counts from the config alone (nanochat's definitions)."""

from __future__ import annotations

from flaxchat.model.config import GPTConfig
from flaxchat.model.gpt import SMEAR_CHANNELS, VE_GATE_CHANNELS


def param_counts(config: GPTConfig) -> dict[str, int]:
    """nanochat's num_scaling_params groups: wte, value_embeds, lm_head, transformer_matrices, scalars, total."""
    c, hd, vp = config.n_embd, config.head_dim, config.padded_vocab
    q_dim, kv_dim = config.n_head * hd, config.n_kv_head * hd
    per_layer = c * q_dim + 2 * c * kv_dim + q_dim * c + 2 * 4 * c * c
    ve_layers = len(config.value_embed_layers)
    counts = {
        "wte": vp * c,
        "value_embeds": ve_layers * vp * kv_dim,
        "lm_head": 0 if config.tie_embeddings else vp * c,
        "transformer_matrices": config.n_layer * per_layer + ve_layers * VE_GATE_CHANNELS * config.n_kv_head,
        "scalars": 2 * config.n_layer + SMEAR_CHANNELS + 1 + 1,
    }
    counts["total"] = sum(counts.values())
    return counts


def num_scaling_params(config: GPTConfig) -> int:
    """Parameters that set the token budget: transformer matrices + lm_head."""
    counts = param_counts(config)
    return counts["transformer_matrices"] + counts["lm_head"]


def num_matmul_params(config: GPTConfig) -> int:
    """Weights used in matmuls per token: transformer matrices, the head (tied or not), smear gate."""
    counts = param_counts(config)
    return counts["transformer_matrices"] + config.padded_vocab * config.n_embd + SMEAR_CHANNELS


def _attended(config: GPTConfig, context: int) -> list[int]:
    return [min(w, context) for w in config.window_sizes]


def flops_per_token(config: GPTConfig) -> int:
    """Training FLOPs per token (forward + backward), nanochat's estimate_flops."""
    attn = sum(12 * config.n_head * config.head_dim * w for w in _attended(config, config.sequence_len))
    return 6 * num_matmul_params(config) + attn


def decode_flops_per_token(config: GPTConfig, context: int) -> int:
    attn = sum(4 * config.n_head * config.head_dim * w for w in _attended(config, context))
    return 2 * num_matmul_params(config) + attn


def prefill_flops(config: GPTConfig, num_tokens: int) -> int:
    attn = 0
    for window in config.window_sizes:
        w = min(window, num_tokens)
        attn += 4 * config.n_head * config.head_dim * (w * (w + 1) // 2 + (num_tokens - w) * w)
    return 2 * num_matmul_params(config) * num_tokens + attn


def kv_bytes_per_token(config: GPTConfig, itemsize: int) -> int:
    return config.n_layer * 2 * config.n_kv_head * config.head_dim * itemsize


def kv_read_bytes_per_step(config: GPTConfig, context: int, itemsize: int) -> int:
    return sum(2 * config.n_kv_head * config.head_dim * itemsize * w for w in _attended(config, context))
