"""Prometheus metrics of a service, correct under several gunicorn workers.

When ``PROMETHEUS_MULTIPROC_DIR`` is set (``services/gunicorn_conf.py`` sets it for gunicorn),
every worker writes its values into files of that folder and ``/metrics`` merges them, so any
worker answers for all. Without it the values live in the process (the Flask development
server, tests).

Metrics
-------
``libreco_requests_total{model, status}``
    Recommendation requests answered, by model and HTTP status.
``libreco_request_duration_seconds{model, status}``
    Their latency histogram.
``libreco_cold_start_total{model}``
    Unknown users answered with popular items.
``libreco_store_errors_total``
    Redis (or TF Serving) calls that failed while serving.
``libreco_active_model_version{model, version}``
    1 for the version a worker serves (0 once it moved on).

``model`` is ``unknown`` for requests naming no loaded model, so clients cannot grow the label
set.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable


def _settle_multiprocess_dir() -> None:
    """Make ``PROMETHEUS_MULTIPROC_DIR`` safe before prometheus_client reads it.

    prometheus_client switches to files as soon as the variable exists, even when it is empty,
    and then writes ``counter_<pid>.db`` and friends into the working directory. An empty value
    is treated here as unset; a relative one is made absolute, so that every process of a
    service writes into the same folder whatever its working directory.
    """
    for name in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"):
        value = os.environ.get(name)
        if value is None:
            continue
        if value.strip():
            os.environ[name] = os.path.abspath(value.strip())
        else:
            del os.environ[name]


_settle_multiprocess_dir()

from flask import Response  # noqa: E402
from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

UNKNOWN_MODEL = "unknown"
BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter("libreco_requests", "Recommendation requests answered.",
                   ["model", "status"])
LATENCY = Histogram("libreco_request_duration_seconds", "Recommendation request latency.",
                    ["model", "status"], buckets=BUCKETS)
COLD_START = Counter("libreco_cold_start", "Unknown users answered with popular items.",
                     ["model"])
STORE_ERRORS = Counter("libreco_store_errors", "Store calls that failed while serving.")
ACTIVE_VERSION = Gauge("libreco_active_model_version",
                       "1 for the model version a worker serves, 0 for one it left.",
                       ["model", "version"], multiprocess_mode="livemostrecent")

_observers: dict[tuple[str, int], Callable[[float], None]] = {}
_lock = threading.Lock()


def observe_request(model: str, status: int, seconds: float) -> None:
    """Count one answered request and its latency."""
    observe = _observers.get((model, status))
    if observe is None:
        observe = _make_observer(model, status)
    observe(seconds)


def _make_observer(model: str, status: int) -> Callable[[float], None]:
    counter = REQUESTS.labels(model, str(status))
    histogram = LATENCY.labels(model, str(status))

    def observe(seconds: float) -> None:
        counter.inc()
        histogram.observe(seconds)

    with _lock:
        _observers[(model, status)] = observe
    return observe


def cold_start(model: str) -> None:
    COLD_START.labels(model).inc()


def store_error() -> None:
    STORE_ERRORS.inc()


def version_changed(model: str, old: str | None, new: str) -> None:
    if old is not None and old != new:
        ACTIVE_VERSION.labels(model, old).set(0)
    ACTIVE_VERSION.labels(model, new).set(1)


def version_gone(model: str, version: str) -> None:
    ACTIVE_VERSION.labels(model, version).set(0)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def metrics_response() -> Response:
    """The exposition text: every worker's values when running multiprocess."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
