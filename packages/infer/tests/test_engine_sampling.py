"""The sampler: top-k / top-p cut-offs against numpy sorting, and exact draws from weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flaxchat.infer.sampling import FAST_TOP_K, SamplingParams, distribution, sample, sample_weights

V = 300
LOGITS = np.random.default_rng(0).normal(0.0, 2.0, (4, V)).astype(np.float32)

_distribution = jax.jit(distribution)
_sample = jax.jit(sample)
_sample_weights = jax.jit(sample_weights)


def support(params: SamplingParams) -> list[set[int]]:
    probs = np.asarray(_distribution(LOGITS, params.arrays(V)))
    return [set(np.flatnonzero(row).tolist()) for row in probs]


@pytest.mark.parametrize("k", [1, 5, FAST_TOP_K, FAST_TOP_K + 1, 200, V - 1])
def test_top_k_keeps_the_k_largest(k):
    """Both cut-off paths (lax.top_k up to FAST_TOP_K, bisection above) match a sort."""
    expected = [set(np.argsort(-row)[:k].tolist()) for row in LOGITS]
    assert support(SamplingParams(0.8, top_k=k)) == expected


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9, 0.999])
def test_top_p_keeps_the_smallest_nucleus(p):
    expected = []
    for row in LOGITS:
        order = np.argsort(-row)
        probs = np.exp(row[order] - row.max())
        cum = np.cumsum(probs / probs.sum())
        expected.append(set(order[: int(np.searchsorted(cum, p)) + 1].tolist()))
    assert support(SamplingParams(1.0, top_p=p)) == expected


def test_top_p_applies_to_the_top_k_distribution():
    k, p = 10, 0.6
    expected = []
    for row in LOGITS:
        order = np.argsort(-row)[:k]
        probs = np.exp(row[order] - row.max())
        cum = np.cumsum(probs / probs.sum())
        expected.append(set(order[: int(np.searchsorted(cum, p)) + 1].tolist()))
    assert support(SamplingParams(1.0, top_k=k, top_p=p)) == expected


def test_distribution_applies_temperature_and_is_one_hot_at_zero():
    probs = np.asarray(_distribution(LOGITS, SamplingParams(0.5).arrays(V)))
    z = LOGITS.astype(np.float64) / 0.5
    expected = np.exp(z - z.max(-1, keepdims=True))
    np.testing.assert_allclose(probs, expected / expected.sum(-1, keepdims=True), rtol=1e-4, atol=1e-7)
    greedy = np.asarray(_distribution(LOGITS, SamplingParams(0.0).arrays(V)))
    np.testing.assert_array_equal(greedy, np.eye(V)[LOGITS.argmax(-1)])
    tokens = np.asarray(_sample(LOGITS, jax.random.key(0), SamplingParams(0.0).arrays(V)))
    np.testing.assert_array_equal(tokens, LOGITS.argmax(-1))


def test_sample_weights_draws_in_proportion_and_never_a_zero_weight():
    rows = 20000
    weights = np.zeros(V, np.float32)
    weights[[0, 7, 127, 128, 129, 255, 299]] = [1.0, 2.0, 0.5, 3.0, 1e-3, 1.5, 2.0]  # across block edges
    u = jax.random.uniform(jax.random.key(1), (rows,))
    drawn = np.asarray(_sample_weights(jnp.broadcast_to(weights, (rows, V)), u))
    counts = np.bincount(drawn, minlength=V)
    assert counts[weights == 0].sum() == 0
    expected = weights / weights.sum() * rows
    nonzero = weights > 0
    chi2 = np.sum((counts[nonzero] - expected[nonzero]) ** 2 / expected[nonzero])
    assert chi2 < 6 + 5 * np.sqrt(12)  # 6 degrees of freedom, ~5 sigma


def test_sample_weights_edges_of_u():
    weights = np.zeros((3, V), np.float32)
    weights[:, [3, 200, 250]] = 1.0
    u = np.asarray([0.0, np.nextafter(np.float32(1), np.float32(0)), 0.5], np.float32)
    np.testing.assert_array_equal(np.asarray(_sample_weights(weights, u)), [3, 250, 200])


def test_sampling_params_validate():
    assert SamplingParams(1.0, top_k=0).arrays(V).top_k == V  # 0 = off
    assert SamplingParams(1.0, top_k=10**6).arrays(V).top_k == V
    assert SamplingParams(1.0, top_p=None).arrays(V).top_p == 1.0
