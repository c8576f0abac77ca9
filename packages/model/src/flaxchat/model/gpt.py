"""The nanochat GPT in Flax NNX.

Weights are stored fp32 with Flax's (in, out) kernel layout; activations run in `dtype`
(fp32 or bf16) and every weight is cast to the activation dtype inside its matmul, as
nanochat does. Features: smear, RoPE (base 100000, rotation by -theta), QK-norm x1.2, GQA,
sliding windows, value embeddings with a gate, ReLU^2 MLP, resid/x0 lambdas, backout,
final norm, untied head, logit softcap.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from flaxchat.model.config import GPTConfig
from flaxchat.model.head_loss import weighted_head_loss
from flaxchat.model.kv_cache import KVCache

NORM_EPS = float(jnp.finfo(jnp.float32).eps)  # PyTorch's rms_norm default eps
QK_SCALE = 1.2
SMEAR_CHANNELS = 24
VE_GATE_CHANNELS = 12
IGNORE_INDEX = -1


def rms_norm(x: jax.Array) -> jax.Array:
    """Parameter-free RMSNorm computed in fp32 and cast back."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + NORM_EPS)
    return y.astype(x.dtype)


def rotary(positions: jax.Array, head_dim: int, base: float, dtype) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables for integer positions (B, T), shaped (B, T, 1, head_dim/2), in `dtype`."""
    inv_freq = 1.0 / (base ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq
    return jnp.cos(freqs)[:, :, None, :].astype(dtype), jnp.sin(freqs)[:, :, None, :].astype(dtype)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos + x2 * sin, -x1 * sin + x2 * cos], axis=-1)


def attention(q, k, v, q_pos, k_pos, window: int):
    """Causal attention within a window: query at position p sees keys at p-window .. p.

    q (B, T, H, D); k, v (B, S, Hkv, D) with H a multiple of Hkv (GQA: consecutive query heads
    share a kv head); q_pos (B, T) and k_pos (S,) absolute positions. The mask is built from the
    positions inside the fused computation, never stored. On CPU this plain XLA formulation is
    2-3x faster than jax.nn.dot_product_attention forward and backward.
    """
    b, t, h, d = q.shape
    groups = h // k.shape[2]
    q = q.reshape(b, t, k.shape[2], groups, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32) * (1.0 / math.sqrt(d))
    probs = window_softmax(scores, q_pos, k_pos, window).astype(v.dtype)
    return jnp.einsum("bkgts,bskd->btkgd", probs, v).reshape(b, t, h, d)


def window_softmax(scores, q_pos, k_pos, window: int):
    """Softmax of scores (B, Hkv, G, T, S) over the keys each query sees: positions p-window .. p.

    q_pos (B, T) and k_pos (S,) are absolute positions; the mask is built inside the fusion.
    """
    delta = q_pos[:, :, None] - k_pos[None, None, :]
    visible = (delta >= 0) & (delta <= window)
    return jax.nn.softmax(jnp.where(visible[:, None, None], scores, -jnp.inf), axis=-1)


def cache_attention(q, k_cache, v_cache, q_pos, window: int):
    """`attention` over a KV cache laid out (B, Hkv, S, D); key s sits at position s.

    Both products keep the cache in its own layout (per row and kv head a contiguous (S, D)
    matrix): q k^T and probs @ v, so XLA reads the cache in place instead of transposing it
    every step; only the small output is transposed back to (B, T, H, D).
    """
    b, t, h, d = q.shape
    hkv, s = k_cache.shape[1], k_cache.shape[2]
    q = q.reshape(b, t, hkv, h // hkv, d)
    scores = jnp.einsum("btkgd,bksd->bkgts", q, k_cache, preferred_element_type=jnp.float32) * (1.0 / math.sqrt(d))
    probs = window_softmax(scores, q_pos, jnp.arange(s), window).astype(v_cache.dtype)
    y = jnp.einsum("bkgts,bksd->bkgtd", probs, v_cache)
    return jnp.moveaxis(y, 3, 1).reshape(b, t, h, d)


ATTENTION_BLOCK = 128


def causal_attention(q, k, v, window: int, block: int = ATTENTION_BLOCK):
    """`attention` over one whole sequence (positions 0..T-1), in blocks of queries.

    Each block of queries attends only to the keys it can see (from start - window to its
    last position), so the fully masked part of the T x T scores (over half of it) is never
    computed: the same result as `attention` at about half the work. Training path.
    """
    b, t, h, d = q.shape
    outputs = []
    for start in range(0, t, block):
        end = min(start + block, t)
        first = max(0, start - window)
        outputs.append(attention(q[:, start:end], k[:, first:end], v[:, first:end],
                                 jnp.broadcast_to(jnp.arange(start, end), (b, end - start)),
                                 jnp.arange(first, end), window))
    return jnp.concatenate(outputs, axis=1)


def softcap(logits: jax.Array, cap: float) -> jax.Array:
    return cap * jnp.tanh(logits / cap)


def cross_entropy(logits: jax.Array, targets: jax.Array, reduction: str = "mean") -> jax.Array:
    """Cross entropy over the last axis; targets == -1 are ignored.

    'mean' averages over valid targets (0 when there are none), 'sum' sums them, 'none'
    returns per-token losses with 0 at ignored positions.
    """
    valid = targets != IGNORE_INDEX
    safe = jnp.where(valid, targets, 0)
    logits = logits.astype(jnp.float32)
    picked = jnp.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
    losses = jnp.where(valid, jax.nn.logsumexp(logits, axis=-1) - picked, 0.0)
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return losses.sum() / jnp.maximum(valid.sum(), 1)
    raise ValueError(f"loss_reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _uniform(key, shape, low, high):
    return jax.random.uniform(key, shape, jnp.float32, low, high)


def _matmul(x: jax.Array, kernel: nnx.Param) -> jax.Array:
    # As one 2-D matmul: XLA's CPU backward of a 3-D (B, T, C) @ (C, N) is ~15% slower.
    y = x.reshape(-1, x.shape[-1]) @ kernel[...].astype(x.dtype)
    return y.reshape(*x.shape[:-1], y.shape[-1])


def _write_cache(cache, new, positions):
    """cache (B, Hkv, S, D) with new (b, T, Hkv, D) written into its first b rows at positions (b, T);
    out-of-range positions are dropped.

    One scatter index per (row, token, head), so the scatter updates the donated cache in place:
    with a single index (batch 1, one token) XLA rewrites it as a dynamic-update-slice and then
    copies the whole cache, twice per layer and step.
    """
    b, _, hkv, _ = new.shape
    rows = jnp.arange(b)[:, None, None]
    heads = jnp.arange(hkv)[None, None, :]
    return cache.at[rows, heads, positions[:, :, None]].set(new.astype(cache.dtype), mode="drop")


class Attention(nnx.Module):
    def __init__(self, config: GPTConfig, layer: int, rngs: nnx.Rngs):
        c, hd = config.n_embd, config.head_dim
        s = math.sqrt(3.0) / math.sqrt(c)
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, hd
        self.c_q = nnx.Param(_uniform(rngs.params(), (c, config.n_head * hd), -s, s))
        self.c_k = nnx.Param(_uniform(rngs.params(), (c, config.n_kv_head * hd), -s, s))
        self.c_v = nnx.Param(_uniform(rngs.params(), (c, config.n_kv_head * hd), -s, s))
        self.c_proj = nnx.Param(jnp.zeros((config.n_head * hd, c), jnp.float32))
        self.ve_gate = (
            nnx.Param(_uniform(rngs.params(), (VE_GATE_CHANNELS, config.n_kv_head), 0.0, 0.02))
            if config.has_value_embed(layer)
            else None
        )

    def qkv(self, x, ve, cos, sin):
        b, t, _ = x.shape
        q = _matmul(x, self.c_q).reshape(b, t, self.n_head, self.head_dim)
        k = _matmul(x, self.c_k).reshape(b, t, self.n_kv_head, self.head_dim)
        v = _matmul(x, self.c_v).reshape(b, t, self.n_kv_head, self.head_dim)
        if ve is not None:
            gate = 3.0 * jax.nn.sigmoid(_matmul(x[..., :VE_GATE_CHANNELS], self.ve_gate))
            v = v + gate[..., None] * ve.reshape(b, t, self.n_kv_head, self.head_dim)
        q = rms_norm(apply_rotary(q, cos, sin)) * QK_SCALE
        k = rms_norm(apply_rotary(k, cos, sin)) * QK_SCALE
        return q, k, v

    def __call__(self, x, ve, cos, sin, window: int):
        """Training / reference path: causal attention within the layer's window."""
        b, t, _ = x.shape
        q, k, v = self.qkv(x, ve, cos, sin)
        y = causal_attention(q, k, v, window)
        return _matmul(y.reshape(b, t, -1), self.c_proj)

    def cached(self, x, ve, cos, sin, window: int, k_cache, v_cache, positions):
        """Write this chunk's k/v at `positions` (B, T) into the (B, Hkv, S, D) cache and attend over it."""
        b, t, _ = x.shape
        q, k, v = self.qkv(x, ve, cos, sin)
        k_cache = _write_cache(k_cache, k, positions)
        v_cache = _write_cache(v_cache, v, positions)
        # The chunk's b rows are the cache's first b (GPT.decode): attention reads only those.
        y = cache_attention(q, k_cache[:b].astype(q.dtype), v_cache[:b].astype(q.dtype), positions, window)
        return _matmul(y.reshape(b, t, -1), self.c_proj), k_cache, v_cache


