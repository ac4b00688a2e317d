"""The contract every algorithm keeps.

All algorithms are built as ``Cls(task=..., data_info=..., **params)`` and share the methods
below, documented here once; each algorithm's own docstring only describes its parameters and
what it does differently.

Subclasses implement

* ``_fit(train_data, **options)``: learn parameters from a :class:`TransformedSet`;
* ``_scores(users)``: scores of every item for an array of known inner user indices, as a
  float32 array of shape ``(len(users), n_items)``;
* ``_arrays()`` / ``_set_arrays(arrays)``: the learned parameters as named numpy arrays, used by
  ``save`` / ``load`` and by the finite check after training.

and may override ``_predict_inner(users, items)`` when scoring single pairs is cheaper than
scoring a whole row.
"""

from __future__ import annotations

import inspect
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import numpy as np

from libreco import logger
from libreco.data.data_info import DataInfo
from libreco.data.dataset import TransformedSet
from libreco.utils.artifacts import ArtifactError, ArtifactReader, ArtifactWriter

TASKS = ("ranking", "rating")
SCORE_BLOCK = 1024  # users scored at once in recommend_inner


class NonFiniteError(ValueError):
    """Training produced NaN or infinite parameters."""


class UnknownUserError(KeyError):
    """A user that was not in the training data, with ``cold_start="raise"``."""


class NotFittedError(RuntimeError):
    """A model was used before ``fit`` (or ``load``)."""


def _is_scalar(value) -> bool:
    return isinstance(value, (str, bytes, int, float, np.generic)) or value is None


