"""The OpenAPI 3.1 document each service serves at ``GET /openapi.json``.

The core describes what every family shares: the routes, the common request fields ``user``
and ``n_rec``, the answer, and the error bodies of :mod:`services.core.errors`. Each family's
handler adds its own request fields with ``openapi_fields()``, a mapping of field name to JSON
Schema. A service of several families (``services.all_deploy``) documents the union of their
fields: a family ignores the fields it does not know.

Field schemas state what a service accepts. Where the accepted set cannot be written as a
schema (an ``algo`` must name the model of the URL, a ``user_feats`` column must be one of the
model's), the field's description says so and the service answers 400.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

from services.core.config import Config
from services.core.request import MAX_USER_LENGTH

OPENAPI_VERSION = "3.1.0"
MODEL_NAME_PATTERN = "^[A-Za-z0-9_-]{1,64}$"
"""Names a model can have (:func:`services.core.config.is_model_name`); others are 404."""

Schema = dict[str, Any]
_REF = "#/components/schemas/"
_NULL: Schema = {"type": "null", "description": "the same as leaving the field out"}


def _ref(name: str) -> Schema:
    return {"$ref": _REF + name}


def digit_string(largest: int | None = None) -> Schema:
    """A JSON string of decimal digits: the form of an integer field older clients send.

    With ``largest``, only strings of fewer digits than ``largest`` are described, so that
    every string the schema allows is in range; longer ones may still be accepted.
    """
    if largest is None:
        pattern = "^[1-9][0-9]{0,8}$"
    elif largest < 10:
        pattern = f"^[1-{largest}]$"
    else:
        pattern = f"^[1-9][0-9]{{0,{len(str(largest)) - 2}}}$"
    return {"type": "string", "pattern": pattern,
            "description": "the integer written as a string of digits"}


def integer_field(description: str, lo: int, hi: int | None = None) -> Schema:
    """An optional integer field as :func:`services.core.request.int_field` reads it."""
    number: Schema = {"type": "integer", "minimum": lo}
    if hi is not None:
        number["maximum"] = hi
    return {"description": description, "anyOf": [number, digit_string(hi), _NULL]}


def boolean_field(description: str) -> Schema:
    """An optional boolean as :func:`services.core.request.bool_field` reads it."""
    text = {"type": "string", "pattern": "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$",
            "description": "\"true\" or \"false\" in any case"}
    return {"description": description, "anyOf": [{"type": "boolean"}, text, _NULL]}


def request_schema(config: Config, fields: Mapping[str, Schema]) -> Schema:
    """The request object: ``user``, ``n_rec`` and the families' ``fields``."""
    properties: dict[str, Schema] = {
        "user": {"type": ["string", "number"], "maxLength": MAX_USER_LENGTH,
                 "description": "the user's original id from the training data (\"1\" and 1 "
                                "name the same user); an unknown user gets the cold-start "
                                "answer (popular items, or 404 with LIBRECO_COLD_START=404)",
                 "examples": ["1"]},
        "n_rec": integer_field(f"items to return (default {config.n_rec})", 1, config.max_n_rec),
    }
    properties.update(fields)
    return {"type": "object", "required": ["user"], "properties": properties,
            "additionalProperties": True,
            "description": "fields not listed here are ignored"}


def components(config: Config, fields: Mapping[str, Schema]) -> Schema:
    scored_item = {
        "type": "array", "minItems": 2, "maxItems": 2,
        "prefixItems": [
            {"type": ["string", "integer", "number"],
             "description": "the item's original id, with its original type"},
            {"type": "number", "description": "its score"},
        ],
    }
    error = {
        "type": "object", "required": ["error", "status"],
        "properties": {
            "error": {"type": "string", "description": "what is wrong"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599,
                       "description": "the HTTP status again"},
            "field": {"type": "string", "description": "the request field at fault"},
        },
        "additionalProperties": True,
    }
    not_ready = {
        "allOf": [_ref("Error")],
        "type": "object", "required": ["ready", "reason"],
        "properties": {"ready": {"const": False}, "reason": {"type": "string"}},
    }
    schemas = {
        "RecommendRequest": request_schema(config, fields),
        "EncodedRecommendRequest": {
            "type": "string", "contentMediaType": "application/json",
            "contentSchema": _ref("RecommendRequest"),
            "description": "the request object encoded once more as a JSON string (what "
                           "requests.post(url, json=json.dumps(data)) sends)",
        },
        "ScoredItem": scored_item,
        "Recommendations": {
            "type": "object", "minProperties": 1, "maxProperties": 1,
            "patternProperties": {
                r"^recommend list for user \([\s\S]*\)$": {
                    "type": "array", "items": _ref("ScoredItem"),
                    "description": "at most n_rec items, best first, none the user consumed "
                                   "in training, no duplicates"},
            },
            "additionalProperties": False,
            "description": "one key, \"recommend list for user (<user as sent>)\"",
        },
        "Error": error,
        "NotReady": not_ready,
        "Health": {
            "type": "object", "required": ["status", "family"],
            "properties": {"status": {"const": "ok"}, "family": {"type": "string"}},
        },
        "Ready": {
            "type": "object", "required": ["ready", "models"],
            "properties": {
                "ready": {"const": True},
                "models": {"type": "object", "additionalProperties": {"type": "string"},
                           "description": "model name -> active version"},
            },
        },
    }
    return {"schemas": schemas, "responses": _error_responses()}


