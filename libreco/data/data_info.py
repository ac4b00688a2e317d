"""What a trained model knows about its data: ids, consumed items, popularity, features."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from libreco.data.ids import IdMap
from libreco.utils.artifacts import ArtifactReader, ArtifactWriter


@dataclass
class FeatureInfo:
    """Feature metadata of a :class:`~libreco.data.DatasetFeat` build.

    Every categorical field owns a contiguous range of global indices
    ``[offsets[col], offsets[col] + len(vocab[col]) + 1)``; the last index of the range is the
    field's out-of-vocabulary slot. Numeric fields are standardised with ``dense_mean`` and
    ``dense_std`` computed on the training data.
    """

    user_sparse_cols: list[str] = field(default_factory=list)
    item_sparse_cols: list[str] = field(default_factory=list)
    user_dense_cols: list[str] = field(default_factory=list)
    item_dense_cols: list[str] = field(default_factory=list)
    vocab: dict[str, list] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    dense_mean: dict[str, float] = field(default_factory=dict)
    dense_std: dict[str, float] = field(default_factory=dict)

    @property
    def sparse_cols(self) -> list[str]:
        return self.user_sparse_cols + self.item_sparse_cols

    @property
    def dense_cols(self) -> list[str]:
        return self.user_dense_cols + self.item_dense_cols

    @property
    def n_sparse_features(self) -> int:
        """Size of the global categorical vocabulary, out-of-vocabulary slots included."""
        return sum(len(self.vocab[c]) + 1 for c in self.sparse_cols)

    def oov_index(self, col: str) -> int:
        return self.offsets[col] + len(self.vocab[col])

    def sparse_index(self, col: str, value) -> int:
        """Global index of one categorical value; the field's OOV slot when it is unseen."""
        lookup = self._lookups().get(col)
        if lookup is None:
            raise ValueError(f"{col!r} is not a categorical feature of this model")
        pos = lookup.get(value)
        if pos is None:
            pos = lookup.get(str(value), len(self.vocab[col]))
        return self.offsets[col] + pos

    def dense_value(self, col: str, value) -> float:
        return (float(value) - self.dense_mean[col]) / self.dense_std[col]

    def _lookups(self) -> dict[str, dict]:
        cache = self.__dict__.get("_lookup_cache")
        if cache is None:
            cache = {}
            for col, values in self.vocab.items():
                d: dict = {}
                for i, v in enumerate(values):
                    d.setdefault(v, i)
                    d.setdefault(str(v), i)
                cache[col] = d
            self.__dict__["_lookup_cache"] = cache
        return cache

    def to_json(self) -> dict:
        return {
            "user_sparse_cols": self.user_sparse_cols,
            "item_sparse_cols": self.item_sparse_cols,
            "user_dense_cols": self.user_dense_cols,
            "item_dense_cols": self.item_dense_cols,
            "vocab": self.vocab,
            "offsets": self.offsets,
            "dense_mean": self.dense_mean,
            "dense_std": self.dense_std,
        }

    @classmethod
    def from_json(cls, d: dict) -> FeatureInfo:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class DataInfo:
    """Ids, interactions and features of the training data, shared by a model and its artifacts.

    Attributes
    ----------
    n_users, n_items : int
        Number of distinct users and items in the training data; inner indices run from 0.
    user_map, item_map : IdMap
        Original id <-> inner index. ``user2id`` / ``item2id`` and ``id2user`` / ``id2item`` are
        the same maps as a dict and a list.
    consumed_indptr, consumed_items, consumed_labels : np.ndarray
        Each user's consumed items in CSR form, in interaction order (oldest first, by the
        ``time`` column when there is one), without repeats: the items of user ``u`` are
        ``consumed_items[consumed_indptr[u]:consumed_indptr[u + 1]]``.
    item_counts : np.ndarray of shape (n_items,)
        Interactions per item in the training data.
    global_mean : float
        Mean training label.
    features : FeatureInfo or None
        Feature metadata for :class:`DatasetFeat` builds.
    user_sparse, item_sparse : np.ndarray of int32, shapes (n_users + 1, n_user_sparse) and
        (n_items + 1, n_item_sparse)
        Global categorical indices per user and item; the last row is the unknown user / item.
    user_dense, item_dense : np.ndarray of float32, shapes (n_users + 1, n_user_dense) and
        (n_items + 1, n_item_dense)
        Standardised numeric features; the last row (all zeros: the training mean) is the unknown
        user / item.
    """

    def __init__(self, user_map: IdMap, item_map: IdMap, consumed_indptr, consumed_items,
                 consumed_labels, item_counts, global_mean: float,
                 features: FeatureInfo | None = None, user_sparse=None, item_sparse=None,
                 user_dense=None, item_dense=None):
        self.user_map = user_map
        self.item_map = item_map
        self.consumed_indptr = np.asarray(consumed_indptr, dtype=np.int64)
        self.consumed_items = np.asarray(consumed_items, dtype=np.int32)
        self.consumed_labels = np.asarray(consumed_labels, dtype=np.float32)
        self.item_counts = np.asarray(item_counts, dtype=np.int64)
        self.global_mean = float(global_mean)
        self.features = features
        n_u, n_i = len(user_map), len(item_map)
        self.user_sparse = _table(user_sparse, n_u + 1, np.int32)
        self.item_sparse = _table(item_sparse, n_i + 1, np.int32)
        self.user_dense = _table(user_dense, n_u + 1, np.float32)
        self.item_dense = _table(item_dense, n_i + 1, np.float32)
        self._popular: np.ndarray | None = None
        self._csr: sparse.csr_matrix | None = None

    # ids
    @property
    def n_users(self) -> int:
        return len(self.user_map)

    @property
    def n_items(self) -> int:
        return len(self.item_map)

    @property
    def user2id(self) -> dict:
        return self.user_map.index

    @property
    def item2id(self) -> dict:
        return self.item_map.index

    @property
    def id2user(self) -> list:
        return self.user_map.ids

    @property
    def id2item(self) -> list:
        return self.item_map.ids

    def user_index(self, user) -> int:
        """Inner index of an original user id, -1 when unknown."""
        return self.user_map.lookup(user)

    def item_index(self, item) -> int:
        return self.item_map.lookup(item)

    # interactions
    def consumed(self, u: int) -> np.ndarray:
        """Inner indices of the items user ``u`` consumed, oldest first."""
        return self.consumed_items[self.consumed_indptr[u]:self.consumed_indptr[u + 1]]

    def recent_items(self, u: int, n: int) -> np.ndarray:
        """The user's ``n`` most recent items, oldest first (fewer when the user has fewer)."""
        start, end = self.consumed_indptr[u], self.consumed_indptr[u + 1]
        return self.consumed_items[max(start, end - n):end]

    @property
    def user_consumed(self) -> sparse.csr_matrix:
        """(n_users, n_items) CSR matrix of training labels, indices sorted per row."""
        if self._csr is None:
            # copies: sort_indices works in place and the arrays keep interaction order
            data = (self.consumed_labels.copy(), self.consumed_items.copy(),
                    self.consumed_indptr.copy())
            m = sparse.csr_matrix(data, shape=(self.n_users, self.n_items))
            m.sort_indices()
            self._csr = m
        return self._csr

    def popular_items(self, n: int | None = None) -> np.ndarray:
        """Inner item indices ordered by training popularity (most interactions first)."""
        if self._popular is None:
            self._popular = np.argsort(-self.item_counts, kind="stable").astype(np.int32)
        return self._popular if n is None else self._popular[:n]

    @property
    def has_features(self) -> bool:
        return self.features is not None and bool(
            self.features.sparse_cols or self.features.dense_cols
        )

    def summary(self) -> dict:
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_interactions": int(self.consumed_items.size),
            "global_mean": self.global_mean,
            "sparse_features": self.features.sparse_cols if self.features else [],
            "dense_features": self.features.dense_cols if self.features else [],
        }

    # persistence
    def save(self, writer: ArtifactWriter, prefix: str = "") -> None:
        """Write into an open :class:`ArtifactWriter` (JSON and ``.npy`` only)."""
        writer.write_json(f"{prefix}user_ids.json", self.user_map.ids)
        writer.write_json(f"{prefix}item_ids.json", self.item_map.ids)
        writer.write_json(f"{prefix}data_info.json", {
            "global_mean": self.global_mean,
            "features": self.features.to_json() if self.features else None,
        })
        arrays = {
            "consumed_indptr": self.consumed_indptr,
            "consumed_items": self.consumed_items,
            "consumed_labels": self.consumed_labels,
            "item_counts": self.item_counts,
            "user_sparse": self.user_sparse,
            "item_sparse": self.item_sparse,
            "user_dense": self.user_dense,
            "item_dense": self.item_dense,
        }
        for name, arr in arrays.items():
            writer.write_array(f"{prefix}{name}.npy", arr)

    @classmethod
    def load(cls, reader: ArtifactReader, prefix: str = "") -> DataInfo:
        meta = reader.read_json(f"{prefix}data_info.json")
        feats = meta.get("features")
        arr = {
            name: reader.read_array(f"{prefix}{name}.npy")
            for name in ("consumed_indptr", "consumed_items", "consumed_labels", "item_counts",
                         "user_sparse", "item_sparse", "user_dense", "item_dense")
        }
        return cls(
            IdMap(reader.read_json(f"{prefix}user_ids.json")),
            IdMap(reader.read_json(f"{prefix}item_ids.json")),
            arr["consumed_indptr"], arr["consumed_items"], arr["consumed_labels"],
            arr["item_counts"], meta["global_mean"],
            FeatureInfo.from_json(feats) if feats else None,
            arr["user_sparse"], arr["item_sparse"], arr["user_dense"], arr["item_dense"],
        )

    def __repr__(self) -> str:
        return (f"DataInfo(n_users={self.n_users}, n_items={self.n_items}, "
                f"n_interactions={self.consumed_items.size})")


def _table(values, n_rows: int, dtype) -> np.ndarray:
    if values is None:
        return np.zeros((n_rows, 0), dtype=dtype)
    arr = np.asarray(values, dtype=dtype)
    if arr.ndim != 2 or arr.shape[0] != n_rows:
        raise ValueError(f"feature table must have shape ({n_rows}, n_fields), got {arr.shape}")
    return arr
