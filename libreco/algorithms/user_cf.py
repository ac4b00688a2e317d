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
      saved neighbours and consumed items.
    * ``task="rating"``: the similarity-weighted mean label of the neighbours who consumed
      ``j``, ``score(u, j) / sum_{v in N(u), v consumed j} sim(u, v)``; the user's mean label
      when none did. ``recommend_user`` then ranks by this prediction.

    Parameters
    ----------
    task : {"ranking", "rating"}
    data_info : DataInfo
    k_sim : int
        Neighbours kept per user.
    sim_type : {"cosine", "pearson", "jaccard"}
        Cosine and pearson use the labels as weights (pearson centres each user's labels by
        their mean, so it needs graded labels: with all-equal labels every similarity is 0);
        jaccard uses the binarised matrix.
    min_common : int
        User pairs with fewer common items get no similarity.
    block_size : int, optional
        Users per block of the similarity computation; by default about ``2M / n_users``.
        It changes speed and peak memory, never the result.
    num_threads : int
        Blocks computed in parallel (0: one per CPU, at most 4).
    """

    algorithm = "user_cf"
    based_on = "user"
