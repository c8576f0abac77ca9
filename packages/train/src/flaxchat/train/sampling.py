"""Greedy samples from fixed prompts, to watch a model learn during training."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from flaxchat.model import GPT, KVCache
from flaxchat.tokenizer import Tokenizer

STORY_PROMPTS = ("Once upon a time", "The little dog", "One day, Lily")


def greedy_samples(model: GPT, tokenizer: Tokenizer, prompts=STORY_PROMPTS, max_tokens: int = 16) -> list[tuple[str, str]]:
    """(prompt, greedy continuation) for each prompt, BOS-prepended, all rows in one batch."""
    encoded = [tokenizer.encode(p, prepend=tokenizer.bos_id) for p in prompts]
    width = max(map(len, encoded))
    rows = jnp.asarray([ids + [tokenizer.bos_id] * (width - len(ids)) for ids in encoded], jnp.int32)
    lengths = jnp.asarray([len(ids) for ids in encoded], jnp.int32)
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, rows, lengths):
        model = nnx.merge(graphdef, state)
        cache = KVCache.empty(model.config, len(encoded), width + max_tokens, model.dtype)
        logits, cache = model.decode(rows, cache, lengths, last_only=True)
        token = jnp.argmax(logits, axis=-1)

        def body(carry, _):
            token, cache = carry
            logits, cache = model.decode(token[:, None], cache, last_only=True)
            return (jnp.argmax(logits, axis=-1), cache), token

        _, tokens = jax.lax.scan(body, (token, cache), None, length=max_tokens)
        return tokens.T

    out = jax.device_get(run(state, rows, lengths))
    return [(p, tokenizer.decode([int(t) for t in row])) for p, row in zip(prompts, out)]
