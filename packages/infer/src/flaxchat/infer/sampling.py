"""Next-token sampling with temperature, top-k and top-p as traced values (one compilation for all settings).

Every function here runs inside jit. The settings arrive as arrays, so changing them never
recompiles; the filters run under `lax.cond` and cost nothing when switched off. Sorting the
vocabulary (and drawing one random number per vocabulary entry, as `jax.random.categorical`
does) is slow on CPU, so the filters find their cut-off by bisection on the bit patterns of
the logits and the sampler inverts the CDF with one uniform per row.

The settings may be scalars (one request: `sample`) or arrays with one entry per row
(a batch of independent requests: `sample_rows`, each row with its own key).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from flaxchat.infer.errors import GenerationError

BLOCK = 128  # the inverse CDF first picks a block of this many tokens, then a token inside it
FAST_TOP_K = 64  # top_k up to this uses lax.top_k; larger k bisects


class SamplingArrays(NamedTuple):
    """SamplingParams as the arrays the jitted functions take: scalars, or one entry per row (B,)."""

    temperature: np.ndarray  # float32; 0 = greedy (argmax)
    top_k: np.ndarray  # int32; >= vocab size = off
    top_p: np.ndarray  # float32; 1 = off

    @classmethod
    def stack(cls, rows: "list[SamplingArrays]") -> "SamplingArrays":
        """Per-row settings (B,) from B scalar settings."""
        return cls(*(np.stack(column) for column in zip(*rows)))


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """temperature 0 = greedy; top_k None or 0 = off; top_p None or 1 = off (applied after top-k)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self):
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise GenerationError(f"temperature must be a finite number >= 0 (0 = greedy), got {t!r}")
        k = self.top_k
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0):
            raise GenerationError(f"top_k must be None or an integer >= 0 (None or 0 = off), got {k!r}")
        p = self.top_p
        if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1):
            raise GenerationError(f"top_p must be None or a number in (0, 1] (None or 1 = off), got {p!r}")

    def arrays(self, vocab_size: int) -> SamplingArrays:
        top_k = vocab_size if not self.top_k else min(int(self.top_k), vocab_size)
        top_p = 1.0 if self.top_p is None else float(self.top_p)
        return SamplingArrays(np.float32(self.temperature), np.int32(top_k), np.float32(top_p))


def sample(logits: jax.Array, key: jax.Array, s: SamplingArrays) -> jax.Array:
    """logits (B, V) -> token ids (B,) int32: argmax at temperature 0, else a draw per row."""
    return _draw(logits, lambda: jax.random.uniform(key, logits.shape[:1]), s)


def sample_rows(logits: jax.Array, keys: jax.Array, s: SamplingArrays) -> jax.Array:
    """`sample` with a key (B,) and settings (B,) per row: each row draws as a batch-1 `sample` would."""
    return _draw(logits, lambda: jax.vmap(lambda key: jax.random.uniform(key, (1,))[0])(keys), s)


def _draw(logits: jax.Array, uniforms, s: SamplingArrays) -> jax.Array:
    """Greedy rows take the argmax, the others invert the CDF at uniforms() (B,)."""
    greedy = _argmax(logits)
    hot = jnp.broadcast_to(s.temperature > 0, greedy.shape)

    def stochastic():
        return jnp.where(hot, sample_weights(_weights(logits, s), uniforms()), greedy)

    return lax.cond(jnp.any(hot), stochastic, lambda: greedy)


def distribution(logits: jax.Array, s: SamplingArrays) -> jax.Array:
    """logits (B, V) -> the probabilities `sample` draws from (one-hot on the argmax at temperature 0)."""

    def stochastic():
        w = _weights(logits, s)
        return w / jnp.sum(w, axis=-1, keepdims=True)

    def greedy():
        return jax.nn.one_hot(_argmax(logits), logits.shape[-1], dtype=jnp.float32)

    return lax.cond(s.temperature > 0, stochastic, greedy)


