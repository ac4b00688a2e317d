"""Alternating least squares, for implicit feedback (ranking) and for ratings."""

from __future__ import annotations

import numpy as np
from numba import get_num_threads
from scipy import sparse

from libreco.algorithms._mf import (
    FLOAT,
    VectorRecommender,
    as_float,
    cg_rows,
    check_positive,
    end_epoch,
    epochs,
    gram,
    normal,
    row_chunks,
    rowdot,
)
from libreco.algorithms.base import own_params

BLOCK_NNZ = 1 << 18  # interactions gathered at once by the solver (x embed_size floats)
CHUNKS_PER_THREAD = 8  # runs of rows of equal cost per solver thread


class ALS(VectorRecommender):
    """Matrix factorisation fitted by alternating least squares.

    ``task="ranking"`` is implicit-feedback ALS (Hu, Koren and Volinsky, 2008): every
    (user, item) pair is a preference ``p_ui`` (1 for consumed pairs, else 0) with confidence
    ``c_ui = 1 + alpha * r_ui``, where ``r_ui`` is the training label (1 for plain
    interactions), and the loss is ``Σ_ui c_ui (p_ui - x_u · y_i)² + reg (|x_u|² + |y_i|²)``.
    Each half-step solves, for every user,

        (YᵀY + Yᵀ (C_u - I) Y + reg I) x_u = Yᵀ C_u p_u

    (and symmetrically for items); ``YᵀY`` is shared, so the cost is in the consumed pairs
    only. A pair scores ``x_u · y_i``.

    ``task="rating"`` fits ``mu + b_u + b_i + x_u · y_i`` to the observed labels only, with
    weighted-lambda regularisation (Zhou et al., 2008): each user's (item's) penalty is
    ``reg`` times its number of ratings, so each row's system is
    ``(Y_uᵀ Y_u + reg n_u I) x_u = Y_uᵀ (r_u - mu - b)`` with the bias solved as one more
    component.

    Parameters
    ----------
    embed_size : int
        Number of latent factors.
    n_epochs : int
        Alternations (users then items).
    reg : float, optional
        L2 penalty (times each row's number of ratings for ``task="rating"``); by default 10
        for ranking and 0.1 for rating.
    alpha : float
        Confidence slope for ``task="ranking"``; unused for rating.
    use_cg : bool
        Solve each row's system approximately with ``cg_steps`` conjugate-gradient steps warm
        started from the previous solution (fast, the default), or exactly.
    cg_steps : int
        Conjugate-gradient steps per half-step.
    init_std : float
        Standard deviation of the initial factors.
    seed : int
        Seed of the initialisation; the updates themselves are deterministic.
    """

    algorithm = "als"
    compiled = True  # the numba CG kernel; False runs the numpy reference (same iterates)

    def __init__(self, task: str, data_info, embed_size: int = 64, n_epochs: int = 15,
                 reg: float | None = None, alpha: float = 2.0, use_cg: bool = True,
                 cg_steps: int = 3, init_std: float = 0.01, seed: int = 42):
        super().__init__(task, data_info, **own_params(ALS, locals()))
        check_positive("embed_size", embed_size, integer=True)
        check_positive("n_epochs", n_epochs, integer=True)
        check_positive("cg_steps", cg_steps, integer=True)
        check_positive("alpha", alpha, allow_zero=True)
        check_positive("init_std", init_std, allow_zero=True)
        if reg is None:
            reg = self.params["reg"] = 0.1 if task == "rating" else 10.0
        check_positive("reg", reg, allow_zero=True)
        self.embed_size = int(embed_size)
        self.n_epochs = int(n_epochs)
        self.reg = float(reg)
        self.alpha = float(alpha)
        self.use_cg = bool(use_cg)
        self.cg_steps = int(cg_steps)
        self.init_std = float(init_std)
        self.seed = int(seed)

    # -- parameters -----------------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {"user_factors": self.user_factors, "item_factors": self.item_factors}
        if self.task == "rating":
            arrays.update(user_bias=self.user_bias, item_bias=self.item_bias)
        return arrays

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_factors, self.item_factors = as_float(arrays, "user_factors", "item_factors")
        if self.task == "rating":
            self.user_bias, self.item_bias = as_float(arrays, "user_bias", "item_bias")
        self._refresh()

    def _fold(self) -> tuple[np.ndarray, np.ndarray]:
        if self.task == "ranking":
            return self.user_factors, self.item_factors
        # user [x_u, 1, b_u + mu] · item [y_i, b_i, 1] = mu + b_u + b_i + x_u · y_i
        mu = self.data_info.global_mean
        n_users, n_items = self.data_info.n_users, self.data_info.n_items
        return (np.hstack([self.user_factors, np.ones((n_users, 1), dtype=FLOAT),
                           (self.user_bias + mu)[:, None]]),
                np.hstack([self.item_factors, self.item_bias[:, None],
                           np.ones((n_items, 1), dtype=FLOAT)]))

    # -- training -------------------------------------------------------------------------------
    def _fit(self, train_data, neg_sampling, verbose, eval_data, **options) -> None:
        rng = np.random.default_rng(self.seed)
        n_users, n_items, d = self.data_info.n_users, self.data_info.n_items, self.embed_size
        self.user_factors = normal(rng, (n_users, d), self.init_std)
        self.item_factors = normal(rng, (n_items, d), self.init_std)
        by_user = self.data_info.user_consumed.astype(FLOAT)
        by_item = by_user.T.tocsr()
        by_item.sort_indices()
        if self.task == "ranking":
            step = self._implicit_epoch
        else:
            self.user_bias = np.zeros(n_users, dtype=FLOAT)
            self.item_bias = np.zeros(n_items, dtype=FLOAT)
            step = self._explicit_epoch
        for epoch, started in epochs(self.algorithm, self.n_epochs, verbose):
            step(by_user, by_item)
            end_epoch(self.algorithm, epoch, self.n_epochs, started, verbose)

    def _implicit_epoch(self, by_user: sparse.csr_matrix, by_item: sparse.csr_matrix) -> None:
        for rows, solve, other in ((by_user, self.user_factors, self.item_factors),
                                   (by_item, self.item_factors, self.user_factors)):
            # c - 1 = alpha r weighs the Gram matrix, c p = 1 + alpha r is the right-hand side
            extra = self.alpha * rows.data
            yty = (gram(other, CHUNKS_PER_THREAD * get_num_threads()) if self.compiled
                   else other.T @ other)
            self._solve(solve, other, rows, extra, 1.0 + extra, yty,
                        np.full(rows.shape[0], self.reg, dtype=FLOAT))

    def _explicit_epoch(self, by_user: sparse.csr_matrix, by_item: sparse.csr_matrix) -> None:
        mu = self.data_info.global_mean
        sides = ((by_user, "user_factors", "user_bias", "item_factors", "item_bias"),
                 (by_item, "item_factors", "item_bias", "user_factors", "user_bias"))
        for rows, factors, bias, other_factors, other_bias in sides:
            # unknowns [x, b] against [y, 1], targets r - mu - b_other
            solve = np.hstack([getattr(self, factors), getattr(self, bias)[:, None]])
            other = np.hstack([getattr(self, other_factors),
                               np.ones((rows.shape[1], 1), dtype=FLOAT)])
            target = rows.data - mu - getattr(self, other_bias)[rows.indices]
            counts = np.diff(rows.indptr).astype(FLOAT)
            self._solve(solve, other, rows, np.ones_like(target), target, None,
                        self.reg * np.maximum(counts, 1.0))
            setattr(self, factors, np.ascontiguousarray(solve[:, :-1]))
            setattr(self, bias, np.ascontiguousarray(solve[:, -1]))

    def _solve(self, x: np.ndarray, y: np.ndarray, rows: sparse.csr_matrix, weight: np.ndarray,
               rhs: np.ndarray, base: np.ndarray | None, reg: np.ndarray) -> None:
        """Update every row ``u`` of ``x`` (in place) towards the solution of

            (base + Σ_k weight_k y_k y_kᵀ + reg_u I) x_u = Σ_k rhs_k y_k

        where ``k`` runs over the stored entries of row ``u`` of ``rows`` and ``y_k`` is the
        row of ``y`` at that entry's column; blocks of rows bound the gathered memory.
        """
        if self.use_cg and self.compiled:
            use_base = base is not None
            bounds = row_chunks(rows.indptr, y.shape[1], CHUNKS_PER_THREAD * get_num_threads())
            cg_rows(x, np.ascontiguousarray(y, dtype=FLOAT),
                    base.astype(FLOAT) if use_base else np.zeros((1, 1), dtype=FLOAT), use_base,
                    rows.indptr, rows.indices, weight.astype(FLOAT, copy=False),
                    rhs.astype(FLOAT, copy=False), reg.astype(FLOAT, copy=False), self.cg_steps,
                    bounds)
            return
        indptr = rows.indptr
        n_rows = len(indptr) - 1
        start = 0
        while start < n_rows:
            # the largest block from ``start`` whose entries fit in BLOCK_NNZ (at least one row)
            stop = int(np.searchsorted(indptr, indptr[start] + BLOCK_NNZ, side="right")) - 1
            stop = min(max(stop, start + 1), n_rows)
            lo, hi = indptr[start], indptr[stop]
            block = _Block(y, rows.indices[lo:hi], indptr[start:stop + 1] - lo,
                           weight[lo:hi], base, reg[start:stop])
            b = block.gather(rhs[lo:hi])
            if self.use_cg:
                x[start:stop] = block.conjugate_gradient(x[start:stop], b, self.cg_steps)
            else:
                x[start:stop] = block.exact(b)
            start = stop


