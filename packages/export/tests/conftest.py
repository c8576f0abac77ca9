"""A tiny random GPT with a byte-level tokenizer, exported once per test run (fp32, int8, int8-weight-only).

The config makes every feature of the decode path count: sequence 256 gives the first layer a
128-token sliding window (so a long generation crosses it), GQA (2 query heads per kv head), a
value embedding, and a strong smear (a wrong previous embedding would change the logits).
"""

import hashlib
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from flaxchat.export.convert import ExportSettings, export_model
from flaxchat.export.package import MANIFEST_FILE
from flaxchat.model import GPT, GPTConfig
from flaxchat.model.kv_cache import KVCache
from flaxchat.model.params import assign_params, named_params
from flaxchat.tokenizer import Tokenizer
from flaxchat.tokenizer.spec import nanochat_spec

PREFILL_LENGTHS = (8, 32)


def byte_tokenizer(merges: tuple[bytes, ...] = ()) -> Tokenizer:
    """256 byte tokens, then `merges` (multi-byte tokens), then the 9 specials; needs no training."""
    ranks = {bytes([i]): i for i in range(256)} | {m: 256 + j for j, m in enumerate(merges)}
    return Tokenizer(nanochat_spec(ranks))


def tiny_config(**overrides) -> GPTConfig:
    base = dict(sequence_len=256, vocab_size=265, n_layer=2, n_head=2, n_kv_head=1, n_embd=32, window_pattern="SL")
    return GPTConfig(**{**base, **overrides})


def random_gpt(config: GPTConfig, seed: int, scale: float = 0.3) -> GPT:
    """Every parameter random (zero-initialized projections too), residual lambdas near 1, smear on."""
    model = nnx.eval_shape(lambda: GPT(config, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(seed)
    arrays = {name: scale * rng.standard_normal(v.shape) for name, v in named_params(model).items()}
    arrays["resid_lambdas"] += 1.0
    arrays["smear_lambda"][:] = 1.0
    assign_params(model, arrays)
    return model


class JaxStepper:
    """The JAX reference: the model's jitted KV-cache decode on a batch-1 cache, fed like the runtime."""

    def __init__(self, model: GPT, max_len: int):
        graphdef, state = nnx.split(model)

        @jax.jit
        def step(state, idx, cache):
            return nnx.merge(graphdef, state).decode(idx, cache, last_only=True)

        self._step, self._state = step, state
        self.cache = KVCache.empty(model.config, 1, max_len)

    def forward(self, tokens) -> np.ndarray:
        logits, self.cache = self._step(self._state, np.asarray([tokens], np.int32), self.cache)
        return np.asarray(logits[0])


def rewrite_manifest(package: Path) -> None:
    """Re-hash every file, as someone assembling a package by hand would: only deeper checks remain."""
    manifest = json.loads((package / MANIFEST_FILE).read_text())
    files = sorted(p for p in package.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)
    manifest["files"] = {p.relative_to(package).as_posix(): {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
                                                             "size": p.stat().st_size} for p in files}
    (package / MANIFEST_FILE).write_text(json.dumps(manifest))


@pytest.fixture(scope="session")
def jax_stepper():
    """JaxStepper(model, max_len) as a fixture (test modules cannot import conftest)."""
    return JaxStepper


@pytest.fixture(scope="session")
def rehash():
    """rewrite_manifest(package) as a fixture."""
    return rewrite_manifest


@pytest.fixture(scope="session")
def make_tokenizer():
    """byte_tokenizer(merges) as a fixture."""
    return byte_tokenizer


@pytest.fixture(scope="session")
def make_model():
    """random_gpt(tiny_config(**overrides), seed) as a fixture."""
    return lambda seed, **overrides: random_gpt(tiny_config(**overrides), seed)


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return byte_tokenizer()


@pytest.fixture(scope="session")
def model() -> GPT:
    # Seed 5: its greedy continuation of the tests' prompt holds no stop token for 100 tokens, so the
    # Engine's greedy output runs the full 64 tokens.
    return random_gpt(tiny_config(), seed=5)


@pytest.fixture(scope="session")
def exports(tmp_path_factory, model, tokenizer) -> dict[str, Path]:
    """quantization -> package directory, each converted once per test run."""
    root = tmp_path_factory.mktemp("exports")
    return {q: export_model(model, tokenizer, root / f"tiny-{q}.litert",
                            ExportSettings(quantization=q, prefill_lengths=PREFILL_LENGTHS),
                            source={"checkpoint": "tiny"}).path
            for q in ("fp32", "int8", "int8-weight-only")}


@pytest.fixture
def fp32_copy(exports, tmp_path) -> Path:
    """A private copy of the fp32 package, for tests that damage it."""
    return Path(shutil.copytree(exports["fp32"], tmp_path / "copy.litert"))
