"""YouTube's ranking network: user, item and the user's recent items pooled into one MLP."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from libreco.algorithms._tf.layers import MLP, Dense, recency_pool, recency_positions
from libreco.algorithms.base import own_params
from libreco.algorithms.fm import fm_interactions
from libreco.algorithms.tf_base import TFModel


class YouTubeRanking(TFModel):
    """The ranking model of Covington et al. (2016), "Deep Neural Networks for YouTube
    Recommendations".

    The embeddings of the user, the candidate item and their features are concatenated with
    the mean embedding of the user's ``recent_num`` most recent items and fed to a ReLU MLP
    whose last layer gives the logit. Sequence items share the candidate items' embedding
    table; during training a row's sequence holds only the items consumed before it.

    Parameters
    ----------
    embed_size, n_epochs, lr, batch_size, reg, num_neg, hidden_units, dropout, seed, patience
        See :class:`~libreco.algorithms.tf_base.TFModel`.
    recent_num : int
        Length of the behaviour sequence (the ``seq`` input of the exported model).
    """

    algorithm = "youtube_ranking"
    uses_sequence = True

    def __init__(self, task: str, data_info, embed_size: int = 16, n_epochs: int = 20,
                 lr: float = 1e-3, batch_size: int = 256, reg: float = 1e-4, num_neg: int = 1,
                 hidden_units=(128, 64), dropout: float = 0.0, recent_num: int = 10,
                 seed: int = 42, patience: int | None = 3):
        super().__init__(task, data_info, **own_params(YouTubeRanking, locals()))

    def _build_network(self, p) -> None:
        self._build_fields(p, linear=True)
        # recency logits start at -log(1 + r), weights proportional to 1 / (1 + r): the most
        # recent item counts most until training says otherwise
        self.recency = p.add("recency", -np.log1p(np.arange(self.recent_num)))
        self.deep = MLP(p, "deep", (self.n_fields + 2) * self.embed_size, self.hidden_units,
                        self.dropout, self.seed)
        self.deep_out = Dense(p, "deep_out", self.deep.out_dim, 1)

    def _forward(self, x, step):
        e, penalty = self._field_embeddings(x)
        s, mask, seq_penalty = self._sequence_embeddings(x)
        positions = recency_positions(x["seq_len"], self.recent_num)
        history = recency_pool(s, mask, self.recency, positions)
        h = tf.concat([tf.reshape(e, [-1, self.n_fields * self.embed_size]), history,
                       history * e[:, 1, :]], axis=1)
        fields = tf.concat([e, history[:, None, :]], axis=1)
        logits = (self.bias + self._linear_term(x) + fm_interactions(fields)
                  + self.deep_out(self.deep(h, step))[:, 0])
        return logits, penalty + seq_penalty
