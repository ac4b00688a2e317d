"""One exception type with a status code, and one place that turns every error into JSON.

Every error answer has the same shape::

    {"error": "<what is wrong>", "status": <code>}

plus optional detail fields (``"field"`` for a bad request field, ``"reason"`` for readiness).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, json, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger("libreco.services")


class ServiceError(Exception):
    """An error answer: raise it anywhere in a request and the client gets JSON.

    Parameters
    ----------
    status : int
        HTTP status: 400 bad input, 404 unknown model, user or path, 503 store unreachable.
    message : str
        Says what is wrong, in terms of the request.
    **details
        Extra JSON fields of the answer.
    """

    def __init__(self, status: int, message: str, **details: Any):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


class BadRequest(ServiceError):
    """400: the request body or a field of it is invalid."""

    def __init__(self, message: str, field: str | None = None):
        if field is None:
            super().__init__(400, message)
        else:
            super().__init__(400, message, field=field)


class NotFound(ServiceError):
    """404: unknown model or user (with ``LIBRECO_COLD_START=404``)."""

    def __init__(self, message: str):
        super().__init__(404, message)


class StoreUnavailable(ServiceError):
    """503: Redis (or TF Serving) cannot be reached or answered with an error."""

    def __init__(self, message: str):
        super().__init__(503, message)


def error_response(status: int, message: str, **details: Any) -> Response:
    body = {"error": message, "status": status, **details}
    return Response(json.dumps(body), status=status, mimetype="application/json")


def register_error_handlers(app: Flask) -> None:
    """Answer every error of ``app`` with JSON, and log the unexpected ones with a traceback."""

    @app.errorhandler(ServiceError)
    def _service_error(e: ServiceError) -> Response:
        return error_response(e.status, e.message, **e.details)

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException) -> Response:
        status = e.code or 500
        response = error_response(status, e.description or e.name)
        if status == 405 and e.valid_methods:  # type: ignore[attr-defined]
            response.headers["Allow"] = ", ".join(e.valid_methods)  # type: ignore[attr-defined]
        return response

    @app.errorhandler(Exception)
    def _unexpected(e: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.path, exc_info=e)
        return error_response(500, "internal error")
