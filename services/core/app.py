"""The app factory every family's service is built with.

Routes of every service:

``POST /<model>/recommend``
    ``{"user": "1", "n_rec": 10, ...}`` -> ``{"recommend list for user (1)": [[item, score],
    ...]}``; the first path segment names the model in Redis.
``GET /healthz``
    200 while the process runs (no dependencies).
``GET /readyz``
    200 when Redis answers, a model of the family (``LIBRECO_MODEL`` when set) is active and
    the family's handler is ready for it (tf: TF Serving reports the model AVAILABLE), 503
    with the reason otherwise.
``GET /metrics``
    Prometheus exposition (see :mod:`services.core.metrics`).
``GET /openapi.json``
    The OpenAPI document of the service (see :mod:`services.core.openapi`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from services.core import metrics, openapi
from services.core.config import Config, is_model_name
from services.core.errors import NotFound, ServiceError, error_response, register_error_handlers
from services.core.family import FamilyHandler, load_handler
from services.core.request import parse_request
from services.core.store import MODELS_KEY, ModelKeys, RedisClient, describe, redis_client
from services.core.versions import ActiveModels, Store

log = logging.getLogger("libreco.services")
MAX_BODY_BYTES = 1 << 20
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"


@dataclass
class ServiceState:
    """What the routes of one app share; ``app.extensions["libreco"]``."""

    family: str
    config: Config
    store: Store
    models: ActiveModels
    handler: FamilyHandler


def create_app(family: str, config: Config | Mapping[str, Any] | None = None, *,
               client: RedisClient | None = None,
               handler: type[FamilyHandler] | None = None) -> Flask:
    """Build the Flask app of a family's service.

    Parameters
    ----------
    family : str
        ``"knn"``, ``"vector"`` or ``"tf"``; picks the handler from
        :data:`services.core.family.HANDLERS` unless ``handler`` is given.
    config : Config or mapping, optional
        A ready :class:`Config`, or overrides keyed by environment variable names
        (``{"LIBRECO_COLD_START": "404"}``) applied on top of the environment.
    client : redis client, optional
        Defaults to one built from the configuration.
    handler : FamilyHandler subclass, optional

    Raises
    ------
    ConfigError
        When a setting is invalid (the message names every bad variable).
    """
    cfg = config if isinstance(config, Config) else Config.from_env(overrides=config)
    _configure_logging(cfg.log_level)
    handler_cls = handler or load_handler(family)
    store = Store(client if client is not None else redis_client(cfg.redis))
    family_handler = handler_cls(store, cfg)
    state = ServiceState(family, cfg, store,
                         ActiveModels(store, family_handler, cfg.poll_interval), family_handler)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["libreco"] = state
    register_error_handlers(app)
    _register_health(app, state)
    _register_recommend(app, state)
    _register_openapi(app, state)
    log.info("%s service ready to start: Redis %s (%s), poll every %.2fs, cold start %s",
             family, describe(store.client), cfg.redis.mode, cfg.poll_interval, cfg.cold_start)
    return app


def _configure_logging(level: str) -> None:
    logger = logging.getLogger("libreco.services")
    logger.setLevel(level)
    if not logger.handlers and not logging.getLogger().handlers:
        stream = logging.StreamHandler()
        stream.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(stream)


def _register_health(app: Flask, state: ServiceState) -> None:
    @app.get("/healthz")
    def healthz() -> Response:
        return _json({"status": "ok", "family": state.family})

    @app.get("/readyz")
    def readyz() -> Response:
        try:
            state.store.ping()
            if state.config.model:
                version = state.models.get(state.config.model)
                active = {version.name: version.version}
            else:
                active = family_models(state)
                if not active:
                    raise NotFound(f"no {state.family} model is loaded in Redis")
            state.handler.check_ready(state.models, sorted(active))
        except ServiceError as e:
            return error_response(503, e.message, ready=False, reason=e.message)
        return _json({"ready": True, "models": active})

    @app.get("/metrics")
    def prometheus() -> Response:
        return metrics.metrics_response()


def _register_openapi(app: Flask, state: ServiceState) -> None:
    text = openapi.document_text(f"libreco {state.family} service", state.config,
                                 [state.handler])

    @app.get("/openapi.json")
    def openapi_document() -> Response:
        return Response(text, mimetype="application/json")


def family_models(state: ServiceState) -> dict[str, str]:
    """Model name -> active version for every loaded model of the app's family."""
    registered = state.store.pipeline_execute([("hgetall", (MODELS_KEY,))], what="model list")[0]
    names = sorted(k.decode() for k, v in registered.items() if v.decode() == state.family)
    if not names:
        return {}
    versions = state.store.pipeline_execute([("get", (ModelKeys(n).active,)) for n in names],
                                            what="model list")
    return {n: v.decode() for n, v in zip(names, versions) if v is not None}


