"""Model directories for the vector service: a model plus its user and item vectors."""

from __future__ import annotations

import os

import numpy as np

VECTOR_DIR = "vector"
USER_VECTORS = f"{VECTOR_DIR}/user_vectors.npy"
ITEM_VECTORS = f"{VECTOR_DIR}/item_vectors.npy"


def save_vector(path: str | os.PathLike, model, train_data) -> dict:
    """Write a fitted vector model as a model directory the vector loaders read.

    The directory is a complete ``model.save`` directory (``Recommender.load(path)`` gives the
    model back) plus the serving vectors in the ``vector/`` folder and a ``"vector"`` entry in
    the manifest. It is written atomically and checksummed like every model directory (see
    :mod:`libreco.utils.artifacts`).

    Parameters
    ----------
    path : str or path-like
        The model directory; an existing directory of that name is replaced.
    model : Recommender with ``user_item_vectors()``
        A fitted SVD, SVDpp, ALS or BPR model, or any model whose ``user_item_vectors()``
        returns user and item vectors whose inner products are its scores.
    train_data : TransformedSet
        The training data the model was fitted on (it must share the model's ids).

    Returns
    -------
    dict
        The manifest's ``"vector"`` entry: ``{"dim": d, "metric": "inner_product",
        "n_users": ..., "n_items": ...}``.

    Notes
    -----
    Beside the files of ``model.save`` (id maps ``user_ids.json`` / ``item_ids.json``, the
    consumed items ``consumed_indptr.npy`` / ``consumed_items.npy``, ``item_counts.npy`` and the
    model's ``params/``)::

        vector/user_vectors.npy   (n_users, d) float32   row u: the user of inner index u
        vector/item_vectors.npy   (n_items, d) float32   row i: the item of inner index i

    ``user_vectors[u] @ item_vectors.T`` are the model's scores for user ``u`` (biases and
    global mean are folded in as extra components), so ranking the items by it, after dropping
    the consumed ones, reproduces ``model.recommend_user``. An inner-product index over the item
    vectors (e.g. faiss ``METRIC_INNER_PRODUCT``) serves the same ranking.
    """
    _check(model, train_data)
    user_vecs, item_vecs = model.user_item_vectors()
    user_vecs = np.ascontiguousarray(user_vecs, dtype=np.float32)
    item_vecs = np.ascontiguousarray(item_vecs, dtype=np.float32)
    di = model.data_info
    if user_vecs.ndim != 2 or user_vecs.shape[0] != di.n_users:
        raise ValueError(f"user vectors must have shape ({di.n_users}, d), got {user_vecs.shape}")
    if item_vecs.ndim != 2 or item_vecs.shape != (di.n_items, user_vecs.shape[1]):
        raise ValueError(f"item vectors must have shape ({di.n_items}, {user_vecs.shape[1]}), "
                         f"got {item_vecs.shape}")
    if not (np.isfinite(user_vecs).all() and np.isfinite(item_vecs).all()):
        raise ValueError(f"{type(model).__name__} has NaN or infinite vectors; refit the model")
    info = {"dim": int(user_vecs.shape[1]), "metric": "inner_product",
            "n_users": int(di.n_users), "n_items": int(di.n_items)}

    def write(writer) -> None:
        writer.write_array(USER_VECTORS, user_vecs)
        writer.write_array(ITEM_VECTORS, item_vecs)

    model.save(path, manifest_extra={"vector": info}, extra_files=write)
    return info


def _check(model, train_data) -> None:
    if not callable(getattr(model, "user_item_vectors", None)):
        raise ValueError("save_vector needs a model with user_item_vectors() (SVD, SVDpp, ALS, "
                         f"BPR, YouTubeMatch), got {type(model).__name__}")
    model._require_fitted()
    di = getattr(train_data, "data_info", None)
    if di is None:
        raise ValueError("train_data must be the TransformedSet the model was fitted on")
    mine = model.data_info
    if di is not mine and (di.n_users, di.n_items) != (mine.n_users, mine.n_items):
        raise ValueError(f"train_data has {di.n_users} users and {di.n_items} items, the model "
                         f"{mine.n_users} and {mine.n_items}: pass the data it was fitted on")
