"""Continuous batching: many requests share one running decode batch over one KV cache.

A `Scheduler` owns `slots` rows of a KV cache and a background thread that loops: admit
queued requests into free rows (a bucketed, jitted batch-1 prefill whose cache row and last
logits are written into the batch at the free slot, donated, in place), then run ONE decode
step for the active rows (a jitted forward, then a jitted draw that samples each row with its
request's own settings: temperature / top-k / top-p / seed as per-row arrays, so new settings
never recompile) and push each row's token to its request's `Stream`. A just-admitted row
feeds nothing in its first step and draws from its prefill logits, so the sampler is compiled
once per row count, in the draw. A row is freed as soon as its request ends (<|assistant_end|>
or <|bos|>, max_tokens, or cancelled), and a new request joins at the next step.

The cache's length follows the rows: it holds `capacity` positions per row, the smallest of
cache_len and its first two halvings (not below 64) that fits every active row, and grows or
shrinks one level at a time (one copy of the cache) as rows get longer or long requests end.
A decode step's attention reads every position the cache holds, so short conversations on a
server with a long context do not pay for the whole context at every token (16 rows of d6,
cache_len 512: 28 ms per step at 512 positions, 22 ms at 256).

Active rows are kept at the front of the batch (a freed row's place is taken by the last
active row) and the decode step runs only the first `rows` of them, `rows` a power of two
(compiled once each per capacity, at warm-up): one conversation decodes at batch-1 speed,
not at the cost of every slot. Rows inside that prefix that have nothing to feed (waiting on a
tool) ride along with length 0: their cache does not advance, their samples are ignored.

Request i's token at column t is drawn with fold_in(key(seed_i), t), as `Engine` draws a
batch-1 request, so a seeded request gives the same tokens alone or beside others (and,
given the same logits, the same tokens as Engine.generate with num_samples=1).

Tool use (python blocks, as Engine.generate) is per request: a block's code runs on a worker
thread while its row waits (the other rows keep decoding), then its output is forced in.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from flaxchat.infer.errors import GenerationError
from flaxchat.infer.rows import Rows, SpecialTokens
from flaxchat.infer.sampling import SamplingArrays, SamplingParams, sample_rows
from flaxchat.infer.steps import (check_vocab, compiled_model, head_for_rows, merge_model, power_of_two_at_least,
                                   prefill_bucket, split_model)
from flaxchat.model import GPT, KVCache
from flaxchat.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

SMALLEST_CAPACITY = 64  # no halving of cache_len below this many positions
TOP_LOGPROBS = 20  # alternatives computed per token when a request asks for logprobs (OpenAI's maximum)


class SchedulerClosedError(RuntimeError):
    """The scheduler was closed (or its loop failed) and takes no more requests: start a new one."""


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    slots: int = 16  # rows of the decode batch: requests served at once
    cache_len: int | None = None  # positions per row (prompt + max_tokens); None = sequence_len rounded up to 64
    min_prefill_len: int = 16  # prompts are right-padded to a power of two at least this long
    tool_workers: int = 4  # threads running python blocks

    def __post_init__(self):
        for name in ("slots", "min_prefill_len", "tool_workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GenerationError(f"SchedulerConfig.{name} must be a positive integer, got {value!r}")
        c = self.cache_len
        if c is not None and (isinstance(c, bool) or not isinstance(c, int) or c < 2):
            raise GenerationError(f"SchedulerConfig.cache_len must be None or an integer >= 2, got {c!r}")


def capacity_buckets(cache_len: int) -> list[int]:
    """The cache lengths a scheduler moves between, ascending: cache_len and up to two halvings of
    it, none below SMALLEST_CAPACITY. Each is compiled for every decode row count (d6: ~3 s per
    compilation), so more levels would cost warm-up time for little."""
    capacities = [cache_len]
    while len(capacities) < 3 and capacities[0] % 2 == 0 and capacities[0] // 2 >= SMALLEST_CAPACITY:
        capacities.insert(0, capacities[0] // 2)
    return capacities


@dataclasses.dataclass(frozen=True)
class Generated:
    """One generated token. logprob (under the model's own distribution, before temperature and
    filters) and top (the TOP_LOGPROBS most likely (id, logprob)) are set when the request asked
    for logprobs; forced tool-output tokens are not sampled and have neither."""

    token: int
    logprob: float | None = None
    top: tuple[tuple[int, float], ...] | None = None


@dataclasses.dataclass(frozen=True)
class Scores:
    """A prompt scored by `Scheduler.score`: entry i describes the prediction of tokens[i + 1]."""

    logprobs: list[float]  # log p(tokens[i + 1] | tokens[: i + 1])
    top: list[tuple[tuple[int, float], ...]]  # the TOP_LOGPROBS most likely next tokens there


@dataclasses.dataclass(frozen=True)
class SchedulerStats:
    slots: int
    active: int  # rows generating now
    queued: int  # requests waiting for a row
    peak_active: int  # most rows generating at once so far
    submitted: int
    finished: dict[str, int]  # requests ended, by finish reason
    prompt_tokens: int  # of admitted requests
    generated_tokens: int  # pushed to streams
    decode_steps: int
    decode_rows: int  # rows computed over all decode steps (each step runs a power-of-two prefix of the batch)
    capacity: int  # positions the cache holds per row now (cache_len or one of its halvings)


class Stream:
    """The tokens of one request, as the scheduler produces them.

    Iterate it (blocking) or `async for` it (the event loop is woken from the scheduler thread,
    never blocked); one consumer at a time. `cancel()` ends the request at the next step.
    finish_reason: "stop" (a stop token; not yielded), "length" (max_tokens), "cancelled",
    or "error" (the scheduler or this request's tool call failed: `error` says why).
    """

    def __init__(self, prompt_tokens: int, wake: Callable[[], None]):
        self.prompt_tokens = prompt_tokens
        self.submitted_at = time.monotonic()
        self.ttft: float | None = None  # seconds from submit to the first token
        self.finished_at: float | None = None  # time.monotonic() when it ended
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.generated: list[Generated] = []
        self._wake_scheduler = wake
        self._cond = threading.Condition()
        self._unread: deque[Generated] = deque()
        self._async_waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self.cancelled = False

    @property
    def completion_tokens(self) -> int:
        return len(self.generated)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def cancel(self) -> None:
        """Ask the scheduler to end this request (it frees the row at its next step); idempotent."""
        if not self.done and not self.cancelled:
            self.cancelled = True
            self._wake_scheduler()

    # Producer side (the scheduler thread) --------------------------------------------------
    def _push(self, item: Generated) -> None:
        if self.ttft is None:
            self.ttft = time.monotonic() - self.submitted_at
        with self._cond:
            self.generated.append(item)
            self._unread.append(item)
            self._notify()

    def _finish(self, reason: str, error: str | None = None) -> None:
        with self._cond:
            if self.finish_reason is None:
                self.error = error
                self.finished_at = time.monotonic()
                self.finish_reason = reason
            self._notify()

    def _notify(self) -> None:
        self._cond.notify_all()
        if self._async_waiter is not None:
            loop, event = self._async_waiter
            self._async_waiter = None
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that event loop is closed: its consumer is gone
                pass

    # Consumer side ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Generated]:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._unread or self.done)
                if not self._unread:
                    return
                item = self._unread.popleft()
            yield item

    async def __aiter__(self) -> AsyncIterator[Generated]:
        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                item = self._unread.popleft() if self._unread else None
                if item is None:
                    if self.done:
                        return
                    event = asyncio.Event()
                    self._async_waiter = (loop, event)
            if item is not None:
                yield item
            else:
                await event.wait()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the request ended (or timeout); True if it ended."""
        with self._cond:
            return self._cond.wait_for(lambda: self.done, timeout)

    def tokens(self) -> list[int]:
        """The generated token ids so far (all of them once `done`)."""
        return [g.token for g in self.generated]


@dataclasses.dataclass
class _Request:
    stream: Stream
    prompt: list[int]
    max_tokens: int
    sampling: SamplingArrays  # scalars
    seed: int
    logprobs: bool
    tools: bool


@dataclasses.dataclass
class _Slot:
    request: _Request
    rows: Rows  # stop and tool bookkeeping for this one row
    step: int = 0  # columns so far: the next draw uses fold_in(key, step)
    position: int = 0  # tokens this row holds in the cache
    next_token: int = 0  # the token fed at the next decode step
    tool_call: concurrent.futures.Future | None = None  # a python block running for this row
    tool_extra: dict = dataclasses.field(default_factory=dict)  # the logprobs of the <|python_end|> it follows


class _Compiled:
    """The scheduler's jitted functions for one model structure (compiled once per shape)."""

    def __init__(self, graphdef, treedef):
        self._structure = (graphdef, treedef)
        self.prefill = jax.jit(self._prefill)  # compiled once per prompt bucket
        self.place = jax.jit(self._place, donate_argnames=("cache", "prefilled"))
        self.resize = jax.jit(self._resize, static_argnames="capacity")  # a new shape: nothing to donate
        # A decode step is two calls: the forward, compiled per number of rows and capacity, and the
        # draw, per number of rows (compiling the sampler into every forward doubled warm-up).
        self.forward = jax.jit(self._forward, donate_argnames="cache")
        self.draw = jax.jit(self._draw)
        self.move = jax.jit(self._move, donate_argnames=("cache", "prefilled"))
        self.score = jax.jit(self._score)

    def _model(self, weights) -> GPT:
        return merge_model(*self._structure, weights)

    def _prefill(self, weights, prompt, length):
        """Prefill prompt (1, bucket) into a fresh row of `bucket` positions: its attention reads the
        bucket's keys, not the whole cache's (a 128-token prompt at 512 positions: ~40 ms against ~55)."""
        model = self._model(weights)
        row = KVCache.empty(model.config, 1, prompt.shape[1], model.dtype)
        return model.decode(prompt, row, length, last_only=True)

    def _place(self, cache: KVCache, prefilled, logits, row: KVCache, slot):
        """Write a prefilled row and its last logits (1, V) at `slot`. The slot's positions past the
        row's keep the previous request's keys, which no query sees (a row attends only to
        positions it has written)."""
        cache = jax.tree.map(lambda whole, one: lax.dynamic_update_slice(whole, one, (slot,) + (0,) * (one.ndim - 1)),
                             cache, row)
        return cache, lax.dynamic_update_slice_in_dim(prefilled, logits, slot, axis=0)

    def _resize(self, cache: KVCache, *, capacity: int):
        """The cache with `capacity` positions per row: cut (the positions past it are unused) or zero-padded."""
        def fit(a):
            held = a.shape[2]
            return a[:, :, :capacity] if capacity <= held else jnp.pad(a, ((0, 0), (0, 0), (0, capacity - held), (0, 0)))
        return cache.replace(k=tuple(map(fit, cache.k)), v=tuple(map(fit, cache.v)))

    def _forward(self, weights, head_vc, cache: KVCache, tokens, lengths):
        """Feed one token to each of the first len(tokens) rows (rows with length 0 stay as they are):
        their next-token logits. The rows after them are not touched."""
        return self._model(weights).decode(tokens[:, None], cache, lengths, last_only=True, head_vc=head_vc)

    def _draw(self, logits, prefilled, lengths, seeds, steps, sampling, want_top):
        """Each row's next token from its logits, or from its prefill logits (its first token) if it fed nothing."""
        logits = jnp.where(lengths[:, None] > 0, logits, prefilled[: logits.shape[0]])
        return _pick(logits, seeds, steps, sampling, want_top)

    def _move(self, cache: KVCache, prefilled, src, dst):
        """Copy row src (its cache and prefill logits) to row dst, in place."""
        return jax.tree.map(lambda a: a.at[dst].set(a[src]), (cache, prefilled))

    def _score(self, weights, tokens):
        """tokens (1, T) -> logprob of each next token (T-1,), and the top alternatives at every position."""
        logprobs = jax.nn.log_softmax(self._model(weights)(tokens)[0], axis=-1)
        following = jnp.take_along_axis(logprobs[:-1], tokens[0, 1:, None], axis=-1)[:, 0]
        top_logprobs, top_ids = lax.top_k(logprobs, min(TOP_LOGPROBS, logprobs.shape[-1]))
        return following, top_ids, top_logprobs


def _pick(logits, seeds, steps, sampling: SamplingArrays, want_top):
    """Per row: the drawn token, its logprob, and (when any row wants them) the top alternatives."""
    keys = jax.vmap(lambda seed, step: jax.random.fold_in(jax.random.key(seed), step))(seeds, steps)
    tokens = sample_rows(logits, keys, sampling)
    logprobs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    chosen = jnp.take_along_axis(logprobs, tokens[:, None], axis=-1)[:, 0]
    k = min(TOP_LOGPROBS, logprobs.shape[-1])

    def none():
        return jnp.zeros((logits.shape[0], k), jnp.float32), jnp.zeros((logits.shape[0], k), jnp.int32)

    top_logprobs, top_ids = lax.cond(jnp.any(want_top), lambda: tuple(lax.top_k(logprobs, k)), none)
    return tokens, chosen, top_ids, top_logprobs


@functools.cache
def _compiled(graphdef, treedef) -> _Compiled:
    """Shared by every scheduler over a model of this structure, so their compilations are too."""
    return _Compiled(graphdef, treedef)


class Scheduler:
    """Continuous batching over `model`: submit() requests from any thread, read their Streams."""

    def __init__(self, model: GPT, tokenizer: Tokenizer, config: SchedulerConfig = SchedulerConfig()):
        check_vocab(model, tokenizer)
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.special = SpecialTokens.of(tokenizer)
        self.slots = config.slots
        self.cache_len = config.cache_len or -(-model.config.sequence_len // 64) * 64
        graphdef, treedef, self._weights = split_model(model)  # read once: the served weights are fixed
        self._fns = _compiled(graphdef, treedef)
        self._head_vc = head_for_rows(compiled_model(graphdef, treedef), self._weights, self.slots)
        self.capacities = capacity_buckets(self.cache_len)
        self._capacity = self.capacities[0]
        self._cache = KVCache.empty(model.config, self.slots, self._capacity, model.dtype)
        self._prefilled = jnp.zeros((self.slots, model.config.vocab_size), jnp.float32)  # first-token logits per row
        # Per-row inputs of the decode step, set when a request is admitted.
        self._seeds = np.zeros(self.slots, np.uint32)
        self._sampling = SamplingArrays.stack([SamplingParams(0.0).arrays(model.config.vocab_size)] * self.slots)
        self._want_top = np.zeros(self.slots, bool)
        self._rows: list[_Slot | None] = [None] * self.slots
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._tools = concurrent.futures.ThreadPoolExecutor(config.tool_workers, thread_name_prefix="flaxchat-tool")
        self._submitted = self._prompt_tokens = self._generated = self._steps = self._decode_rows = self._peak = 0
        self._finished: Counter[str] = Counter()

    # Lifecycle -----------------------------------------------------------------------------
    def start(self, warmup: bool = True) -> "Scheduler":
        """Start the loop thread; with warmup it first compiles every prefill bucket and the decode step
        (`ready` is set after). Requests submitted meanwhile wait in the queue."""
        if self._thread is not None:
            raise SchedulerClosedError("the scheduler was already started")
        self._thread = threading.Thread(target=self._run, args=(warmup,), name="flaxchat-scheduler", daemon=True)
        self._thread.start()
        return self

    @property
    def ready(self) -> bool:
        """Warmed up and running (False again once closed or failed)."""
        return self._ready.is_set() and not self._closing and self._error is None

    @property
    def error(self) -> BaseException | None:
        """What stopped the loop, if it failed (then every request ended with finish_reason "error")."""
        return self._error

    def wait_ready(self, timeout: float | None = None) -> bool:
        self._ready.wait(timeout)
        return self.ready

    def close(self) -> None:
        """Stop the loop; unfinished requests end as "cancelled"."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._tools.shutdown(wait=False, cancel_futures=True)
        self._end_all("cancelled")

    def __enter__(self) -> "Scheduler":
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # Requests ------------------------------------------------------------------------------
    def submit(self, tokens: Sequence[int], max_tokens: int, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, seed: int = 42, logprobs: bool = False, tools: bool = False) -> Stream:
        """Queue a request (prompt token ids) and return its Stream; bad arguments raise GenerationError.

        prompt + max_tokens must fit cache_len. logprobs: report each token's logprob and top
        alternatives. tools: run python blocks (<|python_start|> ... <|python_end|>) and force
        their output in, as Engine.generate does.
        """
        vocab = self.model.config.vocab_size
        prompt = list(tokens.tolist() if isinstance(tokens, np.ndarray) else tokens)
        if not prompt:
            raise GenerationError("tokens must be a non-empty list of token ids "
                                  "(e.g. tokenizer.encode(text, prepend=bos))")
        if not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) and 0 <= t < vocab for t in prompt):
            raise GenerationError(f"tokens must be integer ids in [0, {vocab})")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)) or max_tokens < 1:
            raise GenerationError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
        if len(prompt) + max_tokens > self.cache_len:
            raise GenerationError(
                f"prompt ({len(prompt)} tokens) + max_tokens ({max_tokens}) = {len(prompt) + max_tokens} exceeds the "
                f"scheduler's cache_len ({self.cache_len}): lower max_tokens or shorten the prompt"
            )
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
            raise GenerationError(f"seed must be an integer in [0, 2**32), got {seed!r}")
        sampling = SamplingParams(temperature, top_k, top_p).arrays(vocab)
        stream = Stream(len(prompt), self._wake)
        request = _Request(stream, [int(t) for t in prompt], int(max_tokens), sampling, int(seed), bool(logprobs),
                           bool(tools))
        with self._cond:
            if self._closing or self._error is not None:
                raise SchedulerClosedError(self._closed_reason())
            self._queue.append(request)
            self._submitted += 1
            self._cond.notify_all()
        return stream

    def score(self, tokens: Sequence[int]) -> Scores:
        """Logprob of every prompt token after the first, with the top alternatives (for echo/logprobs).

        Runs on the calling thread (compiled once per power-of-two length bucket); at most cache_len tokens.
        """
        vocab = self.model.config.vocab_size
        ids = list(tokens)
        if len(ids) < 2 or not all(isinstance(t, (int, np.integer)) and 0 <= t < vocab for t in ids):
            raise GenerationError(f"score needs at least 2 token ids in [0, {vocab})")
        if len(ids) > self.cache_len:
            raise GenerationError(f"score takes at most cache_len ({self.cache_len}) tokens, got {len(ids)}")
        padded = np.zeros((1, self._bucket(len(ids))), np.int32)
        padded[0, : len(ids)] = ids
        following, top_ids, top_logprobs = jax.device_get(self._fns.score(self._weights, padded))
        n = len(ids) - 1
        return Scores(
            logprobs=following[:n].tolist(),
            top=[tuple(zip(i.tolist(), lp.tolist())) for i, lp in zip(top_ids[:n], top_logprobs[:n])],
        )

    def stats(self) -> SchedulerStats:
        with self._cond:
            queued = len(self._queue)
        return SchedulerStats(
            slots=self.slots, active=sum(row is not None for row in self._rows), queued=queued,
            peak_active=self._peak, submitted=self._submitted, finished=dict(self._finished),
            prompt_tokens=self._prompt_tokens, generated_tokens=self._generated, decode_steps=self._steps,
            decode_rows=self._decode_rows, capacity=self._capacity,
        )

    # The loop ------------------------------------------------------------------------------
    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _closed_reason(self) -> str:
        if self._error is not None:
            return f"the scheduler stopped after an error ({self._error!r}): restart the server"
        return "the scheduler is closed"

    def _bucket(self, n: int) -> int:
        return prefill_bucket(n, self.config.min_prefill_len, self.cache_len)

    def _decode_rows_for(self, active: int) -> int:
        """The batch prefix a decode step runs for `active` rows: a power of two, at most slots."""
        return min(power_of_two_at_least(active), self.slots)

    def _run(self, warmup: bool) -> None:
        try:
            if warmup:
                self._warmup()
            self._ready.set()
            while self._next_batch():
                self._collect_tool_calls()
                self._decode()
        except BaseException as e:  # the loop must never die silently: fail every request with the reason
            logger.exception("scheduler loop failed")
            self._error = e
            self._end_all("error", f"scheduler failed: {e!r}")
        finally:
            self._ready.set()

    def _warmup(self) -> None:
        started = time.monotonic()
        buckets = sorted({self._bucket(n) for n in range(1, self.cache_len)})
        row_buckets = sorted({self._decode_rows_for(n) for n in range(1, self.slots + 1)})
        for capacity in self.capacities:  # growing through every capacity, then shrinking back
            self._fit_capacity(capacity)
            for bucket in buckets:  # a 1-token prompt padded to each bucket that fits, into (still free) row 0
                if bucket <= capacity:
                    self._prefill(0, np.zeros((1, bucket), np.int32), 1)
            for rows in row_buckets:
                idle = np.zeros(rows, np.int32)
                self._step(idle, idle, idle)
            self._move_row(0, 0)  # compiles the row move that compaction uses
        self._fit_capacity(self.capacities[0])
        logger.info("scheduler warmed up in %.1fs: %d slots x %s positions, prefill buckets %s, decode rows %s",
                    time.monotonic() - started, self.slots, self.capacities, buckets, row_buckets)

    def _has_work(self) -> bool:
        if self._closing or self._queue:
            return True
        return any(s is not None and (s.tool_call is None or s.tool_call.done() or s.request.stream.cancelled)
                   for s in self._rows)

    def _next_batch(self) -> bool:
        """Wait for work, free the rows of cancelled requests, admit queued ones into free rows. False when closing."""
        with self._cond:
            self._cond.wait_for(self._has_work)
            if self._closing:
                return False
            self._drop_cancelled()
            self._compact()
            admitted = []
            while self._queue and (None in self._rows or self._queue[0].stream.cancelled):
                request = self._queue.popleft()
                if request.stream.cancelled:
                    self._end(request.stream, "cancelled")
                    continue
                slot = self._rows.index(None)
                self._rows[slot] = _Slot(request, Rows(self.special, 1, self.tokenizer if request.tools else None))
                admitted.append(slot)
        for slot in admitted:
            self._admit(slot)
        self._peak = max(self._peak, sum(row is not None for row in self._rows))
        return True

    def _admit(self, slot: int) -> None:
        """Prefill a request into its row and set the row's sampling inputs; it draws at the next step."""
        request = self._rows[slot].request
        n = len(request.prompt)
        prompt = np.zeros((1, self._bucket(n)), np.int32)
        prompt[0, :n] = request.prompt
        self._fit_capacity(max(prompt.shape[1], self._required_capacity()))
        self._prefill(slot, prompt, n)
        self._rows[slot].position = n
        self._seeds[slot] = request.seed
        for column, value in zip(self._sampling, request.sampling):
            column[slot] = value
        self._want_top[slot] = request.logprobs
        self._prompt_tokens += n

    def _prefill(self, slot: int, prompt: np.ndarray, n: int) -> None:
        logits, row = self._fns.prefill(self._weights, prompt, np.asarray([n], np.int32))
        self._cache, self._prefilled = self._fns.place(self._cache, self._prefilled, logits, row, np.int32(slot))

    def _required_capacity(self) -> int:
        """The most positions an active row holds."""
        return max((s.position for s in self._rows if s is not None), default=1)

    def _fit_capacity(self, positions: int) -> None:
        """Grow or shrink the cache, one capacity at a time, to the smallest capacity holding `positions`."""
        target = next(c for c in self.capacities if c >= positions)
        while self._capacity != target:
            i = self.capacities.index(self._capacity)
            self._capacity = self.capacities[i + 1 if target > self._capacity else i - 1]
            self._cache = self._fns.resize(self._cache, capacity=self._capacity)

    def _step(self, tokens, lengths, steps):
        """One decode step over the first len(tokens) rows."""
        rows = len(tokens)
        sampling = SamplingArrays(*(column[:rows] for column in self._sampling))
        logits, self._cache = self._fns.forward(self._weights, self._head_vc, self._cache, tokens, lengths)
        out = self._fns.draw(logits, self._prefilled, lengths, self._seeds[:rows], steps, sampling, self._want_top[:rows])
        return jax.device_get(out)

    def _move_row(self, src: int, dst: int) -> None:
        self._cache, self._prefilled = self._fns.move(self._cache, self._prefilled, np.int32(src), np.int32(dst))

    def _compact(self) -> None:
        """Move the last active rows into the free rows before them, so the active rows form a prefix."""
        while None in self._rows:
            hole = self._rows.index(None)
            last = max((i for i, s in enumerate(self._rows) if s is not None), default=-1)
            if last < hole:
                return
            self._move_row(last, hole)
            self._rows[hole], self._rows[last] = self._rows[last], None
            for column in (self._seeds, self._want_top, *self._sampling):
                column[hole] = column[last]

    def _decode(self) -> None:
        """One decode step for every row that is not waiting on a tool: it feeds the row's last token
        (nothing for a just-admitted row, which draws from its prefill logits) and draws the next."""
        drawing = [i for i, s in enumerate(self._rows) if s is not None and s.tool_call is None]
        if not drawing:
            return
        rows = self._decode_rows_for(max(drawing) + 1)
        tokens, lengths, steps = (np.zeros(rows, np.int32) for _ in range(3))
        for i in drawing:
            state = self._rows[i]
            tokens[i], lengths[i], steps[i] = state.next_token, state.step > 0, state.step
            state.position += lengths[i]  # the step writes the fed token's keys
        self._fit_capacity(self._required_capacity())
        sampled, logprobs, top_ids, top_logprobs = self._step(tokens, lengths, steps)
        self._steps += 1
        self._decode_rows += rows
        for i in drawing:
            self._advance(i, int(sampled[i]), float(logprobs[i]), top_ids[i], top_logprobs[i])

    def _advance(self, slot: int, sampled: int, logprob: float, top_ids, top_logprobs) -> None:
        """Turn a row's draw into its next token (a queued forced token wins), or start its tool call."""
        state = self._rows[slot]
        extra = {}
        if state.request.logprobs:
            extra = dict(logprob=logprob, top=tuple(zip(top_ids.tolist(), top_logprobs.tolist())))
        if state.request.tools and sampled == self.special.python_end and not state.rows.forcing:
            # Ends a python block: Rows runs it (calculator or sandbox, up to seconds) off this thread.
            state.tool_call = self._tools.submit(state.rows.advance, [sampled])
            state.tool_call.add_done_callback(lambda _: self._wake())
            state.tool_extra = extra
            return
        (token,), (sampled_mask,) = state.rows.advance([sampled])
        self._deliver(slot, token, extra if sampled_mask else {})

    def _collect_tool_calls(self) -> None:
        for slot, state in enumerate(self._rows):
            if state is not None and state.tool_call is not None and state.tool_call.done():
                call, state.tool_call = state.tool_call, None
                try:
                    (token,), _ = call.result()
                except Exception as e:  # only this request fails
                    logger.exception("tool call failed")
                    self._free(slot, "error", f"the tool call failed: {e!r}")
                    continue
                self._deliver(slot, token, state.tool_extra)

    def _deliver(self, slot: int, token: int, extra: dict) -> None:
        state = self._rows[slot]
        state.step += 1
        if token in self.special.stops:
            return self._free(slot, "stop")
        state.request.stream._push(Generated(token, **extra))
        self._generated += 1
        if state.step >= state.request.max_tokens:
            return self._free(slot, "length")
        state.next_token = token

    def _drop_cancelled(self) -> None:
        for slot, state in enumerate(self._rows):
            if state is not None and state.request.stream.cancelled:
                self._free(slot, "cancelled")

    def _free(self, slot: int, reason: str, error: str | None = None) -> None:
        self._end(self._rows[slot].request.stream, reason, error)
        self._rows[slot] = None

    def _end(self, stream: Stream, reason: str, error: str | None = None) -> None:
        if not stream.done:
            self._finished[reason] += 1
        stream._finish(reason, error)

    def _end_all(self, reason: str, error: str | None = None) -> None:
        with self._cond:
            queued, self._queue = list(self._queue), deque()
        for slot, state in enumerate(self._rows):
            if state is not None:
                self._rows[slot] = None
                self._end(state.request.stream, reason, error)
        for request in queued:
            self._end(request.stream, reason, error)
