"""Continuous batching: requests that share the decode batch get exactly what they would get alone.

The model has the weights of conftest's random `model`, and every forward (prefill or decode
step) first takes a permit from GATE, so a test can hold the scheduler between steps and let
requests join or leave at a known point instead of relying on timing.
"""

import asyncio
import math
import threading

import jax
import numpy as np
import pytest
from flaxchat.infer.batcher import TOP_LOGPROBS, Scheduler, SchedulerClosedError, SchedulerConfig, capacity_buckets
from flaxchat.infer.engine import Engine, EngineConfig
from flaxchat.infer.errors import GenerationError
from flaxchat.model import GPT

CONFIG = SchedulerConfig(slots=4, cache_len=128, min_prefill_len=64)  # prefill buckets 64 and 128, for every test
# Tracing a function again (a new input signature) and compiling it for XLA both count.
EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/backend_compile_duration")
COMPILES: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: COMPILES.append(event) if event in EVENTS else None
)


class Gate:
    """Permits for forward passes; unlimited while open."""

    def __init__(self):
        self._cond = threading.Condition()
        self._permits = math.inf

    def allow(self, n: float) -> None:
        with self._cond:
            self._permits = n
            self._cond.notify_all()

    def take(self) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._permits > 0, timeout=60):
                raise TimeoutError("the test never opened the gate")
            self._permits -= 1


GATE = Gate()


class GatedGPT(GPT):
    def decode(self, idx, cache, lengths=None, *, last_only: bool = False, head_vc=None):
        jax.debug.callback(GATE.take)
        return super().decode(idx, cache, lengths, last_only=last_only, head_vc=head_vc)


@pytest.fixture(scope="module")
def gated_model(make_model) -> GatedGPT:
    return make_model(0, cls=GatedGPT)


@pytest.fixture(scope="module")
def gated_engine(gated_model, tokenizer) -> Engine:
    return Engine(gated_model, tokenizer, EngineConfig(min_prefill_len=128))  # one prompt bucket


@pytest.fixture(scope="module")
def scheduler(gated_model, tokenizer):
    GATE.allow(math.inf)
    with Scheduler(gated_model, tokenizer, CONFIG).start() as scheduler:
        assert scheduler.wait_ready(timeout=600)
        yield scheduler


@pytest.fixture(autouse=True)
def open_gate():
    GATE.allow(math.inf)
    yield
    GATE.allow(math.inf)


def prompt(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, prepend=tokenizer.bos_id)


# Five requests: prompt lengths in every bucket, greedy and seeded sampling, different max_tokens.
REQUESTS = [
    ("The quick brown fox", 40, dict(temperature=0.0)),
    ("hello", 30, dict(temperature=0.9, top_k=50, seed=7)),
    ("Once upon a time, in a land far away, there lived a small dragon.", 25, dict(temperature=0.0)),
    ("A long prompt that lands in the last prefill bucket of this scheduler, padded up to 128!!",
     20, dict(temperature=1.0, top_p=0.9, seed=3_000_000_000)),
    ("x", 35, dict(temperature=0.7, top_k=5, top_p=0.8, seed=1)),
]


def expected_tokens(engine, ids, max_tokens, settings) -> list[int]:
    sequences, _ = engine.generate_batch(ids, max_tokens=max_tokens, **settings)
    return sequences[0][len(ids):]


def test_requests_joining_and_leaving_mid_way_match_the_engine(scheduler, gated_engine, tokenizer):
    prompts = [prompt(tokenizer, text) for text, _, _ in REQUESTS]
    expected = [expected_tokens(gated_engine, ids, m, kw) for ids, (_, m, kw) in zip(prompts, REQUESTS)]
    assert len({len(p) for p in prompts}) == 5 and max(map(len, prompts)) > 64
    stats = scheduler.stats()

    GATE.allow(6)  # two prefills and at least two decode steps, then the scheduler holds
    first = [scheduler.submit(ids, m, **kw) for ids, (_, m, kw) in zip(prompts[:2], REQUESTS[:2])]
    for stream in first:
        next(iter(stream))  # both are generating (and far from done) ...
    rest = [scheduler.submit(ids, m, **kw) for ids, (_, m, kw) in zip(prompts[2:], REQUESTS[2:])]
    assert scheduler.stats().queued >= 1  # ... when three more arrive: one more than the free rows
    GATE.allow(math.inf)
    streams = first + rest
    for stream in streams:
        assert stream.wait(timeout=300)
    assert [s.tokens() for s in streams] == expected
    assert [s.finish_reason for s in streams] == ["length" if len(e) == m else "stop"
                                                   for e, (_, m, _) in zip(expected, REQUESTS)]
    after = scheduler.stats()
    assert after.peak_active == 4 and after.active == 0 and after.queued == 0
    assert after.generated_tokens - stats.generated_tokens == sum(map(len, expected))
    assert after.prompt_tokens - stats.prompt_tokens == sum(map(len, prompts))

    # The seeded sampled request alone gives what it gave beside the others.
    ids, (_, m, kw) = prompts[1], REQUESTS[1]
    alone = scheduler.submit(ids, m, **kw)
    assert alone.wait(timeout=60) and alone.tokens() == streams[1].tokens()


