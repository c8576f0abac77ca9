"""Serving throughput: the real OpenAI-compatible server under concurrent streaming clients.

For each concurrency level c a fresh server is started (create_app + serve_in_background, one
Scheduler of `slots` rows; compilations are shared between them, so only the first one
compiles) and, once /health answers 200 and one warm-up request has been served, c client
threads each send `requests_per_stream` streaming `POST /v1/completions` requests one after
another (a new request as soon as the previous one ended), so c requests are in flight until
the last round. A fresh server per level makes the scheduler's counters (peak active rows,
generated tokens, decode steps) belong to that level alone.

The clients are standard-library HTTP (one keep-alive connection per thread, SSE parsed line
by line) in the server's process. Per request: time to first token = from sending the request
to the first SSE chunk carrying text (the server sends a chunk per text delta; a token that is
an incomplete UTF-8 character is held until the character completes, so with random weights
the synthetic tokenizer's vocabulary is printable ASCII but for the 128 high single bytes),
and the completion tokens of the final usage chunk (a stop token can end a request before
max_tokens; nothing is assumed). A level's aggregate tok/s is its completion tokens over its
wall time, from releasing the clients to the last request's end.
"""

from __future__ import annotations

import dataclasses
import http.client
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlsplit

import jax.numpy as jnp
import numpy as np

from flaxchat.infer.batcher import SchedulerConfig, SchedulerStats
from flaxchat.infer.server import ServerConfig, create_app, serve_in_background
from flaxchat.infer.server.schemas import MAX_TEMPERATURE, MAX_TOKENS, MIN_TEMPERATURE
from flaxchat.model import GPT
from flaxchat.tokenizer import SPECIAL_TOKENS, Tokenizer
from flaxchat.tokenizer.spec import nanochat_spec

MODEL_NAME = "serve-bench"
PRINTABLE = bytes(range(0x20, 0x7F))  # the synthetic tokenizer's multi-byte tokens are printable ASCII
READY_TIMEOUT_S = 1800.0  # warm-up compiles every prefill bucket: minutes for a large model on CPU
REQUEST_TIMEOUT_S = 600.0  # per socket read: a request queued behind many others waits long


class ServeBenchError(ValueError):
    """Benchmark settings that cannot be measured; the message says what to change."""


class ServeRequestError(RuntimeError):
    """The server failed a benchmark request (an error status or error event)."""


