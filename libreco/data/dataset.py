"""Turn interaction tables into the index arrays models train on.

``DatasetPure`` uses only user, item and label columns; ``DatasetFeat`` adds categorical and numeric
user and item features for the TF rankers. Both return ``(TransformedSet, DataInfo)`` from
``build_trainset`` and map later splits with ``build_evalset`` / ``build_testset`` onto the training
vocabulary.

Unseen users and items in an eval or test split are handled by ``unknown``:

* ``"drop"`` (default): rows whose user or item did not appear in training are removed, and the
  number removed is logged;
* ``"oov"``: they are kept with the out-of-vocabulary index (``n_users`` for users, ``n_items`` for
  items), which every model answers with its cold-start behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from libreco import logger
from libreco.data.data_info import DataInfo, FeatureInfo
from libreco.data.ids import IdMap, group_order, normalize_id

REQUIRED = ("user", "item", "label")


class TransformedSet:
    """Interactions as inner indices.

    Attributes
    ----------
    user_indices, item_indices : np.ndarray of int32, shape (n,)
        Inner indices; ``n_users`` / ``n_items`` mark out-of-vocabulary rows in eval sets.
    labels : np.ndarray of float32, shape (n,)
    times : np.ndarray of float64, shape (n,), or None
    data_info : DataInfo
        The training data's info, for feature tables and consumed items.
    """

    def __init__(self, user_indices, item_indices, labels, data_info: DataInfo, times=None):
        self.user_indices = np.asarray(user_indices, dtype=np.int32)
        self.item_indices = np.asarray(item_indices, dtype=np.int32)
        self.labels = np.asarray(labels, dtype=np.float32)
        self.times = None if times is None else np.asarray(times, dtype=np.float64)
        self.data_info = data_info

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def sparse_interaction(self):
        """(n_users, n_items) CSR matrix of the training labels."""
        return self.data_info.user_consumed

    @property
    def sparse_indices(self) -> np.ndarray:
        """(n, n_sparse) int32 global categorical indices, user fields then item fields."""
        di = self.data_info
        return np.hstack([di.user_sparse[self.user_indices], di.item_sparse[self.item_indices]])

    @property
    def dense_values(self) -> np.ndarray:
        """(n, n_dense) float32 standardised numeric features, user fields then item fields."""
        di = self.data_info
        return np.hstack([di.user_dense[self.user_indices], di.item_dense[self.item_indices]])

    def __repr__(self) -> str:
        return f"TransformedSet(n={len(self)})"


def check_frame(df: pd.DataFrame, extra: Sequence[str] = (), name: str = "data") -> None:
    """Raise ``ValueError`` naming the column and the problem when ``df`` cannot be used."""
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise ValueError(f"{name} is empty: it needs at least one row")
    for col in (*REQUIRED, *extra):
        if col not in df.columns:
            raise ValueError(f"{name} has no column {col!r} (columns: {list(df.columns)})")
    for col in ("user", "item"):
        n_bad = int(df[col].isna().sum())
        if n_bad:
            raise ValueError(f"column {col!r} has {n_bad} missing (NaN) ids")
    label = df["label"]
    if not pd.api.types.is_numeric_dtype(label) or pd.api.types.is_bool_dtype(label):
        converted = pd.to_numeric(label, errors="coerce")
        bad = label[converted.isna() & label.notna()]
        if len(bad) or pd.api.types.is_bool_dtype(label):
            example = bad.iloc[0] if len(bad) else label.iloc[0]
            raise ValueError(f"column 'label' must be numeric; found {example!r}")
    n_nan = int(pd.to_numeric(label, errors="coerce").isna().sum())
    if n_nan:
        raise ValueError(f"column 'label' has {n_nan} missing (NaN) values")
    time = df["time"] if "time" in df.columns else None
    if time is not None and not (pd.api.types.is_numeric_dtype(time)
                                 or pd.api.types.is_datetime64_any_dtype(time)):
        raise ValueError("column 'time' must be numeric (e.g. a Unix timestamp) or datetime")


def _times(df: pd.DataFrame) -> np.ndarray | None:
    if "time" not in df.columns:
        return None
    t = df["time"]
    if pd.api.types.is_datetime64_any_dtype(t):
        # Unix seconds whatever the resolution (pandas may store s, ms, us or ns) and time zone
        return ((t - pd.Timestamp(0, tz=t.dt.tz)) / pd.Timedelta(seconds=1)).to_numpy(
            dtype=np.float64)
    return t.to_numpy(dtype=np.float64)


def _consumed(u_idx, i_idx, labels, n_users, n_items, times):
    """Per-user consumed items in interaction order, one entry per (user, item), last label."""
    if times is not None and (np.diff(times) < 0).any():
        by_time = np.argsort(times, kind="stable")
        u_idx, i_idx, labels = u_idx[by_time], i_idx[by_time], labels[by_time]
    # repeated (user, item) pairs are rare: count distinct pairs first (a linear-time CSR build)
    # and only sort when there are repeats, keeping each pair's latest occurrence
    pairs = sparse.csr_matrix((np.ones(len(u_idx), dtype=np.int8), (u_idx, i_idx)),
                              shape=(n_users, n_items))
    if pairs.nnz < len(u_idx):
        key = u_idx.astype(np.int64) * n_items + i_idx
        by_key = np.argsort(key, kind="stable")
        last = np.ones(len(key), dtype=bool)
        last[:-1] = key[by_key][1:] != key[by_key][:-1]
        keep = np.zeros(len(key), dtype=bool)
        keep[by_key[last]] = True
        u_idx, i_idx, labels = u_idx[keep], i_idx[keep], labels[keep]
    by_user = group_order(u_idx, n_users)
    counts = np.bincount(u_idx, minlength=n_users)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, i_idx[by_user], labels[by_user]


def _map_split(df, data_info: DataInfo, unknown: str, name: str):
    if unknown not in ("drop", "oov"):
        raise ValueError(f"unknown must be 'drop' or 'oov', got {unknown!r}")
    u = _lookup_column(df["user"], data_info.user_map)
    i = _lookup_column(df["item"], data_info.item_map)
    labels = pd.to_numeric(df["label"]).to_numpy(dtype=np.float32)
    times = _times(df)
    unseen = (u < 0) | (i < 0)
    if unknown == "drop":
        if unseen.any():
            logger.info("%s: dropped %d of %d rows with users or items unseen in training",
                        name, int(unseen.sum()), len(df))
        keep = ~unseen
        u, i, labels = u[keep], i[keep], labels[keep]
        times = None if times is None else times[keep]
    else:
        u = np.where(u < 0, data_info.n_users, u)
        i = np.where(i < 0, data_info.n_items, i)
    return u, i, labels, times


def _lookup_column(col: pd.Series, id_map: IdMap) -> np.ndarray:
    """Vectorised id lookup: exact values first, then their string spelling."""
    index = pd.Index(id_map.ids)
    out = index.get_indexer(col.to_numpy())
    missing = out < 0
    if missing.any():
        as_str = pd.Index([str(v) for v in id_map.ids])
        out[missing] = as_str.get_indexer(col[missing].astype(str).to_numpy())
    return out.astype(np.int64)


class DatasetPure:
    """Datasets of user, item and label columns (plus an optional ``time``)."""

    @classmethod
    def build_trainset(cls, df: pd.DataFrame) -> tuple[TransformedSet, DataInfo]:
        """Index the training interactions.

        Parameters
        ----------
        df : DataFrame with columns ``user``, ``item``, ``label`` and optionally ``time``
            Ids may be ints or strings; a ``time`` column orders each user's history.

        Returns
        -------
        (TransformedSet, DataInfo)
        """
        check_frame(df, name="train data")
        return _build_train(df, None)

    @classmethod
    def build_evalset(cls, df: pd.DataFrame, data_info: DataInfo,
                      unknown: str = "drop") -> TransformedSet:
        """Map an evaluation split onto the training vocabulary (see module notes)."""
        check_frame(df, name="eval data")
        u, i, labels, times = _map_split(df, data_info, unknown, "eval data")
        return TransformedSet(u, i, labels, data_info, times)

    @classmethod
    def build_testset(cls, df: pd.DataFrame, data_info: DataInfo,
                      unknown: str = "drop") -> TransformedSet:
        """Map a test split onto the training vocabulary (see module notes)."""
        check_frame(df, name="test data")
        u, i, labels, times = _map_split(df, data_info, unknown, "test data")
        return TransformedSet(u, i, labels, data_info, times)


class DatasetFeat(DatasetPure):
    """Datasets with user and item features for the TF rankers."""

    @classmethod
    def build_trainset(cls, df: pd.DataFrame, user_col: Sequence[str] = (),
                       item_col: Sequence[str] = (), sparse_col: Sequence[str] = (),
                       dense_col: Sequence[str] = ()) -> tuple[TransformedSet, DataInfo]:
        """Index the training interactions and their features.

        Parameters
        ----------
        df : DataFrame with ``user``, ``item``, ``label`` [, ``time``] and the feature columns
        user_col, item_col : list of str
            Feature columns that describe the user / the item. Each user (item) is given the
            values of its most recent row.
        sparse_col, dense_col : list of str
            Which of those columns are categorical and which are numeric; every feature column
            is exactly one of the two.
        """
        user_col, item_col = list(user_col), list(item_col)
        sparse_col, dense_col = list(sparse_col), list(dense_col)
        check_frame(df, extra=[*user_col, *item_col], name="train data")
        both = set(user_col) & set(item_col)
        if both:
            raise ValueError(f"columns {sorted(both)} are in both user_col and item_col")
        feature_cols = set(user_col) | set(item_col)
        for col in [*sparse_col, *dense_col]:
            if col not in feature_cols:
                raise ValueError(f"column {col!r} is not listed in user_col or item_col")
        for col in feature_cols:
            if (col in sparse_col) == (col in dense_col):
                raise ValueError(f"column {col!r} must be in exactly one of sparse_col, dense_col")
        for col in dense_col:
            values = pd.to_numeric(df[col], errors="coerce")
            if values.isna().any():
                raise ValueError(f"numeric feature column {col!r} has missing or non-numeric "
                                 "values")
        feats = FeatureInfo(
            user_sparse_cols=[c for c in user_col if c in sparse_col],
            item_sparse_cols=[c for c in item_col if c in sparse_col],
            user_dense_cols=[c for c in user_col if c in dense_col],
            item_dense_cols=[c for c in item_col if c in dense_col],
        )
        return _build_train(df, feats)


def _build_train(df: pd.DataFrame, feats: FeatureInfo | None):
    user_map, u_idx = IdMap.from_values(df["user"].to_numpy())
    item_map, i_idx = IdMap.from_values(df["item"].to_numpy())
    labels = pd.to_numeric(df["label"]).to_numpy(dtype=np.float32)
    times = _times(df)
    n_users, n_items = len(user_map), len(item_map)
    indptr, items, item_labels = _consumed(u_idx, i_idx, labels, n_users, n_items, times)
    item_counts = np.bincount(i_idx, minlength=n_items)
    tables = {}
    if feats is not None:
        tables = _feature_tables(df, feats, u_idx, i_idx, n_users, n_items, times)
    data_info = DataInfo(user_map, item_map, indptr, items, item_labels, item_counts,
                         float(labels.mean()), feats, **tables)
    logger.info("built train set: %d interactions, %d users, %d items",
                len(labels), n_users, n_items)
    return TransformedSet(u_idx, i_idx, labels, data_info, times), data_info


def _last_rows(idx: np.ndarray, n: int, times) -> np.ndarray:
    """Row number of each entity's most recent row (by time, then by position)."""
    order = np.arange(len(idx)) if times is None else np.argsort(times, kind="stable")
    rows = np.zeros(n, dtype=np.int64)
    rows[idx[order]] = order  # later writes win: the most recent row of each entity
    return rows


