"""Shared machinery of the matrix-factorisation models (SVD, SVD++, ALS, BPR).

Every model of the vector family scores a (user, item) pair as the inner product of a user
vector and an item vector. :class:`VectorRecommender` keeps those "serving vectors" (the learned
factors with biases folded in as extra components) and scores with them, so that what
``save_vector`` exports reproduces the model's own scores and rankings exactly.

The training helpers below work on mini-batches of rows: gather the rows' factors, compute every
row's gradient at once, then add the gradients back into the parameter tables with a sparse
matrix product (a scatter-add that sums repeated indices).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Iterator

import numpy as np
from numba import njit, prange
from scipy import sparse

from libreco.algorithms.base import Recommender
from libreco.utils.progress import log_epoch, progress

FLOAT = np.float32
NEG_TRIES = 16  # rejected negative draws before an exact draw (see unconsumed_item)


class VectorRecommender(Recommender):
    """A recommender whose score is ``user_vecs[u] @ item_vecs[i]``.

    Subclasses implement ``_fold()``, which turns the learned parameters into the serving
    vectors; ``_scores`` and ``_predict_inner`` use those vectors, so the exported vectors and
    the model agree by construction.
    """

    family = "vector"
    _vectors: tuple[np.ndarray, np.ndarray] | None = None

    @abstractmethod
    def _fold(self) -> tuple[np.ndarray, np.ndarray]:
        """Serving vectors from the current parameters (see ``user_item_vectors``)."""

    def _refresh(self) -> None:
        """Forget the cached serving vectors after the parameters changed."""
        self._vectors = None

    def _serving_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        if self._vectors is None:
            user_vecs, item_vecs = self._fold()
            self._vectors = (np.ascontiguousarray(user_vecs, dtype=FLOAT),
                             np.ascontiguousarray(item_vecs, dtype=FLOAT))
        return self._vectors

    def user_item_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """User and item vectors whose inner products are the model's scores.

        Returns
        -------
        user_vecs : np.ndarray of float32, shape (n_users, d')
        item_vecs : np.ndarray of float32, shape (n_items, d')
            ``user_vecs @ item_vecs.T`` equals the model's scores (predicted ratings for
            ``task="rating"``); biases, the global mean and implicit-feedback terms are folded
            in as extra components, so ``d'`` may exceed ``embed_size``.
        """
        self._require_fitted()
        user_vecs, item_vecs = self._serving_vectors()
        return user_vecs.copy(), item_vecs.copy()

    def _scores(self, users: np.ndarray) -> np.ndarray:
        user_vecs, item_vecs = self._serving_vectors()
        return user_vecs[users] @ item_vecs.T

    def _predict_inner(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        user_vecs, item_vecs = self._serving_vectors()
        return np.einsum("nd,nd->n", user_vecs[users], item_vecs[items])

    def check_finite(self) -> None:
        super().check_finite()
        self._refresh()


# -- parameters -------------------------------------------------------------------------------
def normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Float32 factors drawn from N(0, std²)."""
    return (rng.standard_normal(shape, dtype=np.float64) * std).astype(FLOAT)


def as_float(arrays: dict[str, np.ndarray], *names: str) -> list[np.ndarray]:
    """The named arrays as contiguous float32 copies, for ``_set_arrays``."""
    return [np.array(arrays[n], dtype=FLOAT, copy=True, order="C") for n in names]


def check_positive(name: str, value, integer: bool = False, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is a positive (int) number."""
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    ok = isinstance(value, kinds) and not isinstance(value, bool)
    if ok:
        ok = value >= 0 if allow_zero else value > 0
    if not ok:
        what = "integer" if integer else "number"
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a {what} {bound}, got {value!r}")


# -- mini-batches and scatter-add ---------------------------------------------------------------
def minibatches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Row numbers ``0 .. n - 1`` in a fresh random order, ``batch_size`` at a time."""
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def scatter_add(table: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """``table[index] += values`` with repeated indices summed, in place.

    Parameters
    ----------
    table : np.ndarray of shape (n, d) or (n,)
    index : np.ndarray of int, shape (b,)
    values : np.ndarray of shape (b, d) or (b,)
    """
    b = len(index)
    if b == 0:
        return
    if values.ndim == 1:
        np.add.at(table, index, values)
        return
    # sort the rows by index; a (n_distinct, b) 0/1 CSR matrix then sums each run of equal
    # indices in one sparse product
    order = np.argsort(index, kind="stable")
    ordered = index[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    summer = sparse.csr_matrix((np.ones(b, dtype=values.dtype), order, np.r_[starts, b]),
                               shape=(len(starts), b))
    table[ordered[starts]] += summer @ values


def rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise inner products of two (n, d) arrays."""
    return np.einsum("nd,nd->n", a, b)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, without overflow warnings for large ``|x|``."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


# -- epochs ---------------------------------------------------------------------------------
def epochs(name: str, n_epochs: int, verbose: int) -> Iterator[tuple[int, float]]:
    """Yield ``(epoch, started)`` for epochs ``1 .. n_epochs`` behind a progress bar on a
    terminal; pair with :func:`end_epoch` for the log line."""
    for epoch in progress(range(1, n_epochs + 1), verbose, desc=name, total=n_epochs):
        yield epoch, time.perf_counter()


def end_epoch(name: str, epoch: int, n_epochs: int, started: float, verbose: int,
              **figures: float) -> None:
    """Log one line for a finished epoch (nothing when ``verbose`` is 0)."""
    log_epoch(name, epoch, n_epochs, started, verbose, **figures)


def negative_sampler(data_info, rng: np.random.Generator):
    """A :class:`~libreco.data.sampling.NegativeSampler` of unconsumed items, uniform."""
    from libreco.data.sampling import NegativeSampler

    return NegativeSampler(data_info.user_consumed, data_info.n_items, seed=rng)


def group_by_user(users: np.ndarray, n_users: int, rng: np.random.Generator):
    """Rows grouped by user, in random order inside each user, and the users in random order.

    Returns
    -------
    rows : np.ndarray of int64, shape (n,)
        Row numbers, user by user.
    indptr : np.ndarray of int64, shape (n_users + 1,)
        ``rows[indptr[u]:indptr[u + 1]]`` are the rows of user ``u``.
    user_order : np.ndarray of int64, shape (n_users,)
        A random permutation of the users, the order in which to visit them.
    """
    rows = np.lexsort((rng.random(len(users)), users))
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
    return rows, indptr, rng.permutation(n_users).astype(np.int64)


# -- compiled kernels ---------------------------------------------------------------------------
# Per-row stochastic gradient descent is sequential by nature: numpy cannot vectorise it without
# changing the algorithm, so these loops are compiled with numba (on first call, cached on disk).
# BPR's loop alone runs on several threads, each on its own shard of the rows (Hogwild).
# ``kernel.py_func`` is the same code run by the interpreter: the tests' slow reference.
@njit(cache=True, nogil=True)
def svdpp_epoch(user_order, row_indptr, row_items, row_labels, imp_indptr, imp_indices,
                 user_factors, item_factors, user_bias, item_bias, implicit_factors,
                 mu, lr, reg, logistic):
    """One SGD pass of SVD++ over rows grouped by user; returns the summed loss.

    The implicit term ``z = |N(u)|^-1/2 Σ_{j in N(u)} y_j`` is computed once per user. A row's
    step on every ``y_j`` of ``N(u)``, ``y_j += lr (e |N(u)|^-1/2 q_i - reg y_j)``, moves ``z``
    by exactly ``lr (e q_i - reg z)``; ``z`` is updated that way after each row, and the
    ``y_j`` receive the same sequence of steps in closed form after the user's last row.
    """
    d = user_factors.shape[1]
    z = np.zeros(d, dtype=user_factors.dtype)
    acc = np.zeros(d, dtype=user_factors.dtype)
    shrink = 1.0 - lr * reg
    total = 0.0
    for k in range(len(user_order)):
        u = user_order[k]
        start, end = row_indptr[u], row_indptr[u + 1]
        if start == end:
            continue
        a, b = imp_indptr[u], imp_indptr[u + 1]
        norm = 1.0 / np.sqrt(max(b - a, 1))
        z[:] = 0.0
        for jj in range(a, b):
            z += implicit_factors[imp_indices[jj]]
        z *= norm
        acc[:] = 0.0
        for r in range(start, end):
            i = row_items[r]
            pred = mu + user_bias[u] + item_bias[i]
            for f in range(d):
                pred += item_factors[i, f] * (user_factors[u, f] + z[f])
            if logistic:
                prob = 1.0 / (1.0 + np.exp(-pred))
                err = row_labels[r] - prob
                total -= np.log(max(prob if row_labels[r] > 0.5 else 1.0 - prob, 1e-7))
            else:
                err = row_labels[r] - pred
                total += err * err
            user_bias[u] += lr * (err - reg * user_bias[u])
            item_bias[i] += lr * (err - reg * item_bias[i])
            for f in range(d):
                p = user_factors[u, f]
                q = item_factors[i, f]
                user_factors[u, f] += lr * (err * q - reg * p)
                item_factors[i, f] += lr * (err * (p + z[f]) - reg * q)
                acc[f] = acc[f] * shrink + lr * norm * err * q
                z[f] += lr * (err * q - reg * z[f])
        decay = shrink ** (end - start)
        for jj in range(a, b):
            j = imp_indices[jj]
            for f in range(d):
                implicit_factors[j, f] = implicit_factors[j, f] * decay + acc[f]
    return total


@njit(cache=True, nogil=True, inline="always")
def rand64(state, s):
    """Next 64 random bits of stream ``s`` (xorshift64*), advancing ``state[s]`` in place."""
    x = state[s]
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    state[s] = x
    return x * np.uint64(0x2545F4914F6CDD1D)


@njit(cache=True, nogil=True, inline="always")
def rand_below(state, s, n):
    """A random integer in ``[0, n)`` from stream ``s``, for ``1 <= n < 2**32``."""
    return np.int64(((rand64(state, s) >> np.uint64(32)) * np.uint64(n)) >> np.uint64(32))


@njit(cache=True, nogil=True, inline="always")
def is_consumed(indptr, indices, u, j):
    """Whether item ``j`` is among the sorted ``indices[indptr[u]:indptr[u + 1]]``."""
    lo, hi = indptr[u], indptr[u + 1]
    while lo < hi:
        mid = (lo + hi) >> 1
        if indices[mid] < j:
            lo = mid + 1
        else:
            hi = mid
    return lo < indptr[u + 1] and indices[lo] == j


@njit(cache=True, nogil=True, inline="always")
def unconsumed_item(indptr, indices, n_items, u, state, s):
    """An item drawn uniformly among those user ``u`` did not consume (there must be one).

    A few rejected draws, then an exact draw of the t-th unconsumed item for the rare user who
    consumed most of the catalogue; both are uniform, so their mix is too.
    """
    for _ in range(NEG_TRIES):
        j = rand_below(state, s, n_items)
        if not is_consumed(indptr, indices, u, j):
            return j
    j = rand_below(state, s, n_items - (indptr[u + 1] - indptr[u]))
    for k in range(indptr[u], indptr[u + 1]):
        if indices[k] > j:
            break
        j += 1
    return j


@njit(cache=True, nogil=True, parallel=True, fastmath=True)
def bpr_epoch(order, users, items, indptr, indices, n_items, user_factors, item_factors,
              item_bias, lr, reg, state):
    """One SGD pass of BPR over the training rows; returns the summed loss ``-Σ ln σ(x_uij)``.

    For each row ``(u, i)`` an item ``j`` that ``u`` did not consume (per the sorted CSR
    ``indptr``, ``indices``) is drawn uniformly, and the triple ascends ``ln σ(x_uij)`` with
    ``x_uij = p_u · (q_i - q_j) + b_i - b_j``. The rows are first shuffled in place in
    ``order`` (int64, shape (n,)) with random stream 0; then ``order`` is cut into
    ``len(state)`` equal shards, shard ``s`` visited by one thread with random stream
    ``state[s]`` (uint64, advanced in place). Threads update the shared float32 factors without
    locks (Hogwild), so only a single shard gives a result that does not depend on timing.
    """
    n = len(order)
    n_shards = len(state)
    d = user_factors.shape[1]
    lr = np.float32(lr)
    reg = np.float32(reg)
    one = np.float32(1.0)
    # Fisher-Yates shuffle of the row order
    for k in range(n - 1, 0, -1):
        t = rand_below(state, 0, k + 1)
        order[k], order[t] = order[t], order[k]
    losses = np.zeros(n_shards)
    for s in prange(n_shards):
        loss = 0.0
        for k in range(s * n // n_shards, (s + 1) * n // n_shards):
            r = order[k]
            u, i = users[r], items[r]
            j = unconsumed_item(indptr, indices, n_items, u, state, s)
            pu, qi, qj = user_factors[u], item_factors[i], item_factors[j]
            x = item_bias[i] - item_bias[j]
            for f in range(d):
                x += pu[f] * (qi[f] - qj[f])
            # gradient weight σ(-x) and loss -ln σ(x), without overflow
            if x >= 0:
                e = np.exp(-x)
                g = e / (one + e)
                loss += np.log1p(e)
            else:
                e = np.exp(x)
                g = one / (one + e)
                loss += np.log1p(e) - x
            item_bias[i] += lr * (g - reg * item_bias[i])
            item_bias[j] += lr * (-g - reg * item_bias[j])
            for f in range(d):
                p, a, b = pu[f], qi[f], qj[f]
                pu[f] = p + lr * (g * (a - b) - reg * p)
                qi[f] = a + lr * (g * p - reg * a)
                qj[f] = b + lr * (-g * p - reg * b)
        losses[s] = loss
    return losses.sum()


@njit(cache=True, nogil=True, parallel=True, fastmath=True)
def gram(y, n_chunks):
    """``yᵀ y`` of a float32 (n, d) array, as float32 (d, d).

    Runs of rows go to numba's threads, each summing into its own (d, d) part. Computed here
    rather than by BLAS so that the solver's threads and a second thread pool never compete
    for the cores (a multithreaded BLAS call this small can stall for many milliseconds on a
    busy machine).
    """
    n, d = y.shape
    parts = np.zeros((n_chunks, d, d), dtype=np.float32)
    for c in prange(n_chunks):
        acc = parts[c]
        for j in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            for g in range(d):
                yg = y[j, g]
                for f in range(d):
                    acc[g, f] += yg * y[j, f]
    out = np.zeros((d, d), dtype=np.float32)
    for c in range(n_chunks):
        out += parts[c]
    return out


def row_chunks(indptr: np.ndarray, d: int, n_chunks: int) -> np.ndarray:
    """Boundaries of at most ``n_chunks`` runs of consecutive rows of about equal solver cost.

    A row costs about ``2 nnz_u + d`` multiply-adds of length ``d`` per CG step (its entries,
    then the shared ``d x d`` matrix); equal-cost runs keep the threads of :func:`cg_rows`
    equally busy when a few rows hold most of the entries.

    Returns
    -------
    np.ndarray of int64, shape (n + 1,)
        Increasing from 0 to ``n_rows``; run ``c`` is ``bounds[c]:bounds[c + 1]``.
    """
    n_rows = len(indptr) - 1
    cost = np.zeros(n_rows + 1)
    np.cumsum(2.0 * np.diff(indptr) + d, out=cost[1:])
    bounds = np.searchsorted(cost, np.linspace(0.0, cost[-1], max(n_chunks, 1) + 1))
    bounds[0], bounds[-1] = 0, n_rows
    return np.unique(bounds).astype(np.int64)


@njit(cache=True, nogil=True, parallel=True, fastmath=True)
def cg_rows(x, y, base, use_base, indptr, indices, weight, rhs, reg, steps, bounds):
    """Conjugate-gradient steps for every row ``u`` of ``x`` (in place) on

        (base + Σ_k weight_k y_k y_kᵀ + reg_u I) x_u = Σ_k rhs_k y_k

    with ``k`` over ``indices[indptr[u]:indptr[u + 1]]``; ``base`` (d, d) is skipped unless
    ``use_base``. All arrays are float32 (int for the indices). The runs of rows
    ``bounds[c]:bounds[c + 1]`` (see :func:`row_chunks`) go to the threads, each with its own
    four scratch vectors; rows are independent, so the result does not depend on the thread
    count.
    """
    d = x.shape[1]
    zero = np.float32(0.0)
    for c in prange(len(bounds) - 1):
        xu = np.empty(d, dtype=np.float32)
        r = np.empty(d, dtype=np.float32)
        p = np.empty(d, dtype=np.float32)
        ap = np.empty(d, dtype=np.float32)
        for u in range(bounds[c], bounds[c + 1]):
            lam = reg[u]
            # r = b - A x, b = Σ_k rhs_k y_k
            for f in range(d):
                xu[f] = x[u, f]
                r[f] = -lam * xu[f]
            if use_base:
                for g in range(d):
                    s = zero
                    for f in range(d):
                        s += base[g, f] * xu[f]
                    r[g] -= s
            for k in range(indptr[u], indptr[u + 1]):
                j = indices[k]
                dot = zero
                for f in range(d):
                    dot += y[j, f] * xu[f]
                coef = rhs[k] - weight[k] * dot
                for f in range(d):
                    r[f] += coef * y[j, f]
            rs = zero
            for f in range(d):
                p[f] = r[f]
                rs += r[f] * r[f]
            for _ in range(steps):
                if rs <= 1e-20:
                    break
                # ap = A p
                if use_base:
                    for g in range(d):
                        s = zero
                        for f in range(d):
                            s += base[g, f] * p[f]
                        ap[g] = s + lam * p[g]
                else:
                    for f in range(d):
                        ap[f] = lam * p[f]
                for k in range(indptr[u], indptr[u + 1]):
                    j = indices[k]
                    dot = zero
                    for f in range(d):
                        dot += y[j, f] * p[f]
                    dot *= weight[k]
                    for f in range(d):
                        ap[f] += dot * y[j, f]
                pap = zero
                for f in range(d):
                    pap += p[f] * ap[f]
                if pap <= 0.0:
                    break
                step = rs / pap
                rs_new = zero
                for f in range(d):
                    xu[f] += step * p[f]
                    r[f] -= step * ap[f]
                    rs_new += r[f] * r[f]
                beta = rs_new / rs
                for f in range(d):
                    p[f] = r[f] + beta * p[f]
                rs = rs_new
            for f in range(d):
                x[u, f] = xu[f]
