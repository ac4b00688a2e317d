"""Neighbourhood models: blocked top-k similarities and the shared UserCF / ItemCF machinery.

Similarities between the rows of a sparse ``(n, m)`` matrix (items for ItemCF, users for
UserCF) are computed a block of rows at a time: the block's sparse product with the whole
matrix keeps only its ``k`` best entries per row before the next block starts. Memory
therefore grows with ``n * k`` plus room for one block (at most ``block_size * n``
similarities) per thread, never with ``n ** 2``.

Similarity vocabulary (``x_a`` is row ``a``, ``I_a`` its non-zero columns):

* cosine:  ``sim(a, b) = x_a . x_b / (|x_a| |x_b|)``;
* pearson: cosine after centring each row by the mean of its non-zero entries; entries that
  are not stored stay zero, so the products run over the columns both rows have and each
  norm over all of its row's entries;
* jaccard: ``|I_a & I_b| / |I_a | I_b|`` on the binarised matrix.

Only strictly positive similarities are kept as neighbours (pearson ones above
``PEARSON_FLOOR``, since centred rows can cancel to float32 rounding noise); a row is never its
own neighbour.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
from scipy import sparse

from libreco import logger
from libreco.algorithms.base import Recommender, own_params

SIM_TYPES = ("cosine", "pearson", "jaccard")
WEIGHTINGS = ("label", "binary", "inverse_frequency")
BLOCK_ENTRIES = 1 << 20  # auto block size: room for 1M similarities (8 MB) per block
SEGMENTS_PER_K = 4  # segments per wanted neighbour when bounding a row's k-th largest value
PEARSON_FLOOR = 1e-6  # pearson similarities at or below it count as zero
BIAS_SHRINKAGE = 5.0  # pseudo-count of the user and item biases of rating predictions

try:  # scipy's one-pass sparse product kernel (see block_product)
    from scipy.sparse._sparsetools import csr_matmat as _csr_matmat
except ImportError:  # pragma: no cover - depends on the scipy build
    _csr_matmat = None


def prepare_rows(matrix: sparse.spmatrix, sim_type: str) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Turn the raw ``(n, m)`` matrix into the one whose row products give the similarity.

    Returns
    -------
    x : scipy.sparse.csr_matrix of float32, shape (n, m)
        Rows scaled to unit norm (cosine, pearson after centring) or binarised (jaccard).
    counts : np.ndarray of float32, shape (n,)
        Non-zero entries per row of the input (the set sizes jaccard needs).
    """
    if sim_type not in SIM_TYPES:
        raise ValueError(f"sim_type must be one of {list(SIM_TYPES)}, got {sim_type!r}")
    x = sparse.csr_matrix(matrix, dtype=np.float32, copy=True)
    x.sum_duplicates()
    x.eliminate_zeros()
    counts = np.diff(x.indptr).astype(np.float32)
    rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    if sim_type == "jaccard":
        x.data[:] = 1.0
        return x, counts
    if sim_type == "pearson":
        # centre every row by the mean of its stored entries
        sums = np.bincount(rows, weights=x.data, minlength=x.shape[0])
        means = sums / np.maximum(counts, 1)
        x.data -= means[rows].astype(np.float32)
    # x_a / |x_a|
    norms = np.sqrt(np.bincount(rows, weights=x.data.astype(np.float64) ** 2,
                                minlength=x.shape[0]))
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    x.data *= scale[rows].astype(np.float32)
    x.eliminate_zeros()
    return x, counts


