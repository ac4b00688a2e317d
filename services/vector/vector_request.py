"""Ask the vector service for recommendations and print its JSON answer.

::

    python services/vector/vector_request.py --user 1 --n_rec 10 --use_faiss false

``--algo`` names the model (default ``vector``: the service's default model; or ``als``,
``svd``, ...). Exits with 0 on a 2xx answer, 1 on an error answer, 2 when the service cannot
be reached.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.core.client import request_and_print  # noqa: E402

TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")


def boolean(text: str) -> bool:
    value = text.strip().lower()
    if value not in TRUE + FALSE:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value in TRUE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Request recommendations from the vector service.")
    parser.add_argument("--user", required=True, help="original user id")
    parser.add_argument("--n_rec", type=int, default=10, help="number of items")
    parser.add_argument("--use_faiss", type=boolean, default=True,
                        help="true: search the faiss index; false: exact scores (default true)")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--algo", default="vector",
                        help="model name: vector (the default model), als, svd, ...")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = f"http://{args.host}:{args.port}/{args.algo}/recommend"
    payload = {"user": args.user, "n_rec": args.n_rec, "use_faiss": args.use_faiss}
    return request_and_print(url, payload, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
