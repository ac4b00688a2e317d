"""Evaluate a fitted model on held-out interactions."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy import sparse

from libreco import logger
from libreco.data.dataset import DatasetPure, TransformedSet
from libreco.data.sampling import NegativeSampler
from libreco.evaluation import metrics as M

DEFAULT_METRICS = {"ranking": ["precision", "recall", "ndcg"], "rating": ["rmse", "mae"]}
_CLASSIFICATION = ("roc_auc", "pr_auc", "log_loss")


def evaluate(model, data: pd.DataFrame | TransformedSet, metrics: Iterable[str] | str | None = None,
             k: int = 10, sample_users: int | None = None, seed: int = 42,
             unknown: str = "drop", relevance_threshold: float | None = None) -> dict[str, float]:
    """Score a fitted model on test interactions.

    Parameters
    ----------
    model : Recommender
        A fitted model.
    data : DataFrame with columns ``user``, ``item``, ``label``, or TransformedSet
        Test interactions with original ids (a DataFrame), or already mapped onto the model's
        training vocabulary (a TransformedSet from ``build_evalset`` / ``build_testset``).
    metrics : list of str, optional
        Any of ``precision, recall, ndcg, map, hit_rate, coverage`` (ranking, at ``k``) and
        ``roc_auc, pr_auc, log_loss, rmse, mae, r2`` (pointwise). Default: precision, recall and
        ndcg for ``task="ranking"``, rmse and mae for ``task="rating"``.
    k : int
        Length of the recommendation lists for ranking metrics.
    sample_users : int, optional
        Evaluate a seeded random sample of this many known test users (all rows of other users
        are left out of every metric); all users when omitted.
    seed : int
        Seed of ``sample_users`` and of the negatives sampled for ``roc_auc`` / ``pr_auc`` /
        ``log_loss`` on ranking models.
    unknown : {"drop", "oov"}
        Test rows whose user or item was not in the training data: dropped, or kept as
        out-of-vocabulary (see Notes).
    relevance_threshold : float, optional
        When given, only test rows with ``label >= relevance_threshold`` are relevant items for
        ranking metrics, and they are the positives of ``roc_auc`` / ``pr_auc`` on rating models.

    Returns
    -------
    dict
        ``{metric: float}`` in the order of ``metrics``.

    Raises
    ------
    ValueError
        For an unknown metric name (the message lists the valid ones), a bad ``k``, or test data
        with no row left to evaluate.

    Notes
    -----
    **Ranking metrics.** A user's relevant items are the items of the user's test rows (those
    with ``label >= relevance_threshold`` when it is set). Every user with at least one relevant
    item is ranked with ``model.recommend_inner(users, k, filter_consumed=True)``, so items the
    user consumed in training never appear in the list; users unseen in training are skipped.
    Metrics are averaged over the ranked users; ``coverage`` is the share of the catalogue
    present in at least one list. With ``unknown="oov"`` a test item unseen in training stays a
    relevant item that no list can contain (it lowers recall and NDCG); with ``"drop"`` it is
    removed.

    **roc_auc, pr_auc, log_loss.** For ``task="ranking"`` the positives are the test rows with a
    known user and item, and every positive gets one negative: an item drawn uniformly (seeded)
    among those the user neither consumed in training nor has in the test data. They are
    computed over the pooled pairs. ``log_loss`` needs probabilities: a model whose scores on
    these pairs all lie in ``[0, 1]`` is taken to score probabilities; otherwise its scores are
    treated as logits and mapped through the sigmoid. For ``task="rating"``, ``roc_auc`` and
    ``pr_auc`` rank the test rows by predicted rating with ``label >= relevance_threshold`` as
    positives (the threshold is then required), and ``log_loss`` is not defined.

    **rmse, mae, r2** compare ``model.predict`` with the label on every test row: pairs with an
    unknown user or item (kept by ``unknown="oov"``) get ``model.default_prediction``.
    """
    names = _metric_names(model, metrics)
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    model._require_fitted()
    info = model.data_info
    u, i, labels = _indices(model, data, unknown)
    if sample_users is not None:
        u, i, labels = _sample_users(u, i, labels, info.n_users, sample_users, seed)
    if len(u) == 0:
        raise ValueError("no test rows left to evaluate: every row has a user or item unseen "
                         "in training (try unknown='oov'), or the data is empty")

    results: dict[str, float] = {}
    ranking = [m for m in names if m in M.RANKING_METRICS]
    if ranking:
        results.update(_ranking_metrics(model, u, i, labels, ranking, int(k),
                                        relevance_threshold))
    classification = [m for m in names if m in _CLASSIFICATION]
    if classification:
        results.update(_classification_metrics(model, u, i, labels, classification, seed,
                                               relevance_threshold))
    regression = [m for m in names if m in ("rmse", "mae", "r2")]
    if regression:
        preds = _predictions(model, u, i)
        funcs = {"rmse": M.rmse, "mae": M.mae, "r2": M.r2}
        results.update({m: funcs[m](labels, preds) for m in regression})
    return {m: float(results[m]) for m in names}


def _metric_names(model, metrics) -> list[str]:
    if metrics is None:
        return list(DEFAULT_METRICS[model.task])
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    if not names:
        raise ValueError(f"metrics is empty; choose from {list(M.ALL_METRICS)}")
    bad = [m for m in names if m not in M.ALL_METRICS]
    if bad:
        raise ValueError(f"unknown metric {bad[0]!r}; valid metrics: {list(M.ALL_METRICS)}")
    return list(dict.fromkeys(names))


def _indices(model, data, unknown: str):
    info = model.data_info
    if isinstance(data, TransformedSet):
        di = data.data_info
        if di is not info and (di.n_users, di.n_items) != (info.n_users, info.n_items):
            raise ValueError("data was built with a different DataInfo than the model's")
        if unknown not in ("drop", "oov"):
            raise ValueError(f"unknown must be 'drop' or 'oov', got {unknown!r}")
        u = data.user_indices.astype(np.int64)
        i = data.item_indices.astype(np.int64)
        labels = data.labels.astype(np.float64)
        if unknown == "drop":
            keep = (u < info.n_users) & (i < info.n_items)
            u, i, labels = u[keep], i[keep], labels[keep]
        return u, i, labels
    ts = DatasetPure.build_evalset(data, info, unknown=unknown)
    return (ts.user_indices.astype(np.int64), ts.item_indices.astype(np.int64),
            ts.labels.astype(np.float64))


def _sample_users(u, i, labels, n_users: int, n: int, seed: int):
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"sample_users must be a positive integer, got {n!r}")
    users = np.unique(u[u < n_users])
    if n < len(users):
        users = np.random.default_rng(seed).choice(users, size=n, replace=False)
    keep = np.isin(u, users)
    return u[keep], i[keep], labels[keep]


def _ranking_metrics(model, u, i, labels, names, k, threshold) -> dict[str, float]:
    info = model.data_info
    relevant = u < info.n_users
    if threshold is not None:
        relevant &= labels >= threshold
    # unique (user, item) pairs; an out-of-vocabulary item (index n_items) stays relevant
    keys = np.unique(u[relevant] * (info.n_items + 1) + i[relevant])
    rel_users, rel_items = np.divmod(keys, info.n_items + 1)
    users, n_relevant = np.unique(rel_users, return_counts=True)
    n_skipped = len(np.unique(u[u >= info.n_users]))
    if n_skipped:
        logger.info("evaluate: skipped %d test users unseen in training", n_skipped)
    if len(users) == 0:
        logger.warning("evaluate: no test user has a relevant item; ranking metrics are NaN")
        return {m: float("nan") for m in names}
    indptr = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(n_relevant, out=indptr[1:])

    ranked, _ = model.recommend_inner(users, k, filter_consumed=True)
    hits = M.hit_matrix(ranked, indptr, rel_items)
    per_user = {
        "precision": lambda: M.precision_from_hits(hits, k),
        "recall": lambda: M.recall_from_hits(hits, n_relevant, k),
        "ndcg": lambda: M.ndcg_from_hits(hits, n_relevant, k),
        "map": lambda: M.average_precision_from_hits(hits, n_relevant, k),
        "hit_rate": lambda: M.hit_rate_from_hits(hits, k),
    }
    out = {}
    for m in names:
        if m == "coverage":
            out[m] = M.coverage(ranked, info.n_items)
        else:
            out[m] = float(np.mean(per_user[m]()))
    return out


def _predictions(model, u, i) -> np.ndarray:
    """``model.predict`` on inner indices: known pairs scored, others the default."""
    info = model.data_info
    known = (u < info.n_users) & (i < info.n_items)
    preds = np.full(len(u), model.default_prediction, dtype=np.float64)
    if known.any():
        preds[known] = model._predict_inner(u[known], i[known])
    return preds


def _classification_metrics(model, u, i, labels, names, seed, threshold) -> dict[str, float]:
    if model.task == "rating":
        if "log_loss" in names:
            raise ValueError("log_loss needs predicted probabilities; a rating model predicts "
                             "ratings (use rmse / mae, or roc_auc with relevance_threshold)")
        if threshold is None:
            raise ValueError(f"{names[0]} on a rating model needs relevance_threshold: labels "
                             "at or above it are the positives")
        y = (labels >= threshold).astype(np.float64)
        scores = _predictions(model, u, i)
    else:
        y, scores = _sampled_pairs(model, u, i, seed)
    out = {}
    for m in names:
        if m == "roc_auc":
            out[m] = M.roc_auc(y, scores)
        elif m == "pr_auc":
            out[m] = M.pr_auc(y, scores)
        else:
            in_unit = bool(((scores >= 0) & (scores <= 1)).all())
            out[m] = M.log_loss(y, scores if in_unit else M.sigmoid(scores))
    return out


def _sampled_pairs(model, u, i, seed):
    """Known test pairs as positives, one sampled unconsumed, untested item each as negative."""
    info = model.data_info
    known = (u < info.n_users) & (i < info.n_items)
    pu, pi = u[known], i[known]
    if len(pu) == 0:
        raise ValueError("no test row has both a known user and a known item")
    tested = sparse.csr_matrix((np.ones(len(pu), dtype=np.float32), (pu, pi)),
                               shape=(info.n_users, info.n_items))
    train = info.user_consumed.copy()
    train.data = np.ones_like(train.data)
    excluded = (train + tested).tocsr()
    excluded.sum_duplicates()
    excluded.sort_indices()
    # a user who has seen every item has no negative to offer
    room = np.diff(excluded.indptr)[pu] < info.n_items
    if not room.all():
        logger.info("evaluate: %d positives of users without unseen items are left out",
                    int((~room).sum()))
        pu, pi = pu[room], pi[room]
    neg = NegativeSampler(excluded, info.n_items, seed=seed).sample(pu)
    users = np.concatenate([pu, pu])
    items = np.concatenate([pi, neg.astype(np.int64)])
    y = np.concatenate([np.ones(len(pu)), np.zeros(len(pu))])
    scores = np.asarray(model._predict_inner(users, items), dtype=np.float64)
    return y, scores
