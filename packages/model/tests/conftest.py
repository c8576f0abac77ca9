import jax
import numpy as np
import pytest
from flax import nnx

from flaxchat.model import GPT, GPTConfig
from flaxchat.model.params import assign_params, named_params


def randomize(model: GPT, seed: int = 0, scale: float = 0.1) -> GPT:
    """Give every parameter (zero-initialized projections and gates included) random values."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, value in named_params(model).items():
        value = np.asarray(value)
        arrays[name] = (value + scale * rng.standard_normal(value.shape)).astype(np.float32)
    assign_params(model, arrays)
    return model


@pytest.fixture
def small_config():
    # Sequence 256 -> short window 128; 3 layers "S" -> windows (128, 128, 256); VE on layers 0 and 2;
    # GQA with 4 query heads over 2 kv heads; vocab 100 padded to 128.
    return GPTConfig(sequence_len=256, vocab_size=100, n_layer=3, n_head=4, n_kv_head=2, n_embd=64, window_pattern="S")


@pytest.fixture
def small_model(small_config):
    return randomize(GPT(small_config, rngs=nnx.Rngs(0)))


@pytest.fixture
def tokens():
    return jax.random.randint(jax.random.key(7), (2, 200), 0, 100)


def _jitted(model: GPT, method: str = "__call__", **static):
    """A jitted, pure version of model.method(*args) (eager op-by-op dispatch is slow on CPU)."""
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda state, *args: getattr(nnx.merge(graphdef, state), method)(*args, **static))
    return lambda *args: fn(state, *args)


@pytest.fixture
def jitted():
    return _jitted
