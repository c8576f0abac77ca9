"""nanochat's scaling rules (base_train): token budget, batch size, LR and weight-decay scaling, iterations.

Reference point: a d12 model built with the same flags, trained on D_REF tokens with batch
B_REF. Scaling parameters are transformer matrices + lm_head
(`flaxchat.model.counting.num_scaling_params`).
"""

from __future__ import annotations

import math

B_REF = 2**19  # tokens per step at the d12 reference


class ScalingError(ValueError):
    """Inconsistent scaling inputs (no training horizon, non-positive sizes)."""


def target_tokens(num_scaling_params: int, param_data_ratio: float) -> int:
    """Token budget of the model being trained: int(ratio * scaling params)."""
    return int(param_data_ratio * num_scaling_params)


def reference_tokens(reference_scaling_params: int, param_data_ratio: float) -> float:
    """D_REF: the d12 reference's horizon (kept a float, as nanochat does)."""
    return param_data_ratio * reference_scaling_params


def auto_total_batch_size(tokens: int, d_ref: float) -> int:
    """Power-lines batch size B_REF * (D/D_REF)^0.383, rounded to a power of two (Python round: half-to-even)."""
    if tokens <= 0 or d_ref <= 0:
        raise ScalingError(f"token budgets must be positive, got target {tokens} and reference {d_ref}")
    return 2 ** round(math.log2(B_REF * (tokens / d_ref) ** 0.383))


def batch_lr_scale(total_batch_size: int) -> float:
    """sqrt(B / B_REF); applied to the embedding, unembedding, scalar and matrix learning rates."""
    if total_batch_size <= 0:
        raise ScalingError(f"total_batch_size must be positive, got {total_batch_size}")
    ratio = total_batch_size / B_REF
    return 1.0 if ratio == 1.0 else ratio**0.5


def scaled_weight_decay(weight_decay: float, total_batch_size: int, tokens: int, d_ref: float) -> float:
    """Muon weight decay keeping T_epoch = B/(lr*wd*D) constant: wd * sqrt(B/B_REF) * D_REF/D."""
    if tokens <= 0:
        raise ScalingError(f"the token budget must be positive to scale weight decay, got {tokens}")
    return weight_decay * math.sqrt(total_batch_size / B_REF) * (d_ref / tokens)


def training_iterations(
    total_batch_size: int, *, tokens: int, flops_per_token: int, num_iterations: int = -1, target_flops: float = -1.0
) -> int:
    """First rule that applies: explicit num_iterations > 0; target_flops > 0; else tokens // B."""
    if num_iterations > 0:
        return num_iterations
    if target_flops > 0:
        return round(target_flops / (flops_per_token * total_batch_size))
    if tokens > 0:
        return tokens // total_batch_size
    raise ScalingError("no training horizon: give num_iterations > 0, target_flops > 0 or a positive param-data ratio")
