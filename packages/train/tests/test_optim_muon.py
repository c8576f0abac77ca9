"""Properties of Muon's pieces: Polar Express lands in its singular-value band, updates are near
semi-orthogonal, decay is cautious, bf16 stays close to fp32, bad inputs get clear errors.
(Exact agreement with nanochat's step is in test_optim_numerics.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxchat.train.optim import Hyperparams, MuonError, muon_optimizer
from flaxchat.train.optim.muon import polar_express, row_equilibrate

orthogonalize = jax.jit(lambda x: polar_express(row_equilibrate(x)))


def hyper(lrm, mu, wdm):
    return Hyperparams(jnp.float32(lrm), jnp.float32(mu), jnp.float32(wdm))


def singular_values(x):
    return np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)


def with_spectrum(rng, shape, low):
    """A random matrix whose singular values are log-spaced in [low, 1], times a scale."""
    m, n = shape
    u, _ = np.linalg.qr(rng.standard_normal((m, m)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    k = min(m, n)
    s = np.zeros(shape)
    s[np.arange(k), np.arange(k)] = np.geomspace(low, 1.0, k)
    return (3.7 * u @ s @ v.T).astype(np.float32)


@pytest.mark.parametrize("shape", [(24, 24), (64, 16), (16, 64), (40, 56)])
def test_polar_express_singular_values_in_band(shape):
    rng = np.random.default_rng(sum(shape))
    for x in (with_spectrum(rng, shape, 1e-2), rng.standard_normal(shape).astype(np.float32)):
        sv = singular_values(orthogonalize(jnp.asarray(x)))
        assert sv.min() > 0.7 and sv.max() < 1.2, (shape, sv.min(), sv.max())


def test_polar_express_is_odd_and_scale_invariant():
    x = np.random.default_rng(0).standard_normal((20, 12)).astype(np.float32)
    pe = jax.jit(polar_express)
    y = np.asarray(pe(jnp.asarray(x)))
    np.testing.assert_allclose(np.asarray(pe(jnp.asarray(-x))), -y, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(pe(jnp.asarray(1e3 * x))), y, rtol=1e-4, atol=1e-6)


def test_first_update_is_near_semi_orthogonal():
    rng = np.random.default_rng(1)
    shapes = {"tall": (48, 16), "wide": (16, 48), "square": (24, 24)}  # (out, in)
    kernels = {k: jnp.zeros((i, o)) for k, (o, i) in shapes.items()}  # zero weights: update = -lr * g
    grads = {k: jnp.asarray(rng.standard_normal(p.shape), jnp.float32) for k, p in kernels.items()}
    tx = muon_optimizer(1.0, 0.0)
    updates, _ = jax.jit(tx.update)(grads, tx.init(kernels), kernels, hyperparams=hyper(1.0, 0.9, 1.0))
    for k, (o, i) in shapes.items():
        sv = singular_values(updates[k])
        assert sv.max() / sv.min() < 4.0, k
        # Muon+ and NorMuon keep ||g||_F = sqrt(min(m, n)); the LR carries sqrt(max(1, out/in)).
        np.testing.assert_allclose(np.linalg.norm(sv), np.sqrt(min(o, i)) * np.sqrt(max(1, o / i)), rtol=1e-5)


def test_cautious_decay_only_where_signs_agree():
    rng = np.random.default_rng(3)
    params = {"k": jnp.asarray(rng.standard_normal((16, 8)), jnp.float32)}
    grads = {"k": jnp.asarray(rng.standard_normal((16, 8)), jnp.float32)}
    lr, wd = 1e-3, 100.0
    tx = muon_optimizer(lr, wd)
    update = jax.jit(tx.update)
    state = tx.init(params)
    plain = np.asarray(update(grads, state, params, hyperparams=hyper(1, 0.9, 0.0))[0]["k"])
    decayed = np.asarray(update(grads, state, params, hyperparams=hyper(1, 0.9, 1.0))[0]["k"])
    w = np.asarray(params["k"])
    g = -plain / lr  # the orthogonalized direction (square kernel: no shape factor)
    mask = g * w >= 0
    assert mask.any() and (~mask).any()
    np.testing.assert_allclose((decayed - plain)[mask], -lr * wd * w[mask], rtol=1e-4)
    assert np.all(decayed[~mask] == plain[~mask])


def test_bf16_orthogonalization_is_close_to_fp32():
    rng = np.random.default_rng(4)
    params = {"k": jnp.asarray(rng.standard_normal((32, 96)), jnp.float32)}
    grads = {"k": jnp.asarray(rng.standard_normal((32, 96)), jnp.float32)}
    results = {}
    for dtype in ("float32", "bfloat16"):
        tx = muon_optimizer(1.0, 0.0, compute_dtype=dtype)
        updates, state = jax.jit(tx.update)(grads, tx.init(params), params, hyperparams=hyper(1, 0.9, 1))
        assert updates["k"].dtype == jnp.float32 and state.momentum["k"].dtype == jnp.float32
        results[dtype] = np.asarray(updates["k"], np.float64).ravel()
    a, b = results["float32"], results["bfloat16"]
    assert not np.array_equal(a, b)  # bf16 really ran
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.99


def test_rejects_bad_inputs():
    with pytest.raises(MuonError, match="2-D"):
        muon_optimizer(0.02, 0.0).init({"v": jnp.zeros((4,))})
    with pytest.raises(MuonError, match="ns_steps"):
        muon_optimizer(0.02, 0.0, ns_steps=6)
    with pytest.raises(MuonError, match="dtype"):
        muon_optimizer(0.02, 0.0, compute_dtype="float16")
    tx = muon_optimizer(0.02, 0.0)
    params = {"k": jnp.ones((4, 4))}
    with pytest.raises(MuonError, match="hyperparams"):
        tx.update(params, tx.init(params), params)
