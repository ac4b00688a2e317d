"""YouTube's candidate generation: a user tower against item vectors, with sampled softmax."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from libreco.algorithms._tf.layers import MLP, Dense, masked_mean
from libreco.algorithms.base import own_params
from libreco.algorithms.tf_base import SCORE_ROWS, TFModel, _int_param


class YouTubeMatch(TFModel):
    """The candidate generation model of Covington et al. (2016), a two-tower retrieval model.

    The user tower is an MLP over the user's embedding, the user's feature embeddings and the
    mean embedding of the user's ``recent_num`` most recent items; its last (linear) layer of
    size ``hidden_units[-1]`` is the user vector. Every item has a vector of the same size, and
    the score of (user, item) is their inner product. Training treats each interaction as a
    softmax over all items, estimated with sampled softmax: ``num_sampled`` items per batch drawn
    by popularity (counts to the power 0.75), with the usual correction for the sampling
    probability and accidental hits removed.

    The vectors are exported with :func:`libreco.utils.save_vector` and served by the vector
    service like those of the matrix factorisation models.

    Parameters
    ----------
    embed_size, n_epochs, lr, batch_size, reg, dropout, seed, patience
        See :class:`~libreco.algorithms.tf_base.TFModel`.
    hidden_units : sequence of int
        Layers of the user tower; the last one is the vector size.
    recent_num : int
        Length of the behaviour sequence pooled in the user tower.
    num_sampled : int
        Items sampled per batch for the softmax (capped at ``n_items - 1``).

    Notes
    -----
    Only ``task="ranking"`` is supported. Item features are not used (the item side is one
    vector per item), and ``neg_sampling`` has no effect: the softmax samples its own
    negatives.
    """

    algorithm = "youtube_match"
    family = "vector"
    tasks = ("ranking",)
    uses_sequence = True

    def __init__(self, task: str, data_info, embed_size: int = 16, n_epochs: int = 20,
                 lr: float = 1e-3, batch_size: int = 256, reg: float = 1e-4,
                 hidden_units=(128, 64), dropout: float = 0.0, recent_num: int = 10,
                 num_sampled: int = 200, seed: int = 42, patience: int | None = 3):
        super().__init__(task, data_info, **own_params(YouTubeMatch, locals()))
        if not self.hidden_units:
            raise ValueError("hidden_units must have at least one layer: the last one is the "
                             "vector size")
        self.num_sampled = _int_param("num_sampled", num_sampled)

    @property
    def vector_size(self) -> int:
        return self.hidden_units[-1]

    def _build_network(self, p) -> None:
        di, k = self.data_info, self.embed_size
        self.user_embed = self._embedding(p, "user_embed", di.n_users + 1, k, [di.n_users])
        self.seq_embed = self._embedding(p, "seq_embed", di.n_items + 2, k,
                                          [di.n_items, self.pad_index])
        n_in = 2 + self.n_user_sparse + self.n_user_dense
        if self.n_user_sparse:
            oov = [di.features.oov_index(c) for c in di.features.sparse_cols]
            self.sparse_embed = self._embedding(p, "sparse_embed", di.features.n_sparse_features,
                                                k, oov)
        if self.n_user_dense:
            self.dense_embed = p.normal("dense_embed", (self.n_user_dense, k))
        self.tower = MLP(p, "tower", n_in * k, self.hidden_units[:-1], self.dropout, self.seed)
        self.tower_out = Dense(p, "tower_out", self.tower.out_dim, self.vector_size)
        self.item_vectors = p.normal("item_vectors", (di.n_items, self.vector_size),
                                     std=1.0 / np.sqrt(self.vector_size))
        counts = np.maximum(di.item_counts.astype(np.float64), 1.0)
        self._unigrams = counts.tolist()

    def _user_vectors(self, x, step):
        """(B, vector_size) user vectors and the L2 penalty of the embeddings looked up."""
        parts = [tf.gather(self.user_embed, x["user_indices"])]
        if self.n_user_sparse:
            user_sparse = x["sparse_indices"][:, :self.n_user_sparse]
            parts.append(tf.reshape(tf.gather(self.sparse_embed, user_sparse),
                                    [-1, self.n_user_sparse * self.embed_size]))
        if self.n_user_dense:
            user_dense = x["dense_values"][:, :self.n_user_dense]
            parts.append(tf.reshape(self.dense_embed[None] * user_dense[:, :, None],
                                    [-1, self.n_user_dense * self.embed_size]))
        s, mask, seq_penalty = self._sequence_embeddings(x)
        parts.append(masked_mean(s, mask))
        h = tf.concat(parts, axis=1)
        penalty = tf.reduce_mean(tf.reduce_sum(tf.square(h), axis=1)) + seq_penalty
        return self.tower_out(self.tower(h, step)), penalty

    def _forward(self, x, step):
        u, penalty = self._user_vectors(x, step)
        v = tf.gather(self.item_vectors, tf.minimum(x["item_indices"], self.data_info.n_items - 1))
        known = tf.cast(x["item_indices"] < self.data_info.n_items, tf.float32)
        return tf.reduce_sum(u * v, axis=1) * known, penalty

    def _output(self, logits):
        return logits  # inner products, the scores the vector service ranks by

    def _train_loss(self, x, labels, step):
        u, penalty = self._user_vectors(x, step)
        n_items = self.data_info.n_items
        true = tf.cast(x["item_indices"], tf.int64)[:, None]
        n_sampled = min(self.num_sampled, max(n_items - 1, 1))
        sampled = tf.random.fixed_unigram_candidate_sampler(
            true, num_true=1, num_sampled=n_sampled, unique=True, range_max=n_items,
            distortion=0.75, unigrams=self._unigrams, seed=self.seed)
        loss = tf.nn.sampled_softmax_loss(
            weights=self.item_vectors, biases=tf.zeros([n_items]), labels=true, inputs=u,
            num_sampled=n_sampled, num_classes=n_items, sampled_values=sampled)
        return tf.reduce_mean(loss), penalty

    def _epoch_rows(self, train, positions, neg_sampling, sampler):
        users = train.user_indices.astype(np.int32)
        items = train.item_indices.astype(np.int32)
        return users, items, np.ones(len(users), dtype=np.float32), positions

    # vectors ---------------------------------------------------------------------------------
    def _build(self) -> None:
        super()._build()
        specs = self._tensor_specs()

        @tf.function(input_signature=[specs], autograph=False)
        def user_vectors(x):
            return self._user_vectors(x, None)[0]

        self._user_fn = user_vectors

    def _user_vector_rows(self, users: np.ndarray) -> np.ndarray:
        out = np.empty((len(users), self.vector_size), dtype=np.float32)
        for start in range(0, len(users), SCORE_ROWS):
            block = users[start:start + SCORE_ROWS]
            x = self.build_inputs(block, np.zeros(len(block), dtype=np.int32))
            out[start:start + len(block)] = self._user_fn(x).numpy()
        return out

    def user_item_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """User and item vectors whose inner products are the model's scores.

        Returns
        -------
        user_vecs : np.ndarray of float32, shape (n_users, vector_size)
            From the user tower, with each user's most recent training items as the sequence.
        item_vecs : np.ndarray of float32, shape (n_items, vector_size)
        """
        self._require_fitted()
        users = np.arange(self.data_info.n_users)
        return self._user_vector_rows(users), self.item_vectors.numpy().copy()

    def _scores(self, users: np.ndarray) -> np.ndarray:
        user_vecs = self._user_vector_rows(np.asarray(users, dtype=np.int64))
        return user_vecs @ self.item_vectors.numpy().T
