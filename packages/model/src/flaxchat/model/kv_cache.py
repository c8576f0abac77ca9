"""A fixed-size KV cache as an immutable pytree, with a position per row."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from flaxchat.model.config import GPTConfig


@struct.dataclass
class KVCache:
    """Per layer k/v of shape (B, n_kv_head, max_len, head_dim); pos (B,) = tokens held per row.

    Heads before positions: decode attention then reads each head's keys and values as one
    contiguous (max_len, head_dim) matrix, with no transpose of the cache per step.

    prev_embedding (B, 1, C) is the pre-smear normalized embedding of each row's last token
    (the smear needs it when decoding one token at a time); has_prev (B,) says it is set.
    """

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    pos: jax.Array
    prev_embedding: jax.Array
    has_prev: jax.Array

    @classmethod
    def empty(cls, config: GPTConfig, batch_size: int, max_len: int, dtype=jnp.float32) -> "KVCache":
        shape = (batch_size, config.n_kv_head, max_len, config.head_dim)
        return cls(
            k=tuple(jnp.zeros(shape, dtype) for _ in range(config.n_layer)),
            v=tuple(jnp.zeros(shape, dtype) for _ in range(config.n_layer)),
            pos=jnp.zeros((batch_size,), jnp.int32),
            prev_embedding=jnp.zeros((batch_size, 1, config.n_embd), dtype),
            has_prev=jnp.zeros((batch_size,), bool),
        )

    @property
    def batch_size(self) -> int:
        return self.pos.shape[0]

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]

    def broadcast_rows(self, batch_size: int) -> "KVCache":
        """Replicate a batch-1 cache (one shared prefill) to `batch_size` rows."""
        if self.batch_size != 1:
            raise ValueError(f"broadcast_rows needs a batch-1 cache, got batch {self.batch_size}")
        return jax.tree.map(lambda a: jnp.repeat(a, batch_size, axis=0), self)