class MLP(nnx.Module):
    def __init__(self, config: GPTConfig, rngs: nnx.Rngs):
        c = config.n_embd
        s = math.sqrt(3.0) / math.sqrt(c)
        self.kind = config.mlp
        self.c_fc = nnx.Param(_uniform(rngs.params(), (c, 4 * c), -0.4 * s, 0.4 * s))
        self.c_proj = nnx.Param(jnp.zeros((4 * c, c), jnp.float32))

    def __call__(self, x):
        h = _matmul(x, self.c_fc)
        h = jnp.square(jax.nn.relu(h)) if self.kind == "relu2" else jax.nn.gelu(h, approximate=False)
        return _matmul(h, self.c_proj)


class Block(nnx.Module):
    def __init__(self, config: GPTConfig, layer: int, rngs: nnx.Rngs):
        self.attn = Attention(config, layer, rngs)
        self.mlp = MLP(config, rngs)

    def __call__(self, x, ve, cos, sin, window: int):
        x = x + self.attn(rms_norm(x), ve, cos, sin, window)
        return x + self.mlp(rms_norm(x))

    def cached(self, x, ve, cos, sin, window: int, k_cache, v_cache, positions):
        y, k_cache, v_cache = self.attn.cached(rms_norm(x), ve, cos, sin, window, k_cache, v_cache, positions)
        x = x + y
        return x + self.mlp(rms_norm(x)), k_cache, v_cache


