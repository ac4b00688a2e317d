"""The popularity baseline every model has to beat."""

from __future__ import annotations

import numpy as np

from libreco.algorithms.base import Recommender


class Popular(Recommender):
    """Scores every item by its number of training interactions, the same for every user.

    For ``task="rating"`` it predicts each item's mean training label instead.
    """

    algorithm = "popular"
    family = "baseline"

    def __init__(self, task: str, data_info, **kwargs):
        super().__init__(task, data_info)

    def _fit(self, train_data, neg_sampling, verbose, eval_data, **options) -> None:
        n_items = self.data_info.n_items
        counts = np.bincount(train_data.item_indices, minlength=n_items).astype(np.float64)
        if self.task == "rating":
            sums = np.bincount(train_data.item_indices, weights=train_data.labels,
                               minlength=n_items)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(counts > 0, sums / np.maximum(counts, 1),
                                self.data_info.global_mean)
            self.item_scores = mean.astype(np.float32)
        else:
            self.item_scores = (counts / max(counts.max(), 1.0)).astype(np.float32)

    def _scores(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.item_scores, (len(users), len(self.item_scores)))

    def _predict_inner(self, users, items):
        return self.item_scores[items]

    def _arrays(self):
        return {"item_scores": self.item_scores}

    def _set_arrays(self, arrays):
        self.item_scores = np.asarray(arrays["item_scores"], dtype=np.float32)