def _error_responses() -> dict[str, Schema]:
    def answer(description: str) -> Schema:
        return {"description": description,
                "content": {"application/json": {"schema": _ref("Error")}}}

    return {
        "BadRequest": answer("the body is not a JSON object (or a JSON string encoding one), "
                             "or a field is missing or invalid; \"field\" names it"),
        "NotFound": answer("no such model, or an unknown user with LIBRECO_COLD_START=404"),
        "TooLarge": answer("the body is larger than 1 MiB"),
        "Unavailable": answer("Redis (or TF Serving) cannot be reached or answered with an "
                              "error; the service recovers by itself"),
    }


def _recommend_operation(summary: str, with_model: bool) -> Schema:
    operation: Schema = {
        "summary": summary,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"oneOf": [
                _ref("RecommendRequest"), _ref("EncodedRecommendRequest")]}}},
        },
        "responses": {
            "200": {"description": "the recommendations",
                    "content": {"application/json": {"schema": _ref("Recommendations")}}},
            "400": {"$ref": "#/components/responses/BadRequest"},
            "404": {"$ref": "#/components/responses/NotFound"},
            "413": {"$ref": "#/components/responses/TooLarge"},
            "503": {"$ref": "#/components/responses/Unavailable"},
        },
    }
    if with_model:
        operation["parameters"] = [{
            "name": "model", "in": "path", "required": True,
            "description": "the model's name in Redis (its algorithm's name unless the loader "
                           "was given another); names that are not loaded are 404",
            "schema": {"type": "string", "pattern": MODEL_NAME_PATTERN},
            "examples": {"model": {"value": "item_cf"}},
        }]
    return operation


def _get(summary: str, responses: Schema) -> Schema:
    return {"get": {"summary": summary, "responses": responses}}


def _json_answer(description: str, schema: str) -> Schema:
    return {"description": description,
            "content": {"application/json": {"schema": _ref(schema)}}}


def build_document(title: str, config: Config, handlers: Sequence[Any]) -> Schema:
    """The document of a service built from ``handlers`` (family handler instances).

    Each handler may define ``openapi_fields()`` (its request fields as JSON Schemas) and
    ``default_route`` (a path segment meaning the family's default model).
    """
    fields: dict[str, Schema] = {}
    families = []
    paths: Schema = {}
    for handler in handlers:
        families.append(handler.family)
        own = getattr(handler, "openapi_fields", None)
        fields.update(own() if own is not None else {})
        if handler.default_route:
            paths[f"/{handler.default_route}/recommend"] = {"post": _recommend_operation(
                f"recommend with the {handler.family} family's default model (LIBRECO_MODEL, "
                "or the only one loaded)", with_model=False)}
    paths["/{model}/recommend"] = {"post": _recommend_operation(
        "recommend items for one user with the named model", with_model=True)}
    paths["/healthz"] = _get("alive (no dependencies are checked)",
                             {"200": _json_answer("the process runs", "Health")})
    paths["/readyz"] = _get("ready to serve: Redis answers and a model is active", {
        "200": _json_answer("ready, with the active version of each model", "Ready"),
        "503": _json_answer("not ready, with the reason", "NotReady"),
    })
    paths["/metrics"] = _get("Prometheus metrics of every worker", {
        "200": {"description": "the Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}}},
    })
    paths["/openapi.json"] = _get("this document", {
        "200": {"description": "the OpenAPI document",
                "content": {"application/json": {"schema": {"type": "object"}}}},
    })
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": _version(),
                 "description": f"Recommendations from the {', '.join(families)} models loaded "
                                "in Redis. Every error is a JSON object with \"error\" and "
                                "\"status\"."},
        "paths": paths,
        "components": components(config, fields),
    }


def document_text(title: str, config: Config, handlers: Sequence[Any]) -> str:
    """:func:`build_document` rendered once as JSON text."""
    return json.dumps(build_document(title, config, handlers), indent=1)


def _version() -> str:
    try:
        return metadata.version("libreco")
    except metadata.PackageNotFoundError:
        return "0"