class GPT(nnx.Module):
    def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, remat: bool = False):
        self.config = config
        self.dtype = jnp.dtype(dtype)
        self.remat = remat
        c, vp, n = config.n_embd, config.padded_vocab, config.n_layer
        s = math.sqrt(3.0) / math.sqrt(c)
        self.wte = nnx.Param(0.8 * jax.random.normal(rngs.params(), (vp, c), jnp.float32))
        self.blocks = nnx.List([Block(config, i, rngs) for i in range(n)])
        kv_dim = config.n_kv_head * config.head_dim
        self.value_embeds = nnx.Dict(
            {str(i): nnx.Param(_uniform(rngs.params(), (vp, kv_dim), -s, s)) for i in config.value_embed_layers}
        )
        self.lm_head = (
            None if config.tie_embeddings else nnx.Param(0.001 * jax.random.normal(rngs.params(), (c, vp), jnp.float32))
        )
        frac = jnp.arange(n, dtype=jnp.float32) / max(n - 1, 1)
        self.resid_lambdas = nnx.Param(1.15 - 0.10 * frac)
        self.x0_lambdas = nnx.Param(0.20 - 0.15 * frac)
        self.smear_gate = nnx.Param(_uniform(rngs.params(), (SMEAR_CHANNELS, 1), 0.0, 0.02))
        self.smear_lambda = nnx.Param(jnp.zeros((1,), jnp.float32))
        self.backout_lambda = nnx.Param(jnp.full((1,), 0.2, jnp.float32))

    # Pieces shared by the training and the cached paths -----------------------------
    def _embed(self, idx):
        return rms_norm(self.wte[...][idx].astype(self.dtype))

    def _smear_gate(self, x):
        return self.smear_lambda[...].astype(x.dtype) * jax.nn.sigmoid(_matmul(x[..., :SMEAR_CHANNELS], self.smear_gate))

    def _value_embed(self, layer: int, idx):
        table = self.value_embeds.get(str(layer))
        return None if table is None else table[...][idx].astype(self.dtype)

    def _trunk(self, x, idx, run_block):
        """Layers, backout and final norm; run_block(i, block, x, ve) applies block i."""
        x0 = x
        backout = None
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i].astype(x.dtype) * x + self.x0_lambdas[i].astype(x.dtype) * x0
            x = run_block(i, block, x, self._value_embed(i, idx))
            if i == self.config.backout_layer:
                backout = x
        x = x - self.backout_lambda[...].astype(x.dtype) * backout
        return rms_norm(x)

    def head(self, h, kernel_vc=None):
        """Final hidden states -> fp32 softcapped logits over the real vocabulary.

        kernel_vc: optionally the head kernel transposed to (vocab, C) (`head_vc`), used when h
        holds more than one row: XLA's CPU matmul of a few rows runs ~2x faster against the
        (vocab, C) layout, while a single row is faster against the stored (C, vocab) one.
        """
        if kernel_vc is not None and math.prod(h.shape[:-1]) > 1:
            logits = jnp.einsum("...c,vc->...v", h, kernel_vc.astype(h.dtype))
        else:
            logits = h @ self._head_kernel().astype(h.dtype)
        return softcap(logits[..., : self.config.vocab_size].astype(jnp.float32), self.config.softcap)

    def head_vc(self) -> jax.Array:
        """The head kernel as a (vocab, C) array for `head`/`decode`: call it outside the jitted
        step (under jit, as its own computation), so the transposed copy is made once."""
        return self._head_kernel().T

    # Training / reference forward ----------------------------------------------------
    def hidden(self, idx):
        """idx (B, T) int -> final normed hidden states (B, T, C) in the compute dtype."""
        b, t = idx.shape
        positions = jnp.broadcast_to(jnp.arange(t), (b, t))
        cos, sin = rotary(positions, self.config.head_dim, self.config.rope_base, self.dtype)
        x = self._embed(idx)
        if t > 1:
            gate = self._smear_gate(x[:, 1:])
            x = jnp.concatenate([x[:, :1], x[:, 1:] + gate * x[:, :-1]], axis=1)
        windows = self.config.window_sizes

        def run_block(i, block, x, ve):
            if not self.remat:
                return block(x, ve, cos, sin, windows[i])
            # Recompute the block's activations in the backward pass instead of storing them.
            graphdef, state = nnx.split(block)
            checkpointed = jax.checkpoint(lambda state, x, ve: nnx.merge(graphdef, state)(x, ve, cos, sin, windows[i]))
            return checkpointed(state, x, ve)

        return self._trunk(x, idx, run_block)

    def __call__(self, idx, targets=None, *, loss_reduction: str = "mean"):
        """idx (B, T) int -> logits (B, T, vocab) fp32, or the loss when targets are given.

        Targets equal to -1 are ignored. 'mean' averages over valid targets (0 when there are
        none), 'sum' sums them, 'none' returns per-token losses (0 where ignored).
        """
        if targets is None:
            return self.head(self.hidden(idx))
        if loss_reduction == "none":
            return cross_entropy(self.head(self.hidden(idx)), targets, "none")
        if loss_reduction not in ("mean", "sum"):
            raise ValueError(f"loss_reduction must be 'mean', 'sum' or 'none', got {loss_reduction!r}")
        weights = (targets != IGNORE_INDEX).astype(jnp.float32)
        if loss_reduction == "mean":
            weights = weights / jnp.maximum(weights.sum(), 1.0)
        return self.weighted_loss(idx, targets, weights)

    def _head_kernel(self):
        return self.wte[...].T if self.lm_head is None else self.lm_head[...]

    def weighted_loss(self, idx, targets, weights):
        """sum(weights * per-token cross entropy) with the fused, chunked head.

        weights (B, T) fp32 are not differentiated; ignored targets (-1) must have weight 0.
        Mean loss, bits-per-byte numerators and policy-gradient objectives are all this sum.
        """
        h = self.hidden(idx)
        valid = targets != IGNORE_INDEX
        return weighted_head_loss(
            h.reshape(-1, h.shape[-1]), self._head_kernel(), jnp.where(valid, targets, 0).reshape(-1),
            jnp.where(valid, weights, 0.0).reshape(-1).astype(jnp.float32), self.config.vocab_size, self.config.softcap,
        )

    # KV-cache forward -----------------------------------------------------------------
    def decode(self, idx, cache: KVCache, lengths=None, *, last_only: bool = False, head_vc=None):
        """Run idx (B, T) after the tokens already in `cache`.

        Row b's tokens land at positions cache.pos[b] .. +T-1. `lengths` (B,) says how many
        of the T tokens are real per row (right padding); the cache advances by it. Position 0
        of the chunk is smeared with the cache's previous embedding when there is one, so a
        chunked forward equals the training forward. Returns (logits, new cache); logits are
        (B, T, vocab), or (B, vocab) at each row's last real token with last_only.

        The cache may hold more rows than idx: then idx's B rows are the cache's first B, and
        the rows after them are left as they are (a batch of active rows kept at the front
        decodes at its own size, with the cache updated in place). head_vc: see `head`.
        """
        b, t = idx.shape
        if b > cache.batch_size:
            raise ValueError(f"decode got {b} rows for a cache of {cache.batch_size}")
        lengths = jnp.full((b,), t, jnp.int32) if lengths is None else lengths.astype(jnp.int32)
        positions = cache.pos[:b, None] + jnp.arange(t, dtype=jnp.int32)[None, :]
        cos, sin = rotary(positions, self.config.head_dim, self.config.rope_base, self.dtype)
        x = self._embed(idx)
        row_prev, row_has_prev = cache.prev_embedding[:b], cache.has_prev[:b]
        prev = jnp.concatenate([row_prev.astype(x.dtype), x[:, :-1]], axis=1)
        has_prev = jnp.concatenate([row_has_prev[:, None], jnp.ones((b, t - 1), bool)], axis=1)
        smeared = x + self._smear_gate(x) * prev * has_prev[..., None].astype(x.dtype)
        active = lengths > 0
        last = jnp.take_along_axis(x, jnp.maximum(lengths - 1, 0)[:, None, None], axis=1)  # pre-smear, as nanochat
        windows = self.config.window_sizes
        new_k, new_v = list(cache.k), list(cache.v)

        def run_block(i, block, x, ve):
            x, new_k[i], new_v[i] = block.cached(x, ve, cos, sin, windows[i], cache.k[i], cache.v[i], positions)
            return x

        h = self._trunk(smeared, idx, run_block)
        if last_only:
            h = jnp.take_along_axis(h, jnp.maximum(lengths - 1, 0)[:, None, None], axis=1)[:, 0]
        new_cache = KVCache(
            k=tuple(new_k),
            v=tuple(new_v),
            pos=cache.pos.at[:b].add(lengths),
            # Rows with no new tokens (lengths == 0) keep their previous embedding.
            prev_embedding=cache.prev_embedding.at[:b].set(
                jnp.where(active[:, None, None], last.astype(row_prev.dtype), row_prev)),
            has_prev=cache.has_prev.at[:b].set(row_has_prev | active),
        )
        return self.head(h, head_vc), new_cache
