"""Seeded variables and the few layers the TF models are made of.

Shapes use ``B`` for the batch, ``F`` for the number of fields, ``k`` for the embedding size and
``R`` for the length of a behaviour sequence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf


class ParamStore:
    """Named float32 variables whose initial values come from one seeded numpy generator.

    Names are stable ("user_embed", "deep/w0", ...): they are the keys of ``_arrays`` and the
    file names of saved parameters, so a model rebuilt from its hyperparameters receives its
    values back by name.
    """

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.vars: dict[str, tf.Variable] = {}

    def add(self, name: str, value) -> tf.Variable:
        if name in self.vars:
            raise ValueError(f"variable {name!r} is defined twice")
        var = tf.Variable(np.asarray(value, dtype=np.float32), name=name.replace("/", "_"))
        self.vars[name] = var
        return var

    def normal(self, name: str, shape: Sequence[int], std: float = 0.05) -> tf.Variable:
        return self.add(name, self.rng.normal(0.0, std, shape))

    def zeros(self, name: str, shape: Sequence[int]) -> tf.Variable:
        return self.add(name, np.zeros(shape))

    def glorot(self, name: str, fan_in: int, fan_out: int) -> tf.Variable:
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return self.add(name, self.rng.uniform(-limit, limit, (fan_in, fan_out)))


def dropout(x: tf.Tensor, rate: float, seed: int, step: tf.Tensor | None) -> tf.Tensor:
    """Stateless dropout: the mask depends only on ``(seed, step)``, so seeded runs repeat."""
    if rate <= 0.0 or step is None:
        return x
    pair = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])
    return tf.nn.experimental.stateless_dropout(x, rate=rate, seed=pair)


class Dense:
    """``x @ w + b`` with an optional activation."""

    def __init__(self, p: ParamStore, name: str, in_dim: int, out_dim: int,
                 activation=None):
        self.w = p.glorot(f"{name}/w", in_dim, out_dim)
        self.b = p.zeros(f"{name}/b", (out_dim,))
        self.activation = activation

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        y = tf.tensordot(x, self.w, 1) + self.b
        return y if self.activation is None else self.activation(y)


class MLP:
    """ReLU layers of sizes ``units`` with dropout after each one during training.

    Parameters
    ----------
    p : ParamStore
    name : str
        Prefix of the variable names (``name/0/w``, ``name/0/b``, ...).
    in_dim : int
    units : sequence of int
    dropout_rate : float
    seed : int
        Base of the stateless dropout seeds (one per layer).
    """

    def __init__(self, p: ParamStore, name: str, in_dim: int, units: Sequence[int],
                 dropout_rate: float = 0.0, seed: int = 0):
        self.layers = []
        for j, out_dim in enumerate(units):
            self.layers.append(Dense(p, f"{name}/{j}", in_dim, out_dim, tf.nn.relu))
            in_dim = out_dim
        self.out_dim = in_dim
        self.dropout_rate = float(dropout_rate)
        self.seed = int(seed)

    def __call__(self, x: tf.Tensor, step: tf.Tensor | None = None) -> tf.Tensor:
        """``step`` is the training step (dropout on) or None (inference)."""
        for j, layer in enumerate(self.layers):
            x = dropout(layer(x), self.dropout_rate, self.seed * 1009 + j, step)
        return x


def sequence_mask(seq: tf.Tensor, seq_len: tf.Tensor, pad_index: int) -> tf.Tensor:
    """(B, R) float mask of the valid sequence entries: the first ``seq_len`` ones, not padding."""
    length = tf.shape(seq)[1]
    valid = tf.sequence_mask(seq_len, length) & tf.not_equal(seq, pad_index)
    return tf.cast(valid, tf.float32)


def masked_mean(emb: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean of (B, R, k) embeddings over the valid entries; zeros for an empty sequence."""
    total = tf.reduce_sum(emb * mask[:, :, None], axis=1)
    count = tf.reduce_sum(mask, axis=1, keepdims=True)
    return total / tf.maximum(count, 1.0)


def recency_positions(seq_len: tf.Tensor, length: int) -> tf.Tensor:
    """(B, R) int32 recency of each entry of a left-aligned sequence: 0 for the most recent.

    Entries past ``seq_len`` get ``length - 1`` (they are masked wherever they are used).
    """
    j = tf.range(length)[None, :]
    r = seq_len[:, None] - 1 - j
    return tf.where(r >= 0, r, length - 1)


