"""Speculative sampling: a draft proposes k tokens, the target checks all of them in one forward.

One round per row (rows advance independently: the caches keep a position per row):
  1. the draft feeds the row's pending token `cur` and samples d_1..d_k from q_1..q_k;
  2. the target runs [cur, d_1, ..., d_k] as one chunk (T = k+1) -> p_1..p_{k+1};
  3. d_i is accepted with probability min(1, p_i(d_i) / q_i(d_i)), left to right; at the first
     rejection the replacement is drawn from norm(max(0, p_i - q_i)); when all k pass, a bonus
     token comes from p_{k+1}. The committed tokens then follow the target's distribution exactly
     (Leviathan et al. 2023; Chen et al. 2023), and at temperature 0 (one-hot p and q) they
     are the target's greedy tokens.
  4. both caches roll back to the accepted prefix: positions are reset (later writes overwrite the
     rejected entries) and the smear's previous embedding is recomputed for the last kept token.

Invariant between rounds: both caches hold every committed token except the last, `cur`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from flaxchat.infer.sampling import SamplingArrays, distribution, sample_weights
from flaxchat.infer.steps import CompiledModel, head_for_rows, merge_model
from flaxchat.model import GPT, KVCache


@dataclasses.dataclass
class SpeculativeStats:
    """Counters a caller may pass to generate_speculative; updated after every round."""

    rounds: int = 0
    proposed: int = 0  # draft tokens offered (k per active row per round)
    accepted: int = 0  # of those, accepted by the target

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


def _roll_back(model: GPT, cache: KVCache, before: KVCache, last, position, active) -> KVCache:
    """Keep `position` tokens (rows where active; others as `before`), ending with token `last`.

    The smear needs the pre-smear normalized embedding of the cache's last token; after a
    partial accept that is no longer the chunk's last, so it is recomputed from the token id.
    """
    embedding = model._embed(last[:, None]).astype(cache.prev_embedding.dtype)
    keep = active[:, None, None]
    return cache.replace(
        pos=jnp.where(active, position, before.pos),
        prev_embedding=jnp.where(keep, embedding, before.prev_embedding),
    )


def round_heads(target_fns: CompiledModel, target_weights, draft_fns: CompiledModel, draft_weights, rows: int):
    """The `heads` of speculative_round for `rows` rows: the target checks k + 1 tokens per row, so its
    head always runs over several rows; the draft's runs over `rows`."""
    return target_fns.head_vc(target_weights), head_for_rows(draft_fns, draft_weights, rows)


def speculative_round(
    target: GPT, draft: GPT, cur, target_cache: KVCache, draft_cache: KVCache, key, sampling: SamplingArrays, active,
    heads=(None, None), *, k: int
):
    """One round for every row; rows with active False keep their state (their outputs are ignored).

    heads: the target's and the draft's transposed heads or None (`round_heads`).

    Returns (tokens (B, k+1), counts (B,), new cur (B,), target cache, draft cache): row b
    committed tokens[b, :counts[b]] (its accepted drafts, then the replacement or bonus token),
    and counts - 1 drafts were accepted.
    """
    b = cur.shape[0]
    target_head_vc, draft_head_vc = heads
    draft_key, accept_key, residual_key = jax.random.split(key, 3)
    target_before, draft_before = target_cache, draft_cache

    def propose(carry, i):
        token, cache = carry
        logits, cache = draft.decode(token[:, None], cache, last_only=True, head_vc=draft_head_vc)
        q = distribution(logits, sampling)
        proposal = sample_weights(q, jax.random.uniform(jax.random.fold_in(draft_key, i), (b,)))
        return (proposal, cache), (proposal, q)

    (last_draft, draft_cache), (drafts, qs) = jax.lax.scan(propose, (cur, draft_cache), jnp.arange(k))
    # Feed d_k too, so that after a full accept the draft cache holds what the target's does.
    _, draft_cache = draft.decode(last_draft[:, None], draft_cache, last_only=True)
    drafts, qs = drafts.T, jnp.moveaxis(qs, 0, 1)  # (B, k), (B, k, V)

    chunk = jnp.concatenate([cur[:, None], drafts], axis=1)  # (B, k+1)
    logits, target_cache = target.decode(chunk, target_cache, head_vc=target_head_vc)
    vocab = logits.shape[-1]
    ps = distribution(logits.reshape(b * (k + 1), vocab), sampling).reshape(b, k + 1, vocab)

    p_draft = jnp.take_along_axis(ps[:, :k], drafts[..., None], axis=-1)[..., 0]
    q_draft = jnp.take_along_axis(qs, drafts[..., None], axis=-1)[..., 0]
    accept = jax.random.uniform(accept_key, (b, k)) * q_draft < p_draft
    n = jnp.sum(jnp.cumprod(accept, axis=1), axis=1).astype(jnp.int32)  # accepted prefix length

    # Residual at the first rejection; with q_{k+1} = 0 the same formula gives the bonus p_{k+1}.
    qs_padded = jnp.concatenate([qs, jnp.zeros((b, 1, vocab), qs.dtype)], axis=1)
    p_n = jnp.take_along_axis(ps, n[:, None, None], axis=1)[:, 0]
    residual = jnp.maximum(p_n - jnp.take_along_axis(qs_padded, n[:, None, None], axis=1)[:, 0], 0.0)
    # Rounding can empty the residual when p and q nearly agree; the target's own p is then exact enough.
    residual = jnp.where(jnp.sum(residual, axis=-1, keepdims=True) > 0, residual, p_n)
    replacement = sample_weights(residual, jax.random.uniform(residual_key, (b,)))

    slots = jnp.arange(k + 1)[None, :]
    padded_drafts = jnp.concatenate([drafts, jnp.zeros((b, 1), drafts.dtype)], axis=1)
    tokens = jnp.where(slots < n[:, None], padded_drafts, jnp.where(slots == n[:, None], replacement[:, None], -1))
    counts = jnp.where(active, n + 1, 0)

    last_kept = jnp.take_along_axis(chunk, n[:, None], axis=1)[:, 0]  # cur, or the last accepted draft
    position = target_before.pos + 1 + n
    target_cache = _roll_back(target, target_cache, target_before, last_kept, position, active)
    draft_cache = _roll_back(draft, draft_cache, draft_before, last_kept, position, active)
    return tokens, counts, jnp.where(active, replacement, cur), target_cache, draft_cache


@functools.cache
def compiled_round(target_structure: tuple, draft_structure: tuple):
    """speculative_round jitted for one (target, draft) pair of (graphdef, treedef), both caches donated."""

    @functools.partial(jax.jit, static_argnames="k", donate_argnames=("target_cache", "draft_cache"))
    def run(target_weights, draft_weights, cur, target_cache, draft_cache, key, sampling, active, heads=(None, None),
            *, k):
        target = merge_model(*target_structure, target_weights)
        draft = merge_model(*draft_structure, draft_weights)
        return speculative_round(target, draft, cur, target_cache, draft_cache, key, sampling, active, heads, k=k)

    return run
