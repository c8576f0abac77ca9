"""The Engine: nanochat's streaming generation (prefill once, decode with a KV cache, tools) in four modes.

All modes take the same request (prompt tokens, num_samples rows, max_tokens, temperature /
top_k / top_p, seed), draw with the same sampler, and stream (token_column, mask_column)
per step through the same row bookkeeping (stop on <|assistant_end|> or <|bos|>):

  generate_cached       a Python loop over the jitted decode step; runs tools. `generate` is this.
  generate_padded       reference: no cache, the full forward over the padded sequence every step.
  generate_fast         prefill and the whole decode loop in one jitted call (lax.while_loop);
                        tool calls are NOT executed (python blocks are generated as plain tokens).
  generate_speculative  a draft model proposes k tokens, the target verifies them in one forward;
                        output follows the target's distribution; no tool execution either.

cached, padded and fast draw step t's tokens with fold_in(key(seed), t), so given the same
logits they produce the same tokens; greedy (temperature 0) output is identical in all modes.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterator, Sequence

import jax
import numpy as np

from flaxchat.infer.errors import GenerationError
from flaxchat.infer.rows import Rows, SpecialTokens
from flaxchat.infer.sampling import SamplingArrays, SamplingParams
from flaxchat.infer.speculative import SpeculativeStats, compiled_round, round_heads
from flaxchat.infer.steps import (CompiledModel, check_vocab, compiled_model, head_for_rows, power_of_two_at_least,
                                   prefill_bucket, split_model)
from flaxchat.model import GPT
from flaxchat.tokenizer import Tokenizer

Column = tuple[list[int], list[int]]
MODES = ("cached", "padded", "fast", "speculative")


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """Shape buckets: every request maps onto a few shapes, so compilations are shared."""

    cache_block: int = 256  # KV cache lengths are rounded up to a multiple of this
    min_prefill_len: int = 16  # prompts are right-padded to a power of two at least this long
    max_positions: int | None = None  # longest prompt + generation; None = 10 x sequence_len (nanochat's rotary table)

    def __post_init__(self):
        for name in ("cache_block", "min_prefill_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise GenerationError(f"EngineConfig.{name} must be a positive integer, got {value!r}")
        limit = self.max_positions
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 1):
            raise GenerationError(f"EngineConfig.max_positions must be None or an integer > 1, got {self.max_positions!r}")


@dataclasses.dataclass(frozen=True)
class _Request:
    prompt: np.ndarray  # (1, bucket) int32, right-padded
    length: np.ndarray  # (1,) int32
    num_samples: int
    max_tokens: int
    sampling: SamplingArrays
    key: jax.Array
    cache_len: int


class Engine:
    """Generation for a GPT and its tokenizer (needed for tools and stop tokens)."""

    def __init__(self, model: GPT, tokenizer: Tokenizer, config: EngineConfig = EngineConfig()):
        check_vocab(model, tokenizer)
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.special = SpecialTokens.of(tokenizer)
        self._stops = np.asarray(self.special.stops, np.int32)

    @property
    def max_positions(self) -> int:
        return self.config.max_positions or 10 * self.model.config.sequence_len

    # Requests ---------------------------------------------------------------------------
    def _request(self, tokens, num_samples, max_tokens, temperature, top_k, top_p, seed, extra_len: int = 0) -> _Request:
        vocab = self.model.config.vocab_size
        if isinstance(tokens, np.ndarray):
            tokens = tokens.tolist()
        if not isinstance(tokens, (list, tuple)) or not tokens:
            raise GenerationError("tokens must be a non-empty list of token ids (e.g. tokenizer.encode(text, prepend=bos))")
        if not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) and 0 <= t < vocab for t in tokens):
            raise GenerationError(f"tokens must be integer ids in [0, {vocab})")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise GenerationError(f"num_samples must be an integer >= 1, got {num_samples!r}")
        # jax.random.key keeps only 32 bits without x64: larger seeds would silently collide.
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
            raise GenerationError(f"seed must be an integer in [0, 2**32), got {seed!r}")
        sampling = SamplingParams(temperature, top_k, top_p).arrays(vocab)
        n = len(tokens)
        if max_tokens is None:  # nanochat fills the model's context
            max_tokens = self.model.config.sequence_len - n
            if max_tokens < 1:
                raise GenerationError(
                    f"the prompt ({n} tokens) fills the model's sequence_len ({self.model.config.sequence_len}): "
                    "pass max_tokens explicitly or shorten the prompt"
                )
        elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise GenerationError(f"max_tokens must be None or an integer >= 1, got {max_tokens!r}")
        needed = n + max_tokens + extra_len
        if needed > self.max_positions:
            raise GenerationError(
                f"prompt ({n}) + max_tokens ({max_tokens}) needs {needed} positions, more than max_positions "
                f"({self.max_positions}): lower max_tokens or shorten the prompt"
            )
        block = self.config.cache_block
        cache_len = min(-(-needed // block) * block, self.max_positions)
        bucket = prefill_bucket(n, self.config.min_prefill_len, cache_len)
        prompt = np.zeros((1, bucket), np.int32)
        prompt[0, :n] = tokens
        return _Request(
            prompt=prompt,
            length=np.asarray([n], np.int32),
            num_samples=num_samples,
            max_tokens=max_tokens,
            sampling=sampling,
            key=jax.random.key(seed),
            cache_len=cache_len,
        )

    @staticmethod
    def _compiled(model: GPT) -> tuple[CompiledModel, tuple, list]:
        """The model's compiled functions, its structure and its current weights (read per request)."""
        graphdef, treedef, weights = split_model(model)
        return compiled_model(graphdef, treedef), (graphdef, treedef), weights

    def _rows(self, num_samples: int, tools: bool) -> Rows:
        return Rows(self.special, num_samples, self.tokenizer if tools else None)

    # Modes ------------------------------------------------------------------------------
    def generate(self, tokens, num_samples=1, max_tokens=None, temperature=1.0, top_k=None, top_p=None, seed=42):
        """Stream (token_column, mask_column) per step (mask 1 = sampled, 0 = forced tool output)."""
        return self.generate_cached(tokens, num_samples, max_tokens, temperature, top_k, top_p, seed)

    def generate_cached(
        self, tokens, num_samples=1, max_tokens=None, temperature=1.0, top_k=None, top_p=None, seed=42
    ) -> Iterator[Column]:
        """One batch-1 prefill shared by all rows, then one jitted decode step per column; runs tools."""
        req = self._request(tokens, num_samples, max_tokens, temperature, top_k, top_p, seed)
        return self._stream_cached(req)

    def _stream_cached(self, req: _Request) -> Iterator[Column]:
        fns, _, weights = self._compiled(self.model)
        sampled, cache = fns.start(
            weights, req.prompt, req.length, req.key, req.sampling, num_samples=req.num_samples, cache_len=req.cache_len
        )
        rows = self._rows(req.num_samples, tools=True)
        head_vc = head_for_rows(fns, weights, req.num_samples)
        for step in range(req.max_tokens):
            last = step + 1 == req.max_tokens
            ahead = None
            if not last and not rows.forcing:
                # This column is exactly the samples: start the next step on them now, so the
                # device computes while the host reads, yields and runs the consumer.
                ahead = fns.decode_step(weights, sampled, cache, req.key, np.int32(step + 1), req.sampling, head_vc)
            column, mask = rows.advance(np.asarray(sampled).tolist())
            yield column, mask
            if rows.all_completed or last:
                return
            if ahead is None:  # forced tokens in this column: feed the column itself (on device, as `sampled` is)
                ahead = fns.decode_step(
                    weights, jax.device_put(np.asarray(column, np.int32)), cache, req.key, np.int32(step + 1), req.sampling,
                    head_vc,
                )
            sampled, cache = ahead

    def generate_padded(
        self, tokens, num_samples=1, max_tokens=None, temperature=1.0, top_k=None, top_p=None, seed=42
    ) -> Iterator[Column]:
        """Reference mode: no KV cache; each step re-runs the whole (power-of-two padded) sequence. Runs tools."""
        req = self._request(tokens, num_samples, max_tokens, temperature, top_k, top_p, seed)
        return self._stream_padded(req)

    def _stream_padded(self, req: _Request) -> Iterator[Column]:
        fns, _, weights = self._compiled(self.model)
        n = int(req.length[0])
        total = n + req.max_tokens
        width = power_of_two_at_least(max(total, self.config.min_prefill_len))
        sequence = np.zeros((req.num_samples, width), np.int32)
        sequence[:, :n] = req.prompt[0, :n]
        rows = self._rows(req.num_samples, tools=True)
        head_vc = head_for_rows(fns, weights, req.num_samples)
        for step in range(req.max_tokens):
            length = n + step
            bucket = power_of_two_at_least(max(length, self.config.min_prefill_len))
            sampled = fns.padded_step(
                weights, sequence[:, :bucket], np.int32(length), req.key, np.int32(step), req.sampling, head_vc
            )
            column, mask = rows.advance(np.asarray(sampled).tolist())
            yield column, mask
            if rows.all_completed:
                return
            sequence[:, length] = column

    def generate_fast(
        self, tokens, num_samples=1, max_tokens=None, temperature=1.0, top_k=None, top_p=None, seed=42
    ) -> Iterator[Column]:
        """The whole request in one jitted call (decode loop in lax.while_loop), then the columns.

        Tool calls are not executed: <|python_start|> ... <|python_end|> are generated like any
        other tokens and no output is forced (all masks are 1). Use generate / generate_cached
        for tool use.
        """
        req = self._request(tokens, num_samples, max_tokens, temperature, top_k, top_p, seed)
        fns, _, weights = self._compiled(self.model)
        out, count = fns.fast_loop(
            weights, req.prompt, req.length, req.key, req.sampling, np.int32(req.max_tokens),
            self._stops, head_for_rows(fns, weights, req.num_samples), num_samples=req.num_samples,
            cache_len=req.cache_len,
        )
        return self._replay(np.asarray(out)[:, : int(count)].T, req.num_samples)

    def _replay(self, columns: Sequence, num_samples: int) -> Iterator[Column]:
        """Stream precomputed sampled columns through the (tool-less) row bookkeeping."""
        rows = self._rows(num_samples, tools=False)
        for sampled in columns:
            yield rows.advance(sampled)
            if rows.all_completed:
                return

    def generate_speculative(
        self, tokens, draft_model: GPT, k=4, num_samples=1, max_tokens=None, temperature=1.0, top_k=None, top_p=None,
        seed=42, stats: SpeculativeStats | None = None,
    ) -> Iterator[Column]:
        """Speculative sampling with `draft_model` proposing k tokens per round; output follows this model.

        The acceptance rate is in `stats` (pass a SpeculativeStats to read it). Tool calls are not
        executed (as generate_fast). Rows advance at different speeds; columns are yielded once
        every row has its token.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise GenerationError(f"k (draft tokens per round) must be an integer >= 1, got {k!r}")
        if not isinstance(draft_model, GPT):
            raise GenerationError(f"draft_model must be a flaxchat GPT, got {type(draft_model).__name__}")
        if draft_model.config.vocab_size != self.model.config.vocab_size:
            raise GenerationError(
                f"draft vocab ({draft_model.config.vocab_size}) != target vocab ({self.model.config.vocab_size}): "
                "the draft must share the target's tokenizer"
            )
        # A round writes up to k positions past the committed tokens.
        req = self._request(tokens, num_samples, max_tokens, temperature, top_k, top_p, seed, extra_len=k + 1)
        return self._stream_speculative(req, draft_model, k, stats if stats is not None else SpeculativeStats())

    def _stream_speculative(self, req: _Request, draft_model: GPT, k: int, stats: SpeculativeStats) -> Iterator[Column]:
        fns, structure, weights = self._compiled(self.model)
        draft_fns, draft_structure, draft_weights = self._compiled(draft_model)
        run_round = compiled_round(structure, draft_structure)
        shapes = dict(num_samples=req.num_samples, cache_len=req.cache_len)
        cur, cache = fns.start(weights, req.prompt, req.length, req.key, req.sampling, **shapes)
        _, draft_cache = draft_fns.prefill(draft_weights, req.prompt, req.length, **shapes)
        pending = [deque([token]) for token in np.asarray(cur).tolist()]
        committed = np.ones(req.num_samples, np.int64)  # tokens per row, yielded or pending
        rows = self._rows(req.num_samples, tools=False)
        heads = round_heads(fns, weights, draft_fns, draft_weights, req.num_samples)
        emitted = 0
        round_key = jax.random.fold_in(req.key, 1)  # step 0 (the first token) used fold_in(key, 0)
        while True:
            while all(pending):
                yield rows.advance([row.popleft() for row in pending])
                emitted += 1
                if emitted == req.max_tokens or rows.all_completed:
                    return
            active = committed < req.max_tokens
            tokens, counts, cur, cache, draft_cache = run_round(
                weights, draft_weights, cur, cache, draft_cache, jax.random.fold_in(round_key, stats.rounds),
                req.sampling, active, heads, k=k,
            )
            tokens, counts = np.asarray(tokens), np.asarray(counts)
            for row, count in enumerate(counts):
                pending[row].extend(tokens[row, :count].tolist())
            committed += counts
            stats.rounds += 1
            stats.proposed += k * int(active.sum())
            stats.accepted += int(np.sum(counts[active] - 1))

    # Batch ------------------------------------------------------------------------------
    def generate_batch(self, tokens, num_samples=1, mode: str = "cached", **kwargs) -> tuple[list[list[int]], list[list[int]]]:
        """Run a mode to the end -> (sequences, masks): prompt + generated tokens per row, each row cut
        before its first <|assistant_end|> / <|bos|> (excluded); masks are 0 for the prompt and
        forced tokens, 1 for sampled ones. kwargs go to generate_<mode>."""
        if mode not in MODES:
            raise GenerationError(f"mode must be one of {MODES}, got {mode!r}")
        stream = getattr(self, f"generate_{mode}")(tokens, num_samples=num_samples, **kwargs)
        prompt = [int(t) for t in tokens]
        sequences = [list(prompt) for _ in range(num_samples)]
        masks = [[0] * len(prompt) for _ in range(num_samples)]
        completed = [False] * num_samples
        for column, mask in stream:
            for row, (token, m) in enumerate(zip(column, mask)):
                if completed[row]:
                    continue
                if token in self.special.stops:
                    completed[row] = True
                else:
                    sequences[row].append(token)
                    masks[row].append(m)
            if all(completed):
                break
        return sequences, masks
