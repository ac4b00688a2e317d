"""Bayesian personalised ranking: pairwise ranking with sampled negatives."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from libreco.algorithms._mf import (
    FLOAT,
    VectorRecommender,
    as_float,
    bpr_epoch,
    check_positive,
    end_epoch,
    negative_sampler,
    normal,
)
from libreco.algorithms.base import own_params
from libreco.utils.progress import progress


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
        Triples sampled and processed per call of the compiled loop; bounds the memory of the
        sampled negatives, not the result (steps are per triple).
    init_std : float
        Standard deviation of the initial factors.
    seed : int
        Seed of the initialisation, the row order and the negatives: the same seed gives the
        same model.

    Notes
    -----
    Only ``task="ranking"``. The per-triple loop is compiled with numba and runs on one thread,
    which keeps training deterministic for a seed.
    """

    algorithm = "bpr"
    tasks = ("ranking",)

    def __init__(self, task: str = "ranking", data_info=None, embed_size: int = 64,
                 n_epochs: int = 20, lr: float = 0.05, reg: float = 0.01,
                 batch_size: int = 65536, init_std: float = 0.05, seed: int = 42):
        super().__init__(task, data_info, **own_params(BPR, locals()))
        check_positive("embed_size", embed_size, integer=True)
        check_positive("n_epochs", n_epochs, integer=True)
        check_positive("batch_size", batch_size, integer=True)
        check_positive("lr", lr)
        check_positive("reg", reg, allow_zero=True)
        check_positive("init_std", init_std, allow_zero=True)
        self.embed_size = int(embed_size)
        self.n_epochs = int(n_epochs)
        self.lr = float(lr)
        self.reg = float(reg)
        self.batch_size = int(batch_size)
        self.init_std = float(init_std)
        self.seed = int(seed)

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
        n_users, n_items, d = self.data_info.n_users, self.data_info.n_items, self.embed_size
        self.user_factors = normal(rng, (n_users, d), self.init_std)
        self.item_factors = normal(rng, (n_items, d), self.init_std)
        self.item_bias = np.zeros(n_items, dtype=FLOAT)
        users = train_data.user_indices.astype(np.int32)
        items = train_data.item_indices.astype(np.int32)
        sampler = negative_sampler(self.data_info, np.random.default_rng(rng.integers(2**63)))
        n = len(users)
        chunks = [(epoch, start) for epoch in range(1, self.n_epochs + 1)
                  for start in range(0, n, self.batch_size)]
        orders = {}

        def draw(k: int):
            """Rows and negatives of chunk ``k``; runs in a worker thread, one chunk ahead."""
            epoch, start = chunks[k]
            if start == 0:
                orders[epoch] = rng.permutation(n)
            rows = orders[epoch][start:start + self.batch_size]
            if start + self.batch_size >= n:
                del orders[epoch]
            return rows, sampler.sample(users[rows]).astype(np.int32)

        # sampling the next chunk overlaps the compiled loop on this one (it releases the GIL);
        # chunks are drawn strictly in order, so the result does not depend on timing
        total, started = 0.0, time.perf_counter()
        bar = iter(progress(range(1, self.n_epochs + 1), verbose, desc=self.algorithm,
                            total=self.n_epochs))
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(draw, 0)
            for k, (epoch, start) in enumerate(chunks):
                rows, neg = pending.result()
                if k + 1 < len(chunks):
                    pending = pool.submit(draw, k + 1)
                total += bpr_epoch(users[rows], items[rows], neg, self.user_factors,
                                   self.item_factors, self.item_bias, self.lr, self.reg)
                if start + self.batch_size >= n:
                    next(bar, None)
                    end_epoch(self.algorithm, epoch, self.n_epochs, started, verbose,
                              bpr_loss=total / n)
                    total, started = 0.0, time.perf_counter()
        next(bar, None)  # closes a progress bar
