"""Base of the TensorFlow models: inputs, training loop, scoring in blocks, export.

Every TF model is a function of named input tensors, the same names the exported SavedModel's
``predict`` signature takes (see :func:`libreco.utils.save_model_tf_serving`):

==================  =======  ==================  ==================================================
name                dtype    shape               meaning
==================  =======  ==================  ==================================================
``user_indices``    int32    (B,)                inner user index; ``n_users`` for an unknown user
``item_indices``    int32    (B,)                inner item index; ``n_items`` for an unknown item
``sparse_indices``  int32    (B, n_sparse)       global categorical indices, user fields then item
                                                 fields in ``FeatureInfo`` order (``user_sparse`` /
                                                 ``item_sparse`` rows); present when the data has
                                                 categorical features
``dense_values``    float32  (B, n_dense)        standardised numeric features, user fields then
                                                 item fields; present when the data has numeric
                                                 features
``seq``             int32    (B, recent_num)     sequence models only: the user's most recent items,
                                                 oldest first, left-aligned, padded at the end with
                                                 ``pad_index = n_items + 1`` (an unknown item is
                                                 ``n_items``)
``seq_len``         int32    (B,)                sequence models only: valid entries of ``seq``
==================  =======  ==================  ==================================================

The model's output is one score per row: the probability of an interaction for
``task="ranking"`` (trained with binary cross-entropy against sampled negatives) and the predicted
label for ``task="rating"`` (trained with squared error).

TensorFlow is used without Keras: parameters are ``tf.Variable`` objects created from a seeded
numpy generator, training runs a ``tf.function`` step with the Adam of
:mod:`libreco.algorithms._tf.optim`, and dropout is stateless, so a seed repeats a run on CPU.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf
from scipy.stats import rankdata

from libreco import logger
from libreco.algorithms._tf.layers import ParamStore, sequence_mask
from libreco.algorithms._tf.optim import Adam
from libreco.algorithms.base import Recommender
from libreco.data.dataset import TransformedSet
from libreco.data.sampling import NegativeSampler
from libreco.utils.progress import log_epoch, progress

SCORE_ROWS = 1 << 16  # (user, item) pairs per call of the compiled scoring function
STEPS_PER_CALL = 64  # training batches per call of the chunked training function
CHUNKED_FROM_STEPS = 1500  # planned steps from which the chunked function pays for its compiling
LOWER_IS_BETTER = ("loss", "rmse", "mae")

DEFAULTS: dict[str, Any] = {
    "embed_size": 16,
    "n_epochs": 20,
    "lr": 1e-3,
    "batch_size": 256,
    "reg": 0.0,
    "num_neg": 1,
    "hidden_units": (128, 64),
    "dropout": 0.0,
    "seed": 42,
    "patience": 3,
    "recent_num": 10,
}


def _int_param(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _float_param(name: str, value, low: float, high: float = np.inf,
                 high_open: bool = False) -> float:
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    value = float(value) if ok else value
    if not ok or not low <= value <= high or (high_open and value == high):
        bound = f"[{low}, {high})" if high_open else f"[{low}, {high}]"
        raise ValueError(f"{name} must be a number in {bound}, got {value!r}")
    return value


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve from ranks (Mann-Whitney U), ties counted half."""
    labels = np.asarray(labels) > 0
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class TFModel(Recommender):
    """Common part of the TF models; each subclass defines its network.

    Parameters shared by the TF models (each model's docstring lists the ones it takes):

    embed_size : int
        Size of every field embedding.
    n_epochs : int
        Passes over the training data (fewer when early stopping ends training).
    lr : float
        Adam learning rate.
    batch_size : int
        Rows per training step, sampled negatives included.
    reg : float
        L2 penalty on the embeddings looked up in a batch (mean over the batch of their summed
        squares).
    num_neg : int
        Negatives sampled per positive row for ``task="ranking"``, drawn anew each epoch
        uniformly from the items the user did not consume.
    hidden_units : sequence of int
        Sizes of the ReLU layers of the network's MLP.
    dropout : float in [0, 1)
        Dropout rate after each hidden layer during training.
    seed : int
        Seeds initial values, negative sampling, shuffling and dropout.
    patience : int or None
        With ``eval_data``: stop after this many epochs without improvement of the stopping
        metric and keep the best epoch's parameters. ``None`` trains all ``n_epochs``.

    ``fit`` accepts ``stop_metric``: ``"roc_auc"`` (ranking default: the eval positives against
    one sampled negative each, drawn once), ``"rmse"`` (rating default), ``"mae"``, ``"loss"``
    (the training loss on those pairs), or another metric name of
    :func:`libreco.evaluation.evaluate` such as ``"ndcg"`` (slower: it ranks every item).
    """

    family = "tf"
    uses_sequence: ClassVar[bool] = False

    def __init__(self, task: str, data_info, **params: Any):
        super().__init__(task, data_info, **params)

        def get(name):
            return params.get(name, DEFAULTS[name])

        self.embed_size = _int_param("embed_size", get("embed_size"))
        self.n_epochs = _int_param("n_epochs", get("n_epochs"))
        self.lr = _float_param("lr", get("lr"), 0.0)
        if self.lr == 0.0:
            raise ValueError("lr must be positive, got 0")
        self.batch_size = _int_param("batch_size", get("batch_size"))
        self.reg = _float_param("reg", get("reg"), 0.0)
        self.num_neg = _int_param("num_neg", get("num_neg"))
        units = get("hidden_units")
        if isinstance(units, (int, np.integer)) and not isinstance(units, bool):
            units = (units,)
        if not isinstance(units, (list, tuple)):
            raise ValueError(f"hidden_units must be a sequence of positive integers, got {units!r}")
        self.hidden_units = tuple(_int_param("hidden_units", u) for u in units)
        self.dropout = _float_param("dropout", get("dropout"), 0.0, 1.0, high_open=True)
        self.seed = _int_param("seed", get("seed"), minimum=0)
        patience = get("patience")
        self.patience = None if patience is None else _int_param("patience", patience)
        self.recent_num = _int_param("recent_num", get("recent_num")) if self.uses_sequence else 0
        di = self.data_info
        self.n_user_sparse, self.n_item_sparse = di.user_sparse.shape[1], di.item_sparse.shape[1]
        self.n_user_dense, self.n_item_dense = di.user_dense.shape[1], di.item_dense.shape[1]
        self.n_sparse = self.n_user_sparse + self.n_item_sparse
        self.n_dense = self.n_user_dense + self.n_item_dense
        self.pad_index = di.n_items + 1
        self.store: ParamStore | None = None
        self._score_fn = None

    # network: defined by subclasses ----------------------------------------------------------
    def _build_network(self, p: ParamStore) -> None:
        """Create the variables and layers of the network in ``p``."""
        raise NotImplementedError

    def _forward(self, x: dict[str, tf.Tensor], step: tf.Tensor | None):
        """``(logits (B,), penalty)`` for a dict of inputs; ``step`` is None at inference."""
        raise NotImplementedError

    # fields shared by the networks ---------------------------------------------------------
    @property
    def n_fields(self) -> int:
        """Fields embedded by ``_field_embeddings``: user, item, categorical, numeric."""
        return 2 + self.n_sparse + self.n_dense

    def _embedding(self, p: ParamStore, name: str, n_rows: int, dim: int,
                   zero_rows=()) -> tf.Variable:
        """A (n_rows, dim) table; ``zero_rows`` (unknown and padding slots) start at zero."""
        values = p.rng.normal(0.0, 0.05, (n_rows, dim))
        values[list(zero_rows)] = 0.0
        return p.add(name, values)

    def _build_fields(self, p: ParamStore, linear: bool = False) -> None:
        """Embeddings of every field (and linear weights when ``linear``), plus the bias.

        Unknown users and items, the padding item and each categorical field's
        out-of-vocabulary slot start at zero, so what is unseen in training adds nothing.
        """
        di, k = self.data_info, self.embed_size
        n_item_rows = di.n_items + (2 if self.uses_sequence else 1)
        item_zero = [di.n_items] + ([self.pad_index] if self.uses_sequence else [])
        sparse_zero = []
        if di.features is not None:
            sparse_zero = [di.features.oov_index(c) for c in di.features.sparse_cols]
        n_sparse_rows = di.features.n_sparse_features if self.n_sparse else 0
        self.user_embed = self._embedding(p, "user_embed", di.n_users + 1, k, [di.n_users])
        self.item_embed = self._embedding(p, "item_embed", n_item_rows, k, item_zero)
        if self.uses_sequence:
            self.seq_embed = self._embedding(p, "seq_embed", n_item_rows, k, item_zero)
        if self.n_sparse:
            self.sparse_embed = self._embedding(p, "sparse_embed", n_sparse_rows, k, sparse_zero)
        if self.n_dense:
            self.dense_embed = p.normal("dense_embed", (self.n_dense, k))
        if linear:
            self.user_linear = p.zeros("user_linear", (di.n_users + 1,))
            self.item_linear = p.zeros("item_linear", (n_item_rows,))
            if self.n_sparse:
                self.sparse_linear = p.zeros("sparse_linear", (n_sparse_rows,))
            if self.n_dense:
                self.dense_linear = p.zeros("dense_linear", (self.n_dense,))
        start = di.global_mean if self.task == "rating" else 0.0
        self.bias = p.add("bias", np.float32(start))

    def _field_embeddings(self, x: dict[str, tf.Tensor]):
        """(B, n_fields, k) embeddings and their L2 penalty (mean over the batch)."""
        parts = [tf.gather(self.user_embed, x["user_indices"])[:, None, :],
                 tf.gather(self.item_embed, x["item_indices"])[:, None, :]]
        if self.n_sparse:
            parts.append(tf.gather(self.sparse_embed, x["sparse_indices"]))
        if self.n_dense:
            parts.append(self.dense_embed[None, :, :] * x["dense_values"][:, :, None])
        e = tf.concat(parts, axis=1)
        return e, tf.reduce_mean(tf.reduce_sum(tf.square(e), axis=[1, 2]))

    def _linear_term(self, x: dict[str, tf.Tensor]) -> tf.Tensor:
        """(B,) first-order term: one weight per categorical value, one per numeric field."""
        out = (tf.gather(self.user_linear, x["user_indices"])
               + tf.gather(self.item_linear, x["item_indices"]))
        if self.n_sparse:
            out += tf.reduce_sum(tf.gather(self.sparse_linear, x["sparse_indices"]), axis=1)
        if self.n_dense:
            out += tf.reduce_sum(self.dense_linear * x["dense_values"], axis=1)
        return out

    def _sequence_embeddings(self, x: dict[str, tf.Tensor]):
        """(B, R, k) embeddings of ``seq`` (from the item table), their mask and L2 penalty."""
        s = tf.gather(self.seq_embed, x["seq"])
        mask = sequence_mask(x["seq"], x["seq_len"], self.pad_index)
        s = s * mask[:, :, None]
        return s, mask, tf.reduce_mean(tf.reduce_sum(tf.square(s), axis=[1, 2]))

    # inputs ----------------------------------------------------------------------------------
    def input_signature(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """``{name: (dtype, shape)}`` of the model's inputs, ``-1`` for the batch dimension."""
        sig: dict[str, tuple[str, tuple[int, ...]]] = {
            "user_indices": ("int32", (-1,)),
            "item_indices": ("int32", (-1,)),
        }
        if self.n_sparse:
            sig["sparse_indices"] = ("int32", (-1, self.n_sparse))
        if self.n_dense:
            sig["dense_values"] = ("float32", (-1, self.n_dense))
        if self.uses_sequence:
            sig["seq"] = ("int32", (-1, self.recent_num))
            sig["seq_len"] = ("int32", (-1,))
        return sig

    def _tensor_specs(self) -> dict[str, tf.TensorSpec]:
        return {name: tf.TensorSpec([None if d < 0 else d for d in shape], getattr(tf, dtype),
                                    name=name)
                for name, (dtype, shape) in self.input_signature().items()}

    def build_inputs(self, user_indices, item_indices, seq=None,
                     seq_len=None) -> dict[str, np.ndarray]:
        """Input arrays for (user, item) pairs of inner indices, features from ``data_info``.

        Parameters
        ----------
        user_indices, item_indices : array-like of int, shape (n,)
            ``n_users`` / ``n_items`` stand for an unknown user / item.
        seq, seq_len : np.ndarray of shapes (n, recent_num) and (n,), optional
            Sequence models only; by default each user's most recent training items.

        Returns
        -------
        dict of np.ndarray keyed by the names of :meth:`input_signature`.
        """
        di = self.data_info
        u = np.asarray(user_indices, dtype=np.int32)
        i = np.asarray(item_indices, dtype=np.int32)
        x = {"user_indices": u, "item_indices": i}
        if self.n_sparse:
            x["sparse_indices"] = np.concatenate([di.user_sparse[u], di.item_sparse[i]], axis=1)
        if self.n_dense:
            x["dense_values"] = np.concatenate([di.user_dense[u], di.item_dense[i]], axis=1)
        if self.uses_sequence:
            if seq is None:
                seq, seq_len = self.user_sequences(u)
            x["seq"] = np.asarray(seq, dtype=np.int32)
            x["seq_len"] = np.asarray(seq_len, dtype=np.int32)
        return x

    def user_sequences(self, user_indices) -> tuple[np.ndarray, np.ndarray]:
        """Each user's ``recent_num`` most recent training items as ``(seq, seq_len)``.

        ``seq`` has shape (n, recent_num), oldest first, padded with ``pad_index``; an unknown
        user (index ``n_users``) gets an empty sequence.
        """
        u = np.asarray(user_indices, dtype=np.int64)
        di = self.data_info
        known = u < di.n_users
        ends = np.where(known, di.consumed_indptr[np.minimum(u + 1, di.n_users)], 0)
        return self._sequences(u, ends)

    def _sequences(self, users: np.ndarray, ends: np.ndarray):
        """Sequences of the items before position ``ends`` of each user's consumed list."""
        di, r = self.data_info, self.recent_num
        known = users < di.n_users
        lo = np.where(known, di.consumed_indptr[np.minimum(users, di.n_users - 1)], 0)
        ends = np.where(known, ends, lo)
        starts = np.maximum(lo, ends - r)
        idx = starts[:, None] + np.arange(r)
        valid = idx < ends[:, None]
        items = di.consumed_items
        safe = np.minimum(idx, max(len(items) - 1, 0))
        seq = np.where(valid, items[safe] if len(items) else 0, self.pad_index)
        return seq.astype(np.int32), (ends - starts).astype(np.int32)

    def _row_positions(self, data: TransformedSet) -> np.ndarray:
        """Position of each training row's (user, item) in the consumed list (interaction order).

        The sequence of a training row is made of the items consumed before it, so the model
        never sees the target inside its own history.
        """
        di = self.data_info
        n_items = np.int64(di.n_items)
        owners = np.repeat(np.arange(di.n_users, dtype=np.int64), np.diff(di.consumed_indptr))
        keys = owners * n_items + di.consumed_items
        order = np.argsort(keys, kind="stable")
        query = data.user_indices.astype(np.int64) * n_items + data.item_indices
        found = np.minimum(np.searchsorted(keys[order], query), len(keys) - 1)
        pos = order[found]
        # a row absent from the consumed list (not possible for training rows) sees everything
        missing = keys[pos] != query
        pos[missing] = di.consumed_indptr[data.user_indices[missing] + 1]
        return pos

    # building and compiling ----------------------------------------------------------------
    def _build(self) -> None:
        self.store = ParamStore(self.seed)
        self._build_network(self.store)
        specs = self._tensor_specs()

        @tf.function(input_signature=[specs], autograph=False)
        def score(x):
            return self._output(self._forward(x, None)[0])

        self._score_fn = score

    def _output(self, logits: tf.Tensor) -> tf.Tensor:
        return tf.sigmoid(logits) if self.task == "ranking" else logits

    def _loss(self, logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        if self.task == "ranking":
            return tf.reduce_mean(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
        return tf.reduce_mean(tf.square(logits - labels))

    def _train_loss(self, x: dict[str, tf.Tensor], labels: tf.Tensor, step: tf.Tensor):
        """``(data loss, penalty)`` of one batch; YouTubeMatch overrides it."""
        logits, penalty = self._forward(x, step)
        return self._loss(logits, labels), penalty

    def _train_fn(self, optimizer: Adam, chunked: bool):
        """The compiled training function: one batch per call, or a chunk of batches.

        Both take ``(inputs, labels, first_step, batch_size)`` and return the summed batch
        losses and the number of batches. The chunked form loops over the batches of its rows
        inside the graph, which saves Python's per-call overhead (about half of a small model's
        step time) but takes about a second longer to compile; ``_fit`` uses it when training
        plans at least ``CHUNKED_FROM_STEPS`` steps. Both apply the same steps in the same
        order.
        """
        specs = self._tensor_specs()
        variables = optimizer.variables
        reg = self.reg
        signature = [specs, tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.int64),
                     tf.TensorSpec([], tf.int32)]

        def apply_batch(x, labels, step):
            with tf.GradientTape() as tape:
                loss, penalty = self._train_loss(x, labels, step)
                objective = loss + reg * penalty
            optimizer.apply(tape.gradient(objective, variables))
            return loss

        @tf.function(input_signature=signature, autograph=False)
        def train_batch(x, labels, first_step, batch_size):
            return apply_batch(x, labels, first_step), tf.constant(1)

        @tf.function(input_signature=signature, autograph=False)
        def train_chunk(x, labels, first_step, batch_size):
            n = tf.shape(labels)[0]
            n_batches = (n + batch_size - 1) // batch_size

            def body(j, total):
                lo = j * batch_size
                hi = tf.minimum(n, lo + batch_size)
                batch = {name: value[lo:hi] for name, value in x.items()}
                loss = apply_batch(batch, labels[lo:hi], first_step + tf.cast(j, tf.int64))
                return j + 1, total + loss

            _, total = tf.while_loop(lambda j, total: j < n_batches, body,
                                     (tf.constant(0), tf.constant(0.0)))
            return total, n_batches

        return train_chunk if chunked else train_batch

    # training --------------------------------------------------------------------------------
    def _fit(self, train_data: TransformedSet, neg_sampling: bool, verbose: int,
             eval_data: TransformedSet | None, stop_metric: str | None = None,
             **options: Any) -> None:
        if options:
            raise ValueError(f"{type(self).__name__}.fit got unknown options {sorted(options)}")
        di = self.data_info
        tf.random.set_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self._build()
        optimizer = Adam(list(self.store.vars.values()), self.lr)
        sampler = NegativeSampler(di.user_consumed, di.n_items, seed=rng)
        positions = self._row_positions(train_data) if self.uses_sequence else None

        stop_metric = stop_metric or ("roc_auc" if self.task == "ranking" else "rmse")
        watch = None
        if eval_data is not None:
            watch = self._eval_pairs(eval_data, np.random.default_rng(self.seed + 1))
        best, best_arrays, waited = None, None, 0
        step = 0
        train_fn = rows_per_call = None
        for epoch in range(1, self.n_epochs + 1):
            started = time.perf_counter()
            users, items, labels, ends = self._epoch_rows(train_data, positions, neg_sampling,
                                                          sampler)
            order = rng.permutation(len(users))
            total, n_batches = 0.0, 0
            if train_fn is None:
                planned = -(-len(users) // self.batch_size) * self.n_epochs
                chunked = planned >= CHUNKED_FROM_STEPS
                train_fn = self._train_fn(optimizer, chunked)
                rows_per_call = self.batch_size * (STEPS_PER_CALL if chunked else 1)
            starts = range(0, len(order), rows_per_call)
            for start in progress(starts, verbose, desc=f"{self.algorithm} epoch {epoch}"):
                rows = order[start:start + rows_per_call]
                seq = seq_len = None
                if self.uses_sequence:
                    seq, seq_len = self._sequences(users[rows].astype(np.int64), ends[rows])
                x = self.build_inputs(users[rows], items[rows], seq, seq_len)
                loss, n = train_fn(x, labels[rows], np.int64(step), np.int32(self.batch_size))
                total += float(loss)
                n_batches += int(n)
                step += int(n)
            figures = {"loss": total / max(n_batches, 1)}
            if not np.isfinite(figures["loss"]):
                logger.warning("%s: training loss is not finite at epoch %d; stopping",
                               self.algorithm, epoch)
                break
            if watch is not None:
                value = self._eval_metric(watch, eval_data, stop_metric)
                figures[f"eval_{stop_metric}"] = value
                better = best is None or (value < best if stop_metric in LOWER_IS_BETTER
                                          else value > best)
                if better:
                    best, waited = value, 0
                    if self.patience is not None:
                        best_arrays = self._arrays()
                else:
                    waited += 1
            log_epoch(self.algorithm, epoch, self.n_epochs, started, verbose, **figures)
            if self.patience is not None and watch is not None and waited >= self.patience:
                if verbose:
                    logger.info("%s: early stop after epoch %d, best eval %s=%.4f",
                                self.algorithm, epoch, stop_metric, best)
                break
        if best_arrays is not None:
            self._set_arrays(best_arrays)

    def _epoch_rows(self, train: TransformedSet, positions, neg_sampling: bool,
                    sampler: NegativeSampler):
        """Users, items, labels (and sequence ends) of one epoch, negatives included."""
        users = train.user_indices.astype(np.int32)
        items = train.item_indices.astype(np.int32)
        if self.task == "rating":
            labels = train.labels.astype(np.float32)
        elif neg_sampling:
            labels = np.ones(len(users), dtype=np.float32)
        else:
            labels = (train.labels > 0).astype(np.float32)
        ends = positions
        if self.task == "ranking" and neg_sampling:
            neg_users = np.repeat(users, self.num_neg)
            neg_items = sampler.sample(users, n_neg=self.num_neg)
            users = np.concatenate([users, neg_users])
            items = np.concatenate([items, neg_items])
            labels = np.concatenate([labels, np.zeros(len(neg_items), dtype=np.float32)])
            if positions is not None:
                ends = np.concatenate([positions, np.repeat(positions, self.num_neg)])
        return users, items, labels, ends

    def _eval_pairs(self, eval_data: TransformedSet, rng: np.random.Generator):
        """Fixed pairs to watch during training: eval rows (and one negative each for ranking)."""
        di = self.data_info
        known = (eval_data.user_indices < di.n_users) & (eval_data.item_indices < di.n_items)
        users = eval_data.user_indices[known].astype(np.int64)
        items = eval_data.item_indices[known].astype(np.int64)
        labels = eval_data.labels[known].astype(np.float32)
        if self.task == "ranking":
            sampler = NegativeSampler(di.user_consumed, di.n_items, seed=rng)
            negs = sampler.sample(users, n_neg=1)
            users = np.concatenate([users, users])
            items = np.concatenate([items, negs])
            labels = np.concatenate([np.ones(len(negs)), np.zeros(len(negs))]).astype(np.float32)
        return users, items, labels

    def _eval_metric(self, watch, eval_data: TransformedSet, metric: str) -> float:
        users, items, labels = watch
        if metric in ("roc_auc", "rmse", "mae", "loss"):
            if len(users) == 0:
                return float("nan")
            scores = self._predict_inner(users, items).astype(np.float64)
            if metric == "roc_auc":
                return roc_auc(labels, scores)
            if metric == "rmse":
                return float(np.sqrt(np.mean((scores - labels) ** 2)))
            if metric == "mae":
                return float(np.mean(np.abs(scores - labels)))
            if self.task == "ranking":
                p = np.clip(scores, 1e-7, 1 - 1e-7)
                return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
            return float(np.mean((scores - labels) ** 2))
        from libreco.evaluation import evaluate

        was_fitted, self.fitted = self.fitted, True
        try:
            return float(evaluate(self, eval_data, metrics=[metric], k=10)[metric])
        finally:
            self.fitted = was_fitted

    # scoring ---------------------------------------------------------------------------------
    def _run(self, x: dict[str, np.ndarray]) -> np.ndarray:
        return self._score_fn(x).numpy().astype(np.float32, copy=False)

    def _scores(self, users: np.ndarray) -> np.ndarray:
        """Scores of every item for a block of users, in chunks of about ``SCORE_ROWS`` pairs."""
        users = np.asarray(users, dtype=np.int64)
        n_items = self.data_info.n_items
        out = np.empty((len(users), n_items), dtype=np.float32)
        per_call = max(1, SCORE_ROWS // n_items)
        all_items = np.arange(n_items, dtype=np.int32)
        seq = seq_len = None
        if self.uses_sequence:
            seq, seq_len = self.user_sequences(users)
        for start in range(0, len(users), per_call):
            block = slice(start, start + per_call)
            n = len(users[block])
            u = np.repeat(users[block], n_items)
            i = np.tile(all_items, n)
            s = sl = None
            if seq is not None:
                s = np.repeat(seq[block], n_items, axis=0)
                sl = np.repeat(seq_len[block], n_items)
            out[block] = self._run(self.build_inputs(u, i, s, sl)).reshape(n, n_items)
        return out

    def _predict_inner(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        out = np.empty(len(users), dtype=np.float32)
        for start in range(0, len(users), SCORE_ROWS):
            rows = slice(start, start + SCORE_ROWS)
            out[rows] = self._run(self.build_inputs(users[rows], items[rows]))
        return out

    # parameters ------------------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        if self.store is None:
            return {}
        return {name: var.numpy() for name, var in self.store.vars.items()}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        if self.store is None:
            self._build()
        expected = self.store.vars
        missing = sorted(set(expected) - set(arrays))
        extra = sorted(set(arrays) - set(expected))
        if missing or extra:
            raise ValueError(f"{type(self).__name__}: parameters do not match the network "
                             f"(missing {missing}, unexpected {extra})")
        for name, var in expected.items():
            value = np.asarray(arrays[name], dtype=np.float32)
            if tuple(value.shape) != tuple(var.shape):
                raise ValueError(f"{type(self).__name__}: parameter {name!r} has shape "
                                 f"{value.shape}, the network expects {tuple(var.shape)}")
            var.assign(value)

    # export ----------------------------------------------------------------------------------
    def serving_module(self) -> tuple[tf.Module, Any]:
        """A ``tf.Module`` holding the variables, and its ``predict`` function.

        ``predict`` takes a dict of the tensors of :meth:`input_signature` and returns
        ``{"score": (B,) float32}``; ``tf.saved_model.save`` exports it as a signature.
        """
        self._require_fitted()
        module = tf.Module()
        module.params = dict(self.store.vars)

        @tf.function(input_signature=[self._tensor_specs()])
        def predict(x):
            return {"score": self._output(self._forward(x, None)[0])}

        module.predict = predict
        return module, predict

    def serving_spec(self) -> dict[str, Any]:
        """What a server needs to build inputs: the ``"tf"`` entry of the model's manifest."""
        di = self.data_info
        feats = di.features
        return {
            "signature_name": "predict",
            "inputs": {name: {"dtype": dtype, "shape": list(shape)}
                       for name, (dtype, shape) in self.input_signature().items()},
            "output": "score",
            "output_kind": "probability" if self.task == "ranking" else "rating",
            "unknown_user_index": di.n_users,
            "unknown_item_index": di.n_items,
            "user_sparse_cols": feats.user_sparse_cols if feats else [],
            "item_sparse_cols": feats.item_sparse_cols if feats else [],
            "user_dense_cols": feats.user_dense_cols if feats else [],
            "item_dense_cols": feats.item_dense_cols if feats else [],
            "recent_num": self.recent_num if self.uses_sequence else None,
            "pad_index": self.pad_index if self.uses_sequence else None,
        }
