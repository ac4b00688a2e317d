"""Evaluation of fitted models: :func:`evaluate` and the metric functions it uses.

See :func:`evaluate` for how each metric treats users, unknown ids and sampled negatives, and
:mod:`libreco.evaluation.metrics` for the definitions.
"""

from libreco.evaluation.evaluate import DEFAULT_METRICS, evaluate
from libreco.evaluation.metrics import ALL_METRICS, POINTWISE_METRICS, RANKING_METRICS

__all__ = ["evaluate", "DEFAULT_METRICS", "ALL_METRICS", "RANKING_METRICS",
           "POINTWISE_METRICS"]
