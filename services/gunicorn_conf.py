"""gunicorn settings of every service, from the environment.

::

    gunicorn -c python:services.gunicorn_conf services.knn.knn_deploy:app

=============================  =========  ===================================================
variable                       default    meaning
=============================  =========  ===================================================
``LIBRECO_PORT``               5000       port bound on all interfaces
``LIBRECO_WORKERS``            2          worker processes
``LIBRECO_WORKER_CLASS``       gthread    ``gthread`` (keep-alive, threads) or ``sync``
``LIBRECO_THREADS``            4          threads per gthread worker
``LIBRECO_TIMEOUT``            30         seconds before a silent worker is restarted
``LIBRECO_GRACEFUL_TIMEOUT``   20         seconds workers get to finish requests on SIGTERM
``LIBRECO_KEEPALIVE``          5          seconds an idle keep-alive connection stays open
``LIBRECO_ACCESS_LOG``         off        ``1`` / ``true`` writes an access log line per request
``LIBRECO_LOG_LEVEL``          INFO       gunicorn's and the service's log level
``PROMETHEUS_MULTIPROC_DIR``   temp dir   where workers write metrics; emptied at start
=============================  =========  ===================================================

``gthread`` is the default because it keeps client connections open between requests; on
loopback it answered more requests per second than ``sync`` for both the knn service and a
hello-world route (``benchmarks/results/knn_service.md``). It runs as
:class:`services.worker.BalancedThreadWorker`, which spreads kept-alive connections evenly over
the workers.

Each worker loads the active models of its family before it takes requests
(:func:`services.core.app.preload`), then logs ``worker <pid> ready``.

SIGTERM stops gracefully: the master stops accepting, workers finish the requests they have
within ``LIBRECO_GRACEFUL_TIMEOUT`` seconds, then exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Any

from services.core.config import Config, ConfigError


def _int(name: str, default: int, lo: int = 1) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError([f"{name}={raw!r}: expected an integer >= {lo}"]) from None
    if value < lo:
        raise ConfigError([f"{name}={raw!r}: expected an integer >= {lo}"])
    return value


def _choice(name: str, default: str, options: tuple[str, ...]) -> str:
    value = os.environ.get(name, "").strip().lower() or default
    if value not in options:
        raise ConfigError([f"{name}={value!r}: expected one of {', '.join(options)}"])
    return value


def _multiproc_dir() -> str:
    """``PROMETHEUS_MULTIPROC_DIR``, set to a fresh folder when the environment has none."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    path = os.path.abspath(path) if path else tempfile.mkdtemp(prefix="libreco-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path  # workers inherit the absolute path
    return path


# Fail before forking when the service configuration is invalid: one message, every problem.
_service_config = Config.from_env()

bind = f"0.0.0.0:{_int('LIBRECO_PORT', 5000)}"
workers = _int("LIBRECO_WORKERS", 2)
_worker_class = _choice("LIBRECO_WORKER_CLASS", "gthread", ("gthread", "sync"))
# gthread with connections spread evenly over the workers (see services/worker.py)
worker_class = "services.worker.BalancedThreadWorker" if _worker_class == "gthread" else "sync"
threads = _int("LIBRECO_THREADS", 4)
timeout = _int("LIBRECO_TIMEOUT", 30)
graceful_timeout = _int("LIBRECO_GRACEFUL_TIMEOUT", 20)
keepalive = _int("LIBRECO_KEEPALIVE", 5)
backlog = _int("LIBRECO_BACKLOG", 2048)
accesslog = "-" if os.environ.get("LIBRECO_ACCESS_LOG", "").strip().lower() in (
    "1", "true", "yes", "on") else None
errorlog = "-"
loglevel = _service_config.log_level.lower()
proc_name = "libreco"
preload_app = False  # every worker builds its own app, Redis connections and metric files

_metrics_dir = _multiproc_dir()


def on_starting(server: Any) -> None:
    """Empty the metrics folder: values of an earlier run must not be added to this one's."""
    os.makedirs(_metrics_dir, exist_ok=True)
    for entry in os.listdir(_metrics_dir):
        target = os.path.join(_metrics_dir, entry)
        if os.path.isdir(target):
            shutil.rmtree(target, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):  # an exiting master removed it
                os.remove(target)
    server.log.info("metrics of all workers in %s", _metrics_dir)


def child_exit(server: Any, worker: Any) -> None:
    """A dead worker's live gauges must leave the merged metrics."""
    from prometheus_client import multiprocess

    try:
        multiprocess.mark_process_dead(worker.pid, _metrics_dir)
    except OSError as e:  # e.g. a file already gone; never let it stop the master
        server.log.warning("metrics of worker %s not cleaned up: %s", worker.pid, e)


def post_worker_init(worker: Any) -> None:
    """Load the active models, then log one line per worker: from here on it takes requests."""
    from services.core.app import preload

    loaded = preload(worker.wsgi)
    if loaded:
        worker.log.info("worker %s loaded %s", worker.pid, ", ".join(loaded))
    worker.log.info("worker %s ready", worker.pid)


def worker_int(worker: Any) -> None:
    worker.log.info("worker %s interrupted, finishing its requests", worker.pid)
