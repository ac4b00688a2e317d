"""Biased matrix factorisation trained by mini-batch stochastic gradient descent."""

from __future__ import annotations

import numpy as np

from libreco.algorithms._mf import (
    FLOAT,
    VectorRecommender,
    as_float,
    check_positive,
    end_epoch,
    epochs,
    minibatches,
    negative_sampler,
    normal,
    rowdot,
    scatter_add,
    sigmoid,
)
from libreco.algorithms.base import own_params


class SVD(VectorRecommender):
    """Biased matrix factorisation ("SVD" in the Netflix-prize sense).

    A pair scores ``mu + b_u + b_i + p_u · q_i`` with the global mean ``mu`` (0 for ranking),
    user and item biases and ``embed_size`` factors per user and item.

    * ``task="rating"`` minimises the squared error of the predicted label plus
      ``reg * (b_u² + b_i² + |p_u|² + |q_i|²)`` for every training row.
    * ``task="ranking"`` treats training rows as positives, draws ``num_neg`` negatives per
      positive from the items the user did not consume (fresh every epoch), and minimises the
      logistic loss of the score (a logit) against 1 for positives and 0 for negatives.

    Parameters
    ----------
    embed_size : int
        Number of latent factors.
    n_epochs : int
        Passes over the training rows.
    lr : float, optional
        Learning rate of the per-row gradient step; by default 0.01 for rating and 0.05 for
        ranking (the logistic loss has smaller gradients).
    reg : float
        L2 penalty per training row on the parameters that row touches.
    batch_size : int
        Rows per vectorised step; every row's gradient is computed from the parameters at the
        start of its step and repeated users or items add up.
    num_neg : int
        Negatives per positive for ``task="ranking"``.
    init_std : float
        Standard deviation of the initial factors.
    seed : int
        Seed of the initialisation, the row order and the negative samples: the same seed
        gives the same model.
    """

    algorithm = "svd"
    default_lr = {"rating": 0.01, "ranking": 0.05}

    def __init__(self, task: str, data_info, embed_size: int = 64, n_epochs: int = 30,
                 lr: float | None = None, reg: float = 0.05, batch_size: int = 1024,
                 num_neg: int = 1,
                 init_std: float = 0.05, seed: int = 42):
        super().__init__(task, data_info, **own_params(SVD, locals()))
        check_positive("embed_size", embed_size, integer=True)
        check_positive("n_epochs", n_epochs, integer=True)
        check_positive("batch_size", batch_size, integer=True)
        check_positive("num_neg", num_neg, integer=True)
        if lr is None:
            lr = self.params["lr"] = self.default_lr[task]
        check_positive("lr", lr)
        check_positive("reg", reg, allow_zero=True)
        check_positive("init_std", init_std, allow_zero=True)
        self.embed_size = int(embed_size)
        self.n_epochs = int(n_epochs)
        self.lr = float(lr)
        self.reg = float(reg)
        self.batch_size = int(batch_size)
        self.num_neg = int(num_neg)
        self.init_std = float(init_std)
        self.seed = int(seed)

    # -- parameters -----------------------------------------------------------------------------
    @property
    def mu(self) -> float:
        """The global mean added to every score (0 for ranking)."""
        return self.data_info.global_mean if self.task == "rating" else 0.0

    def _init_params(self, rng: np.random.Generator) -> None:
        n_users, n_items, d = self.data_info.n_users, self.data_info.n_items, self.embed_size
        self.user_factors = normal(rng, (n_users, d), self.init_std)
        self.item_factors = normal(rng, (n_items, d), self.init_std)
        self.user_bias = np.zeros(n_users, dtype=FLOAT)
        self.item_bias = np.zeros(n_items, dtype=FLOAT)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors,
                "user_bias": self.user_bias, "item_bias": self.item_bias}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        (self.user_factors, self.item_factors, self.user_bias,
         self.item_bias) = as_float(arrays, "user_factors", "item_factors", "user_bias",
                                    "item_bias")
        self._refresh()

    def _user_vectors(self) -> np.ndarray:
        """(n_users, embed_size) vectors multiplied with the item factors."""
        return self.user_factors

    def _fold(self) -> tuple[np.ndarray, np.ndarray]:
        # user [p_u, 1, b_u + mu] · item [q_i, b_i, 1] = mu + b_u + b_i + p_u · q_i
        n_users, n_items = self.data_info.n_users, self.data_info.n_items
        user_vecs = np.hstack([self._user_vectors(), np.ones((n_users, 1), dtype=FLOAT),
                               (self.user_bias + self.mu)[:, None]])
        item_vecs = np.hstack([self.item_factors, self.item_bias[:, None],
                               np.ones((n_items, 1), dtype=FLOAT)])
        return user_vecs, item_vecs

    # -- training -------------------------------------------------------------------------------
    def _fit(self, train_data, neg_sampling, verbose, eval_data, **options) -> None:
        rng = np.random.default_rng(self.seed)
        self._init_params(rng)
        users = train_data.user_indices.astype(np.int64)
        items = train_data.item_indices.astype(np.int64)
        labels = train_data.labels.astype(FLOAT)
        ranking = self.task == "ranking"
        sampler = negative_sampler(self.data_info, rng) if ranking and neg_sampling else None
        for epoch, started in epochs(self.algorithm, self.n_epochs, verbose):
            if ranking:
                u, i, y = self._with_negatives(users, items, sampler)
            else:
                u, i, y = users, items, labels
            total = self._train_epoch(u, i, y, rng)
            name = "log_loss" if ranking else "rmse"
            value = total / len(u) if ranking else np.sqrt(total / len(u))
            end_epoch(self.algorithm, epoch, self.n_epochs, started, verbose, **{name: value})

    def _with_negatives(self, users, items, sampler):
        """Positives with label 1 followed by ``num_neg`` sampled negatives each, label 0."""
        ones = np.ones(len(users), dtype=FLOAT)
        if sampler is None:
            return users, items, ones
        neg_items = sampler.sample(users, n_neg=self.num_neg)
        return (np.concatenate([users, np.repeat(users, self.num_neg)]),
                np.concatenate([items, neg_items.astype(np.int64)]),
                np.concatenate([ones, np.zeros(len(neg_items), dtype=FLOAT)]))

    def _train_epoch(self, u, i, y, rng) -> float:
        """One pass over the rows in random mini-batches; returns the summed loss."""
        total = 0.0
        for rows in minibatches(len(u), self.batch_size, rng):
            total += self._step(u[rows], i[rows], y[rows], self.task == "ranking")
        return total

    def _step(self, u, i, y, ranking: bool) -> float:
        """One vectorised SGD step on a mini-batch; returns the batch's summed loss."""
        lr, reg = self.lr, self.reg
        pu, qi = self.user_factors[u], self.item_factors[i]
        bu, bi = self.user_bias[u], self.item_bias[i]
        pred = self.mu + bu + bi + rowdot(pu, qi)
        if ranking:
            prob = sigmoid(pred)
            err = prob - y  # d(log loss)/d(score)
            loss = -float(np.sum(np.log(np.maximum(np.where(y > 0.5, prob, 1 - prob), 1e-7))))
        else:
            err = pred - y  # half the gradient of the squared error
            loss = float(np.dot(err, err))
        scatter_add(self.user_bias, u, -lr * (err + reg * bu))
        scatter_add(self.item_bias, i, -lr * (err + reg * bi))
        scatter_add(self.user_factors, u, -lr * (err[:, None] * qi + reg * pu))
        scatter_add(self.item_factors, i, -lr * (err[:, None] * pu + reg * qi))
        return loss
