"""Muon and AdamW updates against independent NumPy transcriptions of nanochat (sections 3.2, 3.3).

nanochat states everything for PyTorch's (out, in) weights; flaxchat kernels are (in, out), so
the NumPy Muon runs on each kernel's transpose.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from flaxchat.model import GPT, GPTConfig
from flaxchat.train.optim import OptimizerConfig, build_optimizer, param_names, pretrain_schedules

COEFFS = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]


def numpy_muon(G, W, state, *, lr, mu, wd, beta2=0.9):
    """nanochat's Muon step for an (out, in) matrix in float64; state = (buf, buf2) or None."""
    G, W = G.astype(np.float64), W.astype(np.float64)
    m, n = G.shape
    buf, buf2 = state or (np.zeros((m, n)), np.zeros((m, 1) if m >= n else (1, n)))
    buf = mu * buf + (1 - mu) * G
    g = (1 - mu) * G + mu * buf
    X = g * (np.linalg.norm(g) / np.sqrt(m) / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-6))
    X = X / (np.linalg.norm(X) * 1.01 + 1e-6)
    for a, b, c in COEFFS:
        if m > n:
            A = X.T @ X
            X = a * X + X @ (b * A + c * A @ A)
        else:
            A = X @ X.T
            X = a * X + (b * A + c * A @ A) @ X
    g = X * np.sqrt(min(m, n)) / max(np.linalg.norm(X), 1e-6)
    axis = 1 if m >= n else 0
    s = g.shape[axis]
    v_mean = (g**2).mean(axis=axis, keepdims=True)
    v_norm = np.sqrt(v_mean.sum() * s)
    buf2 = beta2 * buf2 + (1 - beta2) * v_mean
    step = 1 / np.sqrt(np.maximum(buf2, 1e-10))
    g = g * step * (v_norm / max(np.sqrt((v_mean * s * step**2).sum()), 1e-10))
    lr_eff = lr * np.sqrt(max(1, m / n))
    mask = (g * W) >= 0
    return W - lr_eff * g - lr_eff * wd * W * mask, (buf, buf2)


def numpy_adamw(g, p, state, *, lr, betas, wd, eps=1e-10):
    """torch.optim.AdamW / nanochat adamw_step_fused in float64; state = (step, m, v) or None."""
    g, p = g.astype(np.float64), p.astype(np.float64)
    step, m, v = state or (0, np.zeros_like(p), np.zeros_like(p))
    b1, b2 = betas
    step += 1
    p = p * (1 - lr * wd)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g**2
    denom = np.sqrt(v / (1 - b2**step)) + eps
    return p - (lr / (1 - b1**step)) * m / denom, (step, m, v)


def assert_update_close(new, old, ref_new, name):
    """new - old equals ref_new - old to rtol 1e-5 (atol 1e-5 of the largest entry: fp32 vs float64)."""
    got, want = np.asarray(new, np.float64) - old, ref_new - old
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max(), err_msg=name)


def expected_group(name, cfg: GPTConfig, opt: OptimizerConfig):
    """nanochat's setup_optimizer table, written out: (kind, lr, betas, weight decay)."""
    width = (cfg.n_embd / 768) ** -0.5
    bs = opt.batch_lr_scale
    if name == "lm_head":
        return "adamw", opt.unembedding_lr * bs * width, (0.8, 0.96), 0.01
    if name == "wte":
        return "adamw", opt.embedding_lr * bs * width, (0.8, 0.995), 0.001
    if name.startswith("value_embeds."):
        return "adamw", opt.embedding_lr * bs * width * 0.5, (0.8, 0.995), 0.01
    if name == "resid_lambdas":
        return "adamw", opt.scalar_lr * bs * 0.01, (0.8, 0.95), 0.05
    if name == "x0_lambdas":
        return "adamw", opt.scalar_lr * bs, (0.96, 0.95), 0.0
    if name in ("smear_gate", "smear_lambda", "backout_lambda"):
        return "adamw", 0.2, (0.8, 0.95), 0.0
    assert name.startswith("blocks.")
    return "muon", opt.matrix_lr * bs, None, opt.weight_decay


def test_full_optimizer_two_steps_match_numpy():
    """Every parameter of a GQA model, through build_optimizer + pretrain schedules, for two steps.

    The second step exercises the momentum and NorMuon buffers and the AdamW bias corrections;
    the block matrices include tall (mlp.c_fc), wide (c_k, mlp.c_proj, ve_gate) and square (c_q) ones.
    """
    cfg = GPTConfig(sequence_len=32, vocab_size=100, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, window_pattern="S")
    rng = np.random.default_rng(1)
    params = nnx.state(GPT(cfg, rngs=nnx.Rngs(0)), nnx.Param)
    params = jax.tree.map(lambda p: jnp.asarray(0.05 * rng.standard_normal(p.shape), jnp.float32), params)
    opt = OptimizerConfig(
        embedding_lr=0.3, unembedding_lr=0.008, matrix_lr=0.02, scalar_lr=0.5, weight_decay=0.3, batch_lr_scale=0.5
    )
    n, warmup = 10, 3
    tx = build_optimizer(params, cfg, opt, pretrain_schedules(n, warmup_steps=warmup, warmdown_ratio=0.5))
    update = jax.jit(tx.update)
    state = tx.init(params)
    ref = {k: np.asarray(v, np.float64) for k, v in param_names(params).items()}
    refstate = dict.fromkeys(ref)
    groups = {k: expected_group(k, cfg, opt) for k in ref}
    out_in = {ref[k].shape[::-1] for k, g in groups.items() if g[0] == "muon"}
    assert {"tall", "wide", "square"} == {"tall" if o > i else "wide" if o < i else "square" for o, i in out_in}
    assert any(k.endswith("ve_gate") for k in ref)
    for it in range(2):
        lrm = (it + 1) / warmup
        mu = (1 - it / 400) * 0.85 + it / 400 * 0.97
        wdm = 0.5 * (1 + math.cos(math.pi * it / n))
        grads = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params)
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        new, g = param_names(params), param_names(grads)
        for k, (kind, lr, betas, wd) in groups.items():
            old = ref[k]
            if kind == "adamw":
                ref[k], refstate[k] = numpy_adamw(np.asarray(g[k]), old, refstate[k], lr=lr * lrm, betas=betas, wd=wd)
            else:  # nanochat's (out, in) matrix is the transpose of the Flax kernel
                w, refstate[k] = numpy_muon(np.asarray(g[k]).T, old.T, refstate[k], lr=lr * lrm, mu=mu, wd=wd * wdm)
                ref[k] = w.T
            assert_update_close(new[k], old, ref[k], k)
    assert int(state.step) == 2