def _feature_tables(df, feats: FeatureInfo, u_idx, i_idx, n_users, n_items, times):
    offset = 0
    for col in feats.sparse_cols:
        codes, uniques = pd.factorize(df[col], sort=False)
        feats.vocab[col] = [normalize_id(v) for v in uniques]
        feats.offsets[col] = offset
        offset += len(uniques) + 1
    for col in feats.dense_cols:
        values = pd.to_numeric(df[col]).to_numpy(dtype=np.float64)
        std = float(values.std())
        feats.dense_mean[col] = float(values.mean())
        feats.dense_std[col] = std if std > 0 else 1.0

    def build(cols_sparse, cols_dense, idx, n):
        last = _last_rows(idx, n, times)
        sp = np.empty((n + 1, len(cols_sparse)), dtype=np.int32)
        for j, col in enumerate(cols_sparse):
            codes, _ = pd.factorize(df[col], sort=False)
            codes = codes[last]
            oov = feats.oov_index(col)
            sp[:n, j] = np.where(codes < 0, oov, feats.offsets[col] + codes)
            sp[n, j] = oov
        dn = np.zeros((n + 1, len(cols_dense)), dtype=np.float32)
        for j, col in enumerate(cols_dense):
            values = pd.to_numeric(df[col]).to_numpy(dtype=np.float64)[last]
            dn[:n, j] = (values - feats.dense_mean[col]) / feats.dense_std[col]
        return sp, dn

    user_sparse, user_dense = build(feats.user_sparse_cols, feats.user_dense_cols, u_idx, n_users)
    item_sparse, item_dense = build(feats.item_sparse_cols, feats.item_dense_cols, i_idx, n_items)
    return {"user_sparse": user_sparse, "item_sparse": item_sparse,
            "user_dense": user_dense, "item_dense": item_dense}
