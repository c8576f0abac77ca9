"""Decode speed of the generation modes: ms per step and tok/s per batch size, prefill, MBU, speculative.

Everything runs the Engine's own jitted functions (flaxchat.infer.steps and the speculative round)
on random or loaded weights; no tokenizer is needed, so nothing stops early on a stop token. Each
(mode, batch size) is compiled and warmed up before it is timed, and every timed step has the
same shapes as the warm-up, so no timing includes a compilation. Step times are medians, since
shared machines are noisy.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from flaxchat.infer.sampling import SamplingParams
from flaxchat.infer.speculative import SpeculativeStats, compiled_round, round_heads
from flaxchat.infer.steps import CompiledModel, compiled_model, head_for_rows, power_of_two_at_least, split_model
from flaxchat.model import GPT
from flaxchat.model.counting import kv_bytes_per_token, kv_read_bytes_per_step, num_matmul_params, prefill_flops

NO_STOPS = np.asarray([-1, -1], np.int32)  # the fast loop's stop tokens: none, every row runs to the end
WARMUP_STEPS = 2  # decode steps before timing starts (the first call compiles)
SPEC_HEADROOM = 3  # speculative rounds' worth of extra cache positions: the warm-up, the overshoot, the last writes
MODES = ("cached", "fast", "padded")


class BenchmarkError(ValueError):
    """Benchmark settings that cannot be measured; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class DecodeBenchConfig:
    """What to measure. Decoding starts at context - steps/2, so the mean context is `context`.

    prompt_ids: a real prompt (token ids) to decode from instead of random tokens, so that a
    trained draft meets text it can predict; the mean context is then its length + steps/2.
    """

    batch_sizes: tuple[int, ...] = (1, 4, 16, 64)
    context: int = 384  # nanochat's measurement: prompt plus half the decoded tokens
    steps: int = 32  # timed decode steps per (mode, batch size)
    prefill_tokens: int = 256
    padded_max_batch: int = 4  # the padded reference re-runs the whole sequence per token: small batches only
    padded_steps: int = 3
    spec_k: int = 4  # draft tokens per speculative round
    temperature: float = 0.0
    repeats: int = 3  # timed runs of the fast loop and of prefill, speculative/cached pairs (medians reported)
    cache_block: int = 256  # cache lengths round up to this, as the Engine's
    seed: int = 0
    prompt_ids: tuple[int, ...] = ()

    def __post_init__(self):
        if not self.batch_sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in self.batch_sizes):
            raise BenchmarkError(f"batch sizes must be integers >= 1, got {self.batch_sizes!r}")
        for name in ("context", "steps", "prefill_tokens", "padded_max_batch", "padded_steps", "spec_k", "repeats",
                     "cache_block"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BenchmarkError(f"{name.replace('_', '-')} must be an integer >= 1, got {value!r}")
        if self.steps < 2:
            raise BenchmarkError(f"steps must be at least 2 (the fast loop's first token comes from prefill), "
                                 f"got {self.steps}")
        if self.prompt_tokens < 1:
            raise BenchmarkError(f"context ({self.context}) must exceed steps/2 ({self.steps // 2}): "
                                 "decoding starts at context - steps/2")
        if any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in self.prompt_ids):
            raise BenchmarkError("prompt ids must be integers >= 0")
        SamplingParams(self.temperature)  # validates it

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids) if self.prompt_ids else self.context - self.steps // 2

    @property
    def mean_context(self) -> int:
        return self.prompt_tokens + self.steps // 2


@dataclasses.dataclass(frozen=True)
class DecodeCost:
    """Bytes a decode step reads: every matmul weight once, plus each row's visible KV cache."""

    weight_bytes: int
    kv_bytes_per_token: int
    kv_read_bytes_per_row: int

    @classmethod
    def of(cls, model: GPT, context: int) -> "DecodeCost":
        config, itemsize = model.config, jnp.dtype(model.dtype).itemsize
        return cls(
            weight_bytes=num_matmul_params(config) * 4,  # weights stay fp32 (cast inside each matmul)
            kv_bytes_per_token=kv_bytes_per_token(config, itemsize),
            kv_read_bytes_per_row=kv_read_bytes_per_step(config, context, itemsize),
        )

    def step_bytes(self, batch_size: int) -> int:
        return self.weight_bytes + batch_size * self.kv_read_bytes_per_row


