"""One process that serves every family: for a laptop, the demo and small installations.

Production runs one Deployment per family (``services.<family>.<family>_deploy:app``); this app
puts the three behind one port so that the serving guide's request scripts all work against
``localhost:5000``::

    gunicorn -c python:services.gunicorn_conf services.all_deploy:app

A request goes to the family of the model named by its first path segment (read from Redis's
model registry and cached for the poll interval); ``/vector/recommend`` goes to the vector
family; ``/healthz``, ``/readyz`` and ``/metrics`` are answered by the first family served, and
``/openapi.json`` documents the request fields of every family served.
Families whose serving dependencies are not installed are left out, with a log line.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from werkzeug.wrappers import Response  # noqa: E402

from services.core import openapi  # noqa: E402
from services.core.app import ServiceState, create_app  # noqa: E402
from services.core.config import Config  # noqa: E402
from services.core.store import MODELS_KEY, RedisClient, redis_client  # noqa: E402

log = logging.getLogger("libreco.services")
FAMILIES = ("knn", "vector", "tf")
WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


class FamilyDispatcher:
    """WSGI app that forwards each request to the app of its model's family."""

    def __init__(self, apps: dict[str, Any], client: RedisClient, poll_interval: float):
        if not apps:
            raise RuntimeError("no family could be served: install libreco[serving]")
        self.apps = apps
        self.default = next(iter(apps.values()))
        states = [state_of(a) for a in apps.values()]
        self.document = Response(
            openapi.document_text("libreco service (" + ", ".join(apps) + ")",
                                  states[0].config, [s.handler for s in states]),
            mimetype="application/json")
        self.client = client
        self.poll_interval = poll_interval
        self.families: dict[str, str] = {}
        self.read_at = float("-inf")
        self.lock = threading.Lock()

    def family_of(self, name: str) -> str | None:
        if name == "vector":
            return "vector"
        with self.lock:
            if time.monotonic() - self.read_at >= self.poll_interval:
                try:
                    raw = self.client.hgetall(MODELS_KEY)
                    self.families = {k.decode(): v.decode() for k, v in raw.items()}
                    self.read_at = time.monotonic()
                except Exception as e:  # the family app answers 503 itself
                    log.debug("model registry unavailable: %s", e)
            return self.families.get(name)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/openapi.json" and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            return self.document(environ, start_response)
        segment = path.lstrip("/").split("/", 1)[0]
        app = self.apps.get(self.family_of(segment) or "", self.default)
        return app(environ, start_response)


def create_all_app(config: Config | None = None) -> FamilyDispatcher:
    cfg = config or Config.from_env()
    client = redis_client(cfg.redis)
    apps: dict[str, Any] = {}
    for family in FAMILIES:
        try:
            apps[family] = create_app(family, cfg, client=client)
        except (ImportError, ValueError) as e:  # the family's handler is not installed
            log.warning("not serving the %s family: %s", family, e)
    dispatcher = FamilyDispatcher(apps, client, cfg.poll_interval)
    log.info("serving families %s on one port", ", ".join(apps))
    return dispatcher


def state_of(app: Any) -> ServiceState:
    return app.extensions["libreco"]


app = create_all_app()