def block_product(a: sparse.csr_matrix, bt: sparse.csr_matrix,
                  workspace: dict | None = None) -> sparse.csr_matrix:
    """``a @ bt`` for one block of rows, with entries in no particular order within a row.

    scipy's ``@`` runs the sparse product twice (once to count the result, once to fill it);
    a block is small enough to give the result room for every entry, ``a.shape[0] * n``, and
    fill it in one pass. Falls back to ``@`` when scipy's kernel is not available.

    ``workspace`` (a dict owned by the calling thread) keeps that room between blocks; the
    result is then a view of it, valid until the next call with the same workspace.
    """
    if _csr_matmat is None:
        return a @ bt
    b, n = a.shape[0], bt.shape[1]
    size = b * n
    idx = np.int64 if max(size, a.nnz, bt.nnz) >= np.iinfo(np.int32).max else np.int32
    ws = {} if workspace is None else workspace
    if ws.get("size", -1) < size or ws["indices"].dtype != idx:
        ws.update(size=size, indices=np.empty(size, dtype=idx),
                  data=np.empty(size, dtype=np.float32))
    indptr = np.empty(b + 1, dtype=idx)
    indices, data = ws["indices"], ws["data"]
    _csr_matmat(b, n, a.indptr.astype(idx, copy=False), a.indices.astype(idx, copy=False),
                a.data, bt.indptr.astype(idx, copy=False), bt.indices.astype(idx, copy=False),
                bt.data, indptr, indices, data)
    nnz = int(indptr[-1])
    return sparse.csr_matrix((data[:nnz], indices[:nnz], indptr), shape=(b, n), copy=False)


def block_similarities(x: sparse.csr_matrix, xt: sparse.csr_matrix, counts: np.ndarray,
                       start: int, stop: int, sim_type: str, min_common: int,
                       binary: sparse.csr_matrix | None = None,
                       binary_t: sparse.csr_matrix | None = None,
                       workspace: dict | None = None) -> sparse.csr_matrix:
    """Sparse ``(stop - start, n)`` similarities of rows ``start:stop`` with every row.

    ``x`` and ``counts`` come from :func:`prepare_rows`, ``xt`` is ``x.T`` in CSR form;
    ``binary`` / ``binary_t`` (the binarised input and its transpose) are needed only for
    ``min_common > 1`` with cosine or pearson; ``workspace`` is passed to
    :func:`block_product`. Pairs with fewer than ``min_common`` common columns are left out
    or zero; each row's own entry is still there.
    """
    sims = block_product(x[start:stop], xt, workspace)
    if sim_type == "jaccard":
        common = sims.data
        rows = np.repeat(np.arange(start, stop), np.diff(sims.indptr))
        # |I_a & I_b| / (|I_a| + |I_b| - |I_a & I_b|)
        union = counts[rows] + counts[sims.indices] - common
        sims.data = np.where(common >= min_common, common / np.maximum(union, 1.0),
                             0.0).astype(np.float32)
    elif min_common > 1:
        common = binary[start:stop] @ binary_t
        sims = sparse.csr_matrix(sims.multiply(common >= min_common), dtype=np.float32)
    return sims


