"""Training Job: fit one algorithm, evaluate it, write its serving model directory.

``python -m jobs.train --algorithm item_cf --output /models/item_cf`` trains on generated data;
``--data FILE.csv`` (with ``--columns`` and feature options, see ``libreco train --help``) trains
on a table. TF models also export a SavedModel for TF Serving with ``--tf-serving-dir``.
With ``--trigger-load`` (scheduled retraining) the finished run starts the Redis loading Job
through the Kubernetes API, so a new model reaches the services without ``helm upgrade``.
"""

from __future__ import annotations

import json
import sys

from libreco import logger
from libreco.cli import build_parser, configure_logging, train


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    trigger = "--trigger-load" in argv
    if trigger:
        argv.remove("--trigger-load")
    args = build_parser().parse_args(["train", *argv])
    configure_logging(args.log_level)
    if not args.output:
        logger.error("--output is required for the training Job")
        return 2
    try:
        summary = train(args)
    except (ValueError, FileNotFoundError) as e:
        logger.error("training failed: %s", e)
        return 2
    logger.info("training summary: %s", json.dumps(summary, default=str))
    if trigger:
        from jobs.trigger import main as trigger_main

        return trigger_main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
