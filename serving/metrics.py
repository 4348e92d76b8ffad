"""Prometheus metrics of the service, in a registry of its own (one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Seconds; fine-grained below 50 ms, where the latency target sits.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class ServingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.request_seconds = Histogram(
            "rtp_serving_request_seconds",
            "Request latency by route and status class, seconds.",
            ["route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter(
            "rtp_serving_fallbacks",
            "Recommendations served by a fallback, by fallback and reason.",
            ["fallback", "reason"],
            registry=r,
        )
        self.errors = Counter(
            "rtp_serving_errors",
            "Requests that failed, by kind.",
            ["kind"],
            registry=r,
        )
        self.events = Counter(
            "rtp_serving_events",
            "Events posted, by outcome (published or the rejection reason).",
            ["outcome"],
            registry=r,
        )
        self.exposures = Counter(
            "rtp_serving_exposures",
            "Exposure events of shown items, by outcome: published, dropped (buffer "
            "full) or failed (Pub/Sub did not acknowledge).",
            ["outcome"],
            registry=r,
        )
        self.in_flight = Gauge(
            "rtp_serving_recommendations_in_flight",
            "Recommendation requests running or waiting for a worker.",
            registry=r,
        )
        self.batch_calls = Histogram(
            "rtp_serving_model_batch_calls",
            "Requests' model calls merged into each batched model call.",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
            registry=r,
        )
        self.model_version = Gauge(
            "rtp_serving_model_version",
            "Model version being served.",
            registry=r,
        )
        self.item_features_age = Gauge(
            "rtp_serving_item_features_age_seconds",
            "Age of the item-feature snapshot, seconds.",
            registry=r,
        )

    def observe_batch(self, calls: int, rows: int) -> None:
        """One batched model call of ``calls`` requests (``rows`` rows)."""
        self.batch_calls.observe(calls)
