"""Wide & Deep: a linear model over every categorical value plus an MLP over embeddings."""

from __future__ import annotations

import tensorflow as tf

from libreco.algorithms._tf.layers import MLP, Dense
from libreco.algorithms.base import own_params
from libreco.algorithms.tf_base import TFModel


class WideDeep(TFModel):
    """Wide & Deep (Cheng et al., 2016).

    The wide part is a linear model with one weight per categorical value (user id, item id,
    each feature value) and per numeric field; the deep part is an MLP over the concatenated
    field embeddings. Their logits are summed and both parts train jointly with Adam.

    Parameters
    ----------
    embed_size, n_epochs, lr, batch_size, reg, num_neg, hidden_units, dropout, seed, patience
        See :class:`~libreco.algorithms.tf_base.TFModel`.

    Notes
    -----
    The wide part uses the raw fields only: hand-made cross-product features, as in the paper,
    are not generated.
    """

    algorithm = "wide_deep"

    def __init__(self, task: str, data_info, embed_size: int = 16, n_epochs: int = 20,
                 lr: float = 1e-3, batch_size: int = 256, reg: float = 1e-4, num_neg: int = 1,
                 hidden_units=(128, 64), dropout: float = 0.0, seed: int = 42,
                 patience: int | None = 3):
        super().__init__(task, data_info, **own_params(WideDeep, locals()))

    def _build_network(self, p) -> None:
        self._build_fields(p, linear=True)
        self.deep = MLP(p, "deep", self.n_fields * self.embed_size, self.hidden_units,
                        self.dropout, self.seed)
        self.deep_out = Dense(p, "deep_out", self.deep.out_dim, 1)

    def _forward(self, x, step):
        e, penalty = self._field_embeddings(x)
        flat = tf.reshape(e, [-1, self.n_fields * self.embed_size])
        deep = self.deep_out(self.deep(flat, step))[:, 0]
        return self.bias + self._linear_term(x) + deep, penalty
