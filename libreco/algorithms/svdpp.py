"""SVD++: biased matrix factorisation with each user's implicit feedback."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from libreco.algorithms._mf import FLOAT, as_float, group_by_user, normal, svdpp_epoch
from libreco.algorithms.base import own_params
from libreco.algorithms.svd import SVD


class SVDpp(SVD):
    """SVD with an implicit-feedback term in the user vector.

    A pair scores ``mu + b_u + b_i + q_i · (p_u + |N(u)|^-1/2 Σ_{j ∈ N(u)} y_j)`` where
    ``N(u)`` is the set of items the user interacted with in training and every item has a
    second factor vector ``y_j``. The implicit term lets users with few labels borrow from what
    they chose to rate. Parameters and training are those of :class:`SVD`; the ``y_j`` get the
    same learning rate and penalty.

    Training visits the users in random order and each user's rows in random order with
    per-row SGD (a compiled loop), so ``batch_size`` is not used. The implicit term is computed
    once per user and epoch and kept exact after every row, which makes an epoch cost
    ``O((n_rows + n_interactions) · embed_size)`` instead of ``O(n_rows · |N(u)| · embed_size)``.
    """

    algorithm = "svdpp"
    default_lr = {"rating": 0.007, "ranking": 0.05}

    def __init__(self, task: str, data_info, embed_size: int = 32, n_epochs: int = 20,
                 lr: float | None = None, reg: float = 0.02, batch_size: int = 1024,
                 num_neg: int = 1,
                 init_std: float = 0.05, seed: int = 42):
        params = own_params(SVDpp, locals())
        super().__init__(task, data_info, **params)

    # -- parameters -----------------------------------------------------------------------------
    def _implicit_matrix(self) -> sparse.csr_matrix:
        """(n_users, n_items) CSR matrix with ``|N(u)|^-1/2`` at every consumed item."""
        consumed = self.data_info.user_consumed
        counts = np.diff(consumed.indptr)
        norm = 1.0 / np.sqrt(np.maximum(counts, 1))
        data = np.repeat(norm, counts).astype(FLOAT)
        return sparse.csr_matrix((data, consumed.indices.copy(), consumed.indptr.copy()),
                                 shape=consumed.shape)

    def _init_params(self, rng: np.random.Generator) -> None:
        super()._init_params(rng)
        self.implicit_factors = normal(rng, (self.data_info.n_items, self.embed_size),
                                       self.init_std)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {**super()._arrays(), "implicit_factors": self.implicit_factors}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        super()._set_arrays(arrays)
        (self.implicit_factors,) = as_float(arrays, "implicit_factors")

    def _user_vectors(self) -> np.ndarray:
        return self.user_factors + self._implicit_matrix() @ self.implicit_factors

    # -- training -------------------------------------------------------------------------------
    def _train_epoch(self, u, i, y, rng) -> float:
        implicit = self._implicit_matrix()
        rows, indptr, user_order = group_by_user(u, self.data_info.n_users, rng)
        return svdpp_epoch(
            user_order, indptr, i[rows].astype(np.int32), y[rows].astype(FLOAT),
            implicit.indptr.astype(np.int64), implicit.indices.astype(np.int32),
            self.user_factors, self.item_factors, self.user_bias, self.item_bias,
            self.implicit_factors, self.mu, self.lr, self.reg, self.task == "ranking")
