"""Deep Interest Network: attention of the candidate item over the user's recent items."""

from __future__ import annotations

import tensorflow as tf

from libreco.algorithms._tf.layers import MLP, Dense, TargetAttention
from libreco.algorithms.base import own_params
from libreco.algorithms.fm import fm_interactions
from libreco.algorithms.tf_base import TFModel


class DIN(TFModel):
    """Deep Interest Network (Zhou et al., 2018).

    The user's ``recent_num`` most recent items are pooled with weights that depend on the
    candidate item (see :class:`~libreco.algorithms._tf.layers.TargetAttention`), so the
    history is summarised differently for every candidate. The pooled vector, the user, item
    and feature embeddings go through a ReLU MLP to the logit. During training a row's sequence
    holds only the items consumed before it.

    Parameters
    ----------
    embed_size, n_epochs, lr, batch_size, reg, num_neg, hidden_units, dropout, seed, patience
        See :class:`~libreco.algorithms.tf_base.TFModel`.
    recent_num : int
        Length of the behaviour sequence (the ``seq`` input of the exported model).
    att_hidden_units : sequence of int
        ReLU layers of the attention MLP.

    Notes
    -----
    Attention weights are normalised with a softmax over the valid sequence entries; the
    paper's unnormalised weights, Dice activation and mini-batch aware regularisation are not
    used.
    """

    algorithm = "din"
    uses_sequence = True

    def __init__(self, task: str, data_info, embed_size: int = 16, n_epochs: int = 20,
                 lr: float = 1e-3, batch_size: int = 256, reg: float = 1e-4, num_neg: int = 1,
                 hidden_units=(128, 64), dropout: float = 0.0, recent_num: int = 10,
                 att_hidden_units=(36,), seed: int = 42, patience: int | None = 3):
        super().__init__(task, data_info, **own_params(DIN, locals()))
        units = att_hidden_units
        if isinstance(units, int) and not isinstance(units, bool):
            units = (units,)
        if not isinstance(units, (list, tuple)) or not all(
                isinstance(u, int) and not isinstance(u, bool) and u > 0 for u in units):
            raise ValueError(f"att_hidden_units must be a sequence of positive integers, got "
                             f"{att_hidden_units!r}")
        self.att_hidden_units = tuple(units)

    def _build_network(self, p) -> None:
        self._build_fields(p, linear=True)
        self.attention = TargetAttention(p, "attention", self.embed_size, self.recent_num,
                                         self.att_hidden_units)
        self.deep = MLP(p, "deep", (self.n_fields + 2) * self.embed_size, self.hidden_units,
                        self.dropout, self.seed)
        self.deep_out = Dense(p, "deep_out", self.deep.out_dim, 1)

    def _forward(self, x, step):
        e, penalty = self._field_embeddings(x)
        s, mask, seq_penalty = self._sequence_embeddings(x)
        candidate = e[:, 1, :]  # the item field
        interest = self.attention(candidate, s, mask, x["seq_len"])
        h = tf.concat([tf.reshape(e, [-1, self.n_fields * self.embed_size]), interest,
                       interest * candidate], axis=1)
        fields = tf.concat([e, interest[:, None, :]], axis=1)
        logits = (self.bias + self._linear_term(x) + fm_interactions(fields)
                  + self.deep_out(self.deep(h, step))[:, 0])
        return logits, penalty + seq_penalty