def preload(app: Any) -> list[str]:
    """Load the active version of each of the family's models (``LIBRECO_MODEL`` alone when
    set) into this process, so that its first requests do not wait for the reads.

    Best effort: a model that cannot be loaded now (Redis away, nothing loaded yet) loads on
    its first request as usual. Returns the names loaded (none for an app that is not a
    service of :func:`create_app`).
    """
    state: ServiceState | None = getattr(app, "extensions", {}).get("libreco")
    if state is None:
        return []
    loaded = []
    try:
        names = [state.config.model] if state.config.model else sorted(family_models(state))
        for name in names:
            state.models.get(name)
            loaded.append(name)
    except ServiceError as e:
        log.warning("models not loaded at start (%s); they load on their first request",
                    e.message)
    except Exception:  # a worker must start even so: requests report the problem
        log.exception("models not loaded at start; they load on their first request")
    return loaded


class _DefaultModel:
    """Which model a family's default route serves: ``LIBRECO_MODEL``, else the only one."""

    def __init__(self, state: ServiceState):
        self.state = state
        self.name: str | None = None
        self.checked_at = float("-inf")
        self.lock = threading.Lock()

    def get(self) -> str:
        if self.state.config.model:
            return self.state.config.model
        with self.lock:
            if self.name is None or \
                    time.monotonic() - self.checked_at >= self.state.config.poll_interval:
                names = sorted(family_models(self.state))
                if len(names) != 1:
                    self.name = None
                    family = self.state.family
                    if not names:
                        raise NotFound(f"no {family} model is loaded in Redis")
                    raise NotFound(f"several {family} models are loaded ({', '.join(names)}); "
                                   "name one in the URL or set LIBRECO_MODEL")
                self.name = names[0]
                self.checked_at = time.monotonic()
            return self.name


def _register_recommend(app: Flask, state: ServiceState) -> None:
    cfg, models, handler = state.config, state.models, state.handler
    default_route = handler.default_route
    default_model = _DefaultModel(state)

    @app.post("/<name>/recommend")
    def recommend(name: str) -> Response:
        start = time.perf_counter()
        label = metrics.UNKNOWN_MODEL
        status = 500
        try:
            req = parse_request(_body(), cfg.n_rec, cfg.max_n_rec)
            if default_route is not None and name == default_route:
                name = default_model.get()
            elif not is_model_name(name):
                raise NotFound(f"no model named {name[:64]!r} is loaded")
            version = models.get(name)
            label = name
            params = handler.parse_params(req.body, version)
            user = version.user_index(req.user)
            if user < 0 and not handler.scores_unknown_users:
                if cfg.cold_start == "404":
                    raise ServiceError(404, f"user {req.user!r} is not known to model {name!r}",
                                       field="user")
                metrics.cold_start(name)
                items, scores = version.popular(req.n_rec)
            else:
                items, scores = handler.recommend(version, user, params, req.n_rec)
            body = version.answer_text(req.answer_key, items, scores)
            status = 200
            return Response(body, status=200, mimetype="application/json")
        except ServiceError as e:
            status = e.status
            raise
        except HTTPException as e:  # e.g. 413 for an oversized body
            status = e.code or 500
            raise
        finally:
            metrics.observe_request(label, status, time.perf_counter() - start)


def _body() -> bytes:
    """The request body, read straight from the WSGI stream when its length is declared and
    within ``MAX_BODY_BYTES`` (otherwise through werkzeug, which answers 413)."""
    env = request.environ
    length = env.get("CONTENT_LENGTH") or ""
    if length.isascii() and length.isdigit() and int(length) <= MAX_BODY_BYTES and \
            "HTTP_TRANSFER_ENCODING" not in env:
        return env["wsgi.input"].read(int(length))
    return request.get_data(cache=False)


def _json(obj: Any, status: int = 200) -> Response:
    return Response(json.dumps(obj), status=status, mimetype="application/json")
