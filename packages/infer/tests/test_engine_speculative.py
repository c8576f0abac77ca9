"""Speculative sampling: exact greedy output, exact cache rollback, and the target's distribution."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flaxchat.infer.sampling import SamplingParams
from flaxchat.infer.speculative import SpeculativeStats, compiled_round
from flaxchat.infer.steps import compiled_model, split_model

N = 3  # num_samples, as in test_engine.py (shared compilations)


def columns(stream):
    return [list(column) for column, _ in stream]


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, idx):
    return nnx.merge(graphdef, state)(idx)


def last_logits(model, sequences, width: int = 32):
    """Full-forward logits after each sequence (the model's own training path, no cache; right-padded)."""
    idx = np.zeros((len(sequences), width), np.int32)
    for row, seq in enumerate(sequences):
        idx[row, : len(seq)] = seq
    out = np.asarray(_forward(*nnx.split(model), jnp.asarray(idx)))
    return np.stack([out[row, len(seq) - 1] for row, seq in enumerate(sequences)])


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_identical_draft_accepts_everything(engine, model, tokenizer, temperature):
    prompt = tokenizer.encode("same", prepend=tokenizer.bos_id)
    stats = SpeculativeStats()
    kw = dict(num_samples=N, max_tokens=14, temperature=temperature)
    stream = columns(engine.generate_speculative(prompt, model, k=3, stats=stats, **kw))
    assert stats.rounds > 0 and stats.proposed == stats.accepted and stats.acceptance_rate == 1.0
    if temperature == 0.0:
        assert stream == columns(engine.generate(prompt, num_samples=N, max_tokens=14, temperature=0.0))


def test_smaller_draft_gives_the_targets_greedy_output(engine, make_model, tokenizer):
    small = make_model(7, n_layer=1, n_embd=24, n_head=1, n_kv_head=1)
    prompt = tokenizer.encode("a smaller draft", prepend=tokenizer.bos_id)
    stats = SpeculativeStats()
    kw = dict(num_samples=N, max_tokens=20, temperature=0.0)
    assert columns(engine.generate_speculative(prompt, small, k=3, stats=stats, **kw)) == columns(engine.generate(prompt, **kw))
    assert 0.0 <= stats.acceptance_rate < 1.0


def test_long_generation_up_to_the_cache_end(engine, draft, tokenizer):
    """Rows that have their max_tokens stop advancing, so a full cache (prompt + max_tokens + k + 1
    = 256 slots) never overflows while slower rows catch up."""
    prompt = tokenizer.encode("a", prepend=tokenizer.bos_id)  # greedy never stops from here
    kw = dict(num_samples=N, max_tokens=256 - len(prompt) - 4, temperature=0.0)
    expected = columns(engine.generate(prompt, **kw))
    assert len(expected) == kw["max_tokens"]
    assert columns(engine.generate_speculative(prompt, draft, k=3, **kw)) == expected


def _prefilled(model, prompt, rows, cache_len):
    """(cache with the prompt in `rows` rows, structure, weights), through the Engine's own prefill."""
    graphdef, treedef, weights = split_model(model)
    tokens, length = np.asarray([prompt], np.int32), np.asarray([len(prompt)], np.int32)
    _, cache = compiled_model(graphdef, treedef).prefill(weights, tokens, length, num_samples=rows, cache_len=cache_len)
    return cache, (graphdef, treedef), weights


def _round(target, draft, prompt, cur, sampling, key, k, cache_len=256):
    rows = len(cur)
    target_cache, target_structure, target_weights = _prefilled(target, prompt, rows, cache_len)
    draft_cache, draft_structure, draft_weights = _prefilled(draft, prompt, rows, cache_len)
    run = compiled_round(target_structure, draft_structure)
    return run(
        target_weights, draft_weights, jnp.asarray(cur, jnp.int32), target_cache, draft_cache, key,
        sampling.arrays(target.config.vocab_size), jnp.ones(rows, bool), k=k,
    )


def test_rollback_leaves_both_caches_as_if_only_the_accepted_tokens_were_fed(model, draft, tokenizer):
    prompt = tokenizer.encode("roll back", prepend=tokenizer.bos_id)
    rows, k = N, 3
    cur = [97, 98, 99]  # a different pending token per row
    tokens, counts, new_cur, target_cache, draft_cache = _round(
        model, draft, prompt, cur, SamplingParams(1.0), jax.random.key(3), k
    )
    tokens, counts, new_cur = np.asarray(tokens), np.asarray(counts), np.asarray(new_cur)
    accepted = counts - 1
    assert ((0 < accepted) & (accepted < k)).any() and (accepted == 0).any()  # partial accepts happened
    committed = [prompt + [cur[r]] + tokens[r, : counts[r] - 1].tolist() for r in range(rows)]
    assert np.array_equal(new_cur, tokens[np.arange(rows), counts - 1])
    for net, cache in ((model, target_cache), (draft, draft_cache)):
        assert np.asarray(cache.pos).tolist() == [len(seq) for seq in committed]
        # Feeding the pending token must give the logits of a fresh full forward over the kept tokens.
        got = np.asarray(_decode(*nnx.split(net), jnp.asarray(new_cur[:, None]), cache))
        expected = last_logits(net, [seq + [int(c)] for seq, c in zip(committed, new_cur)])
        np.testing.assert_allclose(got, expected, atol=1e-4)


@functools.partial(jax.jit, static_argnums=0)
def _decode(graphdef, state, idx, cache):
    return nnx.merge(graphdef, state).decode(idx, cache, last_only=True)[0]


def _filtered_probs(logits, params: SamplingParams):
    """numpy reference: temperature, then top-k, then top-p over the renormalized rest."""
    z = logits.astype(np.float64) / params.temperature
    order = np.argsort(-z)
    keep = np.zeros_like(z, bool)
    keep[order[: params.top_k or len(z)]] = True
    p = np.where(keep, np.exp(z - z.max()), 0.0)
    p /= p.sum()
    if params.top_p is not None:
        cum = np.cumsum(p[order])
        nucleus = order[: int(np.searchsorted(cum, params.top_p)) + 1]
        p = np.where(np.isin(np.arange(len(z)), nucleus), p, 0.0)
        p /= p.sum()
    return p


def _chi_square(counts, probs):
    expected = probs * counts.sum()
    support = expected > 0
    assert counts[~support].sum() == 0  # never a token outside the filtered distribution
    return float(np.sum((counts[support] - expected[support]) ** 2 / expected[support])), int(support.sum()) - 1


@pytest.mark.parametrize("params", [SamplingParams(1.0), SamplingParams(0.7, top_k=5), SamplingParams(1.2, top_p=0.8)])
def test_first_speculative_token_follows_the_target_distribution(make_model, params):
    """Over 4096 rows (independent draws) the first committed token of a round is distributed as the
    target's p, not the draft's q, whatever was accepted or rejected."""
    target, draft = make_model(20, vocab_size=16), make_model(21, vocab_size=16)
    prompt, cur, rows = [1, 2, 3], 4, 4096
    tokens, *_ = _round(target, draft, prompt, [cur] * rows, params, jax.random.key(1), k=1)
    counts = np.bincount(np.asarray(tokens)[:, 0], minlength=16)
    p = _filtered_probs(last_logits(target, [prompt + [cur]])[0], params)
    q = _filtered_probs(last_logits(draft, [prompt + [cur]])[0], params)
    stat, dof = _chi_square(counts, p)
    assert stat < dof + 5 * np.sqrt(2 * dof)  # ~5 sigma above the mean of a chi-square(dof)
    # The test can tell: measured against the draft's distribution it fails.
    assert np.abs(p - q).sum() > 0.2
    stat_q = float(np.sum((counts - q * rows) ** 2 / np.maximum(q * rows, 1e-9)))
    assert stat_q > 10 * (dof + 5 * np.sqrt(2 * dof))


def test_bonus_token_follows_the_target_distribution(make_model):
    """With the target as its own draft every proposal is accepted and the bonus token (from
    p_{k+1}) completes the pair: (t1, t2) must be distributed as p(t1) p(t2 | t1)."""
    target = make_model(20, vocab_size=16)
    prompt, cur, rows = [1, 2, 3], 4, 4096
    tokens, counts, *_ = _round(target, target, prompt, [cur] * rows, SamplingParams(1.0), jax.random.key(2), k=1)
    assert (np.asarray(counts) == 2).all()
    pairs = np.asarray(tokens)[:, :2]
    joint_counts = np.bincount(pairs[:, 0] * 16 + pairs[:, 1], minlength=256)
    plain = SamplingParams(1.0)
    p1 = _filtered_probs(last_logits(target, [prompt + [cur]])[0], plain)
    p2 = np.stack([_filtered_probs(row, plain) for row in last_logits(target, [prompt + [cur, t] for t in range(16)])])
    stat, dof = _chi_square(joint_counts, (p1[:, None] * p2).reshape(-1))
    assert stat < dof + 5 * np.sqrt(2 * dof)
