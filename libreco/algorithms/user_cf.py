"""User-based collaborative filtering."""

from __future__ import annotations

from libreco.algorithms._knn import KNNRecommender


class UserCF(KNNRecommender):
    """Recommends what similar users consumed.

    Every user keeps its ``k_sim`` most similar users, computed from the rows of the
    user-item label matrix in blocks (see :mod:`libreco.algorithms._knn`), so memory grows
    with ``n_users * k_sim``.

    Scoring, with ``N(u)`` the neighbours of user ``u`` and ``r_vj`` user ``v``'s training
    label on item ``j`` (0 when ``v`` did not consume ``j``):

    * ``task="ranking"``: ``score(u, j) = sum_{v in N(u)} sim(u, v) * r_vj``, the sum over the
      neighbours of similarity times label. The serving side computes the same sum from the
      saved neighbours and consumed items (see :func:`libreco.utils.save_knn`).
    * ``task="rating"``: the baseline ``b_uj = mu + b_u + b_j`` (mean label plus shrunk user
      and item biases, see :func:`libreco.algorithms._knn.baseline`) plus the
      similarity-weighted mean residual of the neighbours who consumed ``j``,
      ``b_uj + sum sim(u, v) * (r_vj - b_vj) / sum sim(u, v)`` over ``v in N(u)`` who consumed
      ``j``; just ``b_uj`` when none did. ``recommend_user`` then ranks by this prediction.

    Parameters
    ----------
    task : {"ranking", "rating"}
    data_info : DataInfo
    k_sim : int
        Neighbours kept per user.
    sim_type : {"cosine", "pearson", "jaccard"}
        Cosine and pearson are computed on the labels weighted by ``weighting`` (pearson
        centres each user's entries by their mean, so it needs graded labels: with all-equal
        labels every similarity is 0); jaccard on the binarised matrix.
    min_common : int
        User pairs with fewer common items get no similarity.
    weighting : {"label", "inverse_frequency", "binary"}
        How an interaction counts in the similarity (see ``similarity_input``). The default
        uses the labels as they are: on the generated data it ranks as well as or better than
        damping popular items (``"inverse_frequency"``) or binarised interactions.
    block_size : int, optional
        Users per block of the similarity computation; by default about ``1M / n_users``.
        It changes speed and peak memory, never the result.
    num_threads : int
        Blocks computed in parallel (0: one per CPU, at most 4).
    """

    algorithm = "user_cf"
    based_on = "user"
    default_weighting = "label"
