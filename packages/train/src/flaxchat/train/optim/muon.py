"""Muon for 2-D kernels as an optax transformation: nanochat's `muon_step_fused`, step for step.

Nesterov momentum -> (optional bf16) -> MuonEq row equilibration -> Polar Express ->
Muon+ renormalization -> NorMuon variance reduction -> cautious weight decay + update.

nanochat states every rule for PyTorch's (out, in) weight layout; Flax kernels are (in, out).
The math below is written in nanochat's (out, in) orientation and applied to the transposed
kernel, so the tall/wide branch, MuonEq's rows, the NorMuon axis and the shape LR factor all
match nanochat. Buffers are stored in the kernel's Flax layout (the momentum like the kernel,
the NorMuon statistic as (1, out) or (in, 1)) so they shard like the parameter.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from flaxchat.train.optim.schedules import Hyperparams

# Polar Express (Amsel et al. 2025, arXiv:2505.16932): num_iters=5, safety_factor=2e-2, cushion=2.
POLAR_EXPRESS_COEFFS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


class MuonError(ValueError):
    """Muon was given something it cannot optimize (not a 2-D kernel) or called without its inputs."""


class MuonState(NamedTuple):
    momentum: optax.Updates  # Nesterov buffer, shaped like each kernel
    variance: optax.Updates  # NorMuon second moment, (1, out) if out >= in else (in, 1)


def _frobenius(x: jax.Array) -> jax.Array:
    """Frobenius norm over the last two axes, accumulated in fp32, keepdims."""
    x = x.astype(jnp.float32)
    return jnp.sqrt(jnp.sum(jnp.square(x), axis=(-2, -1), keepdims=True))


def row_equilibrate(x: jax.Array) -> jax.Array:
    """MuonEq: scale every row of (out, in) x to the mean row norm (norms in fp32, factor in x's dtype)."""
    x32 = x.astype(jnp.float32)
    target = _frobenius(x32) / math.sqrt(x.shape[-2])
    rows = jnp.maximum(jnp.sqrt(jnp.sum(jnp.square(x32), axis=-1, keepdims=True)), 1e-6)
    return x * (target / rows).astype(x.dtype)


def _scale(s: float, x: jax.Array) -> jax.Array:
    """s * x rounded to x's dtype, with s kept in fp32 (as PyTorch treats Python scalars with bf16 tensors)."""
    return (jnp.float32(s) * x.astype(jnp.float32)).astype(x.dtype)


def polar_express(x: jax.Array, ns_steps: int = 5) -> jax.Array:
    """Pre-normalize (||x||_F * 1.01 + 1e-6), then ns_steps Polar Express iterations in x's dtype.

    Tall (out > in) matrices iterate on the (in, in) Gram matrix, others on (out, out).
    """
    x = x / (_scale(1.01, _frobenius(x).astype(x.dtype)) + 1e-6)
    tall = x.shape[-2] > x.shape[-1]
    for a, b, c in POLAR_EXPRESS_COEFFS[:ns_steps]:
        if tall:
            gram = x.mT @ x
            x = _scale(a, x) + x @ (_scale(b, gram) + _scale(c, gram @ gram))
        else:
            gram = x @ x.mT
            x = _scale(a, x) + (_scale(b, gram) + _scale(c, gram @ gram)) @ x
    return x


def renormalize(g: jax.Array) -> jax.Array:
    """Muon+: snap the Frobenius norm to sqrt(min(out, in)), that of an exactly semi-orthogonal matrix."""
    target = math.sqrt(min(g.shape[-2], g.shape[-1]))
    return g * (target / jnp.maximum(_frobenius(g), 1e-6)).astype(g.dtype)


def variance_axis(out_features: int, in_features: int) -> int:
    """NorMuon's reduction axis in (out, in) orientation: per output row if out >= in, else per input column."""
    return -1 if out_features >= in_features else -2


def normuon(g: jax.Array, variance: jax.Array, beta2) -> tuple[jax.Array, jax.Array]:
    """NorMuon: per-row (or per-column) adaptive scaling that keeps ||g||_F; returns (g, new variance)."""
    axis = variance_axis(*g.shape[-2:])
    size = g.shape[axis]
    v_mean = jnp.mean(jnp.square(g.astype(jnp.float32)), axis=axis, keepdims=True)
    v_norm = jnp.sqrt(jnp.sum(v_mean, axis=(-2, -1), keepdims=True) * size)
    beta2 = jnp.asarray(beta2, variance.dtype)
    variance = beta2 * variance + (1 - beta2) * v_mean.astype(variance.dtype)
    step = jax.lax.rsqrt(jnp.maximum(variance, 1e-10))
    v_norm_new = jnp.sqrt(jnp.sum(v_mean * size * jnp.square(step.astype(jnp.float32)), axis=(-2, -1), keepdims=True))
    scale = step * (v_norm / jnp.maximum(v_norm_new, 1e-10))
    return g * scale.astype(g.dtype), variance


def shape_lr_factor(out_features: int, in_features: int) -> float:
    """sqrt(max(1, out/in)): 2 for the MLP up-projection (4C, C), 1 for square and wide matrices."""
    return max(1.0, out_features / in_features) ** 0.5


def muon_step(
    grad,
    param,
    momentum_buffer,
    variance_buffer,
    *,
    lr,
    momentum,
    weight_decay,
    beta2,
    ns_steps=5,
    compute_dtype=jnp.float32,
):
    """One Muon step for an (out, in) matrix; returns (update to add to param, momentum buffer, variance buffer)."""
    dtype = param.dtype
    momentum = jnp.asarray(momentum, dtype)
    momentum_buffer = momentum * momentum_buffer + (1 - momentum) * grad
    g = (1 - momentum) * grad + momentum * momentum_buffer
    x = polar_express(row_equilibrate(g.astype(compute_dtype)), ns_steps)
    g = renormalize(x.astype(dtype))
    g, variance_buffer = normuon(g, variance_buffer, beta2)
    lr = jnp.asarray(lr, dtype) * shape_lr_factor(*g.shape[-2:])
    weight_decay = jnp.asarray(weight_decay, dtype)
    # Cautious decay: only where the update and the weight agree in sign (zeros included).
    mask = (g * param) >= 0
    update = -(lr * g + lr * weight_decay * param * mask)
    return update, momentum_buffer, variance_buffer


def _variance_shape(kernel_shape: tuple[int, ...]) -> tuple[int, int]:
    in_features, out_features = kernel_shape
    return (1, out_features) if variance_axis(out_features, in_features) == -1 else (in_features, 1)


def muon_optimizer(
    learning_rate: float, weight_decay: float, *, beta2: float = 0.9, ns_steps: int = 5, compute_dtype=jnp.float32
) -> optax.GradientTransformationExtraArgs:
    """Muon over a pytree of 2-D Flax (in, out) kernels.

    `update(grads, state, params, hyperparams=Hyperparams(...))`: the step uses
    lr = learning_rate * lr_multiplier, momentum = muon_momentum and
    weight decay = weight_decay * muon_weight_decay. compute_dtype bfloat16 runs MuonEq and
    Polar Express in bf16, as nanochat does when its compute dtype is bf16.
    """
    if not 1 <= ns_steps <= len(POLAR_EXPRESS_COEFFS):
        raise MuonError(
            f"ns_steps must be in 1..{len(POLAR_EXPRESS_COEFFS)} (one Polar Express coefficient triple per step), "
            f"got {ns_steps}"
        )
    compute_dtype = jnp.dtype(compute_dtype)
    if compute_dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
        raise MuonError(f"Muon's compute dtype must be float32 or bfloat16, got {compute_dtype}")

    def init(params):
        def variance(p):
            if len(p.shape) != 2:
                raise MuonError(f"Muon optimizes 2-D kernels only, got a parameter of shape {tuple(p.shape)}")
            return jnp.zeros(_variance_shape(tuple(p.shape)), p.dtype)

        return MuonState(momentum=optax.tree.zeros_like(params), variance=jax.tree.map(variance, params))

    def update(updates, state, params=None, *, hyperparams: Hyperparams | None = None, **extra_args):
        if params is None or hyperparams is None:
            raise MuonError("Muon's update needs params (for cautious weight decay) and hyperparams=Hyperparams(...)")
        lr = learning_rate * hyperparams.lr_multiplier
        wd = weight_decay * hyperparams.muon_weight_decay
        grads, treedef = jax.tree.flatten(updates)
        kernels, momenta, variances = (treedef.flatten_up_to(t) for t in (params, state.momentum, state.variance))
        new_updates, new_momenta, new_variances = [None] * len(grads), [None] * len(grads), [None] * len(grads)
        # Matrices of one shape are updated as one stack, as nanochat does: fewer, larger matmuls.
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, g in enumerate(grads):
            by_shape.setdefault(tuple(g.shape), []).append(i)
        for indices in by_shape.values():
            # Stack in nanochat's (out, in) orientation: the transpose of each Flax (in, out) kernel.
            g, w, m, v = (
                jnp.stack([jnp.swapaxes(t[i], -1, -2) for i in indices]) for t in (grads, kernels, momenta, variances)
            )
            u, m, v = muon_step(
                g,
                w,
                m,
                v,
                lr=lr,
                momentum=hyperparams.muon_momentum,
                weight_decay=wd,
                beta2=beta2,
                ns_steps=ns_steps,
                compute_dtype=compute_dtype,
            )
            for k, i in enumerate(indices):
                new_updates[i], new_momenta[i], new_variances[i] = (jnp.swapaxes(x[k], -1, -2) for x in (u, m, v))
        return treedef.unflatten(new_updates), MuonState(
            treedef.unflatten(new_momenta), treedef.unflatten(new_variances)
        )

    return optax.GradientTransformationExtraArgs(init, update)
