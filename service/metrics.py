"""Prometheus metrics, in a registry per app so several apps (tests) never collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """Everything the service counts; label names are kept small and bounded."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "nmt_requests",
            "HTTP requests by route template and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "nmt_request_duration_seconds",
            "HTTP request latency by route template",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "nmt_queue_wait_seconds",
            "Time a sentence waited before its engine call",
            ["pair"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "nmt_queue_depth", "Sentences waiting for an engine call", ["pair"], registry=r
        )
        self.batch_size = Histogram(
            "nmt_batch_size",
            "Sentences per engine call",
            ["pair", "backend"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.input_tokens = Counter(
            "nmt_input_tokens", "Source tokens sent to the engines", ["pair"], registry=r
        )
        self.output_tokens = Counter(
            "nmt_output_tokens", "Target tokens generated", ["pair"], registry=r
        )
        self.inference_time = Histogram(
            "nmt_inference_seconds",
            "Duration of one engine call",
            ["pair", "backend"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter(
            "nmt_fallbacks",
            "Switches to the PyTorch fallback (load_failed, batch_failed)",
            ["pair", "reason"],
            registry=r,
        )
        self.rejections = Counter(
            "nmt_rejections", "Requests answered with an error, by type", ["reason"], registry=r
        )
        self.dropped = Counter(
            "nmt_dropped_sentences",
            "Queued sentences dropped because their request was gone "
            "(client disconnected or deadline passed)",
            ["pair"],
            registry=r,
        )
        # key: the key's hash (service.ratelimit.key_label), or "address"; never the key.
        self.rate_limited = Counter(
            "nmt_rate_limited",
            "Requests refused by a rate limit, by client key hash and limit (requests, chars)",
            ["key", "limit"],
            registry=r,
        )
        self.rate_limit_errors = Counter(
            "nmt_rate_limit_errors",
            "Rate limit checks the storage failed; those requests were let through",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value (0 when absent): for tests and the benchmark."""
        return self.registry.get_sample_value(name, labels) or 0.0
