"""LM head + softcap + cross entropy, fused and chunked over tokens.

The (tokens x vocab) logits are the largest arrays of a training step (2 GiB at 16k tokens and a
32k vocabulary). Materializing them, their softcap and their gradient costs more time in memory
traffic than the head's matmuls. Here the tokens are processed in chunks, and under
differentiation the forward pass also computes the gradients of the hidden states and the head
kernel (the loss is the last op, so dL/dlogits is known as soon as the logits are): the same
three matmuls as plain autodiff, no recomputation, and no logits kept for the backward pass.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

CHUNK_TOKENS = 1024


def _chunks(h, targets, weights, chunk):
    n = h.shape[0]
    pad = -n % chunk
    if pad:
        h = jnp.pad(h, ((0, pad), (0, 0)))
        targets = jnp.pad(targets, (0, pad))
        weights = jnp.pad(weights, (0, pad))
    k = (n + pad) // chunk
    return h.reshape(k, chunk, -1), targets.reshape(k, chunk), weights.reshape(k, chunk)


def _chunk_logits(h, kernel, vocab, cap):
    logits = jnp.dot(h, kernel.astype(h.dtype), preferred_element_type=jnp.float32)[:, :vocab]
    return cap * jnp.tanh(logits / cap)


def _chunk_loss(z, targets):
    lse = jax.nn.logsumexp(z, axis=-1)
    picked = jnp.take_along_axis(z, targets[:, None], axis=-1)[:, 0]
    return lse, lse - picked


@partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def weighted_head_loss(h, kernel, targets, weights, vocab: int, cap: float, chunk: int = CHUNK_TOKENS):
    """sum_i weights[i] * CE(softcap(h[i] @ kernel)[:vocab], targets[i]).

    h (N, C) in the compute dtype, kernel (C, Vp), targets (N,) valid ids (ignored tokens must
    carry weight 0 and any valid id), weights (N,) fp32 (not differentiated).
    """
    return _forward(h, kernel, targets, weights, vocab, cap, chunk)[0]


def _forward(h, kernel, targets, weights, vocab, cap, chunk, with_grads=False):
    hc, tc, wc = _chunks(h, targets, weights, chunk)
    w_vocab = kernel[:, :vocab].astype(h.dtype)

    def body(d_kernel, xs):
        h_i, t_i, w_i, h_i_t = xs
        z = _chunk_logits(h_i, w_vocab, vocab, cap)
        lse, losses = _chunk_loss(z, t_i)
        total = jnp.sum(w_i * losses)
        if not with_grads:
            return d_kernel, (total, None)
        # d(loss)/d(logits): softmax - onehot, through the softcap's derivative 1 - tanh^2.
        probs = jnp.exp(z - lse[:, None])
        onehot = jax.nn.one_hot(t_i, vocab, dtype=jnp.float32)
        d_logits = (w_i[:, None] * (probs - onehot) * (1.0 - jnp.square(z / cap))).astype(h.dtype)
        d_h = jnp.dot(d_logits, w_vocab.T, preferred_element_type=jnp.float32)
        d_kernel = d_kernel + jnp.dot(h_i_t, d_logits, preferred_element_type=jnp.float32)
        return d_kernel, (total, d_h)

    init = jnp.zeros((h.shape[1], vocab), jnp.float32) if with_grads else None
    # The chunks' transposes, made before the loop: XLA's CPU matmul of a stored (C, chunk) array
    # by d_logits runs ~1.4x faster than one contracting both operands' first axis.
    hc_t = jnp.swapaxes(hc, 1, 2) if with_grads else None
    d_kernel, (totals, d_h) = jax.lax.scan(body, init, (hc, tc, wc, hc_t))
    loss = jnp.sum(totals)
    if not with_grads:
        return loss, None
    d_h = d_h.reshape(-1, h.shape[1])[: h.shape[0]].astype(h.dtype)
    d_kernel = jnp.pad(d_kernel, ((0, 0), (0, kernel.shape[1] - vocab))).astype(kernel.dtype)
    return loss, (d_h, d_kernel, targets, weights)


def _fwd(h, kernel, targets, weights, vocab, cap, chunk):
    return _forward(h, kernel, targets, weights, vocab, cap, chunk, with_grads=True)


def _bwd(vocab, cap, chunk, residuals, g):
    d_h, d_kernel, targets, weights = residuals
    targets_ct = jnp.zeros(targets.shape, jax.dtypes.float0)
    return (g * d_h).astype(d_h.dtype), (g * d_kernel).astype(d_kernel.dtype), targets_ct, jnp.zeros_like(weights)


weighted_head_loss.defvjp(_fwd, _bwd)
