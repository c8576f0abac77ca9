"""Shared fixtures for the Engine tests: a byte-level tokenizer, tiny random GPTs, scripted GPTs.

Fixtures are session-scoped and share model structures, and the tests use num_samples=3
almost everywhere, so each jitted function compiles once per prompt bucket for the whole run
(the Engine caches compilations per model structure and shape).
"""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flaxchat.infer.engine import Engine
from flaxchat.model import GPT, GPTConfig
from flaxchat.model.params import assign_params, named_params
from flaxchat.tokenizer import Tokenizer
from flaxchat.tokenizer.spec import nanochat_spec

NEVER = -30.0  # logit of tokens a scripted model does not emit
SCRIPT_LEN = 96  # scripts are padded to one length, so all scripted models share compilations


def byte_tokenizer() -> Tokenizer:
    """256 byte tokens + the 9 specials (ids 256..264); needs no training."""
    return Tokenizer(nanochat_spec({bytes([i]): i for i in range(256)}))


def tiny_config(**overrides) -> GPTConfig:
    base = dict(sequence_len=128, vocab_size=265, n_layer=2, n_head=2, n_kv_head=1, n_embd=32, window_pattern="SL")
    return GPTConfig(**{**base, **overrides})


def random_gpt(config: GPTConfig, seed: int, cls=GPT, scale: float = 0.3, smear: float = 1.0, **kwargs) -> GPT:
    """A GPT with every parameter random (zero-initialized projections included) and a strong smear,
    so a wrong previous embedding after a cache rollback changes the logits. Built abstractly and
    filled from numpy: eager jax init ops would compile once per parameter shape."""
    model = nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0), **kwargs))
    rng = np.random.default_rng(seed)
    arrays = {name: scale * rng.standard_normal(value.shape) for name, value in named_params(model).items()}
    arrays["resid_lambdas"] += 1.0
    arrays["smear_lambda"][:] = smear
    assign_params(model, arrays)
    return model


class ScriptedGPT(GPT):
    """A GPT whose next-token logits depend only on how many tokens the row holds: after n tokens
    the ids in script[n] get logit 0 and every other id NEVER (the last entry repeats). The cached
    paths run the real forward underneath (prefill, cache, rollback and batching are exercised);
    the uncached path (hidden -> head) carries the token count as its hidden state."""

    def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
        super().__init__(config, rngs=rngs)
        self.script = nnx.Variable(jnp.zeros((SCRIPT_LEN, config.vocab_size), jnp.float32))

    def _scripted(self, seen):
        table = self.script[...]
        return table[jnp.minimum(seen, table.shape[0] - 1)]

    def decode(self, idx, cache, lengths=None, *, last_only: bool = False, head_vc=None):
        b = idx.shape[0]  # the cache's first b rows decode
        before = cache.pos[:b]
        _, cache = super().decode(idx, cache, lengths, last_only=last_only)
        if last_only:
            return self._scripted(cache.pos[:b]), cache
        return self._scripted(before[:, None] + jnp.arange(1, idx.shape[1] + 1)), cache

    def hidden(self, idx):
        b, t = idx.shape
        return jnp.broadcast_to(jnp.arange(1, t + 1, dtype=jnp.float32)[None, :, None], (b, t, 1))

    def head(self, h, kernel_vc=None):
        return self._scripted(h[..., 0].astype(jnp.int32))


def scripted(prompt_len: int, generated, config: GPTConfig | None = None) -> ScriptedGPT:
    """A ScriptedGPT emitting `generated` (each entry an id or a set of ids) right after a prompt_len prompt."""
    script = [(0,)] * prompt_len + [tuple(g) if isinstance(g, (set, frozenset, tuple)) else (g,) for g in generated]
    script += script[-1:] * (SCRIPT_LEN - len(script))
    config = config or tiny_config()
    table = np.full((SCRIPT_LEN, config.vocab_size), NEVER, np.float32)
    for n, allowed in enumerate(script):
        table[n, list(allowed)] = 0.0
    model = random_gpt(config, seed=0, cls=ScriptedGPT)
    model.script.set_value(jnp.asarray(table))
    return model


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return byte_tokenizer()


@pytest.fixture(scope="session")
def model(make_model) -> GPT:
    return make_model(0)


@pytest.fixture(scope="session")
def draft(make_model) -> GPT:
    """Other random weights, same structure as `model`: speculative rounds with it or with `model`
    itself as the draft share one compilation."""
    return make_model(1)


@pytest.fixture(scope="session")
def engine(model, tokenizer) -> Engine:
    return Engine(model, tokenizer)


@pytest.fixture(scope="session")
def make_scripted():
    """scripted(prompt_len, generated, config=None) as a fixture (test modules cannot import conftest)."""
    return scripted


@pytest.fixture(scope="session")
def make_model():
    """make_model(seed, cls=GPT, **config overrides) -> a randomized tiny GPT (or GPT subclass: the
    same seed gives the same weights)."""

    def make(seed: int, cls=GPT, **overrides) -> GPT:
        return random_gpt(tiny_config(**overrides), seed, cls=cls)

    return make
