"""Per-step hyperparameter schedules: nanochat's base_train, chat_sft and chat_rl rules.

A schedule is a function `(step, progress) -> value` of the optimizer's own step count (an
int32 array read from the optimizer state, so changing values never retrace a jitted
update) and of an optional training progress in [0, 1] that the caller passes to
`tx.update(..., progress=p)` (SFT stops when its data runs out, so its LR follows progress,
not steps). Static settings (iteration counts, ratios) are baked in as Python constants.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

ScheduleFn = Callable[[jax.Array, "jax.Array | None"], jax.Array]


class ScheduleError(ValueError):
    """A schedule was configured or evaluated with invalid inputs."""


class Hyperparams(NamedTuple):
    """Schedule values at one step, handed to every parameter group's transformation."""

    lr_multiplier: jax.Array  # multiplies every group's learning rate
    muon_momentum: jax.Array  # Nesterov momentum of the Muon groups
    muon_weight_decay: jax.Array  # multiplies OptimizerConfig.weight_decay (Muon groups only)


@dataclasses.dataclass(frozen=True)
class Schedules:
    lr_multiplier: ScheduleFn
    muon_momentum: ScheduleFn
    muon_weight_decay: ScheduleFn

    def at(self, step, progress=None) -> Hyperparams:
        step = jnp.asarray(step, jnp.int32)
        progress = None if progress is None else jnp.asarray(progress, jnp.float32)
        return Hyperparams(
            *(
                jnp.asarray(fn(step, progress), jnp.float32)
                for fn in (self.lr_multiplier, self.muon_momentum, self.muon_weight_decay)
            )
        )


def constant(value: float) -> ScheduleFn:
    return lambda step, progress: jnp.full((), value, jnp.float32)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ScheduleError(message)


def warmdown_steps(num_iterations: int, warmdown_ratio: float) -> int:
    """base_train's warmdown length: Python round (half-to-even) of ratio * N."""
    return round(warmdown_ratio * num_iterations)


def pretrain_lr_multiplier(
    num_iterations: int, warmup_steps: int = 40, warmdown_ratio: float = 0.65, final_lr_frac: float = 0.05
) -> ScheduleFn:
    """Linear warmup to 1 over warmup_steps, constant, linear warmdown to final_lr_frac at step N."""
    _check(num_iterations > 0, f"num_iterations must be positive, got {num_iterations}")
    _check(warmup_steps >= 0, f"warmup_steps must be >= 0, got {warmup_steps}")
    _check(0.0 <= warmdown_ratio <= 1.0, f"warmdown_ratio must be in [0, 1], got {warmdown_ratio}")
    warmdown = warmdown_steps(num_iterations, warmdown_ratio)

    def lr_multiplier(step, progress):
        it = step.astype(jnp.float32)
        lrm = jnp.ones((), jnp.float32)
        if warmdown > 0:
            p = (num_iterations - it) / warmdown
            lrm = jnp.where(step <= num_iterations - warmdown, lrm, p * 1.0 + (1 - p) * final_lr_frac)
        if warmup_steps > 0:  # checked last so that it wins, as in nanochat's if/elif chain
            lrm = jnp.where(step < warmup_steps, (it + 1) / warmup_steps, lrm)
        return lrm

    return lr_multiplier


def pretrain_muon_momentum(num_iterations: int, warmdown_ratio: float = 0.65) -> ScheduleFn:
    """0.85 -> 0.97 over the first 400 steps, then 0.97 -> 0.90 across the LR warmdown; the warmup rule wins."""
    _check(num_iterations > 0, f"num_iterations must be positive, got {num_iterations}")
    _check(0.0 <= warmdown_ratio <= 1.0, f"warmdown_ratio must be in [0, 1], got {warmdown_ratio}")
    warmdown = warmdown_steps(num_iterations, warmdown_ratio)
    warmdown_start = num_iterations - warmdown

    def muon_momentum(step, progress):
        it = step.astype(jnp.float32)
        frac = it / 400
        momentum = jnp.full((), 0.97, jnp.float32)
        if warmdown > 0:
            p = (it - warmdown_start) / warmdown
            momentum = jnp.where(step >= warmdown_start, 0.97 * (1 - p) + 0.90 * p, momentum)
        return jnp.where(step < 400, (1 - frac) * 0.85 + frac * 0.97, momentum)

    return muon_momentum


