"""Jitted scoring forwards shared by CORE and chat evaluation.

Each is compiled once per model structure and shape bucket: sequences are right-padded to a
bucketed length and batches to a bucketed row count, so a whole evaluation compiles a handful
of times. Only the positions that are scored go through the head, so no (rows, T, vocab)
logits are ever built for long few-shot prompts.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxchat.model.gpt import IGNORE_INDEX


def bucket(n: int, minimum: int = 16, step: int = 512) -> int:
    """A power of two >= n (and >= minimum) up to `step`, then a multiple of `step`."""
    if n <= step:
        return max(minimum, 1 << max(n - 1, 0).bit_length())
    return -(-n // step) * step


def right_padded(sequences: Sequence[Sequence[int]], rows: int, length: int, pad: int) -> np.ndarray:
    out = np.full((rows, length), pad, np.int32)
    for i, seq in enumerate(sequences):
        out[i, : len(seq)] = seq
    return out


def _logits_at(model, ids, positions):
    """ids (B, T), positions (B, P) -> fp32 softcapped logits (B, P, vocab) at those positions."""
    h = model.hidden(ids)
    return model.head(jnp.take_along_axis(h, positions[..., None], axis=1))


def _token_scores(model, ids, positions, targets):
    """Cross entropy and argmax of the prediction made at each position, against `targets`."""
    logits = _logits_at(model, ids, positions)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return jax.nn.logsumexp(logits, axis=-1) - picked, jnp.argmax(logits, axis=-1).astype(jnp.int32)


def _loss_sum(model, inputs, targets):
    return model.weighted_loss(inputs, targets, (targets != IGNORE_INDEX).astype(jnp.float32))


@functools.cache
def _compiled(graphdef):
    def bind(fn):
        return jax.jit(lambda state, *args: fn(nnx.merge(graphdef, state), *args))

    return bind(_logits_at), bind(_token_scores), bind(_loss_sum)


class Scorer:
    """The scoring forwards of one model (its weights as they are now)."""

    def __init__(self, model):
        graphdef, self._state = nnx.split(model)
        self._logits_at, self._token_scores, self._loss_sum = _compiled(graphdef)

    def logits_at(self, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        return np.asarray(self._logits_at(self._state, ids, positions))

    def token_scores(self, ids: np.ndarray, positions: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        losses, predictions = self._token_scores(self._state, ids, positions, targets)
        return np.asarray(losses), np.asarray(predictions)

    def loss_sum(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        """Summed cross entropy over targets != -1."""
        return float(self._loss_sum(self._state, inputs, targets))
