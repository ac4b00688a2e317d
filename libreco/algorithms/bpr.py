"""Bayesian personalised ranking: pairwise ranking with sampled negatives."""

from __future__ import annotations

import numba
import numpy as np

from libreco.algorithms._mf import (
    FLOAT,
    VectorRecommender,
    as_float,
    bpr_epoch,
    check_positive,
    end_epoch,
    epochs,
    normal,
)
from libreco.algorithms.base import own_params


class BPR(VectorRecommender):
    """Matrix factorisation trained to rank a user's items above items they did not consume.

    Every epoch draws, for each training row ``(u, i)``, one item ``j`` the user did not
    consume (uniformly), and takes a stochastic gradient step on ``ln σ(x_uij)`` with
    ``x_uij = p_u · (q_i - q_j) + b_i - b_j`` minus ``reg`` times the squared norm of the
    parameters the triple touches (Rendle et al., 2009). A pair scores ``p_u · q_i + b_i``.

    Parameters
    ----------
    embed_size : int
        Number of latent factors.
    n_epochs : int
        Passes over the training rows (one sampled triple per row and epoch).
    lr : float
        Learning rate.
    reg : float
        L2 penalty per triple.
    batch_size : int
        Accepted so that models saved by earlier versions still load; it has no effect (the
        negatives are drawn inside the compiled loop, row by row).
    init_std : float
        Standard deviation of the initial factors.
    seed : int
        Seed of the initialisation, the row order and the negatives. With ``num_threads=1`` the
        same seed gives the same model; with several threads it does not (see Notes).
    num_threads : int
        Threads of the compiled loop; 0 (the default) uses numba's thread count, all cores
        unless ``numba.set_num_threads`` or ``NUMBA_NUM_THREADS`` say otherwise, as for ALS.
        Capped at ``NUMBA_NUM_THREADS``.

    Notes
    -----
    Only ``task="ranking"``. The per-triple loop is compiled with numba. Every epoch shuffles
    the rows and cuts them into one shard per thread; each thread walks its shard with its own
    random stream for the negatives (uniform over the items the user did not consume, checked
    by binary search in ``data_info.user_consumed``) and updates the shared factors without
    locks ("Hogwild", Recht et al., 2011). Concurrent updates of the same row may overwrite
    each other, so with several threads the model depends on timing and is not bit-for-bit
    reproducible; ``num_threads=1`` is.
    """

    algorithm = "bpr"
    tasks = ("ranking",)

    def __init__(self, task: str = "ranking", data_info=None, embed_size: int = 64,
                 n_epochs: int = 20, lr: float = 0.05, reg: float = 0.01,
                 batch_size: int = 65536, init_std: float = 0.05, seed: int = 42,
                 num_threads: int = 0):
        super().__init__(task, data_info, **own_params(BPR, locals()))
        check_positive("embed_size", embed_size, integer=True)
        check_positive("n_epochs", n_epochs, integer=True)
        check_positive("batch_size", batch_size, integer=True)
        check_positive("lr", lr)
        check_positive("reg", reg, allow_zero=True)
        check_positive("init_std", init_std, allow_zero=True)
        check_positive("num_threads", num_threads, integer=True, allow_zero=True)
        self.embed_size = int(embed_size)
        self.n_epochs = int(n_epochs)
        self.lr = float(lr)
        self.reg = float(reg)
        self.batch_size = int(batch_size)
        self.init_std = float(init_std)
        self.seed = int(seed)
        self.num_threads = int(num_threads)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors,
                "item_bias": self.item_bias}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_factors, self.item_factors, self.item_bias = as_float(
            arrays, "user_factors", "item_factors", "item_bias")
        self._refresh()

    def _fold(self) -> tuple[np.ndarray, np.ndarray]:
        # user [p_u, 1] · item [q_i, b_i] = p_u · q_i + b_i
        ones = np.ones((self.data_info.n_users, 1), dtype=FLOAT)
        return (np.hstack([self.user_factors, ones]),
                np.hstack([self.item_factors, self.item_bias[:, None]]))

    def _fit(self, train_data, neg_sampling, verbose, eval_data, **options) -> None:
        if not neg_sampling:
            raise NotImplementedError("BPR learns from sampled negatives: neg_sampling=False "
                                      "is not supported")
        rng = np.random.default_rng(self.seed)
        info = self.data_info
        n_users, n_items, d = info.n_users, info.n_items, self.embed_size
        self.user_factors = normal(rng, (n_users, d), self.init_std)
        self.item_factors = normal(rng, (n_items, d), self.init_std)
        self.item_bias = np.zeros(n_items, dtype=FLOAT)
        users = np.ascontiguousarray(train_data.user_indices, dtype=np.int32)
        items = np.ascontiguousarray(train_data.item_indices, dtype=np.int32)
        consumed = info.user_consumed
        if not consumed.has_sorted_indices:
            consumed = consumed.sorted_indices()
        indptr = consumed.indptr.astype(np.int64)
        indices = consumed.indices.astype(np.int32)
        full = np.unique(users[np.diff(indptr)[users] >= n_items])
        if full.size:
            raise ValueError(f"user {int(full[0])} (inner index) consumed every item, so BPR has "
                             f"no negative to sample ({full.size} such users)")
        threads = min(self.num_threads or numba.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
        # one random stream per thread, seeded from the model's seed; xorshift needs nonzero
        state = rng.integers(1, 2**63, size=threads, dtype=np.int64).astype(np.uint64)
        order = np.arange(len(users), dtype=np.int64)
        previous = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            for epoch, started in epochs(self.algorithm, self.n_epochs, verbose):
                loss = bpr_epoch(order, users, items, indptr, indices, n_items,
                                 self.user_factors, self.item_factors, self.item_bias,
                                 self.lr, self.reg, state)
                end_epoch(self.algorithm, epoch, self.n_epochs, started, verbose,
                          bpr_loss=loss / max(len(users), 1))
        finally:
            numba.set_num_threads(previous)
