"""Prometheus metrics, in a registry per app so several apps (tests) never collide.

With several server processes (NMT_WORKERS) each writes its samples to files under
PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode, set by service.workers
before it starts them), and /metrics, whichever process answers, sums them all: counters
and histograms over every process that ever served, gauges over the live ones.
"""

from __future__ import annotations

import os
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
# How a gauge's values of several processes add up: the sum over live processes.
LIVE_SUM: Final = "livesum"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
STEP_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1)


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
            "nmt_queue_depth",
            "Sentences waiting for an engine call",
            ["pair"],
            multiprocess_mode=LIVE_SUM,
            registry=r,
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
            "Duration of one engine call (static scheduler), or of one sentence's "
            "decoding from its admission to its result (continuous)",
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

        # ----- the continuous scheduler (service/scheduler.py) -----
        self.running_rows = Gauge(
            "nmt_running_sentences",
            "Sentences decoding in the running batches",
            ["pair"],
            multiprocess_mode=LIVE_SUM,
            registry=r,
        )
        self.admitted = Histogram(
            "nmt_admitted_per_step",
            "Sentences admitted into the running batches at one step boundary",
            ["pair"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.step_time = Histogram(
            "nmt_step_seconds",
            "Duration of one decoding step of a running batch",
            ["pair", "backend"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.kv_tokens = Gauge(
            "nmt_kv_cache_tokens",
            "KV-cache positions held by the running batches (padding included)",
            ["pair"],
            multiprocess_mode=LIVE_SUM,
            registry=r,
        )
        self.kv_budget = Gauge(
            "nmt_kv_cache_budget_tokens",
            "KV-cache positions the running batches may reserve (NMT_MAX_KV_TOKENS)",
            ["pair"],
            multiprocess_mode=LIVE_SUM,
            registry=r,
        )
        self.first_step = Histogram(
            "nmt_admission_to_first_step_seconds",
            "Time from a sentence's admission (encoding included) to the end of its first step",
            ["pair"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fallback_sentences = Counter(
            "nmt_fallback_sentences",
            "Sentences moved to the PyTorch fallback after an ONNX Runtime failure",
            ["pair"],
            registry=r,
        )

    def render(self) -> bytes:
        """The exposition: this app's registry, or every server process's samples summed."""
        if os.environ.get(MULTIPROC_DIR):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value (0 when absent): for tests and the benchmark."""
        return self.registry.get_sample_value(name, labels) or 0.0