def recency_pool(emb: tf.Tensor, mask: tf.Tensor, weights: tf.Tensor,
                 positions: tf.Tensor) -> tf.Tensor:
    """Mean of (B, R, k) embeddings with learned per-recency weights (softmax over the valid).

    ``weights`` is a (R,) variable of logits, one per recency (0 = most recent); at zero the
    pool is the plain mean.
    """
    logits = tf.gather(weights, positions)
    logits = tf.where(mask > 0, logits, tf.fill(tf.shape(logits), -1e9))
    w = tf.nn.softmax(logits, axis=1) * mask
    return tf.reduce_sum(w[:, :, None] * emb, axis=1)


class SelfAttention:
    """One multi-head self-attention layer over field embeddings, with a residual connection.

    For every head ``h``: ``softmax(Q_h K_h^T / sqrt(d)) V_h`` with ``Q_h = E W_q^h`` etc.;
    the heads are concatenated, a projection of the input is added and ReLU applied
    (Song et al., 2019, "AutoInt").
    """

    def __init__(self, p: ParamStore, name: str, in_dim: int, head_dim: int, n_heads: int):
        out_dim = head_dim * n_heads
        self.wq = p.glorot(f"{name}/wq", in_dim, out_dim)
        self.wk = p.glorot(f"{name}/wk", in_dim, out_dim)
        self.wv = p.glorot(f"{name}/wv", in_dim, out_dim)
        self.wr = p.glorot(f"{name}/wres", in_dim, out_dim)
        self.head_dim, self.n_heads, self.out_dim = head_dim, n_heads, out_dim

    def _heads(self, x: tf.Tensor) -> tf.Tensor:
        # (B, F, h * d) -> (B, h, F, d)
        b, f = tf.shape(x)[0], tf.shape(x)[1]
        return tf.transpose(tf.reshape(x, [b, f, self.n_heads, self.head_dim]), [0, 2, 1, 3])

    def __call__(self, e: tf.Tensor) -> tf.Tensor:
        q = self._heads(tf.tensordot(e, self.wq, 1))
        k = self._heads(tf.tensordot(e, self.wk, 1))
        v = self._heads(tf.tensordot(e, self.wv, 1))
        att = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) / math.sqrt(self.head_dim))
        out = tf.transpose(tf.matmul(att, v), [0, 2, 1, 3])
        b, f = tf.shape(e)[0], tf.shape(e)[1]
        out = tf.reshape(out, [b, f, self.out_dim])
        return tf.nn.relu(out + tf.tensordot(e, self.wr, 1))


class TargetAttention:
    """Attention of a candidate item over a behaviour sequence (Zhou et al., 2018, "DIN").

    The weight of each sequence item ``s`` for the candidate ``q`` comes from a small MLP on
    ``[q, s, q - s, q * s, p]``, where ``p`` is a learned embedding of the item's recency
    (0 for the most recent), so that both what the item is and how long ago it was consumed
    count. Weights of invalid entries are masked out and the rest normalised with a softmax; an
    empty sequence pools to zeros.
    """

    def __init__(self, p: ParamStore, name: str, dim: int, length: int, units: Sequence[int]):
        self.recency = p.normal(f"{name}/recency", (length, dim))
        self.length = length
        self.mlp = MLP(p, f"{name}/mlp", 5 * dim, units)
        self.out = Dense(p, f"{name}/out", self.mlp.out_dim, 1)

    def __call__(self, q: tf.Tensor, s: tf.Tensor, mask: tf.Tensor,
                 seq_len: tf.Tensor) -> tf.Tensor:
        qq = tf.broadcast_to(q[:, None, :], tf.shape(s))
        pos = tf.gather(self.recency, recency_positions(seq_len, self.length))
        features = tf.concat([qq, s, qq - s, qq * s, pos], axis=-1)
        logits = self.out(self.mlp(features))[:, :, 0]
        logits = tf.where(mask > 0, logits, tf.fill(tf.shape(logits), -1e9))
        weights = tf.nn.softmax(logits, axis=1) * mask
        return tf.reduce_sum(weights[:, :, None] * s, axis=1)
