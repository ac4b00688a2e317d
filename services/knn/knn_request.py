"""Ask the knn service for recommendations and print its JSON answer.

::

    python services/knn/knn_request.py --user 1 --k_neighbors 10 --n_rec 10 --algo item_cf

Exits with 0 on a 2xx answer, 1 on an error answer, 2 when the service cannot be reached.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.core.client import request_and_print  # noqa: E402


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = f"http://{args.host}:{args.port}/{args.algo}/recommend"
    payload = {"user": args.user, "n_rec": args.n_rec, "k_neighbors": args.k_neighbors}
    return request_and_print(url, payload, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
