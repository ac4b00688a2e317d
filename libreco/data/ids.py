"""Original ids <-> contiguous inner indices.

Original ids may be ints or strings. They are kept in their original Python type so that answers
carry the same type the training data had, and they round-trip through JSON unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import sparse


def normalize_id(value):
    """Turn a numpy scalar into the equivalent plain Python value (int, float or str)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value


class IdMap:
    """A bijection between original ids and inner indices ``0 .. n - 1``.

    Parameters
    ----------
    ids : sequence
        Original ids in inner-index order, without duplicates.
    """

    def __init__(self, ids: Sequence):
        self.ids: list = [normalize_id(v) for v in ids]
        self.index: dict = {v: i for i, v in enumerate(self.ids)}
        if len(self.index) != len(self.ids):
            raise ValueError("ids must be unique")
        # Requests often carry ids as strings ("1") when training used ints (1); this lookup
        # accepts both spellings when it is unambiguous.
        self._str_index: dict[str, int] = {}
        for i, v in enumerate(self.ids):
            self._str_index.setdefault(str(v), i)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, value) -> bool:
        return self.lookup(value) >= 0

    def lookup(self, value) -> int:
        """Inner index of one original id, or -1 when it is unknown."""
        value = normalize_id(value)
        try:
            idx = self.index.get(value)
        except TypeError:  # unhashable input
            return -1
        if idx is not None:
            return idx
        return self._str_index.get(str(value), -1)

    def lookup_many(self, values: Iterable) -> np.ndarray:
        """Inner indices (int64) for many original ids; -1 marks unknown ones."""
        values = list(values)
        return np.fromiter((self.lookup(v) for v in values), dtype=np.int64, count=len(values))

    def originals(self, indices: Iterable[int]) -> list:
        ids = self.ids
        return [ids[int(i)] for i in indices]

    @classmethod
    def from_values(cls, values) -> tuple[IdMap, np.ndarray]:
        """Build a map from a column of values, ordered by first appearance.

        Returns the map and the inner index of every value.
        """
        codes, uniques = pd.factorize(np.asarray(values), sort=False)
        return cls(list(uniques)), codes.astype(np.int32)


def group_order(codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Stable order that groups rows by inner index: ``np.argsort(codes, kind="stable")``.

    Parameters
    ----------
    codes : np.ndarray of int, shape (n,)
        Inner indices in ``[0, n_groups)``.
    n_groups : int

    Returns
    -------
    np.ndarray of int, shape (n,)

    Notes
    -----
    Computed as a counting sort, in linear time: building a CSR matrix from coordinates
    ``(codes[j], j)`` places each row's entries in input order, so its column indices are the
    row numbers grouped by code. That is several times faster than a comparison sort on
    millions of rows.
    """
    n = len(codes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    cols = np.arange(n, dtype=np.int32 if n < 2 ** 31 else np.int64)
    m = sparse.csr_matrix((np.ones(n, dtype=np.int8), (codes, cols)), shape=(n_groups, n))
    return m.indices
