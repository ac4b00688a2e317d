"""Ask the tf service for recommendations and print its JSON answer.

::

    python services/tf/tf_request.py --user 1 --n_rec 10 --algo din
    python services/tf/tf_request.py --user new-user --algo din --seq 12,7,33 \\
        --user_feats '{"sex": "F", "age": 31}'

``--algo`` names the model (the URL's first path segment). ``--seq`` gives the user's recent
items, oldest first, comma-separated; ``--user_feats`` a JSON object of user features. Exits
with 0 on a 2xx answer, 1 on an error answer, 2 when the service cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.core.client import request_and_print  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Request recommendations from the tf service.")
    parser.add_argument("--user", required=True, help="original user id")
    parser.add_argument("--n_rec", type=int, default=10, help="number of items")
    parser.add_argument("--algo", default="deepfm",
                        help="model name: deepfm, wide_deep, fm, din, youtube_ranking, autoint")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--seq", default=None,
                        help="recent items, oldest first, comma-separated (sequence models)")
    parser.add_argument("--user_feats", default=None,
                        help='user features as a JSON object, e.g. \'{"sex": "F"}\'')
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds")
    return parser.parse_args(argv)


def _item(text: str) -> Any:
    """An item id from the command line: a number when it reads as one, else the string."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return text


def payload_of(args: argparse.Namespace) -> dict[str, Any]:
    payload: dict[str, Any] = {"user": args.user, "n_rec": args.n_rec, "algo": args.algo}
    if args.seq is not None:
        payload["seq"] = [_item(s) for s in args.seq.split(",") if s.strip()]
    if args.user_feats is not None:
        payload["user_feats"] = json.loads(args.user_feats)
    return payload


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = f"http://{args.host}:{args.port}/{args.algo}/recommend"
    try:
        payload = payload_of(args)
    except ValueError as e:
        print(f"--user_feats is not a JSON object: {e}", file=sys.stderr)
        return 2
    return request_and_print(url, payload, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
