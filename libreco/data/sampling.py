"""Negative sampling: items a user did not consume, drawn without a loop over users.

All candidates are drawn at once; those that hit a consumed item are found with one
``searchsorted`` over the consumed pairs encoded as sorted ``user * n_items + item`` keys, and
only they are drawn again, until none is left. Each round keeps a candidate with the probability
that it is not consumed, so the number of rounds grows like ``log(n) / log(1 / p)`` where ``p`` is
the largest consumed share of a user's sampling mass. Users whose unconsumed mass is tiny are
finished by an exact draw from their unconsumed items after ``MAX_ROUNDS`` rounds.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

MAX_ROUNDS = 50


class NegativeSampler:
    """Draws negatives for a fixed consumed matrix; reuse it across batches and epochs.

    Parameters
    ----------
    consumed : scipy.sparse.csr_matrix of shape (n_users, n_items)
        The items each user consumed (e.g. ``data_info.user_consumed``); only the sparsity pattern
        is used. Indices must be sorted per row (``data_info.user_consumed`` is).
    n_items : int
        Size of the catalogue to sample from.
    item_weights : np.ndarray of shape (n_items,), optional
        Non-negative sampling weights (e.g. ``data_info.item_counts`` for popularity-weighted
        sampling, or its 0.75 power); uniform when omitted.
    seed : int, np.random.Generator or None
    """

    def __init__(self, consumed: sparse.csr_matrix, n_items: int, item_weights=None,
                 seed: int | np.random.Generator | None = None):
        if not sparse.issparse(consumed) or consumed.format != "csr":
            raise ValueError("consumed must be a scipy.sparse CSR matrix (data_info.user_consumed)")
        n_items = int(n_items)
        if n_items < 1:
            raise ValueError(f"n_items must be positive, got {n_items}")
        if consumed.shape[1] > n_items:
            raise ValueError(f"consumed has {consumed.shape[1]} columns, more than "
                             f"n_items={n_items}")
        if not consumed.has_sorted_indices:
            consumed = consumed.sorted_indices()
        self.n_items = n_items
        self.n_users = consumed.shape[0]
        self.indptr = consumed.indptr.astype(np.int64)
        self.rng = np.random.default_rng(seed)
        rows = np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(self.indptr))
        # sorted because rows are in order and indices are sorted inside each row
        self.keys = rows * n_items + consumed.indices
        self.n_consumed = np.diff(self.indptr)
        self.cdf = None
        self.free_mass = None
        if item_weights is not None:
            w = np.asarray(item_weights, dtype=np.float64)
            if w.shape != (n_items,):
                raise ValueError(f"item_weights must have shape ({n_items},), got {w.shape}")
            if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
                raise ValueError("item_weights must be finite, non-negative and not all zero")
            self.weights = w / w.sum()
            self.cdf = np.cumsum(self.weights)
            self.cdf[-1] = 1.0
            # sampling mass left to each user once their consumed items are excluded
            used = np.bincount(rows, weights=self.weights[consumed.indices],
                               minlength=self.n_users)
            self.free_mass = 1.0 - used

    def is_consumed(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Boolean array: whether each ``(users[j], items[j])`` is a consumed pair."""
        q = np.asarray(users, dtype=np.int64) * self.n_items + np.asarray(items, dtype=np.int64)
        if len(self.keys) == 0:
            return np.zeros(len(q), dtype=bool)
        pos = np.minimum(np.searchsorted(self.keys, q), len(self.keys) - 1)
        return self.keys[pos] == q

    def sample(self, user_indices, n_neg: int = 1, flat: bool = True) -> np.ndarray:
        """Draw ``n_neg`` unconsumed items for every entry of ``user_indices``.

        Parameters
        ----------
        user_indices : array-like of int, shape (n,)
            Inner user indices (a user may repeat, e.g. one entry per positive row).
        n_neg : int
            Negatives per entry; an entry's negatives are drawn independently, so they may repeat
            each other.
        flat : bool
            Return shape ``(n * n_neg,)`` with entry ``j``'s negatives at ``j * n_neg ..
            (j + 1) * n_neg - 1`` (aligned with ``np.repeat(user_indices, n_neg)``), or
            ``(n, n_neg)`` when False.

        Returns
        -------
        np.ndarray of int32

        Raises
        ------
        ValueError
            When a user index is out of range, or a user has no item left to sample (consumed
            every item, or every item with a positive weight).
        """
        users = np.asarray(user_indices)
        if users.ndim != 1:
            raise ValueError(f"user_indices must be one-dimensional, got shape {users.shape}")
        if users.size and users.dtype.kind not in "iu":
            raise ValueError(f"user_indices must be integers, got dtype {users.dtype}")
        users = users.astype(np.int64)
        if not isinstance(n_neg, (int, np.integer)) or n_neg < 1:
            raise ValueError(f"n_neg must be a positive integer, got {n_neg!r}")
        if users.size and (users.min() < 0 or users.max() >= self.n_users):
            raise ValueError(f"user_indices must lie in [0, {self.n_users}), got values from "
                             f"{users.min()} to {users.max()}")
        self._check_room(users)
        users = np.repeat(users, n_neg)
        out = self._draw(len(users))
        todo = np.flatnonzero(self.is_consumed(users, out))
        rounds = 0
        while todo.size and rounds < MAX_ROUNDS:
            out[todo] = self._draw(len(todo))
            todo = todo[self.is_consumed(users[todo], out[todo])]
            rounds += 1
        if todo.size:
            self._exact(users, out, todo)
        out = out.astype(np.int32)
        return out if flat else out.reshape(-1, n_neg)

    def _draw(self, n: int) -> np.ndarray:
        if self.cdf is None:
            return self.rng.integers(0, self.n_items, n)
        return np.minimum(np.searchsorted(self.cdf, self.rng.random(n), side="right"),
                          self.n_items - 1)

    def _check_room(self, users: np.ndarray) -> None:
        if not users.size:
            return
        uniq = np.unique(users)
        if self.free_mass is None:
            full = uniq[self.n_consumed[uniq] >= self.n_items]
        else:
            full = uniq[(self.n_consumed[uniq] >= self.n_items) | (self.free_mass[uniq] <= 1e-12)]
        if full.size:
            raise ValueError(f"user {int(full[0])} (inner index) has no unconsumed item to sample"
                             f"{' with a positive weight' if self.free_mass is not None else ''}"
                             f" ({full.size} such users)")

    def _exact(self, users: np.ndarray, out: np.ndarray, todo: np.ndarray) -> None:
        """Finish the few entries left after ``MAX_ROUNDS`` by drawing from the free items."""
        for u in np.unique(users[todo]):
            rows = todo[users[todo] == u]
            taken = self.keys[self.indptr[u]:self.indptr[u + 1]] - u * self.n_items
            free = np.setdiff1d(np.arange(self.n_items), taken, assume_unique=True)
            p = None
            if self.cdf is not None:
                p = self.weights[free]
                free, p = free[p > 0], p[p > 0]
                p = p / p.sum()
            out[rows] = self.rng.choice(free, size=len(rows), p=p)


def sample_negatives(user_indices, consumed: sparse.csr_matrix, n_items: int, n_neg: int = 1,
                     item_weights=None, seed: int | np.random.Generator | None = None,
                     flat: bool = True) -> np.ndarray:
    """Draw ``n_neg`` items each user did not consume, for every entry of ``user_indices``.

    A one-call form of :class:`NegativeSampler` (which see for the parameters); build the
    sampler once instead when sampling many batches against the same consumed matrix.

    Returns
    -------
    np.ndarray of int32, shape (len(user_indices) * n_neg,), or (len(user_indices), n_neg)
    when ``flat=False``.

    Examples
    --------
    >>> negs = sample_negatives(train.user_indices, data_info.user_consumed,
    ...                         data_info.n_items, n_neg=4, seed=0)  # doctest: +SKIP
    """
    sampler = NegativeSampler(consumed, n_items, item_weights=item_weights, seed=seed)
    return sampler.sample(user_indices, n_neg=n_neg, flat=flat)