def sample_weights(weights: jax.Array, u: jax.Array) -> jax.Array:
    """Draw token i with probability weights[i] / sum(weights) per row, given u (B,) uniform in [0, 1).

    weights (B, V) >= 0 with a positive sum. Always returns a token of positive weight, also
    when float rounding puts the target past the last cumulative sum.
    """
    b, v = weights.shape
    n_blocks = -(-v // BLOCK)
    blocks = jnp.pad(weights, ((0, 0), (0, n_blocks * BLOCK - v))).reshape(b, n_blocks, BLOCK)
    block_mass = jnp.sum(blocks, axis=-1)
    block, rest = _pick(block_mass, u * jnp.sum(block_mass, axis=-1))
    inside, _ = _pick(jnp.take_along_axis(blocks, block[:, None, None], axis=1)[:, 0], rest)
    return (block * BLOCK + inside).astype(jnp.int32)


def _pick(mass: jax.Array, target: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The entry of `mass` (B, n) whose cumulative interval holds `target` (B,), and target's offset in it."""
    cum = jnp.cumsum(mass, axis=-1)
    positive = mass > 0
    hit = (cum > target[:, None]) & positive
    last_positive = mass.shape[-1] - 1 - jnp.argmax(positive[:, ::-1], axis=-1)
    index = jnp.where(jnp.any(hit, axis=-1), jnp.argmax(hit, axis=-1), last_positive)
    before = jnp.where(index > 0, jnp.take_along_axis(cum, jnp.maximum(index - 1, 0)[:, None], axis=-1)[:, 0], 0.0)
    return index, jnp.maximum(target - before, 0.0)


def _argmax(logits: jax.Array) -> jax.Array:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def _weights(logits: jax.Array, s: SamplingArrays) -> jax.Array:
    """Unnormalized probabilities after temperature, top-k and top-p (0 for filtered tokens).

    Each filter runs when any row uses it; rows that switch it off keep every token.
    A greedy row (temperature 0) gets the weights of temperature 1 (its caller takes the argmax).
    """
    rows, vocab = logits.shape
    temperature, top_k, top_p = (jnp.broadcast_to(a, (rows,)) for a in s)
    z = logits.astype(jnp.float32) / jnp.where(temperature > 0, temperature, 1.0)[:, None]
    z = lax.cond(jnp.any(top_k < vocab), lambda: _mask_top_k(z, top_k), lambda: z)
    w = jnp.exp(z - jnp.max(z, axis=-1, keepdims=True))
    return lax.cond(jnp.any(top_p < 1), lambda: _mask_top_p(z, w, top_p), lambda: w)


def _order_keys(z: jax.Array) -> jax.Array:
    """float32 -> uint32 with the same order (the radix-sort trick), so a cut-off is a 32-bit search."""
    bits = lax.bitcast_convert_type(z, jnp.uint32)
    return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(0x80000000))


def _largest_key(keys: jax.Array, holds) -> jax.Array:
    """Per row the largest uint32 t with holds(t) (monotone: true at 0, false above some t), bit by bit."""

    def body(i, t):
        candidate = t | (jnp.uint32(1) << (31 - i).astype(jnp.uint32))
        return jnp.where(holds(candidate[:, None]), candidate, t)

    return lax.fori_loop(0, 32, body, jnp.zeros(keys.shape[:1], jnp.uint32))


def _mask_top_k(z: jax.Array, k: jax.Array) -> jax.Array:
    """Keep the k (B,) largest values per row (all of them on a tie at the k-th), -inf elsewhere; k >= V keeps all."""
    keys = _order_keys(z)
    vocab = z.shape[-1]
    fast = min(FAST_TOP_K, vocab)

    def by_top_k():
        kth = jnp.take_along_axis(lax.top_k(z, fast)[0], jnp.clip(k, 1, fast)[:, None] - 1, axis=-1)[:, 0]
        return _order_keys(kth)

    def by_bisection():
        return _largest_key(keys, lambda t: jnp.sum(keys >= t, axis=-1) >= k)

    threshold = lax.cond(jnp.any((k > fast) & (k < vocab)), by_bisection, by_top_k)
    keep = (keys >= threshold[:, None]) | (k >= vocab)[:, None]
    return jnp.where(keep, z, -jnp.inf)


def _mask_top_p(z: jax.Array, w: jax.Array, p: jax.Array) -> jax.Array:
    """Keep the smallest set of largest-z tokens holding at least a fraction p (B,) of the mass w; p >= 1 keeps all."""
    keys = _order_keys(z)
    need = p * jnp.sum(w, axis=-1)
    threshold = _largest_key(keys, lambda t: jnp.sum(jnp.where(keys >= t, w, 0.0), axis=-1) >= need)
    keep = (keys >= threshold[:, None]) | (p >= 1)[:, None]
    return jnp.where(keep, w, 0.0)
