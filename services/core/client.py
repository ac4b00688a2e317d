"""What the request scripts share: POST a JSON body to a service and print its answer."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any


def post(url: str, payload: dict[str, Any], timeout: float) -> tuple[int, str]:
    """POST ``payload`` as JSON; returns the status and the body's text.

    Uses ``requests`` when it is installed, else the standard library.
    """
    try:
        import requests
    except ImportError:
        requests = None  # type: ignore[assignment]
    if requests is not None:
        resp = requests.post(url, json=payload, timeout=timeout)
        return resp.status_code, resp.text
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def request_and_print(url: str, payload: dict[str, Any], timeout: float) -> int:
    """Send the request and print the answer (indented when it is JSON).

    Returns the exit status of the request scripts: 0 on a 2xx answer, 1 on an error answer,
    2 when the service cannot be reached.
    """
    try:
        status, text = post(url, payload, timeout)
    except OSError as e:  # requests' errors derive from OSError too
        print(f"cannot reach {url}: {e}", file=sys.stderr)
        return 2
    try:
        print(json.dumps(json.loads(text), indent=2, ensure_ascii=False))
    except ValueError:
        print(text)
    return 0 if 200 <= status < 300 else 1