def pretrain_muon_weight_decay(num_iterations: int) -> ScheduleFn:
    """Cosine from 1 at step 0 to 0 at step N (multiplies the scaled Muon weight decay)."""
    _check(num_iterations > 0, f"num_iterations must be positive, got {num_iterations}")

    def muon_weight_decay(step, progress):
        # 0.5 * (1 + cos(pi*t/N)) written as sin^2(pi*(N-t)/(2N)): the same value, without fp32
        # cancellation near t = N (N - t is exact), so it stays as accurate as nanochat's doubles.
        remaining = (num_iterations - step).astype(jnp.float32)
        return jnp.square(jnp.sin(jnp.pi * remaining / (2 * num_iterations)))

    return muon_weight_decay


def pretrain_schedules(
    num_iterations: int, warmup_steps: int = 40, warmdown_ratio: float = 0.65, final_lr_frac: float = 0.05
) -> Schedules:
    """nanochat base_train: steps 0..N-1 each take one optimizer update."""
    return Schedules(
        lr_multiplier=pretrain_lr_multiplier(num_iterations, warmup_steps, warmdown_ratio, final_lr_frac),
        muon_momentum=pretrain_muon_momentum(num_iterations, warmdown_ratio),
        muon_weight_decay=pretrain_muon_weight_decay(num_iterations),
    )


def _require_progress(progress):
    if progress is None:
        raise ScheduleError(
            "this learning-rate schedule follows training progress: "
            "call tx.update(grads, state, params, progress=p) with p in [0, 1]"
        )
    return progress


def sft_schedules(
    init_lr_frac: float = 0.8, warmup_ratio: float = 0.0, warmdown_ratio: float = 0.5, final_lr_frac: float = 0.0
) -> Schedules:
    """nanochat chat_sft: LR by progress (x init_lr_frac), momentum 0.85 -> 0.95 over 300 steps, constant weight decay.

    The Muon weight decay is whatever OptimizerConfig.weight_decay says (nanochat: 0.0, or the
    last pretraining value when the base optimizer state is loaded).
    """
    _check(
        0.0 <= warmup_ratio <= 1.0 and 0.0 <= warmdown_ratio <= 1.0,
        f"warmup_ratio and warmdown_ratio must be in [0, 1], got {warmup_ratio}, {warmdown_ratio}",
    )

    def lr_multiplier(step, progress):
        p = _require_progress(progress)
        lrm = jnp.ones((), jnp.float32)
        if warmdown_ratio > 0:
            decay = (p - (1.0 - warmdown_ratio)) / warmdown_ratio
            lrm = jnp.where(p <= 1.0 - warmdown_ratio, lrm, (1 - decay) * 1.0 + decay * final_lr_frac)
        if warmup_ratio > 0:
            lrm = jnp.where(p < warmup_ratio, (p + 1e-8) / warmup_ratio, lrm)
        return init_lr_frac * lrm

    def muon_momentum(step, progress):
        frac = jnp.minimum(step.astype(jnp.float32) / 300, 1.0)
        return (1 - frac) * 0.85 + frac * 0.95

    return Schedules(lr_multiplier=lr_multiplier, muon_momentum=muon_momentum, muon_weight_decay=constant(1.0))


def rl_schedules(num_steps: int, init_lr_frac: float = 0.05) -> Schedules:
    """nanochat chat_rl: LR x init_lr_frac x (1 - step/num_steps), Muon momentum fixed at 0.95, constant decay."""
    _check(num_steps > 0, f"num_steps must be positive, got {num_steps}")

    def lr_multiplier(step, progress):
        # (N - t) / N rather than 1 - t/N: exact numerator, no fp32 cancellation near the end.
        return init_lr_frac * ((num_steps - step).astype(jnp.float32) / num_steps)

    return Schedules(lr_multiplier=lr_multiplier, muon_momentum=constant(0.95), muon_weight_decay=constant(1.0))