def test_a_reused_row_never_sees_the_previous_requests_keys(scheduler, gated_engine, tokenizer):
    # A row is prefilled over its prompt's bucket only: past it, the row still holds the keys of
    # the request before. A short prompt (bucket 64) decoding past position 64 in a row a long
    # prompt (bucket 128) used first must still give the engine's tokens.
    long_ids = prompt(tokenizer, REQUESTS[3][0])
    short_ids = prompt(tokenizer, "hello there")
    expected = expected_tokens(gated_engine, short_ids, 100, dict(temperature=0.0))
    assert len(long_ids) > 64 and len(short_ids) + len(expected) > 64  # the short one crosses its bucket
    capacities = []
    for ids, max_tokens in ((long_ids, 8), (short_ids, 100), (short_ids, 8)):  # one at a time: each takes row 0
        stream = scheduler.submit(ids, max_tokens, temperature=0.0)
        assert stream.wait(timeout=120)
        capacities.append(scheduler.stats().capacity)
        if max_tokens == 100:
            assert stream.tokens() == expected
    # The cache follows the rows: 128 positions for the long prompt's bucket, 64 for the short
    # prompt until it decodes past position 64, then 64 again for a short request.
    assert scheduler.capacities == [64, 128] and capacities == [128, 128, 64]


def test_capacity_buckets_halve_the_cache_twice_down_to_64_positions():
    assert capacity_buckets(512) == [128, 256, 512]
    assert capacity_buckets(2048) == [512, 1024, 2048]  # at most three: each is compiled per row count
    assert capacity_buckets(128) == [64, 128]  # not below 64
    assert capacity_buckets(384) == [96, 192, 384]
    assert capacity_buckets(130) == [65, 130]  # an odd length is not halved
    assert capacity_buckets(100) == [100] and capacity_buckets(48) == [48]


def test_cancel_frees_the_row_for_a_queued_request(gated_model, tokenizer):
    scheduler = Scheduler(gated_model, tokenizer, CONFIG)
    long_prompt = prompt(tokenizer, "hello world")  # greedy, it runs past 100 tokens
    longs = [scheduler.submit(long_prompt, 100, temperature=0.0) for _ in range(CONFIG.slots)]
    queued = scheduler.submit(prompt(tokenizer, "hi"), 3, temperature=0.0)
    assert scheduler.stats().queued == CONFIG.slots + 1
    GATE.allow(CONFIG.slots + 1)  # admit the four (prefills) and draw their first tokens, then hold
    with scheduler.start(warmup=False):
        next(iter(longs[0]))
        longs[0].cancel()
        assert scheduler.stats().queued == 1
        GATE.allow(math.inf)
        assert queued.wait(timeout=60) and queued.finish_reason == "length" and len(queued.tokens()) == 3
        for stream in longs:
            assert stream.wait(timeout=60)
    assert longs[0].finish_reason == "cancelled" and longs[0].completion_tokens <= 2
    assert [s.finish_reason for s in longs[1:]] == ["length"] * 3
    # Only the cancel could free a row in time: the others held theirs for 100 steps.
    assert all(queued.finished_at < s.finished_at for s in longs[1:])
    assert scheduler.stats().finished == {"cancelled": 1, "length": 4}


def test_decode_runs_only_the_active_rows_kept_at_the_front(gated_model, gated_engine, tokenizer):
    # Admitted together into rows 0, 1, 2; the first leaves first, then the third: each time the
    # last active row moves into the hole, and the decode step shrinks to the next power of two.
    wanted = [("Once", 5, dict(temperature=0.0)), ("The quick brown fox", 20, dict(temperature=0.9, seed=11)),
              ("hello there", 12, dict(temperature=0.0))]
    ids = [prompt(tokenizer, text) for text, _, _ in wanted]
    expected = [expected_tokens(gated_engine, p, m, kw) for p, (_, m, kw) in zip(ids, wanted)]
    scheduler = Scheduler(gated_model, tokenizer, CONFIG)
    streams = [scheduler.submit(p, m, **kw) for p, (_, m, kw) in zip(ids, wanted)]
    with scheduler.start(warmup=False):
        for stream in streams:
            assert stream.wait(timeout=120)
    assert [s.tokens() for s in streams] == expected
    # A row is freed after the step that drew its last token (or its stop token, which is not delivered).
    a, b, c = sorted(len(s.tokens()) + (s.finish_reason == "stop") for s in streams)
    stats = scheduler.stats()
    assert stats.decode_steps == c
    assert stats.decode_rows == 4 * a + 2 * (b - a) + (c - b)  # 3 active -> 4 rows, then 2, then 1


