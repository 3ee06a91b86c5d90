"""Prometheus metrics of one server: requests, latency, time to first token, tokens, batches.

A registry per app (not the global one), so tests can run several apps in one process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("genloop_http_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("genloop_http_request_seconds", "time to the response's headers",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.first_token = Histogram("genloop_time_to_first_token_seconds",
                                     "from submission to the first token", ["model"],
                                     buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("genloop_generated_tokens", "tokens generated", ["model"], registry=r)
        self.images = Counter("genloop_generated_images", "images generated", ["model"], registry=r)
        self.batch = Histogram("genloop_batch_size", "sequences per decoding step",
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.running = Gauge("genloop_running_sequences", "sequences decoding now", ["model"],
                             registry=r)
        self.waiting = Gauge("genloop_waiting_sequences", "sequences waiting for a slot", ["model"],
                             registry=r)
        self.rejected = Counter("genloop_rejected_requests", "requests refused for load or rate",
                                ["reason"], registry=r)
        self.decode_restarts = Gauge("genloop_decode_process_restarts",
                                     "times a model's decoding process died and was restarted",
                                     ["model"], registry=r)
        self.loaded = Gauge("genloop_loaded_models", "model versions loaded", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
