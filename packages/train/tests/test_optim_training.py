"""The optimizer in a pure functional, jitted training step on the real GPT."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from flaxchat.model import GPT, GPTConfig
from flaxchat.train.optim import (
    OptimizerConfig,
    OptimizerUsageError,
    ScheduleError,
    build_optimizer,
    param_names,
    pretrain_schedules,
    restart_schedules,
    sft_schedules,
)

CONFIG = GPTConfig(sequence_len=16, vocab_size=64, n_layer=2, n_head=2, n_kv_head=2, n_embd=32)


def split_model():
    graphdef, params, rest = nnx.split(GPT(CONFIG, rngs=nnx.Rngs(0)), nnx.Param, ...)
    return graphdef, params, rest


def test_jitted_training_step_decreases_loss_and_compiles_once():
    graphdef, params, rest = split_model()
    tx = build_optimizer(params, CONFIG, OptimizerConfig(), pretrain_schedules(20, warmup_steps=2))
    opt_state = tx.init(params)
    tokens = jax.random.randint(jax.random.key(1), (4, 17), 0, CONFIG.vocab_size)
    traces = []

    def loss_fn(params):
        return nnx.merge(graphdef, params, rest)(tokens[:, :-1], tokens[:, 1:])

    @jax.jit
    def train_step(params, opt_state):
        traces.append(1)  # runs only while tracing
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for _ in range(20):
        params, opt_state, loss = train_step(params, opt_state)
        losses.append(float(loss))
    assert len(traces) == 1  # the schedules read the step from the state: no retracing
    assert int(opt_state.step) == 20
    assert losses[-1] < 0.5 * losses[0], losses
    assert type(params) is nnx.State and all(np.isfinite(np.asarray(v)).all() for v in param_names(params).values())


def test_sft_progress_drives_the_learning_rate():
    _, params, _ = split_model()
    tx = build_optimizer(params, CONFIG, OptimizerConfig(weight_decay=0.0), sft_schedules())
    opt_state = tx.init(params)
    grads = jax.tree.map(lambda p: jnp.ones_like(p), params)
    with pytest.raises(ScheduleError, match="progress"):
        jax.eval_shape(tx.update, grads, opt_state, params)
    update = jax.jit(lambda g, s, p, progress: tx.update(g, s, p, progress=progress))
    live, _ = update(grads, opt_state, params, 0.5)
    done, _ = update(grads, opt_state, params, 1.0)  # SFT's LR reaches 0 at the end of the data
    assert all(np.abs(np.asarray(u)).max() > 0 for u in param_names(live).values())
    assert all(np.all(np.asarray(u) == 0) for u in param_names(done).values())


def test_restart_schedules_keeps_moments():
    _, params, _ = split_model()
    tx = build_optimizer(params, CONFIG, OptimizerConfig(), pretrain_schedules(10))
    state = tx.init(params)._replace(step=jnp.int32(7))
    restarted = restart_schedules(state)
    assert int(restarted.step) == 0
    assert jax.tree.structure(restarted) == jax.tree.structure(state)
    leaves = zip(jax.tree.leaves(restarted.groups), jax.tree.leaves(state.groups), strict=True)
    assert all(a is b for a, b in leaves)


def test_update_needs_params():
    _, params, _ = split_model()
    tx = build_optimizer(params, CONFIG, OptimizerConfig(), pretrain_schedules(10))
    with pytest.raises(OptimizerUsageError, match="needs params"):
        tx.update(params, tx.init(params))