def test_logprobs_match_scoring_the_prompt(scheduler, tokenizer):
    ids = prompt(tokenizer, "The quick brown fox")
    stream = scheduler.submit(ids, 12, temperature=0.0, logprobs=True)
    assert stream.wait(timeout=60)
    generated = stream.generated
    scores = scheduler.score(ids + [g.token for g in generated])
    assert len(scores.logprobs) == len(ids) + len(generated) - 1
    # The decode step's logprobs and the full forward's agree; greedy tokens top their alternatives.
    np.testing.assert_allclose([g.logprob for g in generated], scores.logprobs[len(ids) - 1:], rtol=1e-4, atol=1e-4)
    for g, top in zip(generated, scores.top[len(ids) - 1:]):
        assert len(g.top) == len(top) == TOP_LOGPROBS
        assert g.top[0][0] == g.token == top[0][0]
        assert np.all(np.diff([lp for _, lp in g.top]) <= 0)
    plain = scheduler.submit(ids, 3, temperature=0.0)
    assert plain.wait(timeout=60) and all(g.logprob is None and g.top is None for g in plain.generated)


def test_async_iteration_and_validation(scheduler, tokenizer):
    ids = prompt(tokenizer, "hello")

    async def consume():
        return [g.token async for g in scheduler.submit(ids, 10, temperature=0.0)]

    sync = scheduler.submit(ids, 10, temperature=0.0)
    assert asyncio.run(consume()) == [g.token for g in sync]
    with pytest.raises(GenerationError, match="exceeds the scheduler's cache_len"):
        scheduler.submit(ids, 128 - len(ids) + 1)
    with pytest.raises(GenerationError, match="non-empty"):
        scheduler.submit([], 5)
    with pytest.raises(GenerationError, match="integer ids"):
        scheduler.submit([tokenizer.vocab_size], 5)
    with pytest.raises(GenerationError, match="seed"):
        scheduler.submit(ids, 5, seed=2**32)
    with pytest.raises(GenerationError, match="top_p"):
        scheduler.submit(ids, 5, top_p=1.5)
    with pytest.raises(GenerationError, match="at most cache_len"):
        scheduler.score(list(range(129)))


def test_close_cancels_waiting_requests(gated_model, tokenizer):
    scheduler = Scheduler(gated_model, tokenizer, CONFIG)
    stream = scheduler.submit(prompt(tokenizer, "hi"), 5)
    scheduler.close()
    assert stream.finish_reason == "cancelled" and list(stream) == []
    with pytest.raises(SchedulerClosedError):
        scheduler.submit(prompt(tokenizer, "hi"), 5)


def test_tool_calls_are_run_and_forced(make_scripted, tokenizer):
    """A python block: its row waits for the calculator, then the output is forced in, as the Engine does."""
    special = tokenizer.encode_special
    call = [special("<|python_start|>"), *tokenizer.encode("2+3"), special("<|python_end|>")]
    forced = [special("<|output_start|>"), *tokenizer.encode("5"), special("<|output_end|>")]
    ids = prompt(tokenizer, "calc")
    script = call + [ord("x")] * len(forced) + [*tokenizer.encode("ok"), special("<|assistant_end|>")]
    model = make_scripted(len(ids), script)
    expected = call + forced + tokenizer.encode("ok")  # what test_engine_tools checks the Engine gives
    with Scheduler(model, tokenizer, SchedulerConfig(slots=4, cache_len=128, min_prefill_len=128)) as scheduler:
        with_tools = scheduler.submit(ids, 40, temperature=0.0, tools=True)
        without = scheduler.submit(ids, 40, temperature=0.0)
        assert with_tools.wait(timeout=300) and without.wait(timeout=60)
    assert with_tools.tokens() == expected and with_tools.finish_reason == "stop"
    assert without.tokens() == call + [ord("x")] * len(forced) + tokenizer.encode("ok")


def test_nothing_compiles_after_warm_up(scheduler, tokenizer):
    scheduler.score(list(range(40)))  # scoring compiles once per bucket, on first use (64 here)
    jax.jit(lambda x: x + 1)(np.float32(1))  # the listener sees compilations
    warm = len(COMPILES)
    assert warm > 0
    rng = np.random.default_rng(0)
    settings = [dict(temperature=0.0), dict(temperature=1.0, top_k=200), dict(temperature=0.8, top_p=0.5),
                dict(temperature=1.2, top_k=3, top_p=0.9, logprobs=True)]
    streams = []
    for i in range(24):
        n = int(rng.integers(2, 100))
        ids = [tokenizer.bos_id, *rng.integers(0, 256, n - 1).tolist()]
        streams.append(scheduler.submit(ids, int(rng.integers(1, 128 - n + 1)), seed=int(rng.integers(0, 2**32)),
                                        **settings[i % len(settings)]))
        if i % 6 == 5:
            scheduler.score(ids[:64])
            streams[-2].cancel()
    for stream in streams:
        assert stream.wait(timeout=300)
    assert len(COMPILES) == warm
