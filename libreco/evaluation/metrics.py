"""Metric functions: ranking metrics at ``k`` and pointwise metrics on scores or predictions.

Ranking metrics come in two forms that share one implementation:

* batch kernels ``*_from_hits(hits, n_relevant, k)`` over a boolean ``hits`` matrix of shape
  ``(n_users, k)`` (``hits[u, j]``: the ``j``-th recommendation of user ``u`` is relevant),
  returning one value per user; :func:`hit_matrix` builds ``hits`` from ranked item indices and
  relevant sets in CSR form without a Python loop. :func:`libreco.evaluation.evaluate` uses these.
* single-list functions ``precision_at_k(ranked, relevant, k)`` and friends, for one ranked list
  of any ids and the set of relevant ids.

Definitions, with ``rel`` the relevant set, ``hit_j`` 1 when the item at rank ``j`` (from 1) is
relevant, and ``m = min(|rel|, k)``:

* ``precision@k = sum_j hit_j / k`` (a list shorter than ``k`` counts its missing places as
  misses);
* ``recall@k = sum_j hit_j / |rel|``;
* ``ndcg@k = DCG / IDCG`` with ``DCG = sum_j hit_j / log2(j + 1)`` and ``IDCG = sum_{j<=m}
  1 / log2(j + 1)``: the ideal list puts ``m`` relevant items first;
* ``map@k``: the mean over users of ``AP@k = sum_j hit_j * precision@j / m``;
* ``hit_rate@k``: 1 when at least one of the ``k`` items is relevant.

Pointwise metrics follow the usual definitions: ``roc_auc`` is the probability that a random
positive scores above a random negative (ties count one half), ``pr_auc`` is the average
precision ``sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds, ``log_loss`` is the
mean binary cross-entropy of probabilities clipped to ``[eps, 1 - eps]``, and ``rmse``, ``mae``
and ``r2`` compare predictions with labels.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
from scipy.stats import rankdata

RANKING_METRICS = ("precision", "recall", "ndcg", "map", "hit_rate", "coverage")
POINTWISE_METRICS = ("roc_auc", "pr_auc", "log_loss", "rmse", "mae", "r2")
ALL_METRICS = RANKING_METRICS + POINTWISE_METRICS


# -- batch kernels ------------------------------------------------------------------------------
def hit_matrix(ranked: np.ndarray, rel_indptr: np.ndarray, rel_items: np.ndarray) -> np.ndarray:
    """Which recommended items are relevant, for many users at once.

    Parameters
    ----------
    ranked : np.ndarray of int, shape (n_users, k)
        Recommended item indices per user, best first; negative values pad short lists.
    rel_indptr : np.ndarray of int, shape (n_users + 1,)
    rel_items : np.ndarray of int
        Relevant item indices in CSR form: row ``u`` is
        ``rel_items[rel_indptr[u]:rel_indptr[u + 1]]``, sorted ascending without repeats.

    Returns
    -------
    np.ndarray of bool, shape (n_users, k)
    """
    ranked = np.asarray(ranked, dtype=np.int64)
    rel_indptr = np.asarray(rel_indptr, dtype=np.int64)
    rel_items = np.asarray(rel_items, dtype=np.int64)
    if ranked.ndim != 2 or len(rel_indptr) != len(ranked) + 1:
        raise ValueError(f"ranked must have shape (n_users, k) and rel_indptr (n_users + 1,); "
                         f"got {ranked.shape} and {rel_indptr.shape}")
    n, k = ranked.shape
    if n == 0 or k == 0 or len(rel_items) == 0:
        return np.zeros((n, k), dtype=bool)
    # one sorted key per (user, relevant item): row * width + item
    width = int(max(ranked.max(), rel_items.max())) + 1
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(rel_indptr))
    rel_keys = rows * width + rel_items
    query = np.arange(n, dtype=np.int64)[:, None] * width + ranked
    pos = np.minimum(np.searchsorted(rel_keys, query), len(rel_keys) - 1)
    return (rel_keys[pos] == query) & (ranked >= 0)


def _discounts(k: int) -> np.ndarray:
    """``1 / log2(j + 1)`` for ranks ``j = 1..k``."""
    return 1.0 / np.log2(np.arange(2, k + 2))


def precision_from_hits(hits: np.ndarray, k: int) -> np.ndarray:
    """Per-user precision@k from a ``(n_users, >= k)`` hit matrix."""
    return hits[:, :k].sum(axis=1) / k


def recall_from_hits(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per-user recall@k; ``n_relevant`` (shape (n_users,)) must be positive."""
    return hits[:, :k].sum(axis=1) / np.asarray(n_relevant, dtype=np.float64)