@dataclasses.dataclass(frozen=True)
class ServeBenchConfig:
    """What to measure: each level runs concurrency x requests_per_stream requests."""

    concurrency: tuple[int, ...] = (1, 4, 16)
    prompt_tokens: int = 128  # <|bos|> then random ordinary tokens, different per request
    max_tokens: int = 64
    requests_per_stream: int = 2  # each client's requests, back to back: the level keeps c in flight
    temperature: float = 0.0  # greedy; each request still sends its own seed
    slots: int | None = None  # scheduler rows; None = the largest concurrency
    cache_len: int | None = None  # positions per row; None = the server's default (sequence_len rounded up to 64)
    seed: int = 0

    def __post_init__(self):
        c = self.concurrency
        if not c or any(not _positive_int(n) for n in c):
            raise ServeBenchError(f"concurrency levels must be integers >= 1, got {c!r}")
        if len(set(c)) != len(c):
            raise ServeBenchError(f"concurrency levels must be distinct, got {c!r}")
        for name in ("prompt_tokens", "max_tokens", "requests_per_stream"):
            if not _positive_int(getattr(self, name)):
                raise ServeBenchError(f"{name.replace('_', '-')} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.max_tokens > MAX_TOKENS:
            raise ServeBenchError(f"max-tokens is at most {MAX_TOKENS} (the server's limit), got {self.max_tokens}")
        for name in ("slots", "cache_len"):
            value = getattr(self, name)
            if value is not None and not _positive_int(value):
                raise ServeBenchError(f"{name.replace('_', '-')} must be None or an integer >= 1, got {value!r}")
        if self.cache_len is not None and self.cache_len < self.prompt_tokens + self.max_tokens:
            raise ServeBenchError(f"cache-len ({self.cache_len}) must hold prompt-tokens + max-tokens "
                                  f"({self.prompt_tokens + self.max_tokens})")
        t = self.temperature  # the server's range, so no request is refused mid-run
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (t == 0 or MIN_TEMPERATURE <= t <= MAX_TEMPERATURE):
            raise ServeBenchError(f"temperature must be 0 (greedy) or in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}], "
                                  f"got {t!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ServeBenchError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")

    @property
    def scheduler_slots(self) -> int:
        return self.slots or max(self.concurrency)


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def synthetic_tokenizer(vocab_size: int) -> Tokenizer:
    """A tokenizer of exactly vocab_size ids for random weights: the 256 bytes, then printable-ASCII
    strings of 2, 3, ... characters in order, then the 9 special tokens (nanochat's layout)."""
    ordinary = vocab_size - len(SPECIAL_TOKENS)
    if ordinary < 256:
        raise ServeBenchError(f"vocab size {vocab_size} is below {256 + len(SPECIAL_TOKENS)} "
                              f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens)")
    ranks = {bytes([b]): b for b in range(256)}
    strings = itertools.chain.from_iterable(itertools.product(PRINTABLE, repeat=k) for k in itertools.count(2))
    for piece in itertools.islice(strings, ordinary - 256):
        ranks[bytes(piece)] = len(ranks)
    return Tokenizer(nanochat_spec(ranks, name=f"synthetic-{vocab_size}"))


@dataclasses.dataclass(frozen=True)
class _Reply:
    """One streamed request, as its client saw it (perf_counter seconds)."""

    sent: float
    first_text: float | None  # None: no chunk carried text (e.g. a stop token came first)
    ended: float  # [DONE] read
    completion_tokens: int
    finish_reason: str


def _stream_completion(conn: http.client.HTTPConnection, body: dict) -> _Reply:
    sent = time.perf_counter()
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise ServeRequestError(f"POST /v1/completions answered {response.status}: {response.read()[:1000]!r}")
    first_text = usage = finish_reason = ended = None
    for line in response:  # read to the end of the body, so the connection is reused
        if not line.startswith(b"data: "):
            continue
        data = line[len(b"data: "):].strip()
        if data == b"[DONE]":
            ended = time.perf_counter()
            continue
        event = json.loads(data)
        if "error" in event:
            raise ServeRequestError(f"the server failed a request: {event['error'].get('message')}")
        choices = event.get("choices") or [{}]
        if first_text is None and choices[0].get("text"):
            first_text = time.perf_counter()
        if "usage" in event:
            usage, finish_reason = event["usage"], choices[0].get("finish_reason")
    if usage is None or ended is None:
        raise ServeRequestError("a completion stream ended without its usage chunk and [DONE]")
    return _Reply(sent, first_text, ended, int(usage["completion_tokens"]), str(finish_reason))


def _connect(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=REQUEST_TIMEOUT_S)


def _wait_ready(url: str) -> None:
    """Poll /health until the scheduler has warmed up (200); fail if it reports a failure or takes too long."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        conn = _connect(url)
        try:
            conn.request("GET", "/health")
            response = conn.getresponse()
            body = json.loads(response.read())
        finally:
            conn.close()
        if response.status == 200:
            return
        if str(body.get("status", "")).startswith("failed"):
            raise ServeRequestError(f"the server's scheduler failed while warming up: {body['status']}")
        if time.monotonic() > deadline:
            raise ServeRequestError(f"the server was not ready after {READY_TIMEOUT_S:.0f} s of warm-up")
        time.sleep(0.05)


class _Requests:
    """The request bodies: <|bos|> + random ordinary tokens, a seed per request, reproducible from cfg.seed."""

    def __init__(self, tokenizer: Tokenizer, cfg: ServeBenchConfig):
        self.cfg = cfg
        self.bos = tokenizer.bos_id
        self.ordinary = np.asarray(sorted(tokenizer.spec.ranks.values()), np.int64)

    def body(self, level: int, index: int) -> dict:
        rng = np.random.default_rng((self.cfg.seed, level, index))
        prompt = [self.bos, *rng.choice(self.ordinary, self.cfg.prompt_tokens - 1).tolist()]
        return {"model": MODEL_NAME, "prompt": prompt, "max_tokens": self.cfg.max_tokens, "stream": True,
                "temperature": self.cfg.temperature, "seed": int(rng.integers(2**32))}


def _clients(url: str, bodies: list[list[dict]]) -> tuple[float, list[_Reply]]:
    """One thread per list of bodies, each sending its requests back to back, all released at once.
    (level start time, replies)."""
    connections = [_connect(url) for _ in bodies]
    go = threading.Event()
    replies: list[_Reply] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(conn: http.client.HTTPConnection, mine: list[dict]) -> None:
        go.wait()
        try:
            for body in mine:
                reply = _stream_completion(conn, body)
                with lock:
                    replies.append(reply)
        except BaseException as e:  # reported on the main thread
            with lock:
                errors.append(e)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(conn, mine), name=f"serve-bench-client-{i}", daemon=True)
               for i, (conn, mine) in enumerate(zip(connections, bodies))]
    for thread in threads:
        thread.start()
    start = time.perf_counter()
    go.set()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return start, replies


def _level_result(concurrency: int, start: float, replies: list[_Reply], before: SchedulerStats,
                  after: SchedulerStats) -> dict:
    tokens = sum(r.completion_tokens for r in replies)
    wall = max(r.ended for r in replies) - start
    ttft_ms = [1e3 * (r.first_text - r.sent) for r in replies if r.first_text is not None]
    # A stream's decode rate as its client sees it: tokens after the first over the time after the first.
    rates = [(r.completion_tokens - 1) / (r.ended - r.first_text)
             for r in replies if r.first_text is not None and r.completion_tokens > 1 and r.ended > r.first_text]
    generated = after.generated_tokens - before.generated_tokens
    steps = after.decode_steps - before.decode_steps
    return {
        "concurrency": concurrency,
        "requests": len(replies),
        "completion_tokens": tokens,
        "scheduler_generated_tokens": generated,
        "wall_s": round(wall, 3),
        "aggregate_tok_per_s": round(tokens / wall, 2),
        "per_stream_tok_per_s": round(float(np.median(rates)), 2) if rates else None,
        "ttft_ms_p50": round(float(np.percentile(ttft_ms, 50)), 2) if ttft_ms else None,
        "ttft_ms_p95": round(float(np.percentile(ttft_ms, 95)), 2) if ttft_ms else None,
        "requests_without_text": len(replies) - len(ttft_ms),
        "peak_active": after.peak_active,
        "mean_rows_per_step": round(generated / steps, 2) if steps else None,  # tokens generated per step
        "mean_decode_rows": round((after.decode_rows - before.decode_rows) / steps, 2) if steps else None,
        "decode_steps": steps,
        "finish_reasons": dict(Counter(r.finish_reason for r in replies)),
    }


def bench_serve(model: GPT, tokenizer: Tokenizer, cfg: ServeBenchConfig = ServeBenchConfig(), *,
                progress: Callable[[str], None] = lambda line: None) -> dict:
    """Aggregate tok/s, per-stream tok/s and time to first token per concurrency level, as one JSON-able dict."""
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ServeBenchError(f"tokenizer vocab ({tokenizer.vocab_size}) != model vocab ({model.config.vocab_size})")
    server_config = ServerConfig(tools=False, scheduler=SchedulerConfig(slots=cfg.scheduler_slots,
                                                                        cache_len=cfg.cache_len))
    requests = _Requests(tokenizer, cfg)
    levels, cache_len = [], None
    for c in cfg.concurrency:
        app = create_app(model, tokenizer, MODEL_NAME, server_config)
        scheduler = app.state.flaxchat.scheduler
        cache_len = scheduler.cache_len
        if cfg.prompt_tokens + cfg.max_tokens > cache_len:
            raise ServeBenchError(f"prompt-tokens + max-tokens ({cfg.prompt_tokens + cfg.max_tokens}) exceed the "
                                  f"server's cache of {cache_len} positions: raise cache-len or shorten them")
        progress(f"{c} streams: starting a server ({cfg.scheduler_slots} slots x {cache_len} positions), warming up")
        with serve_in_background(app) as url:
            _wait_ready(url)
            conn = _connect(url)
            try:
                _stream_completion(conn, requests.body(0, 0))  # level 0: the warm-up
            finally:
                conn.close()
            before = scheduler.stats()
            bodies = [[requests.body(c, i + c * k) for k in range(cfg.requests_per_stream)] for i in range(c)]
            start, replies = _clients(url, bodies)
            after = scheduler.stats()
        levels.append(_level_result(c, start, replies, before, after))
        e = levels[-1]
        progress(f"{c} streams: {e['aggregate_tok_per_s']} tok/s aggregate, {e['per_stream_tok_per_s']} tok/s per "
                 f"stream, TTFT p50 {e['ttft_ms_p50']} ms p95 {e['ttft_ms_p95']} ms, peak active {e['peak_active']}")
    result = {
        "config": model.config.to_dict(),
        "dtype": jnp.dtype(model.dtype).name,
        "vocab_size": tokenizer.vocab_size,
        "slots": cfg.scheduler_slots,
        "cache_len": cache_len,
        "prompt_tokens": cfg.prompt_tokens,
        "max_tokens": cfg.max_tokens,
        "requests_per_stream": cfg.requests_per_stream,
        "temperature": cfg.temperature,
        "seed": cfg.seed,
        "levels": levels,
    }
    if len(levels) > 1:
        low, high = min(levels, key=lambda e: e["concurrency"]), max(levels, key=lambda e: e["concurrency"])
        ratio = high["aggregate_tok_per_s"] / low["aggregate_tok_per_s"] if low["aggregate_tok_per_s"] else None
        result["aggregate_speedup"] = {"concurrency": high["concurrency"], "baseline": low["concurrency"],
                                       "ratio": None if ratio is None else round(ratio, 3)}
    return result
