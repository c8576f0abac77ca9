"""Prometheus metrics: requests, tokens, slots, time to first token."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from flaxchat.infer.batcher import SchedulerStats, Stream

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _SchedulerCollector:
    """The scheduler's own counters, read at scrape time."""

    def __init__(self, stats: Callable[[], SchedulerStats]):
        self._stats = stats

    def collect(self):
        s = self._stats()
        for name, doc, value in (
            ("flaxchat_slots", "Rows of the decode batch", s.slots),
            ("flaxchat_active_slots", "Rows generating now", s.active),
            ("flaxchat_queued_requests", "Requests waiting for a row", s.queued),
            ("flaxchat_cache_capacity", "Positions the KV cache holds per row now", s.capacity),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        for name, doc, value in (
            ("flaxchat_prompt_tokens", "Prompt tokens prefilled", s.prompt_tokens),
            ("flaxchat_generated_tokens", "Tokens generated", s.generated_tokens),
            ("flaxchat_decode_steps", "Batched decode steps run", s.decode_steps),
            ("flaxchat_decode_rows", "Rows computed by decode steps (active rows rounded up to a power of two)",
             s.decode_rows),
        ):
            yield CounterMetricFamily(name, doc, value=value)


class Metrics:
    def __init__(self, stats: Callable[[], SchedulerStats]):
        self.registry = CollectorRegistry()
        self.requests = Counter("flaxchat_requests", "Generation requests finished, by endpoint and finish reason",
                                ["endpoint", "finish_reason"], registry=self.registry)
        self.rejected = Counter("flaxchat_rejected_requests", "Requests refused with an error, by HTTP status",
                                ["status"], registry=self.registry)
        self.ttft = Histogram("flaxchat_time_to_first_token_seconds", "From submit to the first generated token",
                              buckets=TTFT_BUCKETS, registry=self.registry)
        self.registry.register(_SchedulerCollector(stats))

    def finished(self, endpoint: str, finish_reason: str, stream: Stream | None = None) -> None:
        self.requests.labels(endpoint, finish_reason).inc()
        if stream is not None and stream.ttft is not None:
            self.ttft.observe(stream.ttft)

    def render(self) -> bytes:
        return generate_latest(self.registry)