class _Block:
    """The normal equations of a block of rows, applied without forming them (for CG) or
    formed and solved exactly."""

    def __init__(self, y, indices, indptr, weight, base, reg):
        self.y = y
        self.indices = indices
        self.indptr = indptr
        self.weight = weight.astype(FLOAT)
        self.base = base
        self.reg = reg.astype(FLOAT)
        self.n_rows = len(indptr) - 1
        self.owner = np.repeat(np.arange(self.n_rows), np.diff(indptr))
        self.yk = y[indices]  # (nnz, d): the other side's vector at every entry

    def gather(self, coef: np.ndarray) -> np.ndarray:
        """``Σ_k coef_k y_k`` for every row: (n_rows, d)."""
        m = sparse.csr_matrix((coef.astype(FLOAT), self.indices, self.indptr),
                              shape=(self.n_rows, self.y.shape[0]))
        return m @ self.y

    def apply(self, v: np.ndarray) -> np.ndarray:
        """``A v`` row by row, with ``A_u = base + Σ_k w_k y_k y_kᵀ + reg_u I``."""
        out = self.reg[:, None] * v
        if self.base is not None:
            out += v @ self.base
        out += self.gather(self.weight * rowdot(self.yk, v[self.owner]))
        return out

    def conjugate_gradient(self, x: np.ndarray, b: np.ndarray, steps: int) -> np.ndarray:
        x = x.copy()
        r = b - self.apply(x)
        p = r.copy()
        rs = rowdot(r, r)
        for _ in range(steps):
            ap = self.apply(p)
            pap = rowdot(p, ap)
            step = np.divide(rs, pap, out=np.zeros_like(rs), where=pap > 0)
            x += step[:, None] * p
            r -= step[:, None] * ap
            rs_new = rowdot(r, r)
            beta = np.divide(rs_new, rs, out=np.zeros_like(rs), where=rs > 0)
            p = r + beta[:, None] * p
            rs = rs_new
        return x

    def exact(self, b: np.ndarray) -> np.ndarray:
        d = self.y.shape[1]
        a = np.zeros((self.n_rows, d, d), dtype=np.float64)
        if self.base is not None:
            a += self.base
        a[:, np.arange(d), np.arange(d)] += self.reg[:, None]
        # Σ_k w_k y_k y_kᵀ per row, a few thousand entries at a time
        step = max(1, (1 << 22) // (d * d))
        for s in range(0, len(self.owner), step):
            yk = self.yk[s:s + step].astype(np.float64)
            outer = (yk[:, :, None] * yk[:, None, :]).reshape(len(yk), d * d)
            owner = self.owner[s:s + step]
            summer = sparse.csr_matrix((self.weight[s:s + step].astype(np.float64),
                                        (owner, np.arange(len(owner)))),
                                       shape=(self.n_rows, len(owner)))
            a += (summer @ outer).reshape(self.n_rows, d, d)
        return np.linalg.solve(a, b.astype(np.float64)[:, :, None])[:, :, 0].astype(FLOAT)
