"""The train step's passes: splitting a device batch into smaller forward/backward passes gives the
same losses and update as one pass, with each micro-step's loss normalized over its whole batch."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxchat.model import GPT, GPTConfig
from flaxchat.train import mesh as meshlib
from flaxchat.train.optim import OptimizerConfig, build_optimizer, pretrain_schedules
from flaxchat.train.step import _rows_per_pass, _split_passes, setup_training

# 3 layers: with 2 the backout is taken after the last layer, where the final norm makes its gradient 0.
CONFIG = GPTConfig(sequence_len=16, vocab_size=64, n_layer=3, n_head=2, n_kv_head=2, n_embd=32, window_pattern="L")


def test_rows_per_pass_is_the_largest_fitting_divisor():
    assert _rows_per_pass(32, 512, 4096) == 8
    assert _rows_per_pass(12, 512, 4096) == 6  # 8 does not divide 12
    assert _rows_per_pass(7, 512, 4096) == 7
    assert _rows_per_pass(4, 2048, 1024) == 1  # a row longer than a pass still runs, alone
    assert _rows_per_pass(32, 512, None) == 32


def test_split_passes_interleaves_rows():
    x = np.arange(2 * 6).reshape(2, 6)
    np.testing.assert_array_equal(_split_passes(jnp.asarray(x), 3), [[0, 3], [1, 4], [2, 5], [6, 9], [7, 10], [8, 11]])


def _model():
    """Every parameter random: at init the zero projections give the scalars ~0 gradients, which
    Adam would turn into +-lr steps of rounding noise."""
    model = GPT(CONFIG, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    leaves, treedef = jax.tree.flatten(state)
    rng = np.random.default_rng(1)
    leaves = [leaf + 0.1 * rng.standard_normal(leaf.shape).astype(np.float32) for leaf in leaves]
    return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))


def _step(pass_tokens, inputs, targets):
    model = _model()
    tx = build_optimizer(nnx.state(model), CONFIG, OptimizerConfig(), pretrain_schedules(10))
    setup = setup_training(model, tx, meshlib.make_mesh(None, 1), pass_tokens=pass_tokens)
    params, _, losses = setup.step(setup.params, setup.opt_state, inputs, targets, jnp.float32(0.0))
    return np.asarray(losses), jax.tree.map(np.asarray, params)


def test_passes_equal_one_pass_with_ignored_targets():
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, 64, (2, 8, 16)).astype(np.int32)
    targets = rng.integers(0, 64, (2, 8, 16)).astype(np.int32)
    targets[0, :3, 4:] = -1  # the passes of micro-step 0 hold very different numbers of valid targets
    targets[1, 5, :] = -1
    whole_losses, whole = _step(None, inputs, targets)
    split_losses, split = _step(32, inputs, targets)  # 2 rows per pass: 4 passes per micro-step
    np.testing.assert_allclose(split_losses, whole_losses, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(split), jax.tree.leaves(whole)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # and the losses are the micro-steps' means over their valid targets
    graphdef, state = nnx.split(_model())
    mean_loss = jax.jit(lambda s, x, y: nnx.merge(graphdef, s)(x, y))
    np.testing.assert_allclose(whole_losses, [mean_loss(state, inputs[i], targets[i]) for i in range(2)], rtol=1e-6)
