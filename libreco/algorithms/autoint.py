"""AutoInt: feature interactions learned by multi-head self-attention over field embeddings."""

from __future__ import annotations

import tensorflow as tf

from libreco.algorithms._tf.layers import MLP, Dense, SelfAttention
from libreco.algorithms.base import own_params
from libreco.algorithms.tf_base import TFModel, _int_param


class AutoInt(TFModel):
    """AutoInt (Song et al., 2019).

    The user, item and feature fields are embedded, then ``num_layers`` layers of multi-head
    self-attention with residual connections let every field attend to every other (see
    :class:`~libreco.algorithms._tf.layers.SelfAttention`); a linear layer on the concatenated
    outputs gives the logit. A ReLU MLP over the raw embeddings is added in parallel (the
    paper's AutoInt+, its better variant); ``hidden_units=()`` leaves it out (plain AutoInt).

    Parameters
    ----------
    embed_size, n_epochs, lr, batch_size, reg, num_neg, dropout, seed, patience
        See :class:`~libreco.algorithms.tf_base.TFModel`.
    att_embed_size : int
        Size of each attention head.
    num_heads : int
        Attention heads per layer.
    num_layers : int
        Stacked attention layers.
    hidden_units : sequence of int
        ReLU layers of the parallel MLP; empty for none. The default (128, 64) is that of the
        other TF rankers.
    """

    algorithm = "autoint"

    def __init__(self, task: str, data_info, embed_size: int = 16, n_epochs: int = 20,
                 lr: float = 1e-3, batch_size: int = 256, reg: float = 1e-4, num_neg: int = 1,
                 att_embed_size: int = 8, num_heads: int = 2, num_layers: int = 2,
                 hidden_units=(128, 64), dropout: float = 0.0, seed: int = 42,
                 patience: int | None = 3):
        super().__init__(task, data_info, **own_params(AutoInt, locals()))
        self.att_embed_size = _int_param("att_embed_size", att_embed_size)
        self.num_heads = _int_param("num_heads", num_heads)
        self.num_layers = _int_param("num_layers", num_layers)

    def _build_network(self, p) -> None:
        self._build_fields(p)
        in_dim = self.embed_size
        self.attention = []
        for j in range(self.num_layers):
            layer = SelfAttention(p, f"attention/{j}", in_dim, self.att_embed_size,
                                  self.num_heads)
            self.attention.append(layer)
            in_dim = layer.out_dim
        self.att_out = Dense(p, "att_out", self.n_fields * in_dim, 1)
        self.deep = None
        if self.hidden_units:
            self.deep = MLP(p, "deep", self.n_fields * self.embed_size, self.hidden_units,
                            self.dropout, self.seed)
            self.deep_out = Dense(p, "deep_out", self.deep.out_dim, 1)

    def _forward(self, x, step):
        e, penalty = self._field_embeddings(x)
        h = e
        for layer in self.attention:
            h = layer(h)
        logits = self.bias + self.att_out(tf.reshape(h, [-1, self.n_fields * h.shape[-1]]))[:, 0]
        if self.deep is not None:
            flat = tf.reshape(e, [-1, self.n_fields * self.embed_size])
            logits += self.deep_out(self.deep(flat, step))[:, 0]
        return logits, penalty
