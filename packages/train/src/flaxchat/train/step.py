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


def make_train_step(graphdef, tx: optax.GradientTransformation, *, loss_groups: int = 1, out_shardings=None):
    """step(params, opt_state, inputs, targets, progress) -> (params, opt_state, losses).

    inputs/targets are (micro_steps, rows, T); the gradient is the mean of the micro-steps'
    gradients; losses (micro_steps,) are the micro-steps' losses. params and opt_state are
    donated: their buffers are reused for the updated values.
    """

    def micro_loss(params, inputs, targets):
        model = nnx.merge(graphdef, params)
        return model.weighted_loss(inputs, targets, group_mean_weights(targets, loss_groups))

    grad_fn = jax.value_and_grad(micro_loss)

    def step(params, opt_state, inputs, targets, progress):
        micro_steps = inputs.shape[0]
        if micro_steps == 1:
            loss, grads = grad_fn(params, inputs[0], targets[0])
            losses = loss[None]
        else:
            def accumulate(total, batch):
                loss, grads = grad_fn(params, *batch)
                return jax.tree.map(jnp.add, total, grads), loss

            zeros = jax.tree.map(jnp.zeros_like, params)
            grads, losses = jax.lax.scan(accumulate, zeros, (inputs, targets))
            grads = jax.tree.map(lambda g: g / micro_steps, grads)
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


def setup_training(model, tx: optax.GradientTransformation, mesh) -> TrainSetup:
    """Place the model's parameters by the mesh's logical rules, init the optimizer, jit the step."""
    from flaxchat.train import mesh as meshlib

    graphdef, params = nnx.split(model)
    param_shardings = meshlib.param_shardings(params, mesh)
    params = jax.device_put(params, param_shardings)
    # The optimizer state shards like the parameters (FSDP splits the moments too). Without explicit
    # out_shardings jit would put it on one device: it does not depend on the parameters' values.
    opt_shardings = meshlib.state_shardings(jax.eval_shape(tx.init, params), params, mesh)
    opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
    step = make_train_step(graphdef, tx, loss_groups=mesh.devices.size,
                           out_shardings=(param_shardings, opt_shardings, meshlib.replicated(mesh)))
    return TrainSetup(graphdef, params, opt_state, param_shardings, opt_shardings, step)
