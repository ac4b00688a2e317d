"""Factorization Machines on user, item and feature fields."""

from __future__ import annotations

import tensorflow as tf

from libreco.algorithms.base import own_params
from libreco.algorithms.tf_base import TFModel


class FM(TFModel):
    """Factorization Machine (Rendle, 2010) over the user, the item and their features.

    Every categorical value (user id, item id, each feature value) and every numeric field has a
    weight ``w`` and an embedding ``v``; the score of a row with active fields ``x`` is

    ``bias + sum_f w_f x_f + sum_{f < g} <v_f, v_g> x_f x_g``

    where the pairwise sum is computed in ``O(F k)`` as
    ``0.5 * sum_k ((sum_f v_f x_f)^2 - sum_f (v_f x_f)^2)``.

    Parameters
    ----------
    embed_size, n_epochs, lr, batch_size, reg, num_neg, seed, patience
        See :class:`~libreco.algorithms.tf_base.TFModel`.
    """

    algorithm = "fm"

    def __init__(self, task: str, data_info, embed_size: int = 16, n_epochs: int = 20,
                 lr: float = 1e-3, batch_size: int = 256, reg: float = 1e-4, num_neg: int = 1,
                 seed: int = 42, patience: int | None = 3):
        super().__init__(task, data_info, **own_params(FM, locals()))

    def _build_network(self, p) -> None:
        self._build_fields(p, linear=True)

    def _forward(self, x, step):
        e, penalty = self._field_embeddings(x)
        return self.bias + self._linear_term(x) + fm_interactions(e), penalty


def fm_interactions(e: tf.Tensor) -> tf.Tensor:
    """Sum of the pairwise dot products of (B, F, k) field embeddings, shape (B,)."""
    square_of_sum = tf.square(tf.reduce_sum(e, axis=1))
    sum_of_squares = tf.reduce_sum(tf.square(e), axis=1)
    return 0.5 * tf.reduce_sum(square_of_sum - sum_of_squares, axis=1)
