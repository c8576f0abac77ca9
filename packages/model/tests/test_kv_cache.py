"""Cached decoding must reproduce the full forward pass exactly (fp32)."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flaxchat.model import KVCache


def _decode_jit(model, jitted):
    step = jitted(model, "decode")
    return lambda idx, cache, lengths=None: step(idx, cache, lengths)


def test_token_by_token_matches_full_forward(small_model, small_config, tokens, jitted):
    forward = jitted(small_model)
    """Batch 2, across the 128-token window boundary, with smear and value embeddings active."""
    full = np.asarray(forward(tokens))
    decode = _decode_jit(small_model, jitted)
    cache = KVCache.empty(small_config, batch_size=2, max_len=256)
    logits, cache = decode(tokens[:, :1], cache)
    outs = [logits]
    for t in range(1, tokens.shape[1]):
        logits, cache = decode(tokens[:, t : t + 1], cache)
        outs.append(logits)
    np.testing.assert_allclose(np.concatenate(outs, axis=1), full, atol=1e-5, rtol=0)
    assert cache.pos.tolist() == [200, 200]


def test_prefill_then_decode_and_chunks_match_full_forward(small_model, small_config, tokens, jitted):
    forward = jitted(small_model)
    full = np.asarray(forward(tokens))
    decode = _decode_jit(small_model, jitted)
    cache = KVCache.empty(small_config, batch_size=2, max_len=256)
    pieces = []
    for start, stop in [(0, 37), (37, 38), (38, 150), (150, 151), (151, 200)]:
        logits, cache = decode(tokens[:, start:stop], cache)
        pieces.append(logits)
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=1e-5, rtol=0)


def test_right_padded_prefill_with_lengths(small_model, small_config, tokens, jitted):
    forward = jitted(small_model)
    """Rows of different prompt lengths share one padded prefill, then decode in lockstep."""
    lengths = jnp.array([9, 5])
    padded = tokens[:, :12].at[1, 5:].set(0)
    decode = _decode_jit(small_model, jitted)
    cache = KVCache.empty(small_config, batch_size=2, max_len=64)
    _, cache = decode(padded, cache, lengths)
    assert cache.pos.tolist() == [9, 5]
    nxt = jnp.array([[3], [4]])
    logits, cache = decode(nxt, cache)
    for row, n in enumerate([9, 5]):
        seq = jnp.concatenate([tokens[row : row + 1, :n], nxt[row : row + 1]], axis=1)
        expected = np.asarray(forward(seq))[0, -1]
        np.testing.assert_allclose(np.asarray(logits[row, -1]), expected, atol=1e-5)


def test_last_only_and_broadcast_rows(small_model, small_config, tokens, jitted):
    forward = jitted(small_model)
    prompt = tokens[:1, :20]
    cache = KVCache.empty(small_config, batch_size=1, max_len=64)
    last, cache = jitted(small_model, "decode", last_only=True)(prompt, cache)
    np.testing.assert_allclose(np.asarray(last[0]), np.asarray(forward(prompt))[0, -1], atol=1e-5)
    wide = cache.broadcast_rows(3)
    assert wide.pos.tolist() == [20, 20, 20] and wide.k[0].shape[0] == 3
    nxt = jnp.array([[1], [2], [3]])
    logits, _ = _decode_jit(small_model, jitted)(nxt, wide)
    for row in range(3):
        seq = jnp.concatenate([prompt, nxt[row : row + 1]], axis=1)
        np.testing.assert_allclose(np.asarray(logits[row, 0]), np.asarray(forward(seq))[0, -1], atol=1e-5)


def test_inactive_rows_keep_their_state(small_model, small_config, tokens, jitted):
    cache = KVCache.empty(small_config, batch_size=2, max_len=64)
    decode = _decode_jit(small_model, jitted)
    _, cache = decode(tokens[:, :10], cache)
    _, after = decode(tokens[:, 10:11], cache, jnp.array([1, 0]))
    assert after.pos.tolist() == [11, 10]
    np.testing.assert_array_equal(np.asarray(after.prev_embedding[1]), np.asarray(cache.prev_embedding[1]))


def test_cache_layout_and_a_padded_chunk_past_the_end(small_model, small_config, tokens, jitted):
    """k/v are (B, Hkv, max_len, D); a padded chunk running past max_len (its tail is dropped) leaves a correct cache."""
    forward = jitted(small_model)
    decode = _decode_jit(small_model, jitted)
    cache = KVCache.empty(small_config, batch_size=2, max_len=16)
    assert cache.k[0].shape == (2, small_config.n_kv_head, 16, small_config.head_dim) and cache.max_len == 16
    # Row 0 holds 12 real tokens, row 1 holds 9; the chunk's padding reaches positions 12..19 and 9..19.
    lengths = jnp.array([12, 9])
    chunk = tokens[:, :20].at[1, 9:].set(0)
    _, cache = decode(chunk, cache, lengths)
    nxt = jnp.array([[5], [6]])
    logits, cache = decode(nxt, cache)
    for row, n in enumerate([12, 9]):
        seq = jnp.concatenate([tokens[row : row + 1, :n], nxt[row : row + 1]], axis=1)
        np.testing.assert_allclose(np.asarray(logits[row, -1]), np.asarray(forward(seq))[0, -1], atol=1e-5)
    assert cache.pos.tolist() == [13, 10]


def test_decoding_the_leading_rows_of_a_larger_cache(small_model, small_config, tokens, jitted):
    """idx with fewer rows than the cache decodes the cache's first rows; the others stay untouched."""
    decode = _decode_jit(small_model, jitted)
    cache = KVCache.empty(small_config, batch_size=2, max_len=64)
    _, cache = decode(tokens[:, :10], cache)
    logits, after = decode(tokens[:1, 10:12], cache)
    _, alone = decode(tokens[:1, :10], KVCache.empty(small_config, batch_size=1, max_len=64))
    expected, alone = decode(tokens[:1, 10:12], alone)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(expected), atol=1e-5)
    assert after.pos.tolist() == [12, 10] and after.has_prev.tolist() == [True, True]
    for name in ("k", "v"):
        for layer, (mine, single, before) in enumerate(zip(getattr(after, name), getattr(alone, name), getattr(cache, name))):
            np.testing.assert_allclose(np.asarray(mine[:1]), np.asarray(single), atol=1e-5, err_msg=f"{name}{layer}")
            np.testing.assert_array_equal(np.asarray(mine[1]), np.asarray(before[1]))
    np.testing.assert_array_equal(np.asarray(after.prev_embedding[1]), np.asarray(cache.prev_embedding[1]))
    with np.testing.assert_raises(ValueError):
        decode(tokens[:, :1].repeat(2, axis=0), cache)  # more rows than the cache holds


def test_transposed_head_serves_several_rows_only(small_model, small_config, tokens):
    """head_vc is the (vocab, C) head; decode uses it for several rows (same logits) and never for one."""
    graphdef, state = nnx.split(small_model)
    head_vc = jax.jit(lambda state: nnx.merge(graphdef, state).head_vc())(state)
    assert head_vc.shape == (small_config.padded_vocab, small_config.n_embd)

    @jax.jit
    def decode(state, idx, head_vc):
        cache = KVCache.empty(small_config, batch_size=idx.shape[0], max_len=64)
        return nnx.merge(graphdef, state).decode(idx, cache, head_vc=head_vc)[0]

    for idx in (tokens[:, :5], tokens[:1, :1]):
        plain = np.asarray(decode(state, idx, None))
        np.testing.assert_allclose(np.asarray(decode(state, idx, head_vc)), plain, atol=1e-5, rtol=0)
        used = not np.allclose(np.asarray(decode(state, idx, jnp.zeros_like(head_vc))), plain)
        assert used == (idx.size > 1)
