"""Adam on plain ``tf.Variable`` objects, with lazy row updates for embedding tables."""

from __future__ import annotations

import tensorflow as tf


class Adam:
    """Adam (Kingma & Ba, 2015) for a fixed list of variables.

    A dense gradient updates the whole variable. A sparse gradient (``tf.IndexedSlices``, what
    ``tf.gather`` on an embedding table produces) updates only the rows it touches, moments
    included ("lazy" Adam), so an epoch costs time in the number of rows looked up rather than in
    the size of the tables.

    Parameters
    ----------
    variables : list of tf.Variable
    lr : float
        Learning rate.
    beta1, beta2, eps : float
        Moment decay rates and the denominator's guard.
    """

    def __init__(self, variables: list[tf.Variable], lr: float, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8):
        self.variables = list(variables)
        self.lr, self.beta1, self.beta2, self.eps = float(lr), beta1, beta2, eps
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
        self.t = tf.Variable(0.0, trainable=False, dtype=tf.float32)

    def apply(self, grads) -> None:
        """Apply one step; call inside a ``tf.function``. ``None`` gradients are skipped."""
        t = self.t.assign_add(1.0)
        b1, b2 = self.beta1, self.beta2
        # bias corrections folded into the step size
        step = self.lr * tf.sqrt(1.0 - tf.pow(b2, t)) / (1.0 - tf.pow(b1, t))
        for g, var, m, v in zip(grads, self.variables, self.m, self.v):
            if g is None:
                continue
            if isinstance(g, tf.IndexedSlices):
                rows, pos = tf.unique(g.indices)
                g_rows = tf.math.unsorted_segment_sum(g.values, pos, tf.size(rows))
                m_rows = b1 * tf.gather(m, rows) + (1.0 - b1) * g_rows
                v_rows = b2 * tf.gather(v, rows) + (1.0 - b2) * tf.square(g_rows)
                m.scatter_update(tf.IndexedSlices(m_rows, rows))
                v.scatter_update(tf.IndexedSlices(v_rows, rows))
                var.scatter_sub(tf.IndexedSlices(step * m_rows / (tf.sqrt(v_rows) + self.eps),
                                                 rows))
            else:
                m.assign(b1 * m + (1.0 - b1) * g)
                v.assign(b2 * v + (1.0 - b2) * tf.square(g))
                var.assign_sub(step * m / (tf.sqrt(v) + self.eps))
