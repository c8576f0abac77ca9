"""The jitted pieces of generation for one model structure: prefill, decode step, padded step, fast loop.

Weights are an argument: the leaves of `nnx.state(model)`, read per request so in-place updates
(as in RL) are seen, and passed as a flat list because flattening an nnx.State on every call
costs more than a small model's decode step. The structure (graphdef and the state's treedef)
is fixed per CompiledModel. The Engine buckets the shapes that vary per request (prompt padded
to a power of two, cache length rounded up); sampling settings, seeds, step numbers and
max_tokens are traced, so after warm-up nothing recompiles. The decode step donates its cache,
which XLA then updates in place.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from flaxchat.infer.errors import GenerationError
from flaxchat.infer.sampling import SamplingArrays, sample
from flaxchat.model import GPT, KVCache


def prefill(model: GPT, prompt, length, *, num_samples: int, cache_len: int):
    """prompt (1, bucket) right-padded, length (1,) -> last-token logits (num_samples, V) and the cache, replicated."""
    cache = KVCache.empty(model.config, 1, cache_len, model.dtype)
    logits, cache = model.decode(prompt, cache, length, last_only=True)
    return jnp.broadcast_to(logits, (num_samples, logits.shape[-1])), cache.broadcast_rows(num_samples)


def start(model: GPT, prompt, length, key, sampling: SamplingArrays, *, num_samples: int, cache_len: int):
    """Prefill and draw each row's first token (step 0)."""
    logits, cache = prefill(model, prompt, length, num_samples=num_samples, cache_len=cache_len)
    return sample(logits, jax.random.fold_in(key, 0), sampling), cache


def decode_step(model: GPT, tokens, cache: KVCache, key, step, sampling: SamplingArrays, head_vc=None):
    """Feed one token per row (B,) and draw the next (the draw for `step` uses fold_in(key, step)).

    head_vc: the transposed head (`head_for_rows`), faster for several rows."""
    logits, cache = model.decode(tokens[:, None], cache, last_only=True, head_vc=head_vc)
    return sample(logits, jax.random.fold_in(key, step), sampling), cache


def padded_step(model: GPT, sequence, length, key, step, sampling: SamplingArrays, head_vc=None):
    """Reference without a cache: the full forward over sequence (B, bucket), sample after position length-1."""
    hidden = model.hidden(sequence)
    logits = model.head(jax.lax.dynamic_index_in_dim(hidden, length - 1, axis=1, keepdims=False), head_vc)
    return sample(logits, jax.random.fold_in(key, step), sampling)


def fast_loop(model: GPT, prompt, length, key, sampling, max_tokens, stops, head_vc=None, *, num_samples: int,
              cache_len: int):
    """The whole request in one call: prefill, then decode steps in a while_loop until every row has
    produced a stop token or max_tokens columns exist. Returns (columns (B, cache_len), count)."""
    first, cache = start(model, prompt, length, key, sampling, num_samples=num_samples, cache_len=cache_len)
    out = jnp.zeros((num_samples, cache_len), jnp.int32).at[:, 0].set(first)

    def running(carry):
        count, _, _, done = carry
        return (count < max_tokens) & ~jnp.all(done)

    def body(carry):
        count, out, cache, done = carry
        nxt, cache = decode_step(model, out[:, count - 1], cache, key, count, sampling, head_vc)
        return count + 1, out.at[:, count].set(nxt), cache, done | jnp.isin(nxt, stops)

    count, out, _, _ = jax.lax.while_loop(running, body, (jnp.int32(1), out, cache, jnp.isin(first, stops)))
    return out, count


def power_of_two_at_least(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def prefill_bucket(n: int, min_len: int, cache_len: int) -> int:
    """The padded length a prompt of n tokens is prefilled at: a power of two >= min_len, within the cache."""
    return min(power_of_two_at_least(max(n, min_len)), cache_len)


def check_vocab(model: GPT, tokenizer) -> None:
    """The model and the tokenizer must share one vocabulary."""
    if tokenizer.vocab_size != model.config.vocab_size:
        raise GenerationError(
            f"tokenizer vocab ({tokenizer.vocab_size}) != model vocab ({model.config.vocab_size}): "
            "load both from the same checkpoint"
        )


def head_for_rows(fns: "CompiledModel", weights, rows: int):
    """The transposed head (`GPT.head_vc`) for steps whose head runs over several rows, else None:
    one row is faster with the stored layout, and making the copy reads the whole head once."""
    return fns.head_vc(weights) if rows > 1 else None


def split_model(model: GPT):
    """(graphdef, treedef, weights): the structure, and the weights as the flat list the jitted functions take."""
    graphdef, state = nnx.split(model)
    weights, treedef = jax.tree.flatten(state)
    return graphdef, treedef, weights


def merge_model(graphdef, treedef, weights) -> GPT:
    return nnx.merge(graphdef, jax.tree.unflatten(treedef, weights))


def _bind(graphdef, treedef, fn):
    """fn(model, ...) -> a function of (weights, ...) that rebuilds the model inside the trace.

    `wraps` keeps fn's signature (weights take model's place), so jit's argument names resolve.
    """

    @functools.wraps(fn)
    def bound(weights, *args, **kwargs):
        return fn(merge_model(graphdef, treedef, weights), *args, **kwargs)

    return bound


@functools.cache
def compiled_model(graphdef, treedef) -> "CompiledModel":
    """One CompiledModel per model structure, so engines over equal structures share compilations."""
    return CompiledModel(graphdef, treedef)


class CompiledModel:
    """The jitted functions of one model structure; each compiles once per shape bucket."""

    def __init__(self, graphdef, treedef):
        shapes = ("num_samples", "cache_len")
        self.prefill = jax.jit(_bind(graphdef, treedef, prefill), static_argnames=shapes)
        self.start = jax.jit(_bind(graphdef, treedef, start), static_argnames=shapes)
        self.decode_step = jax.jit(_bind(graphdef, treedef, decode_step), donate_argnames="cache")
        self.padded_step = jax.jit(_bind(graphdef, treedef, padded_step))
        self.fast_loop = jax.jit(_bind(graphdef, treedef, fast_loop), static_argnames=shapes)
        self.head_vc = jax.jit(_bind(graphdef, treedef, GPT.head_vc))
