"""Model directories for the knn service: a UserCF / ItemCF model plus its serving arrays."""

from __future__ import annotations

import os

import numpy as np

from libreco import logger

KNN_DIR = "knn"
NEIGHBORS = f"{KNN_DIR}/neighbors.npy"
SIMILARITIES = f"{KNN_DIR}/similarities.npy"
POPULAR = f"{KNN_DIR}/popular_items.npy"


def save_knn(path: str | os.PathLike, model, train_data, k: int = 20) -> dict:
    """Write a fitted UserCF or ItemCF model as a model directory the Redis loaders read.

    The directory is a complete ``model.save`` directory (``Recommender.load(path)`` gives the
    model back) plus the top-``k`` neighbours in the ``knn/`` folder and a ``"knn"`` entry in
    the manifest. It is written atomically and checksummed like every model directory (see
    :mod:`libreco.utils.artifacts`).

    Parameters
    ----------
    path : str or path-like
        The model directory; an existing directory of that name is replaced.
    model : UserCF or ItemCF
        A fitted model.
    train_data : TransformedSet
        The training data the model was fitted on (it must share the model's ids); the
        consumed items written are those of the model's ``data_info``, built from it.
    k : int
        Neighbours kept per user or item; capped at the model's ``k_sim``.

    Returns
    -------
    dict
        The manifest's ``"knn"`` entry.

    Notes
    -----
    Directory format, with ``n_users``, ``n_items`` the training data's sizes, inner indices
    ``0 .. n - 1`` and ``n = n_items`` for ItemCF, ``n_users`` for UserCF::

        manifest.json              algorithm "item_cf" | "user_cf", family "knn",
                                   hyperparameters (task and the model's parameters),
                                   data_summary, metrics, files {name: {sha256, bytes}}, and
                                   "knn": {"k", "based_on" ("item" | "user"), "sim_type",
                                           "k_sim", "n", "score": "sum_sim_label"}
        user_ids.json              JSON list: original user id of each inner user index,
        item_ids.json              same for items; ints stay ints, strings stay strings
        consumed_indptr.npy        (n_users + 1,) int64  } each user's consumed items, CSR:
        consumed_items.npy         (nnz,) int32          } items of user u are
        consumed_labels.npy        (nnz,) float32        } consumed_items[indptr[u]:indptr[u+1]]
                                                           oldest first, one entry per item
        item_counts.npy            (n_items,) int64      training interactions per item
        data_info.json, user_*.npy, item_*.npy          the rest of the DataInfo (features)
        params/sim_indices.npy     (n, k_sim) int32      the model's own neighbours
        params/sim_values.npy      (n, k_sim) float32
        knn/neighbors.npy          (n, k) int32          inner indices of each user's or item's
                                                         neighbours, best first, -1 padding
        knn/similarities.npy       (n, k) float32        their similarities (> 0), 0 padding
        knn/popular_items.npy      (n_items,) int32      inner items, most interactions first
                                                         (ties by index): the cold-start list

    Scoring that reproduces ``model.recommend_user`` for ``task="ranking"`` with
    ``k_neighbors <= k`` (``r`` the consumed labels, ``N_k`` the first ``k_neighbors`` valid
    entries of a row of ``knn/neighbors.npy``):

    * ``based_on == "item"``: ``score(u, j) = sum_{i consumed by u, j in N_k(i)} sim(i, j) *
      r_ui``;
    * ``based_on == "user"``: ``score(u, j) = sum_{v in N_k(u)} sim(u, v) * r_vj``;

    then drop the items ``u`` consumed and keep the best ``n_rec``.
    """
    _check(model, train_data)
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    neighbors, similarities = model.neighbours(int(k))
    k_saved = int(neighbors.shape[1])
    if k_saved < k:
        logger.info("save_knn: k=%d capped at the model's k_sim=%d", k, k_saved)
    info = {
        "k": k_saved,
        "based_on": model.based_on,
        "sim_type": model.sim_type,
        "k_sim": int(model.sim_indices.shape[1]),
        "n": int(neighbors.shape[0]),
        "score": "sum_sim_label",
    }

    def write(writer) -> None:
        writer.write_array(NEIGHBORS, np.ascontiguousarray(neighbors, dtype=np.int32))
        writer.write_array(SIMILARITIES, np.ascontiguousarray(similarities, dtype=np.float32))
        writer.write_array(POPULAR, model.data_info.popular_items().astype(np.int32))

    model.save(path, manifest_extra={"knn": info}, extra_files=write)
    return info


def _check(model, train_data) -> None:
    if getattr(model, "family", None) != "knn" or not hasattr(model, "neighbours"):
        raise ValueError(f"save_knn needs a UserCF or ItemCF model, got {type(model).__name__}")
    model._require_fitted()
    di = getattr(train_data, "data_info", None)
    if di is None:
        raise ValueError("train_data must be the TransformedSet the model was fitted on")
    mine = model.data_info
    if di is not mine and (di.n_users, di.n_items) != (mine.n_users, mine.n_items):
        raise ValueError(f"train_data has {di.n_users} users and {di.n_items} items, the model "
                         f"{mine.n_users} and {mine.n_items}: pass the data it was fitted on")
