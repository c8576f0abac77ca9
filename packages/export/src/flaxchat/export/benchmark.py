"""The exported model's size and speed beside JAX: one model converted once, then fp32 and quantized
.tflite files and the jitted JAX decode step run the same batch-1 request on this CPU.

Every run feeds the same tokens: a random prompt, then JAX's greedy continuation. Timed decode steps
are single tokens at the same positions for all; step times are medians (shared machines are noisy).
Agreement is the share of steps whose argmax equals JAX fp32's greedy token.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from flaxchat.export.convert import ExportSettings, convert, package_config
from flaxchat.export.errors import ExportError
from flaxchat.export.package import MODEL_FILE, QUANTIZATIONS
from flaxchat.export.quantize import quantize
from flaxchat.export.runtime import LiteRTModel
from flaxchat.model import GPT
from flaxchat.model.kv_cache import KVCache


@dataclasses.dataclass(frozen=True)
class ExportBenchConfig:
    """What to measure. Decoding starts at context - steps/2, so the mean context is `context`."""

    quantizations: tuple[str, ...] = ("fp32", "int8")
    context: int = 384  # as `bench decode`: prompt plus half the decoded tokens
    steps: int = 32
    max_len: int | None = None  # KV cache length of the export; None = the model's sequence_len
    prefill_lengths: tuple[int, ...] = (8, 32, 128)
    threads: int | None = None  # LiteRT CPU threads; None = all cores (as XLA)
    seed: int = 0

    def __post_init__(self):
        if not self.quantizations or set(self.quantizations) - set(QUANTIZATIONS):
            raise ExportError(f"quantizations must be among {QUANTIZATIONS}, got {self.quantizations!r}")
        for name in ("context", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ExportError(f"{name} must be an integer >= 2, got {value!r}")
        if self.prompt_tokens < 1:
            raise ExportError(f"context ({self.context}) must exceed steps/2 ({self.steps // 2})")

    @property
    def prompt_tokens(self) -> int:
        return self.context - self.steps // 2


def _timed(forward: Callable[[list[int]], np.ndarray], tokens: list[int]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    out = forward(tokens)
    return out, time.perf_counter() - start


def _speeds(prefill_s: float, step_s: list[float], prompt_tokens: int) -> dict:
    step = statistics.median(step_s)
    return {"prefill_tok_per_s": prompt_tokens / prefill_s, "ms_per_token": step * 1e3, "decode_tok_per_s": 1 / step}


def _jax_run(model: GPT, prompt: list[int], steps: int, max_len: int) -> tuple[list[int], dict]:
    """JAX's greedy continuation (the tokens every run feeds) and its speed: the jitted decode step."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def step(state, idx, cache):
        return nnx.merge(graphdef, state).decode(idx, cache, last_only=True)

    def run(tokens, cache):
        logits, cache = step(state, np.asarray([tokens], np.int32), cache)
        return np.asarray(logits[0]), cache

    empty = KVCache.empty(model.config, 1, max_len)
    warm, cache = run(prompt, empty)  # compiles prefill
    run([0], cache)  # compiles the one-token step
    start = time.perf_counter()
    logits, cache = run(prompt, empty)
    prefill_s = time.perf_counter() - start
    tokens, times = [], []
    for _ in range(steps):
        tokens.append(int(np.argmax(logits)))
        start = time.perf_counter()
        logits, cache = run(tokens[-1:], cache)
        times.append(time.perf_counter() - start)
    return tokens, _speeds(prefill_s, times, len(prompt))


def _litert_run(model: LiteRTModel, prompt: list[int], tokens: list[int]) -> dict:
    model.forward(prompt)  # warm-up: the first call of each signature prepares its kernels
    model.forward(tokens[:1])
    model.reset()
    logits, prefill_s = _timed(model.forward, prompt)
    agree, times = 0, []
    for token in tokens:
        agree += int(np.argmax(logits)) == token
        logits, seconds = _timed(model.forward, [token])
        times.append(seconds)
    return {**_speeds(prefill_s, times, len(prompt)), "greedy_agreement": agree / len(tokens)}


def bench_export(model: GPT, cfg: ExportBenchConfig = ExportBenchConfig(),
                 progress: Callable[[str], None] = lambda line: None) -> dict:
    """Convert `model` once, quantize, and measure size and batch-1 speed of each file beside JAX CPU."""
    settings = ExportSettings(max_len=cfg.max_len, prefill_lengths=cfg.prefill_lengths)
    max_len = settings.cache_len(model)
    if cfg.context + cfg.steps // 2 + 2 > max_len:
        raise ExportError(f"context {cfg.context} + steps/2 does not fit the KV cache ({max_len}): "
                          "lower --context or raise --max-len")
    prompt = np.random.default_rng(cfg.seed).integers(0, model.config.vocab_size, cfg.prompt_tokens).tolist()
    progress(f"JAX: prefill {len(prompt)} tokens and {cfg.steps} decode steps ...")
    tokens, jax_speed = _jax_run(model, prompt, cfg.steps, max_len)
    start = time.perf_counter()
    fp32 = convert(model, settings, progress)
    result = {
        "max_len": max_len, "prompt_tokens": len(prompt), "steps": cfg.steps, "convert_s": time.perf_counter() - start,
        "prefill_lengths": list(settings.prefill_lengths), "jax": jax_speed, "litert": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for q in cfg.quantizations:
            flatbuffer = fp32 if q == "fp32" else quantize(fp32, q)
            path = Path(tmp) / q / MODEL_FILE
            path.parent.mkdir()
            path.write_bytes(flatbuffer)
            config = package_config(model, dataclasses.replace(settings, quantization=q), {})
            progress(f"LiteRT {q} ({len(flatbuffer) / 1e6:,.1f} MB): prefill and {cfg.steps} decode steps ...")
            with LiteRTModel(path, config, num_threads=cfg.threads) as litert:
                speed = _litert_run(litert, prompt, tokens)
            result["litert"].append({"quantization": q, "size_bytes": len(flatbuffer), **speed})
    return result
