"""Prometheus metrics. With several workers, each writes to PROMETHEUS_MULTIPROC_DIR."""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# From a lone create to the largest broadcast (CAMPANA_MAX_RECIPIENTS is at most 100 000).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)

open_sockets = Gauge(
    "campana_open_sockets", "Sockets open on this process.", multiprocess_mode="livesum"
)
events_published = Counter("campana_events_published_total", "Events handed to the broker.")
frames_delivered = Counter("campana_frames_delivered_total", "Frames written to sockets.")
send_queue_overflows = Counter(
    "campana_send_queue_overflows_total", "Sockets closed with 1013 for falling behind."
)
sockets_refused = Counter("campana_sockets_refused_total", "Sockets closed by a limit.", ["reason"])
connections_cut = Counter(
    "campana_connections_cut_total",
    "Connections closed or dropped for what a client sent or failed to read, by limit.",
    ["limit"],
)
broker_reconnects = Counter(
    "campana_broker_reconnects_total", "Broker connections re-established after a loss."
)
publish_failures = Counter(
    "campana_publish_failures_total",
    "Publishes the broker did not take; their users' sockets are told to reload later.",
)
socket_reloads = Counter(
    "campana_socket_reloads_total",
    "Socket states read again: after a version gap, a stale notice, a broker outage, "
    "or when the sweep found the socket behind the database.",
    ["reason"],
)
sweep_duration = Histogram(
    "campana_sweep_duration_seconds",
    "The sweep's query of every local user's version.",
    buckets=LATENCY_BUCKETS,
)
request_latency = Histogram(
    "campana_request_duration_seconds",
    "REST request duration.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
delivery_latency = Histogram(
    "campana_delivery_latency_seconds",
    "From the change's commit to the frame written to a socket.",
    buckets=LATENCY_BUCKETS,
)

create_batch_size = Histogram(
    "campana_create_batch_size",
    "Notifications written by one shared create transaction.",
    buckets=BATCH_BUCKETS,
)


def render() -> tuple[bytes, str]:
    """The exposition text: this process's, or every worker's when they share a folder."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def observe_request(method: str, route: str, status: int, started: float) -> None:
    """A REST request's duration (since ``started``, ``time.perf_counter()``), by route."""
    request_latency.labels(method, route, str(status)).observe(time.perf_counter() - started)
