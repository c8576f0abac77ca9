"""Compiled once: after warm-up, requests of mixed lengths and sampling settings compile nothing."""

import jax
import numpy as np
from flaxchat.infer.engine import MODES, Engine

N = 3  # num_samples, as in the other engine tests
# Tracing a function again (a new input signature) and compiling it for XLA both count.
EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/backend_compile_duration")
COMPILES: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: COMPILES.append(event) if event in EVENTS else None
)

SETTINGS = [
    dict(temperature=0.0),
    dict(temperature=1.0),
    dict(temperature=0.7, top_k=1),
    dict(temperature=0.7, top_k=40),
    dict(temperature=1.3, top_k=200),  # above FAST_TOP_K: the bisection path
    dict(temperature=0.9, top_p=0.5),
    dict(temperature=1.0, top_k=50, top_p=0.9),
]


def test_no_compilation_after_warm_up(make_scripted, tokenizer):
    # Samples any byte at every step and never a stop token, so every request runs to max_tokens.
    engine = Engine(make_scripted(0, [set(range(256))]), tokenizer)
    code = [tokenizer.encode_special("<|python_start|>"), *tokenizer.encode("2+3"), tokenizer.encode_special("<|python_end|>")]
    tool_engine = Engine(make_scripted(1, code + [ord("x")]), tokenizer)  # same structure: shares compilations

    def run(mode, prompt_len, max_tokens, **kw):
        if mode == "speculative":
            kw["draft_model"] = engine.model
        prompt = [tokenizer.bos_id] + [ord("a")] * (prompt_len - 1)
        stream = list(getattr(engine, f"generate_{mode}")(prompt, num_samples=N, max_tokens=max_tokens, **kw))
        assert len(stream) == max_tokens

    # Warm-up: each mode, both prompt buckets (16, 32) and the longest sequences (padded buckets up to 128).
    for mode in MODES:
        for prompt_len in (16, 30):
            run(mode, prompt_len, 40)
    jax.jit(lambda x: x + 1)(np.float32(1))  # the listener sees compilations
    warm = len(COMPILES)
    assert warm > 0

    rng = np.random.default_rng(0)
    for i in range(28):
        mode, settings = MODES[i % len(MODES)], SETTINGS[i % len(SETTINGS)]
        run(mode, int(rng.integers(1, 31)), int(rng.integers(1, 41)), seed=i, **settings)
    # A tool call: forced columns take the decode step's other input path, same compilation.
    stream = list(tool_engine.generate([tokenizer.bos_id], num_samples=N, max_tokens=12, temperature=0.0))
    assert [mask[0] for _, mask in stream][5:8] == [0, 0, 0]
    assert len(COMPILES) == warm