def top_k_rows(sims: sparse.csr_matrix, k: int, offset: int = 0,
               floor: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest entries above ``floor`` (and above 0) of every row of a sparse block.

    Parameters
    ----------
    sims : scipy.sparse.csr_matrix of float32, shape (b, n)
        Row ``r`` holds the similarities of row ``offset + r`` of the whole matrix, whose own
        entry (column ``offset + r``) is never chosen.
    k : int
    offset : int
    floor : float
        Entries at or below it are never chosen.

    Returns
    -------
    indices : np.ndarray of int32, shape (b, k)
        Column indices, best first, ties broken by the smaller column; ``-1`` pads rows with
        fewer than ``k`` entries above ``floor``.
    values : np.ndarray of float32, shape (b, k)
        The entries, ``0`` where ``indices`` is ``-1``.
    """
    b = sims.shape[0]
    indices = np.full((b, k), -1, dtype=np.int32)
    values = np.zeros((b, k), dtype=np.float32)
    indptr = np.asarray(sims.indptr, dtype=np.int64)
    vals = sims.data
    per_row = np.diff(indptr)
    if b == 0 or len(vals) == 0:
        return indices, values
    threshold = np.full(b, np.nextafter(np.float32(max(floor, 0.0)), np.float32(1)),
                        dtype=np.float32)

    # A lower bound on each row's k-th largest entry: cut the row's entries into up to
    # SEGMENTS_PER_K * (k + 1) segments and take the (k + 1)-th largest segment maximum;
    # k + 1 segments reach it, so at least k entries other than the row's own do. Only entries
    # at or above the bound can be among the top k, which leaves a few dozen candidates per
    # row to sort.
    width = SEGMENTS_PER_K * (k + 1)
    n_segments = np.minimum(per_row, width)
    if n_segments.max() > k + 1:
        seg_row = np.repeat(np.arange(b), n_segments)
        seg_first = np.cumsum(n_segments) - n_segments
        seg_pos = np.arange(len(seg_row)) - seg_first[seg_row]
        seg_start = indptr[seg_row] + seg_pos * per_row[seg_row] // n_segments[seg_row]
        table = np.full((b, width), -np.inf, dtype=np.float32)
        table[seg_row, seg_pos] = np.maximum.reduceat(vals, seg_start)
        bound = np.partition(table, width - k - 1, axis=1)[:, width - k - 1]
        np.maximum(threshold, bound, out=threshold)
    chosen = np.flatnonzero(vals >= np.repeat(threshold, per_row))
    rows = (np.searchsorted(indptr, chosen, side="right") - 1).astype(np.int64)
    cols = sims.indices[chosen].astype(np.int64)
    cand = vals[chosen].astype(np.float32, copy=False)
    not_self = cols != rows + offset
    rows, cols, cand = rows[not_self], cols[not_self], cand[not_self]

    # best first within each row, equal values by column: sort by (row, column), then stably
    # by (row, value descending); the bits of a positive float32 order like its value
    order = np.argsort((rows << 32) | cols)
    rows, cols, cand = rows[order], cols[order], cand[order]
    desc = 0x7FFFFFFF - cand.view(np.int32).astype(np.int64)
    order = np.argsort((rows << 32) | desc, kind="stable")
    rows, cols, cand = rows[order], cols[order], cand[order]
    first = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=b))[:-1]])
    rank = np.arange(len(rows)) - first[rows]
    keep = rank < k
    indices[rows[keep], rank[keep]] = cols[keep]
    values[rows[keep], rank[keep]] = cand[keep]
    return indices, values


def top_k_similarities(matrix: sparse.spmatrix, k: int, sim_type: str = "cosine",
                       min_common: int = 1, block_size: int | None = None,
                       num_threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` most similar other rows of a sparse matrix, computed in row blocks.

    Parameters
    ----------
    matrix : scipy.sparse matrix, shape (n, m)
        Rows are the things compared (items for ItemCF: the transposed user-item matrix).
    k : int
        Neighbours kept per row.
    sim_type : {"cosine", "pearson", "jaccard"}
    min_common : int
        Pairs with fewer common non-zero columns get no similarity.
    block_size : int, optional
        Rows per block; by default about ``1M / n`` (room for 1M similarities, 8 MB).
    num_threads : int
        Blocks computed at once (the sparse product and numpy release the GIL); 0 means one
        per CPU, at most 4. Peak memory grows with one block per thread.

    Returns
    -------
    indices : np.ndarray of int32, shape (n, k)
        Neighbour rows, best first; ``-1`` pads rows with fewer than ``k`` positive
        similarities.
    values : np.ndarray of float32, shape (n, k)
        Their similarities, ``0`` where ``indices`` is ``-1``.
    """
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not isinstance(min_common, (int, np.integer)) or min_common < 1:
        raise ValueError(f"min_common must be a positive integer, got {min_common!r}")
    x, counts = prepare_rows(matrix, sim_type)
    n = x.shape[0]
    block = auto_block_size(n) if block_size is None else int(block_size)
    if block < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    xt = x.T.tocsr()
    binary = binary_t = None
    if min_common > 1 and sim_type != "jaccard":
        # common columns of the input (centring may zero some entries of x)
        binary, _ = prepare_rows(matrix, "jaccard")
        binary_t = binary.T.tocsr()

    indices = np.full((n, k), -1, dtype=np.int32)
    values = np.zeros((n, k), dtype=np.float32)

    # centred rows can cancel exactly; keep float32 rounding noise out of the neighbours
    floor = PEARSON_FLOOR if sim_type == "pearson" else 0.0
    local = threading.local()

    def run(start: int) -> None:
        if not hasattr(local, "workspace"):
            local.workspace = {}
        stop = min(start + block, n)
        sims = block_similarities(x, xt, counts, start, stop, sim_type, min_common, binary,
                                  binary_t, local.workspace)
        indices[start:stop], values[start:stop] = top_k_rows(sims, k, start, floor)

    starts = range(0, n, block)
    threads = num_threads or min(os.cpu_count() or 1, 4)
    if threads > 1 and len(starts) > 1:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, starts))
    else:
        for start in starts:
            run(start)
    return indices, values


