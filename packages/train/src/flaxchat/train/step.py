"""The jitted training step: gradient accumulation over micro-batches, then one optimizer update."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx

IGNORE_INDEX = -1


def group_mean_weights(targets: jax.Array, groups: int) -> jax.Array:
    """Per-token loss weights: the mean over each group's valid targets, groups weighted equally.

    This is nanochat's averaging (each rank's micro-batch loss is a mean over its own valid
    tokens; ranks are averaged with equal weight). Without ignored targets it is the plain mean.
    """
    valid = (targets != IGNORE_INDEX).astype(jnp.float32)
    b = targets.shape[0]
    if b % groups:
        raise ValueError(f"batch of {b} rows does not split into {groups} loss groups")
    per_group = valid.reshape(groups, b // groups, -1)
    counts = per_group.sum(axis=(1, 2), keepdims=True)
    return (per_group / jnp.maximum(counts, 1.0) / groups).reshape(valid.shape)


def default_pass_tokens() -> int | None:
    """Tokens per device per forward/backward pass: 4096 on CPU, where larger passes run slower
    (their activations no longer fit the caches: 32 x 512 tokens at once measured ~1.4x slower
    per token than 8 x 512); None (the whole device batch at once) on accelerators."""
    return 4096 if jax.default_backend() == "cpu" else None


def _rows_per_pass(rows_per_device: int, seq_len: int, pass_tokens: int | None) -> int:
    """The largest divisor of the device batch whose passes hold at most pass_tokens tokens (at least 1 row)."""
    if pass_tokens is None:
        return rows_per_device
    fitting = [d for d in range(1, rows_per_device + 1) if rows_per_device % d == 0 and d * seq_len <= pass_tokens]
    return max(fitting, default=1)


def _split_passes(x, passes: int):
    """(micro, rows, ...) -> (micro * passes, rows / passes, ...): pass j takes rows j, j + passes, ...

    Interleaved rows keep every pass spread over all devices of the data axis (a contiguous
    split would give each pass to a few devices).
    """
    micro, rows = x.shape[:2]
    x = x.reshape(micro, rows // passes, passes, *x.shape[2:])
    return jnp.swapaxes(x, 1, 2).reshape(micro * passes, rows // passes, *x.shape[3:])


def make_train_step(graphdef, tx: optax.GradientTransformation, *, loss_groups: int = 1,
                    pass_tokens: int | None = None, out_shardings=None):
    """step(params, opt_state, inputs, targets, progress) -> (params, opt_state, losses).

    inputs/targets are (micro_steps, rows, T); the gradient is the mean of the micro-steps'
    gradients; losses (micro_steps,) are the micro-steps' losses. Each micro-step's loss weights
    are computed over its whole batch first; the batch is then run in passes of at most
    pass_tokens tokens per device (None: one pass), whose gradients add up to the same result.
    params and opt_state are donated: their buffers are reused for the updated values.
    """

    def pass_loss(params, inputs, targets, weights):
        return nnx.merge(graphdef, params).weighted_loss(inputs, targets, weights)

    grad_fn = jax.value_and_grad(pass_loss)

    def step(params, opt_state, inputs, targets, progress):
        micro_steps, rows, seq_len = inputs.shape
        weights = jax.vmap(lambda y: group_mean_weights(y, loss_groups))(targets)
        passes = (rows // loss_groups) // _rows_per_pass(rows // loss_groups, seq_len, pass_tokens)
        batches = tuple(_split_passes(x, passes) for x in (inputs, targets, weights))
        if micro_steps * passes == 1:
            loss, grads = grad_fn(params, *(x[0] for x in batches))
            losses = loss[None]
        else:
            def accumulate(total, batch):
                loss, grads = grad_fn(params, *batch)
                return jax.tree.map(jnp.add, total, grads), loss

            zeros = jax.tree.map(jnp.zeros_like, params)
            grads, pass_losses = jax.lax.scan(accumulate, zeros, batches)
            grads = jax.tree.map(lambda g: g / micro_steps, grads)
            losses = pass_losses.reshape(micro_steps, passes).sum(axis=1)
        updates, opt_state = tx.update(grads, opt_state, params, progress=progress)
        return optax.apply_updates(params, updates), opt_state, losses

    return jax.jit(step, donate_argnums=(0, 1), out_shardings=out_shardings)


@dataclasses.dataclass
class TrainSetup:
    """A sharded model + optimizer ready to step: what pretraining, SFT and the bench share."""

    graphdef: object
    params: object
    opt_state: object
    param_shardings: object
    opt_shardings: object
    step: object  # the jitted make_train_step function


def setup_training(model, tx: optax.GradientTransformation, mesh, *, pass_tokens: int | None | str = "auto") -> TrainSetup:
    """Place the model's parameters by the mesh's logical rules, init the optimizer, jit the step.

    pass_tokens: tokens per device per forward/backward pass ("auto": default_pass_tokens()).
    """
    if pass_tokens == "auto":
        pass_tokens = default_pass_tokens()
    from flaxchat.train import mesh as meshlib

    graphdef, params = nnx.split(model)
    param_shardings = meshlib.param_shardings(params, mesh)
    params = jax.device_put(params, param_shardings)
    # The optimizer state shards like the parameters (FSDP splits the moments too). Without explicit
    # out_shardings jit would put it on one device: it does not depend on the parameters' values.
    opt_shardings = meshlib.state_shardings(jax.eval_shape(tx.init, params), params, mesh)
    opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
    step = make_train_step(graphdef, tx, loss_groups=mesh.devices.size, pass_tokens=pass_tokens,
                           out_shardings=(param_shardings, opt_shardings, meshlib.replicated(mesh)))
    return TrainSetup(graphdef, params, opt_state, param_shardings, opt_shardings, step)