class Recommender(ABC):
    """Base class of every algorithm.

    Parameters
    ----------
    task : {"ranking", "rating"}
        ``"rating"`` predicts the label (e.g. a 1-5 rating) and is trained with squared error.
        ``"ranking"`` treats every training row as a positive interaction (the label is its
        weight where the algorithm uses one) and scores items by preference; models that need
        negatives sample them during ``fit``.
    data_info : DataInfo
        From ``DatasetPure.build_trainset`` or ``DatasetFeat.build_trainset``.
    """

    algorithm: ClassVar[str] = ""
    family: ClassVar[str] = ""
    tasks: ClassVar[tuple[str, ...]] = TASKS
    needs_features: ClassVar[bool] = False

    def __init__(self, task: str, data_info: DataInfo, **params: Any):
        if task not in self.tasks:
            raise ValueError(f"{type(self).__name__} supports task in {list(self.tasks)}, "
                             f"got {task!r}")
        if not isinstance(data_info, DataInfo):
            raise ValueError("data_info must be the DataInfo returned by build_trainset, "
                             f"got {type(data_info).__name__}")
        self.task = task
        self.data_info = data_info
        self.params: dict[str, Any] = dict(params)
        self.fitted = False

    # training ------------------------------------------------------------------------------
    def fit(self, train_data: TransformedSet, neg_sampling: bool | None = None, verbose: int = 1,
            eval_data: TransformedSet | None = None, metrics: Iterable[str] | None = None,
            k: int = 10, **options: Any) -> Recommender:
        """Learn the model's parameters.

        Parameters
        ----------
        train_data : TransformedSet
            The training split from ``build_trainset``.
        neg_sampling : bool, optional
            Sample negatives for ranking. ``None`` means the algorithm's default (on for
            ranking models that need negatives).
        verbose : int
            0 is silent; 1 logs each epoch (a progress bar when a terminal is attached); 2 also
            evaluates ``eval_data`` after each epoch where the algorithm supports it.
        eval_data : TransformedSet, optional
            A held-out split to report metrics on after training.
        metrics : list of str, optional
            Metric names for ``eval_data`` (see :mod:`libreco.evaluation`).
        k : int
            Cut-off for ranking metrics on ``eval_data``.

        Returns
        -------
        self

        Raises
        ------
        NonFiniteError
            When training produced NaN or infinite parameters.
        """
        if not isinstance(train_data, TransformedSet) or len(train_data) == 0:
            raise ValueError("train_data must be a non-empty TransformedSet from build_trainset")
        di = train_data.data_info
        if di is not self.data_info and (di.n_users, di.n_items) != (
                self.data_info.n_users, self.data_info.n_items):
            raise ValueError("train_data was built with a different DataInfo than the model")
        if neg_sampling is None:
            neg_sampling = self.task == "ranking"
        self._fit(train_data, neg_sampling=neg_sampling, verbose=verbose, eval_data=eval_data,
                  **options)
        self.check_finite()
        self.fitted = True
        if eval_data is not None and verbose:
            from libreco.evaluation import evaluate

            results = evaluate(self, eval_data, metrics=metrics, k=k)
            logger.info("%s eval: %s", self.algorithm,
                        ", ".join(f"{m}={v:.4f}" for m, v in results.items()))
            self.eval_results = results
        return self

    @abstractmethod
    def _fit(self, train_data: TransformedSet, neg_sampling: bool, verbose: int,
             eval_data: TransformedSet | None, **options: Any) -> None:
        """Learn parameters (see ``fit``)."""

    @abstractmethod
    def _scores(self, users: np.ndarray) -> np.ndarray:
        """(len(users), n_items) float32 scores for known inner user indices."""

    @abstractmethod
    def _arrays(self) -> dict[str, np.ndarray]:
        """The learned parameters by name."""

    @abstractmethod
    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore parameters produced by ``_arrays``."""

    def _predict_inner(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of known (user, item) inner pairs; the default scores whole rows in blocks."""
        out = np.empty(len(users), dtype=np.float32)
        uniq, inverse = np.unique(users, return_inverse=True)
        for start in range(0, len(uniq), SCORE_BLOCK):
            block = uniq[start:start + SCORE_BLOCK]
            scores = self._scores(block)
            rows = (inverse >= start) & (inverse < start + len(block))
            out[rows] = scores[inverse[rows] - start, items[rows]]
        return out

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteError` when a learned parameter is NaN or infinite."""
        for name, arr in self._arrays().items():
            a = np.asarray(arr)
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                raise NonFiniteError(
                    f"{type(self).__name__}: parameter {name!r} has NaN or infinite values after "
                    "training; try a lower learning rate, a larger reg, or fewer epochs"
                )

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() or load()")

    # scoring -------------------------------------------------------------------------------
    @property
    def default_prediction(self) -> float:
        """What ``predict`` answers for an unknown user or item."""
        return self.data_info.global_mean if self.task == "rating" else 0.0

    def predict(self, user, item, cold_start: str = "average"):
        """Predict the score of (user, item) pairs.

        Parameters
        ----------
        user, item : original id, or two sequences of equal length
        cold_start : {"average", "raise"}
            For a pair with an unknown user or item: answer ``default_prediction`` (the mean
            training label for rating, 0 for ranking), or raise :class:`UnknownUserError`.

        Returns
        -------
        float for single ids, np.ndarray of float32 for sequences.
        """
        self._require_fitted()
        single = _is_scalar(user) and _is_scalar(item)
        users = [user] if _is_scalar(user) else list(user)
        items = [item] if _is_scalar(item) else list(item)
        if len(users) != len(items):
            raise ValueError(f"user and item must have the same length, got {len(users)} and "
                             f"{len(items)}")
        u = self.data_info.user_map.lookup_many(users)
        i = self.data_info.item_map.lookup_many(items)
        known = (u >= 0) & (i >= 0)
        if cold_start == "raise" and not known.all():
            raise UnknownUserError(f"{int((~known).sum())} pairs have an unknown user or item")
        if cold_start not in ("average", "raise"):
            raise ValueError(f"cold_start must be 'average' or 'raise', got {cold_start!r}")
        out = np.full(len(users), self.default_prediction, dtype=np.float32)
        if known.any():
            out[known] = self._predict_inner(u[known], i[known])
        return float(out[0]) if single else out

    def recommend_inner(self, users: np.ndarray, n_rec: int,
                        filter_consumed: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n_rec`` items for known inner users, in blocks of users.

        Returns
        -------
        items : np.ndarray of int32, shape (len(users), n_rec)
            Best first; ``-1`` pads rows for which fewer items are left.
        scores : np.ndarray of float32, shape (len(users), n_rec)
            ``-inf`` where ``items`` is ``-1``.
        """
        self._require_fitted()
        users = np.asarray(users, dtype=np.int64)
        n_items = self.data_info.n_items
        k = min(n_rec, n_items)
        items_out = np.full((len(users), n_rec), -1, dtype=np.int32)
        scores_out = np.full((len(users), n_rec), -np.inf, dtype=np.float32)
        if k <= 0 or len(users) == 0:
            return items_out, scores_out
        consumed = self.data_info.user_consumed if filter_consumed else None
        for start in range(0, len(users), SCORE_BLOCK):
            block = users[start:start + SCORE_BLOCK]
            scores = np.array(self._scores(block), dtype=np.float32, copy=True)
            if scores.shape != (len(block), n_items):
                raise RuntimeError(f"{type(self).__name__}._scores returned shape "
                                   f"{scores.shape}, expected {(len(block), n_items)}")
            scores[~np.isfinite(scores)] = np.finfo(np.float32).min / 2
            if consumed is not None:
                sub = consumed[block]
                rows = np.repeat(np.arange(len(block)), np.diff(sub.indptr))
                scores[rows, sub.indices] = -np.inf
            top = top_k_rows(scores, k)
            top_scores = np.take_along_axis(scores, top, axis=1)
            valid = np.isfinite(top_scores)
            rows = slice(start, start + len(block))
            items_out[rows, :k] = np.where(valid, top, -1)
            scores_out[rows, :k] = np.where(valid, top_scores, -np.inf)
        return items_out, scores_out

    def recommend_user(self, user, n_rec: int, filter_consumed: bool = True,
                       cold_start: str = "popular") -> dict:
        """Recommend items for one user or a batch of users.

        Parameters
        ----------
        user : original id or sequence of original ids
        n_rec : int
            Number of items per user (fewer when the catalogue has fewer left).
        filter_consumed : bool
            Leave out the items each user consumed in training.
        cold_start : {"popular", "raise"}
            For an unknown user: the most popular items (scores are their share of the most
            popular item's interactions), or raise :class:`UnknownUserError`.

        Returns
        -------
        dict
            ``{user: [(item, score), ...]}`` keyed by the original ids as given, best first.
        """
        self._require_fitted()
        if not isinstance(n_rec, (int, np.integer)) or isinstance(n_rec, bool) or n_rec < 1:
            raise ValueError(f"n_rec must be a positive integer, got {n_rec!r}")
        if cold_start not in ("popular", "raise"):
            raise ValueError(f"cold_start must be 'popular' or 'raise', got {cold_start!r}")
        users = [user] if _is_scalar(user) else list(user)
        inner = self.data_info.user_map.lookup_many(users)
        unknown = [u for u, idx in zip(users, inner) if idx < 0]
        if unknown and cold_start == "raise":
            raise UnknownUserError(f"unknown users: {unknown[:5]}")
        known = inner[inner >= 0]
        items, scores = self.recommend_inner(known, int(n_rec), filter_consumed)
        id2item = self.data_info.id2item
        result: dict = {}
        row = 0
        for u, idx in zip(users, inner):
            if idx < 0:
                result[u] = self.popular_recommendations(int(n_rec))
                continue
            valid = items[row] >= 0
            result[u] = [(id2item[i], float(s))
                         for i, s in zip(items[row][valid], scores[row][valid])]
            row += 1
        return result

    def popular_recommendations(self, n_rec: int) -> list[tuple[Any, float]]:
        """The cold-start answer: most popular items with normalised counts as scores."""
        di = self.data_info
        top = di.popular_items(n_rec)
        counts = di.item_counts[top].astype(np.float64)
        denom = counts[0] if len(counts) and counts[0] > 0 else 1.0
        return [(di.id2item[i], float(c / denom)) for i, c in zip(top, counts)]

    # persistence ---------------------------------------------------------------------------
    def hyperparameters(self) -> dict[str, Any]:
        return {"task": self.task, **self.params}

    def save(self, path: str | os.PathLike, metrics: dict | None = None,
             manifest_extra: dict | None = None,
             extra_files: Callable[[ArtifactWriter], None] | None = None) -> None:
        """Write the model directory: manifest, data info and parameters (JSON and .npy).

        ``metrics`` (default: the results of the last evaluation during ``fit``) are recorded
        in the manifest. Serving exporters such as :func:`libreco.utils.save_knn` add top-level
        manifest entries with ``manifest_extra`` and more files with ``extra_files``, a callable
        that receives the open :class:`ArtifactWriter`.
        """
        self._require_fitted()
        if metrics is None:
            metrics = getattr(self, "eval_results", None)
        with ArtifactWriter(path, self.algorithm, self.family, self.hyperparameters(),
                            self.data_info.summary(), metrics, extra=manifest_extra) as w:
            self.data_info.save(w)
            for name, arr in self._arrays().items():
                w.write_array(f"params/{name}.npy", arr)
            self._save_extra(w)
            if extra_files is not None:
                extra_files(w)

    def _save_extra(self, writer: ArtifactWriter) -> None:
        """Hook for files beyond numeric arrays (e.g. a SavedModel)."""

    def _load_extra(self, reader: ArtifactReader) -> None:
        """Counterpart of ``_save_extra``."""

    @classmethod
    def load(cls, path: str | os.PathLike) -> Recommender:
        """Read a model directory written by ``save``.

        ``Recommender.load`` picks the class from the manifest; ``SomeModel.load`` also checks
        that the directory holds that algorithm.

        Raises
        ------
        ArtifactError
            When a file is missing, changed or truncated, or the algorithm does not match.
        """
        reader = ArtifactReader(path)
        from libreco.algorithms import get_algorithm

        model_cls = get_algorithm(reader.algorithm)
        if cls is not Recommender and not issubclass(model_cls, cls):
            raise ArtifactError(f"{path}: holds a {reader.algorithm} model, not {cls.__name__}")
        hp = dict(reader.manifest.get("hyperparameters") or {})
        task = hp.pop("task")
        data_info = DataInfo.load(reader)
        model = model_cls(task=task, data_info=data_info, **hp)
        arrays = {name[len("params/"):-len(".npy")]: reader.read_array(name)
                  for name in reader.files if name.startswith("params/") and name.endswith(".npy")}
        model._set_arrays(arrays)
        model._load_extra(reader)
        model.fitted = True
        model.check_finite()
        return model

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}(task={self.task!r}{', ' if shown else ''}{shown})"


TOP_K_GROUP = 16


def top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest values of each row, best first, ties by lower index.

    Parameters
    ----------
    scores : np.ndarray of shape (n, m)
    k : int, 1 <= k <= m

    Returns
    -------
    np.ndarray of int64, shape (n, k)

    Notes
    -----
    Equal to ``np.argsort(-scores, axis=1, kind="stable")[:, :k]``, which is what it computes for
    narrow matrices. For wide ones a full sort or an ``argpartition`` of every row costs far more
    than the answer needs, so the columns are cut into ``m // 16`` strided groups of 16; the
    ``k``-th largest group maximum ``t`` is a lower bound of each row's ``k``-th largest value
    (``k`` groups hold a value >= t), and only the values of groups whose maximum reaches ``t``
    (plus the few columns past the last group) are sorted. Rows where too many groups reach
    ``t`` (many ties, or fewer than ``k`` finite scores) are sorted in full.
    """
    n, m = scores.shape
    g = m // TOP_K_GROUP
    if g < 4 * k:
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]
    # t: the k-th largest group maximum of each row
    if m == g * TOP_K_GROUP and scores.flags.c_contiguous:
        gmax = scores.reshape(n, TOP_K_GROUP, g).max(axis=1)
    else:
        gmax = scores[:, :g].copy()
        for s in range(1, TOP_K_GROUP):
            np.maximum(gmax, scores[:, s * g:(s + 1) * g], out=gmax)
    t = np.partition(gmax, g - k, axis=1)[:, g - k]
    above = gmax >= t[:, None]
    heavy = above.sum(axis=1) > 4 * k
    top = np.empty((n, k), dtype=np.int64)
    if heavy.any():
        h = np.flatnonzero(heavy)
        top[h] = np.argsort(-scores[h], axis=1, kind="stable")[:, :k]
        above[h] = False
    # candidates: every column of the groups that reach t, and the columns past the last group
    rows, groups = np.nonzero(above)
    cols = (groups[:, None] + g * np.arange(TOP_K_GROUP)).ravel()
    rows = np.repeat(rows, TOP_K_GROUP)
    tail = np.arange(g * TOP_K_GROUP, m)
    if len(tail):
        light = np.flatnonzero(~heavy)
        rows = np.concatenate([rows, np.repeat(light, len(tail))])
        cols = np.concatenate([cols, np.tile(tail, len(light))])
    vals = scores[rows, cols]
    keep = vals >= t[rows]
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    # by row, then score descending, then column; the first k of each row win
    order = np.lexsort((cols, -vals, rows))
    rows, cols = rows[order], cols[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
    first = rank < k
    top[rows[first], rank[first]] = cols[first]
    return top


def own_params(cls, local_vars: dict) -> dict[str, Any]:
    """The constructor arguments of ``cls`` taken from ``locals()`` (for ``self.params``)."""
    names = [p for p in inspect.signature(cls.__init__).parameters
             if p not in ("self", "task", "data_info")]
    return {n: local_vars[n] for n in names if n in local_vars and n != "kwargs"}