def auto_block_size(n: int) -> int:
    return int(max(16, min(n, BLOCK_ENTRIES // max(n, 1))))


def neighbour_matrix(indices: np.ndarray, values: np.ndarray, n: int) -> sparse.csr_matrix:
    """The ``(n, n)`` CSR matrix with row ``a`` holding ``a``'s neighbours and similarities."""
    valid = indices >= 0
    indptr = np.concatenate([[0], np.cumsum(valid.sum(axis=1))]).astype(np.int64)
    m = sparse.csr_matrix((values[valid].astype(np.float32), indices[valid], indptr),
                          shape=(n, n))
    m.sort_indices()
    return m


def pair_dots(left: sparse.csr_matrix, right_t: sparse.csr_matrix, rows: np.ndarray,
              cols: np.ndarray, budget: int = 1 << 22) -> np.ndarray:
    """``left[rows[p]] . right_t[cols[p]]`` for every pair ``p``, as float64.

    Pairs go in chunks whose selected rows hold at most about ``budget`` entries together, so
    that memory stays bounded however many pairs are asked for.
    """
    out = np.empty(len(rows), dtype=np.float64)
    sizes = np.diff(left.indptr)[rows] + np.diff(right_t.indptr)[cols]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    start = 0
    while start < len(rows):
        stop = int(np.searchsorted(offsets, offsets[start] + budget, side="right")) - 1
        stop = min(max(stop, start + 1), len(rows))
        product = left[rows[start:stop]].multiply(right_t[cols[start:stop]])
        out[start:stop] = np.asarray(product.sum(axis=1)).ravel()
        start = stop
    return out


class KNNRecommender(Recommender):
    """Shared body of :class:`~libreco.algorithms.UserCF` and :class:`ItemCF`.

    Subclasses set ``based_on`` (``"user"`` or ``"item"``; the neighbours are those of users or
    of items accordingly) and ``default_weighting``.
    """

    family = "knn"
    based_on: ClassVar[str] = ""
    default_weighting: ClassVar[str] = "label"

    def __init__(self, task: str, data_info, k_sim: int = 20, sim_type: str = "cosine",
                 min_common: int = 1, weighting: str | None = None,
                 block_size: int | None = None, num_threads: int = 0):
        weighting = self.default_weighting if weighting is None else weighting
        super().__init__(task, data_info, **own_params(KNNRecommender, locals()))
        if not isinstance(k_sim, (int, np.integer)) or isinstance(k_sim, bool) or k_sim < 1:
            raise ValueError(f"k_sim must be a positive integer, got {k_sim!r}")
        if sim_type not in SIM_TYPES:
            raise ValueError(f"sim_type must be one of {list(SIM_TYPES)}, got {sim_type!r}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {list(WEIGHTINGS)}, got {weighting!r}")
        if not isinstance(min_common, (int, np.integer)) or min_common < 1:
            raise ValueError(f"min_common must be a positive integer, got {min_common!r}")
        if block_size is not None and (not isinstance(block_size, (int, np.integer))
                                       or block_size < 1):
            raise ValueError(f"block_size must be a positive integer or None, got {block_size!r}")
        self.k_sim = int(k_sim)
        self.sim_type = sim_type
        self.min_common = int(min_common)
        self.weighting = weighting
        self.block_size = block_size
        self.num_threads = int(num_threads)
        self.sim_indices: np.ndarray | None = None
        self.sim_values: np.ndarray | None = None
        self._cache: dict[str, Any] = {}

    @property
    def n_entities(self) -> int:
        """Number of users (UserCF) or items (ItemCF) that have neighbours."""
        di = self.data_info
        return di.n_users if self.based_on == "user" else di.n_items

    # training ------------------------------------------------------------------------------
    def similarity_input(self) -> sparse.csr_matrix:
        """The matrix whose rows are compared: one row per user (UserCF) or item (ItemCF).

        Entries are the training labels, weighted by ``weighting``: unchanged (``"label"``),
        1 (``"binary"``), or divided by the square root of the number of interactions of their
        column (``"inverse_frequency"``: a user who consumed many items, or an item many users
        consumed, is weaker evidence that two rows are alike).
        """
        labels = self.data_info.user_consumed
        rows = labels if self.based_on == "user" else labels.T.tocsr()
        rows = sparse.csr_matrix(rows, dtype=np.float32, copy=True)
        if self.weighting == "binary":
            rows.data[:] = 1.0
        elif self.weighting == "inverse_frequency":
            per_column = np.bincount(rows.indices, minlength=rows.shape[1])
            rows.data /= np.sqrt(np.maximum(per_column, 1))[rows.indices].astype(np.float32)
        return rows

    def _fit(self, train_data, neg_sampling, verbose, eval_data, **options) -> None:
        rows = self.similarity_input()
        t0 = time.perf_counter()
        self.sim_indices, self.sim_values = top_k_similarities(
            rows, self.k_sim, self.sim_type, self.min_common, self.block_size, self.num_threads)
        self._cache = {}
        if verbose:
            filled = float((self.sim_indices >= 0).sum(axis=1).mean()) if rows.shape[0] else 0.0
            logger.info("%s: %s similarities of %d %ss in %.2fs (%.1f neighbours on average)",
                        self.algorithm, self.sim_type, self.n_entities, self.based_on,
                        time.perf_counter() - t0, filled)

    def _arrays(self) -> dict[str, np.ndarray]:
        self._require_arrays()
        return {"sim_indices": self.sim_indices, "sim_values": self.sim_values}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        indices = np.asarray(arrays["sim_indices"], dtype=np.int32)
        values = np.asarray(arrays["sim_values"], dtype=np.float32)
        n = self.n_entities
        if indices.shape != values.shape or indices.ndim != 2 or indices.shape[0] != n:
            raise ValueError(f"sim_indices and sim_values must both have shape ({n}, k_sim), "
                             f"got {indices.shape} and {values.shape}")
        if indices.size and (indices.min() < -1 or indices.max() >= n):
            raise ValueError(f"sim_indices must hold row indices in [0, {n}) or -1")
        self.sim_indices, self.sim_values = indices, values
        self._cache = {}

    def _require_arrays(self) -> None:
        if self.sim_indices is None or self.sim_values is None:
            raise RuntimeError(f"{type(self).__name__} has no similarities: call fit() or load()")

    def neighbours(self, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The first ``k`` (default ``k_sim``) neighbours of every user or item, best first.

        Returns
        -------
        indices : np.ndarray of int32, shape (n, min(k, k_sim)), ``-1`` padded
        values : np.ndarray of float32, same shape, ``0`` where ``indices`` is ``-1``
        """
        self._require_arrays()
        k = self.sim_indices.shape[1] if k is None else min(int(k), self.sim_indices.shape[1])
        return self.sim_indices[:, :k], self.sim_values[:, :k]

    # scoring helpers ------------------------------------------------------------------------
    def _matrices(self) -> dict[str, Any]:
        """Sparse operands of the scoring products, built once after fit or load.

        Every score is ``left[u] . right[:, j]``; ``right_t`` is ``right`` transposed, for
        single pairs. For ``task="rating"`` the labels in the product are the residuals
        ``r - b`` of the baseline (see :func:`baseline`), ``weight_*`` give the sum of the
        similarities that took part, and ``base_users`` / ``base_items`` the baseline terms.
        """
        if self._cache:
            return self._cache
        self._require_arrays()
        labels = sparse.csr_matrix(self.data_info.user_consumed, dtype=np.float32, copy=True)
        sim = neighbour_matrix(self.sim_indices, self.sim_values, self.n_entities)
        m: dict[str, Any] = {}
        if self.task == "rating":
            base_users, base_items = baseline(labels)
            rated = labels.copy()
            rated.data[:] = 1.0
            rows = np.repeat(np.arange(labels.shape[0]), np.diff(labels.indptr))
            labels.data -= base_users[rows] + base_items[labels.indices]
            weight_left, weight_right = (rated, sim) if self.based_on == "item" else (sim, rated)
            m.update(base_users=base_users, base_items=base_items, weight_left=weight_left,
                     weight_right=weight_right, weight_right_t=weight_right.T.tocsr())
        left, right = (labels, sim) if self.based_on == "item" else (sim, labels)
        m.update(left=left, right=right, right_t=right.T.tocsr())
        self._cache = m
        return m

    def _scores(self, users: np.ndarray) -> np.ndarray:
        m = self._matrices()
        users = np.asarray(users, dtype=np.int64)
        total = (m["left"][users] @ m["right"]).toarray()
        if self.task == "ranking":
            return total.astype(np.float32, copy=False)
        weight = (m["weight_left"][users] @ m["weight_right"]).toarray()
        base = m["base_users"][users][:, None] + m["base_items"][None, :]
        return _with_baseline(total, weight, base)

    def _predict_inner(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        m = self._matrices()
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        total = pair_dots(m["left"], m["right_t"], users, items)
        if self.task == "ranking":
            return total.astype(np.float32)
        weight = pair_dots(m["weight_left"], m["weight_right_t"], users, items)
        return _with_baseline(total, weight, m["base_users"][users] + m["base_items"][items])


def baseline(labels: sparse.csr_matrix,
             shrinkage: float = BIAS_SHRINKAGE) -> tuple[np.ndarray, np.ndarray]:
    """The baseline rating ``b_uj = mu + b_u + b_j`` of a ``(n_users, n_items)`` label matrix.

    ``mu`` is the mean label, ``b_j = sum_u (r_uj - mu) / (n_j + shrinkage)`` over the users
    who rated ``j`` and ``b_u = sum_j (r_uj - mu - b_j) / (n_u + shrinkage)``: shrinkage pulls
    the biases of users and items with few labels towards 0.

    Returns
    -------
    base_users : np.ndarray of float32, shape (n_users,)
        ``mu + b_u``.
    base_items : np.ndarray of float32, shape (n_items,)
        ``b_j``.
    """
    n_users, n_items = labels.shape
    data = labels.data.astype(np.float64)
    mu = float(data.mean()) if len(data) else 0.0
    rows = np.repeat(np.arange(n_users), np.diff(labels.indptr))
    cols = labels.indices
    item_bias = (np.bincount(cols, weights=data - mu, minlength=n_items)
                 / (np.bincount(cols, minlength=n_items) + shrinkage))
    user_bias = (np.bincount(rows, weights=data - mu - item_bias[cols], minlength=n_users)
                 / (np.bincount(rows, minlength=n_users) + shrinkage))
    return (mu + user_bias).astype(np.float32), item_bias.astype(np.float32)


def _with_baseline(total: np.ndarray, weight: np.ndarray, base: np.ndarray) -> np.ndarray:
    """``base + total / weight`` where some similarity took part, ``base`` elsewhere."""
    offset = np.divide(total, weight, out=np.zeros(np.shape(total), dtype=np.float64),
                       where=weight > 0)
    return (base + offset).astype(np.float32)