def _round_up(n: int, block: int) -> int:
    return -(-n // block) * block


class _Runner:
    """One model's compiled functions and weights, a fixed prompt (cfg.prompt_ids, else random) and a
    cache length with room for the warm-up, the timed steps and `extra_positions`."""

    def __init__(self, model: GPT, cfg: DecodeBenchConfig, extra_positions: int = 0):
        graphdef, treedef, self.weights = split_model(model)
        self.structure = (graphdef, treedef)
        self.fns = compiled_model(graphdef, treedef)
        self.cfg = cfg
        self.vocab = model.config.vocab_size
        self.sampling = SamplingParams(cfg.temperature).arrays(model.config.vocab_size)
        self.key = jax.random.key(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        n = cfg.prompt_tokens
        self.prompt = np.zeros((1, power_of_two_at_least(n)), np.int32)
        self.prompt[0, :n] = cfg.prompt_ids if cfg.prompt_ids else rng.integers(0, model.config.vocab_size, n)
        self.length = np.asarray([n], np.int32)
        needed = n + WARMUP_STEPS + cfg.steps + 1 + extra_positions
        self.cache_len = _round_up(needed, cfg.cache_block)
        if self.prompt.shape[1] > self.cache_len:
            self.prompt = self.prompt[:, : self.cache_len]

    def start(self, batch_size: int):
        return self.fns.start(self.weights, self.prompt, self.length, self.key, self.sampling,
                              num_samples=batch_size, cache_len=self.cache_len)

    def cached_step_times(self, batch_size: int) -> list[float]:
        """Seconds between successive token columns reaching the host, pipelined as the Engine's loop:
        step i+1 is dispatched before the host reads column i."""
        fns, w = self.fns, self.weights
        head_vc = head_for_rows(fns, w, batch_size)
        sampled, cache = self.start(batch_size)
        times, last = [], None
        for step in range(1, WARMUP_STEPS + self.cfg.steps + 1):
            ahead = fns.decode_step(w, sampled, cache, self.key, np.int32(step), self.sampling, head_vc)
            np.asarray(sampled)
            now = time.perf_counter()
            if step > WARMUP_STEPS:
                times.append(now - last)
            last = now
            sampled, cache = ahead
        return times

    def fast_step_time(self, batch_size: int) -> float:
        """The fast loop over `steps` tokens minus the same compiled loop stopped after its first token
        (prefill and first sample only), per decode step; medians over repeats."""
        head_vc = head_for_rows(self.fns, self.weights, batch_size)

        def loop(max_tokens: int):
            return lambda: self.fns.fast_loop(self.weights, self.prompt, self.length, self.key, self.sampling,
                                              np.int32(max_tokens), NO_STOPS, head_vc, num_samples=batch_size,
                                              cache_len=self.cache_len)

        decode_s = _median_time(loop(self.cfg.steps), self.cfg.repeats) - _median_time(loop(1), self.cfg.repeats)
        if decode_s <= 0:
            raise BenchmarkError(f"the fast loop's {self.cfg.steps} decode steps were lost in timing noise: raise --steps")
        return decode_s / (self.cfg.steps - 1)

    def padded_step_times(self, batch_size: int) -> list[float]:
        """The reference without a cache: each step re-runs the whole power-of-two padded sequence."""
        n = self.cfg.prompt_tokens
        width = power_of_two_at_least(n + WARMUP_STEPS + self.cfg.padded_steps)
        rng = np.random.default_rng(self.cfg.seed + 1)
        sequence = rng.integers(0, self.vocab, (batch_size, width)).astype(np.int32)
        head_vc = head_for_rows(self.fns, self.weights, batch_size)
        times = []
        for step in range(WARMUP_STEPS + self.cfg.padded_steps):
            length = n + step
            bucket = power_of_two_at_least(length)
            start = time.perf_counter()
            np.asarray(self.fns.padded_step(self.weights, sequence[:, :bucket], np.int32(length), self.key,
                                            np.int32(step), self.sampling, head_vc))
            if step >= WARMUP_STEPS:
                times.append(time.perf_counter() - start)
        return times

    def prefill_time(self, tokens: int) -> float:
        rng = np.random.default_rng(self.cfg.seed + 2)
        prompt = rng.integers(0, self.vocab, (1, tokens)).astype(np.int32)
        length = np.asarray([tokens], np.int32)
        cache_len = _round_up(tokens, self.cfg.cache_block)
        return _median_time(lambda: self.fns.prefill(self.weights, prompt, length, num_samples=1, cache_len=cache_len),
                            self.cfg.repeats)


def _prefill_flops(config, tokens: int) -> int:
    """nanochat's prefill FLOPs less the head at all but the last token: prefill computes only its logits."""
    return prefill_flops(config, tokens) - 2 * config.padded_vocab * config.n_embd * (tokens - 1)


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _entry(mode: str, batch_size: int, step_s: float, cost: DecodeCost, bandwidth: float, steps: int) -> dict:
    return {
        "mode": mode,
        "batch_size": batch_size,
        "ms_per_step": round(step_s * 1e3, 3),  # also each stream's latency per token
        "tok_per_s": round(batch_size / step_s, 1),
        "mbu_percent": round(100 * cost.step_bytes(batch_size) / step_s / bandwidth, 1),
        "timed_steps": steps,
    }


def speculative(target: _Runner, draft_model: GPT, cfg: DecodeBenchConfig) -> dict:
    """Batch-1 speculative decoding against the cached loop: `repeats` pairs of runs, each a
    speculative run then the cached loop over as many steps, so that each speedup compares runs
    seconds apart (a shared machine's speed drifts more than that between runs minutes apart).
    Reports the acceptance rate, the medians, and every pair."""
    draft_graphdef, draft_treedef, draft_weights = split_model(draft_model)
    draft_fns = compiled_model(draft_graphdef, draft_treedef)
    draft = _Draft(draft_fns, draft_weights, compiled_round(target.structure, (draft_graphdef, draft_treedef)),
                   round_heads(target.fns, target.weights, draft_fns, draft_weights, rows=1))
    stats, runs = SpeculativeStats(), []
    for _ in range(cfg.repeats):
        tok_per_s = _speculative_run(target, draft, cfg, stats)
        cached_tok_per_s = 1.0 / float(np.median(target.cached_step_times(1)))
        runs.append({"tok_per_s": round(tok_per_s, 1), "cached_tok_per_s": round(cached_tok_per_s, 1),
                     "speedup": round(tok_per_s / cached_tok_per_s, 3)})
    return {
        "k": cfg.spec_k,
        "draft_config": draft_model.config.to_dict(),
        "rounds": stats.rounds,
        "acceptance_rate": round(stats.acceptance_rate, 4),
        "tokens_per_round": round((stats.accepted + stats.rounds) / stats.rounds, 3),
        "tok_per_s": float(np.median([r["tok_per_s"] for r in runs])),
        "cached_tok_per_s": float(np.median([r["cached_tok_per_s"] for r in runs])),
        "speedup": float(np.median([r["speedup"] for r in runs])),
        "runs": runs,
    }


@dataclasses.dataclass(frozen=True)
class _Draft:
    """The draft's compiled functions and weights, and the round compiled for the (target, draft) pair
    with its heads (`round_heads`: made once, since the target's is a copy of its whole head)."""

    fns: CompiledModel
    weights: object
    run_round: Callable
    heads: tuple


def _speculative_run(target: _Runner, draft: _Draft, cfg: DecodeBenchConfig, stats: SpeculativeStats) -> float:
    """Rounds from the prompt until `steps` tokens are committed: committed tok/s, the first round
    (the compilation, on the first run) untimed; `stats` counts the timed rounds."""
    cur, cache = target.start(1)
    _, draft_cache = draft.fns.prefill(draft.weights, target.prompt, target.length, num_samples=1,
                                       cache_len=target.cache_len)
    active = np.ones(1, bool)
    committed, elapsed, rounds = 0, 0.0, 0
    # The prompt, a warm-up round, then rounds until `steps` tokens are committed, each writing up
    # to k + 1 positions: the target's cache was sized with SPEC_HEADROOM rounds to spare.
    while committed < cfg.steps:
        start = time.perf_counter()
        tokens, counts, cur, cache, draft_cache = draft.run_round(
            target.weights, draft.weights, cur, cache, draft_cache, jax.random.fold_in(target.key, rounds),
            target.sampling, active, draft.heads, k=cfg.spec_k,
        )
        counts = np.asarray(counts)
        took = time.perf_counter() - start
        rounds += 1
        if rounds == 1:
            continue
        elapsed += took
        committed += int(counts.sum())
        stats.rounds += 1
        stats.proposed += cfg.spec_k
        stats.accepted += int(counts.sum()) - 1
    return committed / elapsed


def bench_decode(model: GPT, cfg: DecodeBenchConfig, *, memory_bandwidth: float, matmul_peak: float,
                 draft_model: GPT | None = None, progress: Callable[[str], None] = lambda line: None) -> dict:
    """Decode (per mode and batch size), prefill and speculative measurements as one JSON-able dict.

    memory_bandwidth (bytes/s) and matmul_peak (FLOP/s) are the machine's measured peaks: the
    denominators of MBU and of prefill MFU.
    """
    if draft_model is not None and draft_model.config.vocab_size != model.config.vocab_size:
        raise BenchmarkError(f"draft vocab ({draft_model.config.vocab_size}) != target vocab ({model.config.vocab_size})")
    if max(cfg.prompt_ids, default=0) >= model.config.vocab_size:
        raise BenchmarkError(f"prompt token {max(cfg.prompt_ids)} is outside the model's vocabulary ({model.config.vocab_size})")
    extra = SPEC_HEADROOM * (cfg.spec_k + 1) if draft_model is not None else 0
    runner = _Runner(model, cfg, extra_positions=extra)
    if runner.cache_len > 10 * model.config.sequence_len:
        raise BenchmarkError(f"context {cfg.mean_context} + steps {cfg.steps} exceed the model's positions")
    cost = DecodeCost.of(model, cfg.mean_context)
    decode = []
    for batch_size in cfg.batch_sizes:
        for mode in MODES:
            if mode == "padded" and batch_size > cfg.padded_max_batch:
                continue
            if mode == "cached":
                times = runner.cached_step_times(batch_size)
            elif mode == "fast":
                times = [runner.fast_step_time(batch_size)]
            else:
                times = runner.padded_step_times(batch_size)
            steps = cfg.padded_steps if mode == "padded" else cfg.steps
            decode.append(_entry(mode, batch_size, float(np.median(times)), cost, memory_bandwidth, steps))
            e = decode[-1]
            progress(f"{mode:<7} batch {batch_size:>4}: {e['ms_per_step']:8.2f} ms/step {e['tok_per_s']:9.1f} tok/s  "
                     f"MBU {e['mbu_percent']}%")
    prefill_s = runner.prefill_time(cfg.prefill_tokens)
    prefill = {
        "tokens": cfg.prefill_tokens,
        "ms": round(prefill_s * 1e3, 2),
        "tok_per_s": round(cfg.prefill_tokens / prefill_s, 1),
        "mfu_percent": round(100 * _prefill_flops(model.config, cfg.prefill_tokens) / prefill_s / matmul_peak, 1),
    }
    progress(f"prefill {cfg.prefill_tokens} tokens: {prefill['tok_per_s']} tok/s")
    result = {
        "config": model.config.to_dict(),
        "dtype": jnp.dtype(model.dtype).name,
        "context": cfg.mean_context,
        "prompt_tokens": cfg.prompt_tokens,
        "decode_steps": cfg.steps,
        "cache_len": runner.cache_len,
        "temperature": cfg.temperature,
        "memory_bandwidth_bytes_per_s": memory_bandwidth,
        "matmul_peak_flops_per_s": matmul_peak,
        "weight_bytes": cost.weight_bytes,
        "kv_bytes_per_token": cost.kv_bytes_per_token,
        "kv_read_bytes_per_row": cost.kv_read_bytes_per_row,
        "ceiling_batch1_tok_per_s": round(memory_bandwidth / cost.step_bytes(1), 1),
        "decode": decode,
        "prefill": prefill,
    }
    if draft_model is not None:
        spec = speculative(runner, draft_model, cfg)
        progress(f"speculative k={cfg.spec_k}: acceptance {spec['acceptance_rate']:.2%}, {spec['tok_per_s']} tok/s, "
                 f"{spec['speedup']}x cached (median of {cfg.repeats} alternating pairs)")
        result["speculative"] = spec
    return result
