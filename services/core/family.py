"""The part of a service that differs between families: how a known user's items are scored.

The core does everything around it (parsing, the active version, cold start, ranking,
filtering consumed items, the answer, errors, metrics). A family supplies a
:class:`FamilyHandler` whose :meth:`~FamilyHandler.candidates` turns one user into scored
candidate items, reading that request's :class:`ModelVersion` only.

Adding a family: subclass :class:`FamilyHandler` in ``services/<family>/handler.py`` as a class
named in :data:`HANDLERS`, and build the app with ``create_app("<family>")``.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from services.core.config import Config
from services.core.versions import ModelVersion, Store

HANDLERS: dict[str, str] = {
    "knn": "services.knn.handler:KnnHandler",
    "vector": "services.vector.handler:VectorHandler",
    "tf": "services.tf.handler:TFHandler",
}
"""Family -> ``module:class`` of its handler, imported when a service of the family starts."""


@dataclass
class Candidates:
    """Scored candidate items of one user.

    Attributes
    ----------
    items : np.ndarray of int, shape (n,)
        Inner item indices; ``-1`` entries are ignored, duplicates keep their best score.
    scores : np.ndarray of float, shape (n,)
    exclude : np.ndarray of int
        Items never to return (the user's consumed items).
    implicit_score : float or None
        The score of every item not in ``items`` (0 for neighbourhood sums, the user's mean
        label for rating predictions): such items rank between the listed items scored above
        it and those scored at or below it, most popular first. ``None`` when unlisted items
        rank below every listed one (``items`` then holds at least the top ``n_rec +
        len(exclude)`` items of the catalogue, or all of it).
    """

    items: np.ndarray
    scores: np.ndarray
    exclude: np.ndarray
    implicit_score: float | None = None


class FamilyHandler(ABC):
    """Scoring of one family, plugged into the core by :func:`services.core.create_app`.

    Parameters
    ----------
    store : Store
        Redis access of the app (register scripts with ``store.script``).
    config : Config
    """

    family: ClassVar[str] = ""
    default_route: ClassVar[str | None] = None
    """A path segment that means "the default model" (``vector`` for ``/vector/recommend``)."""
    scores_unknown_users: ClassVar[bool] = False
    """Whether ``candidates`` accepts ``user=-1`` (e.g. feature-based rankers); when False the
    core answers unknown users with the cold-start answer."""

    def __init__(self, store: Store, config: Config):
        self.store = store
        self.config = config

    def load_version(self, version: ModelVersion) -> Any:
        """Read the family's immutable per-version data (called once per version per worker).

        Whatever it returns is ``version.extra``. The default reads nothing.
        """
        return None

    def parse_params(self, body: Mapping[str, Any], version: ModelVersion) -> Any:
        """Check the family's own request fields; raise ``BadRequest`` naming a bad field."""
        return None

    @abstractmethod
    def candidates(self, version: ModelVersion, user: int, params: Any,
                   n_rec: int) -> Candidates:
        """Score items for the inner user ``user`` of ``version``.

        Reads only ``version``'s keys, with a constant number of Redis round trips.
        """


def load_handler(family: str) -> type[FamilyHandler]:
    """The handler class registered for ``family`` in :data:`HANDLERS`."""
    target = HANDLERS.get(family)
    if target is None:
        raise ValueError(f"unknown service family {family!r}; known: {sorted(HANDLERS)}")
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ValueError(f"the {family} family is not available: {e}") from e
    cls = getattr(module, cls_name)
    if not (isinstance(cls, type) and issubclass(cls, FamilyHandler)):
        raise TypeError(f"{target} is not a FamilyHandler")
    return cls


def rank(c: Candidates, version: ModelVersion, n_rec: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``n_rec`` items of a candidate set, best first, never an excluded item.

    Equal scores are ordered by inner index. With an ``implicit_score``, popular unlisted
    items fill the places between the candidates scored above it and the rest.

    Returns
    -------
    items : np.ndarray of int64, shape (<= n_rec,)
    scores : np.ndarray of float64, same shape
    """
    items = np.asarray(c.items, dtype=np.int64)
    scores = np.asarray(c.scores, dtype=np.float64)
    exclude = np.asarray(c.exclude, dtype=np.int64)
    keep = (items >= 0) & np.isfinite(scores)
    if len(exclude):
        keep &= ~np.isin(items, exclude)
    items, scores = items[keep], scores[keep]
    order = np.lexsort((items, -scores))
    items, scores = items[order], scores[order]
    if len(items) > 1:
        # duplicates keep their first (best) place
        _, first = np.unique(items, return_index=True)
        if len(first) < len(items):
            first.sort()
            items, scores = items[first], scores[first]
    if c.implicit_score is None:
        return items[:n_rec], scores[:n_rec]
    n_above = int(np.count_nonzero(scores > c.implicit_score))
    if n_above >= n_rec:
        return items[:n_rec], scores[:n_rec]
    fill = version.backfill(n_rec - n_above, np.concatenate([exclude, items]))
    n_tail = n_rec - n_above - len(fill)
    out_items = np.concatenate([items[:n_above], fill, items[n_above:n_above + n_tail]])
    out_scores = np.concatenate([scores[:n_above], np.full(len(fill), c.implicit_score),
                                 scores[n_above:n_above + n_tail]])
    return out_items, out_scores