def ndcg_from_hits(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per-user NDCG@k with binary relevance; the ideal DCG counts ``min(|rel|, k)`` items."""
    disc = _discounts(k)
    dcg = hits[:, :k] @ disc[:hits[:, :k].shape[1]]
    ideal = np.concatenate([[0.0], np.cumsum(disc)])
    m = np.minimum(np.asarray(n_relevant, dtype=np.int64), k)
    return dcg / ideal[m]


def average_precision_from_hits(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per-user AP@k: precision at each relevant rank, summed, over ``min(|rel|, k)``."""
    h = hits[:, :k].astype(np.float64)
    precision_at = np.cumsum(h, axis=1) / np.arange(1, h.shape[1] + 1)
    m = np.minimum(np.asarray(n_relevant, dtype=np.float64), k)
    return (h * precision_at).sum(axis=1) / m


def hit_rate_from_hits(hits: np.ndarray, k: int) -> np.ndarray:
    """Per-user hit rate@k: 1.0 when any of the first ``k`` items is relevant."""
    return hits[:, :k].any(axis=1).astype(np.float64)


def coverage(ranked: np.ndarray, n_items: int) -> float:
    """Share of the ``n_items`` catalogue that appears in at least one ranked list."""
    ranked = np.asarray(ranked)
    return float(np.unique(ranked[ranked >= 0]).size / n_items)


# -- single lists -------------------------------------------------------------------------------
def _single(ranked: Sequence, relevant: Collection, k: int) -> tuple[np.ndarray, int]:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    rel = set(relevant)
    if not rel:
        raise ValueError("relevant is empty: the metric is undefined without relevant items")
    seen: set = set()
    hits = np.zeros((1, k), dtype=bool)
    for j, item in enumerate(list(ranked)[:k]):
        # a repeated item counts once, at its first rank
        hits[0, j] = item in rel and item not in seen
        seen.add(item)
    return hits, len(rel)


def precision_at_k(ranked: Sequence, relevant: Collection, k: int) -> float:
    """Precision@k of one ranked list (see module notes)."""
    hits, _ = _single(ranked, relevant, k)
    return float(precision_from_hits(hits, k)[0])


def recall_at_k(ranked: Sequence, relevant: Collection, k: int) -> float:
    """Recall@k of one ranked list."""
    hits, n_rel = _single(ranked, relevant, k)
    return float(recall_from_hits(hits, np.array([n_rel]), k)[0])


def ndcg_at_k(ranked: Sequence, relevant: Collection, k: int) -> float:
    """NDCG@k of one ranked list with binary relevance."""
    hits, n_rel = _single(ranked, relevant, k)
    return float(ndcg_from_hits(hits, np.array([n_rel]), k)[0])


def average_precision_at_k(ranked: Sequence, relevant: Collection, k: int) -> float:
    """AP@k of one ranked list; ``map`` is its mean over users."""
    hits, n_rel = _single(ranked, relevant, k)
    return float(average_precision_from_hits(hits, np.array([n_rel]), k)[0])


def hit_rate_at_k(ranked: Sequence, relevant: Collection, k: int) -> float:
    """1.0 when one of the first ``k`` items of the list is relevant, else 0.0."""
    hits, _ = _single(ranked, relevant, k)
    return float(hit_rate_from_hits(hits, k)[0])


# -- pointwise ----------------------------------------------------------------------------------
def _pair(y_true, y_pred, name: str) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.float64).ravel()
    if len(y_true) != len(y_pred):
        raise ValueError(f"{name}: y_true and y_pred have different lengths "
                         f"({len(y_true)} and {len(y_pred)})")
    if len(y_true) == 0:
        raise ValueError(f"{name}: no values to evaluate")
    return y_true, y_pred


def _binary(y_true, y_score, name: str) -> tuple[np.ndarray, np.ndarray]:
    y, s = _pair(y_true, y_score, name)
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"{name}: y_true must hold 0/1 labels")
    if y.min() == y.max():
        raise ValueError(f"{name}: needs both positive and negative labels")
    return y, s


def roc_auc(y_true, y_score) -> float:
    """Area under the ROC curve (Mann-Whitney U over the pairs, ties count one half).

    Parameters
    ----------
    y_true : array-like of 0/1, shape (n,)
    y_score : array-like of float, shape (n,)
    """
    y, s = _binary(y_true, y_score, "roc_auc")
    ranks = rankdata(s)  # average ranks for ties
    n_pos = y.sum()
    n_neg = len(y) - n_pos
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pr_auc(y_true, y_score) -> float:
    """Average precision: ``sum_n (R_n - R_{n-1}) P_n`` over distinct score thresholds.

    Tied scores form one threshold, so the value does not depend on the order of ties.
    """
    y, s = _binary(y_true, y_score, "pr_auc")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # last position of each run of equal scores is a threshold
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def log_loss(y_true, y_prob, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy ``-mean(y log p + (1 - y) log(1 - p))``, p clipped to
    ``[eps, 1 - eps]``."""
    y, p = _pair(y_true, y_prob, "log_loss")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("log_loss: y_true must hold 0/1 labels")
    if ((p < 0) | (p > 1)).any():
        raise ValueError("log_loss: y_prob must be probabilities in [0, 1]")
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def rmse(y_true, y_pred) -> float:
    """Root mean squared error."""
    y, p = _pair(y_true, y_pred, "rmse")
    return float(np.sqrt(np.mean((y - p) ** 2)))


def mae(y_true, y_pred) -> float:
    """Mean absolute error."""
    y, p = _pair(y_true, y_pred, "mae")
    return float(np.mean(np.abs(y - p)))


def r2(y_true, y_pred) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot``.

    When every label is the same (``SS_tot = 0``) it is 1.0 for perfect predictions and 0.0
    otherwise, as scikit-learn answers by default.
    """
    y, p = _pair(y_true, y_pred, "r2")
    ss_res = np.sum((y - p) ** 2)
    ss_tot = np.sum((y - y.mean()) ** 2)
    if ss_tot == 0:
        return 1.0 if ss_res == 0 else 0.0
    return float(1.0 - ss_res / ss_tot)


def sigmoid(x) -> np.ndarray:
    """Logistic function, computed without overflow."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out
