"""Ask the knn service for recommendations and print its JSON answer.

::

    python services/knn/knn_request.py --user 1 --k_neighbors 10 --n_rec 10 --algo item_cf

Exits with 0 on a 2xx answer, 1 on an error answer, 2 when the service cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Request recommendations from the knn service.")
    parser.add_argument("--user", required=True, help="original user id")
    parser.add_argument("--k_neighbors", type=int, default=10, help="neighbours to use")
    parser.add_argument("--n_rec", type=int, default=10, help="number of items")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--algo", default="item_cf", help="model name: item_cf, user_cf, ...")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds")
    return parser.parse_args(argv)


def post(url: str, payload: dict[str, Any], timeout: float) -> tuple[int, str]:
    """POST JSON with ``requests`` when it is installed, else with the standard library."""
    try:
        import requests
    except ImportError:
        requests = None  # type: ignore[assignment]
    if requests is not None:
        resp = requests.post(url, json=payload, timeout=timeout)
        return resp.status_code, resp.text
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = f"http://{args.host}:{args.port}/{args.algo}/recommend"
    payload = {"user": args.user, "n_rec": args.n_rec, "k_neighbors": args.k_neighbors}
    try:
        status, text = post(url, payload, args.timeout)
    except OSError as e:  # requests' errors derive from OSError too
        print(f"cannot reach {url}: {e}", file=sys.stderr)
        return 2
    try:
        print(json.dumps(json.loads(text), indent=2, ensure_ascii=False))
    except ValueError:
        print(text)
    return 0 if 200 <= status < 300 else 1


if __name__ == "__main__":
    sys.exit(main())
