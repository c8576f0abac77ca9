"""The Flax model against an independent NumPy implementation of nanochat's forward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxchat.model import GPT, cross_entropy
from flaxchat.model.params import named_params

EPS = np.finfo(np.float32).eps


def np_norm(x):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + EPS)


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_forward(p, cfg, idx):
    """nanochat's GPT.forward written from the reference, with torch-layout (out, in) weights."""
    B, T = idx.shape
    C, H, Hkv, D = cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.n_embd // cfg.n_head
    lin = lambda x, w: x @ w.T  # noqa: E731  (torch Linear)
    W = lambda name: p[name].T  # flaxchat kernels are (in, out): recover torch (out, in)  # noqa: E731

    inv_freq = 1.0 / (100000.0 ** (np.arange(0, D, 2, dtype=np.float64) / D))
    freqs = np.outer(np.arange(T), inv_freq)
    cos, sin = np.cos(freqs)[None, :, None, :], np.sin(freqs)[None, :, None, :]

    def rope(x):
        x1, x2 = x[..., : D // 2], x[..., D // 2 :]
        return np.concatenate([x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos], axis=-1)

    x = np_norm(p["wte"][idx])
    gate = p["smear_lambda"][0] * np_sigmoid(lin(x[:, 1:, :24], W("smear_gate")))
    x = np.concatenate([x[:, :1], x[:, 1:] + gate * x[:, :-1]], axis=1)
    x0 = x
    short = -(-cfg.sequence_len // 4 // 128) * 128
    backout = None
    for i in range(cfg.n_layer):
        window = cfg.sequence_len if (cfg.window_pattern[i % len(cfg.window_pattern)] == "L" or i == cfg.n_layer - 1) else short
        x = p["resid_lambdas"][i] * x + p["x0_lambdas"][i] * x0
        h = np_norm(x)
        q = lin(h, W(f"blocks.{i}.attn.c_q")).reshape(B, T, H, D)
        k = lin(h, W(f"blocks.{i}.attn.c_k")).reshape(B, T, Hkv, D)
        v = lin(h, W(f"blocks.{i}.attn.c_v")).reshape(B, T, Hkv, D)
        if i % 2 == (cfg.n_layer - 1) % 2:
            ve = p[f"value_embeds.{i}"][idx].reshape(B, T, Hkv, D)
            g = 3 * np_sigmoid(lin(h[..., :12], W(f"blocks.{i}.attn.ve_gate")))
            v = v + g[..., None] * ve
        q, k = np_norm(rope(q)) * 1.2, np_norm(rope(k)) * 1.2
        k, v = np.repeat(k, H // Hkv, axis=2), np.repeat(v, H // Hkv, axis=2)
        scores = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(D)
        t_idx, s_idx = np.arange(T)[:, None], np.arange(T)[None, :]
        allowed = (s_idx <= t_idx) & (t_idx - s_idx <= window)
        scores = np.where(allowed, scores, -np.inf)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        y = np.einsum("bhts,bshd->bthd", probs, v).reshape(B, T, C)
        x = x + lin(y, W(f"blocks.{i}.attn.c_proj"))
        m = lin(np_norm(x), W(f"blocks.{i}.mlp.c_fc"))
        x = x + lin(np.maximum(m, 0) ** 2, W(f"blocks.{i}.mlp.c_proj"))
        if i == cfg.n_layer // 2:
            backout = x
    x = np_norm(x - p["backout_lambda"][0] * backout)
    logits = lin(x, W("lm_head"))[..., : cfg.vocab_size]
    return 15 * np.tanh(logits / 15)


def test_forward_matches_numpy_reference(small_model, small_config, tokens, jitted):
    params = {k: np.asarray(v, np.float64) for k, v in named_params(small_model).items()}
    expected = np_forward(params, small_config, np.asarray(tokens))
    got = np.asarray(jitted(small_model)(tokens))
    assert got.shape == (2, 200, 100) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-4, rtol=1e-4)


def test_sliding_window_changes_the_output(small_model, tokens, jitted):
    """Tokens more than a short window back must not influence S layers; the L layer sees them."""
    altered = tokens.at[:, 0].set((tokens[:, 0] + 1) % 100)
    forward = jitted(small_model)
    a, b = forward(tokens), forward(altered)
    assert float(jnp.abs(a[:, 150] - b[:, 150]).max()) > 1e-4  # the last layer is long


def test_loss_reductions_and_ignore_index(small_model, tokens, jitted):
    logits = np.asarray(jitted(small_model)(tokens), np.float64)
    targets = np.asarray(jnp.roll(tokens, -1, axis=1)).copy()
    targets[:, -1] = -1
    targets[0, :50] = -1
    lse = np.log(np.exp(logits).sum(-1))
    picked = np.take_along_axis(logits, np.maximum(targets, 0)[..., None], -1)[..., 0]
    per = np.where(targets >= 0, lse - picked, 0.0)
    none = np.asarray(jitted(small_model, loss_reduction="none")(tokens, jnp.asarray(targets)))
    np.testing.assert_allclose(none, per, rtol=1e-5, atol=1e-5)
    loss = jitted(small_model)
    mean = float(loss(tokens, jnp.asarray(targets)))
    np.testing.assert_allclose(mean, per.sum() / (targets >= 0).sum(), rtol=1e-5)
    assert float(loss(tokens, jnp.full_like(tokens, -1))) == 0.0
    with pytest.raises(ValueError, match="loss_reduction"):
        cross_entropy(jnp.zeros((1, 2, 3)), jnp.zeros((1, 2), jnp.int32), "avg")


def test_bf16_really_computes_in_bf16(small_model, small_config, tokens, jitted):
    from flax import nnx

    bf16 = GPT(small_config, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
    nnx.update(bf16, nnx.state(small_model, nnx.Param))
    jaxpr = str(jax.make_jaxpr(lambda t: bf16(t))(tokens))
    assert "bf16[2,200,64]" in jaxpr  # activations
    assert "bf16[2,200,4,16]" in jaxpr  # attention heads
    lo, hi = np.asarray(jitted(bf16)(tokens)), np.asarray(jitted(small_model)(tokens))
    assert lo.dtype == np.float32  # logits are always fp32
    diff = np.abs(lo - hi).max()
    assert 1e-3 < diff < 1.0, diff  # different rounding, same function
    assert np.mean(lo.argmax(-1) == hi.argmax(-1)) > 0.9


def test_remat_gives_identical_loss_and_grads(small_model, small_config, tokens):
    from flax import nnx

    remat = GPT(small_config, rngs=nnx.Rngs(0), remat=True)
    nnx.update(remat, nnx.state(small_model, nnx.Param))
    targets = jnp.roll(tokens, -1, axis=1)

    def loss_and_grad(model):
        graphdef, state = nnx.split(model)
        return jax.jit(jax.value_and_grad(lambda s: nnx.merge(graphdef, s)(tokens, targets)))(state)

    (l1, g1), (l2, g2) = loss_and_grad(small_model), loss_and_grad(remat)
    np.testing.assert_allclose(float(l1), float(l2), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    graphdef, state = nnx.split(remat)
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda s: nnx.merge(graphdef, s)(tokens, targets)))(state))
    assert "checkpoint" in jaxpr or "remat" in jaxpr


def test_gelu_and_tied_variants_run_and_differ(small_config, tokens, jitted):
    from flax import nnx

    from flaxchat.model.counting import param_counts

    for overrides in ({"mlp": "gelu"}, {"tie_embeddings": True}):
        cfg = small_config.replace(**overrides)
        model = GPT(cfg, rngs=nnx.Rngs(0))
        n = sum(np.size(v) for v in named_params(model).values())
        assert n == param_counts(cfg)["total"]
        assert np.isfinite(np.asarray(jitted(model)(tokens[:, :16]))).all()
    tied = GPT(small_config.replace(tie_embeddings=True), rngs=nnx.Rngs(0))
    assert "lm_head" not in named_params(tied)
    h = jnp.ones((1, 64))
    np.testing.assert_allclose(np.asarray(tied.head(h)), np.asarray(15 * jnp.tanh((h @ tied.wte[...].T)[:, :100] / 15)), rtol=1e-6)


def test_fused_head_loss_matches_plain_autodiff(small_model, tokens):
    """Loss and gradients of the fused, chunked head equal those of logits + cross_entropy."""
    from flax import nnx

    from flaxchat.model.head_loss import weighted_head_loss

    targets = jnp.roll(tokens, -1, axis=1).at[0, :30].set(-1)
    graphdef, state = nnx.split(small_model)

    def plain(state):
        return cross_entropy(nnx.merge(graphdef, state)(tokens), targets)

    def fused(state):
        return nnx.merge(graphdef, state)(tokens, targets)

    (l1, g1), (l2, g2) = jax.jit(jax.value_and_grad(plain))(state), jax.jit(jax.value_and_grad(fused))(state)
    np.testing.assert_allclose(float(l1), float(l2), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=1e-7)
    # Chunking with a ragged last chunk and per-token weights.
    h = jax.random.normal(jax.random.key(0), (50, 8))
    kernel = jax.random.normal(jax.random.key(1), (8, 64))
    t = jax.random.randint(jax.random.key(2), (50,), 0, 60)
    w = jax.random.uniform(jax.random.key(3), (50,))
    ref = lambda h, k: jnp.sum(w * (jax.nn.logsumexp(15 * jnp.tanh((h @ k)[:, :60] / 15), -1)  # noqa: E731
                                    - jnp.take_along_axis(15 * jnp.tanh((h @ k)[:, :60] / 15), t[:, None], -1)[:, 0]))
    got = lambda h, k: weighted_head_loss(h, k, t, w, 60, 15.0, 16)  # noqa: E731
    np.testing.assert_allclose(float(got(h, kernel)), float(ref(h, kernel)), rtol=1e-5)
    for a, b in zip(jax.grad(got, (0, 1))(h, kernel), jax.grad(ref, (0, 1))(h, kernel)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("window", [0, 5, 37, 100])
def test_blocked_causal_attention_equals_masked_attention(window):
    """The training path's query blocks (skipping fully masked keys) against the plain masked attention,
    with a ragged last block and GQA, and the numerics against NumPy."""
    from flaxchat.model.gpt import attention, causal_attention

    rng = np.random.default_rng(window)
    q = rng.standard_normal((2, 70, 4, 8)).astype(np.float32)
    k, v = (rng.standard_normal((2, 70, 2, 8)).astype(np.float32) for _ in range(2))
    pos = jnp.arange(70)
    blocked = jax.jit(lambda q, k, v: causal_attention(q, k, v, window, block=16))(q, k, v)
    plain = jax.jit(lambda q, k, v: attention(q, k, v, jnp.broadcast_to(pos, (2, 70)), pos, window))(q, k, v)
    np.testing.assert_allclose(blocked, plain, atol=2e-6)
    kk, vv = np.repeat(k, 2, axis=2), np.repeat(v, 2, axis=2)
    scores = np.einsum("bthd,bshd->bhts", q, kk) / np.sqrt(8)
    delta = np.arange(70)[:, None] - np.arange(70)[None, :]
    scores = np.where((delta >= 0) & (delta <= window), scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    expected = np.einsum("bhts,bshd->bthd", probs / probs.sum(-1, keepdims=True), vv)
    np.testing.assert_allclose(blocked, expected, atol=2e-5)
