"""Load a model directory into Redis as a new version and activate it.

::

    python -m jobs.load --model-dir models/item_cf [--name item_cf]

Reads the directory's family from ``manifest.json`` and runs that family's loaders
(:data:`services.loaders.FAMILY_LOADERS`); Redis comes from ``REDIS_URL`` and friends
(see ``docs/serving.md``). Exit status: 0 loaded and active, 1 the load failed (the active
version, if any, keeps serving), 2 bad arguments or configuration.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.load", description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True, help="model directory written by save_*")
    parser.add_argument("--name", default=None,
                        help="model name in Redis and URLs (default: the algorithm's name)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    log = logging.getLogger("libreco.jobs")

    from libreco.utils.artifacts import ArtifactError, ArtifactReader
    from services.core.config import ConfigError, LoadSettings, RedisSettings
    from services.core.store import LoadError, redis_client
    from services.loaders import family_loader

    try:
        settings = RedisSettings.from_env()
        LoadSettings.from_env()
    except ConfigError as e:
        log.error("%s", e)
        return 2
    started = time.perf_counter()
    try:
        family = ArtifactReader(args.model_dir, verify=False).family
        loader = family_loader(family)
        client = redis_client(settings, retries=3)
        version = loader(args.model_dir, name=args.name, client=client)
    except (ArtifactError, ValueError) as e:
        log.error("cannot load %s: %s", args.model_dir, e)
        return 2 if isinstance(e, ArtifactError) else 1
    except LoadError as e:
        log.error("load of %s failed, the active version keeps serving: %s", args.model_dir, e)
        return 1
    except Exception as e:  # Redis errors and the unexpected: say so, exit non-zero
        log.error("load of %s failed, the active version keeps serving: %s: %s",
                  args.model_dir, type(e).__name__, e)
        return 1
    log.info("loaded %s (%s) as version %s in %.2fs", args.model_dir, family, version,
             time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
