"""Parsing and checking of the recommendation request body.

The body is a JSON object, or a JSON string that itself encodes the object (older clients post
``json=json.dumps(data)``). ``user`` is required; ``n_rec`` is optional; fields a family does
not know are ignored. Every problem is a 400 answer naming the field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.core.errors import BadRequest

UserId = str | int | float
MAX_USER_LENGTH = 512
_INT_TEXT = re.compile(r"[+-]?[0-9]{1,18}")


@dataclass(frozen=True)
class RecommendRequest:
    """The common fields of a request; ``body`` keeps the rest for the family."""

    user: UserId
    n_rec: int
    body: Mapping[str, Any]

    @property
    def answer_key(self) -> str:
        """``"recommend list for user (<user as given>)"``."""
        return f"recommend list for user ({self.user})"


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request object from raw body bytes (a JSON object or a JSON-encoded string of one)."""
    if not raw or not raw.strip():
        raise BadRequest("the request body is empty; send a JSON object like "
                         '{"user": "1", "n_rec": 10}')
    try:
        body = json.loads(raw)
        if isinstance(body, str):
            body = json.loads(body)
    except (ValueError, RecursionError):
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object like "
                         f'{{"user": "1", "n_rec": 10}}, got a JSON {_json_type(body)}')
    return body


def parse_request(raw: bytes, default_n_rec: int, max_n_rec: int) -> RecommendRequest:
    """Parse the body and check ``user`` and ``n_rec``."""
    body = parse_body(raw)
    if "user" not in body:
        raise BadRequest("the field 'user' is required", field="user")
    user = body["user"]
    if isinstance(user, bool) or not isinstance(user, (str, int, float)):
        raise BadRequest(f"'user' must be a string or a number, got a JSON {_json_type(user)}",
                         field="user")
    if isinstance(user, float) and not math.isfinite(user):
        raise BadRequest("'user' must be a finite number", field="user")
    if isinstance(user, str) and len(user) > MAX_USER_LENGTH:
        raise BadRequest(f"'user' is longer than {MAX_USER_LENGTH} characters", field="user")
    n_rec = int_field(body, "n_rec", default_n_rec, 1, max_n_rec)
    return RecommendRequest(user=user, n_rec=n_rec, body=body)


def int_field(body: Mapping[str, Any], name: str, default: int, lo: int,
              hi: int | None = None) -> int:
    """An optional integer field within ``[lo, hi]``.

    Accepts a JSON integer, a number with no fractional part (``10.0``, an integer in JSON
    Schema's terms) or a string of ASCII digits (``"10"``); booleans, fractions and other
    types are 400 answers, as are values out of range.
    """
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        value = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"'{name}' must be an integer, got {_show(value)}", field=name)
    if value < lo or (hi is not None and value > hi):
        bound = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
        raise BadRequest(f"'{name}' must be an integer {bound}, got {value}", field=name)
    return value


def bool_field(body: Mapping[str, Any], name: str, default: bool) -> bool:
    """An optional boolean field; also accepts the strings ``"true"`` and ``"false"``."""
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise BadRequest(f"'{name}' must be true or false, got {_show(value)}", field=name)
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _show(value: Any) -> str:
    """A short rendering of a client's value for an error message."""
    if isinstance(value, (dict, list)):
        return f"a JSON {_json_type(value)}"
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else \
        str(value)
    return text if len(text) <= 40 else text[:37] + "..."
