"""Bits per byte, nanochat's definition: nats of targets that are real text over their UTF-8 bytes.

Targets with 0 bytes (special tokens such as <|bos|>) and ignored targets (-1) count neither
in the numerator nor in the denominator, so the number is comparable across tokenizers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def bpb_sums(model, inputs, targets, token_bytes):
    """(total nats, total bytes) for one batch; jittable. token_bytes: (vocab,) int32."""
    nbytes = jnp.where(targets >= 0, token_bytes[jnp.maximum(targets, 0)], 0)
    nats = model.weighted_loss(inputs, targets, (nbytes > 0).astype(jnp.float32))
    return nats, jnp.sum(nbytes)


def make_bpb_step(model):
    """A jitted (inputs, targets, token_bytes) -> (nats, bytes) over the model's current weights."""
    graphdef, state = nnx.split(model)
    step = jax.jit(lambda state, x, y, tb: bpb_sums(nnx.merge(graphdef, state), x, y, tb))
    return lambda x, y, tb: step(state, x, y, tb)


def evaluate_bpb(model, batches: Iterable[tuple[np.ndarray, np.ndarray]], steps: int, token_bytes) -> float:
    """Bits per byte over `steps` batches of (inputs, targets); inf when no byte was seen."""
    step = make_bpb_step(model)
    token_bytes = jnp.asarray(token_bytes, jnp.int32)
    total_nats, total_bytes = 0.0, 0
    for _, (inputs, targets) in zip(range(steps), batches):
        nats, nbytes = step(jnp.asarray(inputs), jnp.asarray(targets), token_bytes)
        total_nats += float(nats)
        total_bytes += int(nbytes)
    return total_nats / (math.log(2) * total_bytes) if total_bytes else float("inf")
