"""Progress reporting: a bar on a terminal, plain log lines in Jobs and pipes."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from libreco import logger

T = TypeVar("T")


def on_terminal() -> bool:
    """True when stderr is attached to a terminal (where a progress bar is readable)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def progress(iterable: Iterable[T], verbose: int = 1, desc: str = "",
             total: int | None = None) -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm bar when ``verbose`` and a terminal is attached.

    Otherwise the iterable is returned unchanged; pair it with :func:`log_epoch` for log lines.
    """
    if verbose and on_terminal():
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, leave=False)
    return iterable


def log_epoch(name: str, epoch: int, n_epochs: int, started: float, verbose: int = 1,
              **figures: float) -> None:
    """One log line per epoch: ``svd epoch 3/10 in 1.20s loss=0.8123``."""
    if not verbose:
        return
    shown = " ".join(f"{k}={v:.4f}" for k, v in figures.items())
    logger.info("%s epoch %d/%d in %.2fs %s", name, epoch, n_epochs,
                time.perf_counter() - started, shown)


def timed(iterable: Iterable[T]) -> Iterator[tuple[T, float]]:
    """Yield each element with the perf_counter time at which its step started."""
    for item in iterable:
        yield item, time.perf_counter()
