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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from services.core.config import Config
from services.core.versions import ActiveModels, ModelVersion, Store, member_mask

HANDLERS: dict[str, str] = {
    "knn": "services.knn.handler:KnnHandler",
    "vector": "services.vector.handler:VectorHandler",
    "tf": "services.tf.handler:TFHandler",
}
"""Family -> ``module:class`` of its handler, imported when a service of the family starts."""


@dataclass(frozen=True)
class Fallback:
    """The scores of every item a handler did not list, as a list best first.

    Attributes
    ----------
    items : np.ndarray of int, shape (n,)
        Inner items in the order they rank (e.g. by popularity).
    scores : np.ndarray of float, shape (n,), or float
        Their scores, in the same (non-increasing) order, or one score shared by all.
    offset : float
        Added to every score (a per-user term over a per-version list).
    """

    items: np.ndarray
    scores: np.ndarray | float
    offset: float = 0.0


@dataclass
class Candidates:
    """Scored candidate items of one user.

    Attributes
    ----------
    items : np.ndarray of int, shape (n,)
        Inner item indices (>= 0), each at most once.
    scores : np.ndarray of float, shape (n,)
        Non-finite scores are dropped.
    exclude : np.ndarray of int
        Items never to return (the user's consumed items).
    fallback : Fallback or None
        How the items not in ``items`` score (neighbourhood sums: 0 for all, most popular
        first). ``None`` when they rank below every listed item, i.e. ``items`` holds at least
        the best ``n_rec + len(exclude)`` items of the catalogue.
    """

    items: np.ndarray
    scores: np.ndarray
    exclude: np.ndarray
    fallback: Fallback | None = None


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

    def check_ready(self, models: ActiveModels, names: Sequence[str]) -> None:
        """Raise a ``ServiceError`` when what the family scores with is not ready for the
        active models ``names`` (``/readyz`` answers 503 with its message). The default
        checks nothing beyond Redis."""

    @abstractmethod
    def candidates(self, version: ModelVersion, user: int, params: Any,
                   n_rec: int) -> Candidates:
        """Score items for the inner user ``user`` of ``version``.

        Reads only ``version``'s keys, with a constant number of Redis round trips.
        """

    def recommend(self, version: ModelVersion, user: int, params: Any,
                  n_rec: int) -> tuple[np.ndarray, np.ndarray]:
        """The answer for a known user: the best ``n_rec`` items and their scores, best first.

        The default ranks :meth:`candidates` with :func:`rank`; a family may answer more
        directly, with the same result.
        """
        return rank(self.candidates(version, user, params, n_rec), n_rec)


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


def top_order(items: np.ndarray, scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the best ``n`` entries, best first, equal scores by smaller item."""
    if len(scores) > n:
        # only entries at or above the n-th largest score can be among the best n
        kth = np.partition(scores, len(scores) - n)[len(scores) - n]
        pos = np.flatnonzero(scores >= kth)
    else:
        pos = np.arange(len(scores))
    return pos[np.lexsort((items[pos], -scores[pos]))][:n]


def rank(c: Candidates, n_rec: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``n_rec`` items of a candidate set, best first, never an excluded item.

    Listed items with equal scores are ordered by inner index; fallback items keep their
    list's order and come after listed items of the same score. Only a prefix of the
    fallback list is looked at (``n_rec`` plus the number of listed and excluded items).

    Returns
    -------
    items : np.ndarray of int, shape (<= n_rec,)
    scores : np.ndarray of float64, same shape
    """
    items, scores, exclude = c.items, np.asarray(c.scores, dtype=np.float64), c.exclude
    drop = member_mask(items, exclude)
    drop |= ~np.isfinite(scores)
    if drop.any():
        keep = ~drop
        items, scores = items[keep], scores[keep]
    order = top_order(items, scores, n_rec)
    fb = c.fallback
    if fb is None:
        return items[order], scores[order]
    if isinstance(fb.scores, np.ndarray):
        best_fallback = float(fb.scores[0]) + fb.offset if len(fb.scores) else -np.inf
    else:
        best_fallback = float(fb.scores) + fb.offset
    if len(order) == n_rec and scores[order[-1]] >= best_fallback:
        return items[order], scores[order]  # no unlisted item can enter the answer
    # the unlisted items that can still make the top n_rec, in their list's order
    listed_and_excluded = np.concatenate([exclude, items])
    span = n_rec + len(listed_and_excluded)
    head = np.asarray(fb.items[:span])
    if isinstance(fb.scores, np.ndarray):
        head_scores = np.asarray(fb.scores[:span], dtype=np.float64) + fb.offset
    else:
        head_scores = np.full(len(head), float(fb.scores) + fb.offset)
    fresh = ~member_mask(head, listed_and_excluded)
    head, head_scores = head[fresh][:n_rec], head_scores[fresh][:n_rec]
    merged_items = np.concatenate([items[order], head])
    merged_scores = np.concatenate([scores[order], head_scores])
    # stable on position: listed before fallback at equal scores, each in its own order
    best = np.lexsort((np.arange(len(merged_scores)), -merged_scores))[:n_rec]
    return merged_items[best], merged_scores[best]
