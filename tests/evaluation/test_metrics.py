"""Metric functions: hand-worked cases, scikit-learn agreement, batch kernels vs a reference."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from libreco.evaluation import metrics as M

# -- ranking, hand-worked -----------------------------------------------------------------------
# ranked list a b c d e, relevant {b, d, x}: hits at ranks 2 and 4 (x is never recommended)
RANKED = ["a", "b", "c", "d", "e"]
RELEVANT = {"b", "d", "x"}


def test_precision_hand_worked():
    # 2 hits among 5 places
    assert M.precision_at_k(RANKED, RELEVANT, 5) == pytest.approx(0.4)
    # k=3: only b is a hit -> 1/3
    assert M.precision_at_k(RANKED, RELEVANT, 3) == pytest.approx(1 / 3)
    # a list shorter than k counts the missing places as misses: 1 hit / 10
    assert M.precision_at_k(["b"], RELEVANT, 10) == pytest.approx(0.1)


def test_recall_hand_worked():
    # 2 of the 3 relevant items are found
    assert M.recall_at_k(RANKED, RELEVANT, 5) == pytest.approx(2 / 3)
    assert M.recall_at_k(RANKED, RELEVANT, 3) == pytest.approx(1 / 3)


def test_ndcg_hand_worked():
    # DCG = 1/log2(3) + 1/log2(5) = 0.6309298 + 0.4306766 = 1.0616064
    # IDCG over min(|rel|, k) = 3 items = 1 + 0.6309298 + 0.5 = 2.1309298
    assert M.ndcg_at_k(RANKED, RELEVANT, 5) == pytest.approx(1.0616064 / 2.1309298, rel=1e-6)
    # k=3: DCG = 0.6309298, IDCG still over 3 items
    assert M.ndcg_at_k(RANKED, RELEVANT, 3) == pytest.approx(0.6309298 / 2.1309298, rel=1e-6)
    # five relevant items but k=2 and both places hit: ideal DCG counts only 2 -> 1.0
    assert M.ndcg_at_k(["b", "d", "a"], {"b", "d", "x", "y", "z"}, 2) == pytest.approx(1.0)
    # the hit at rank 1 is worth more than the hit at rank 2
    assert M.ndcg_at_k(["b", "a"], {"b"}, 2) == pytest.approx(1.0)
    assert M.ndcg_at_k(["a", "b"], {"b"}, 2) == pytest.approx(0.6309298, rel=1e-6)


def test_average_precision_hand_worked():
    # precision at the hits: 1/2 (rank 2) and 2/4 (rank 4); divided by min(3, 5) = 3
    assert M.average_precision_at_k(RANKED, RELEVANT, 5) == pytest.approx((0.5 + 0.5) / 3)
    # k=3: only rank 2 -> 0.5 / min(3, 3)
    assert M.average_precision_at_k(RANKED, RELEVANT, 3) == pytest.approx(0.5 / 3)
    # |rel| = 5 > k = 2, both hits: (1/1 + 2/2) / min(5, 2) = 1.0
    assert M.average_precision_at_k(["b", "d"], {"b", "d", "x", "y", "z"}, 2) == 1.0


def test_hit_rate_hand_worked():
    assert M.hit_rate_at_k(RANKED, RELEVANT, 5) == 1.0
    assert M.hit_rate_at_k(RANKED, RELEVANT, 1) == 0.0  # a is not relevant
    assert M.hit_rate_at_k(RANKED, RELEVANT, 2) == 1.0


def test_repeated_item_counts_once():
    # b twice: the second b is not a second hit
    assert M.precision_at_k(["b", "b"], {"b"}, 2) == pytest.approx(0.5)


def test_coverage_hand_worked():
    ranked = np.array([[0, 1, 2], [1, 2, 3], [-1, -1, -1]])
    # distinct items 0, 1, 2, 3 of a catalogue of 10; the -1 padding is not an item
    assert M.coverage(ranked, 10) == pytest.approx(0.4)


def test_single_list_errors():
    with pytest.raises(ValueError, match="relevant"):
        M.ndcg_at_k(["a"], set(), 5)
    with pytest.raises(ValueError, match="k"):
        M.precision_at_k(["a"], {"a"}, 0)


def test_hit_matrix_with_padding():
    ranked = np.array([[3, 1, -1], [0, 2, 4]])
    # user 0 relevant {1, 5}, user 1 relevant {4}
    indptr = np.array([0, 2, 3])
    items = np.array([1, 5, 4])
    hits = M.hit_matrix(ranked, indptr, items)
    np.testing.assert_array_equal(hits, [[False, True, False], [False, False, True]])


# -- ranking: batch kernels against a plain-Python reference --------------------------------
def reference(ranked, relevant, k):
    """Textbook formulas, one list at a time."""
    hits = [1.0 if item in relevant else 0.0 for item in ranked[:k]]
    hits += [0.0] * (k - len(hits))
    m = min(len(relevant), k)
    dcg = sum(h / math.log2(j + 2) for j, h in enumerate(hits))
    idcg = sum(1 / math.log2(j + 2) for j in range(m))
    ap, found = 0.0, 0
    for j, h in enumerate(hits):
        if h:
            found += 1
            ap += found / (j + 1)
    return {
        "precision": sum(hits) / k,
        "recall": sum(hits) / len(relevant),
        "ndcg": dcg / idcg,
        "map": ap / m,
        "hit_rate": float(any(hits)),
    }


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_batch_kernels_match_reference(data):
    n_items = data.draw(st.integers(3, 30))
    k = data.draw(st.integers(1, 8))
    n_users = data.draw(st.integers(1, 6))
    rng = np.random.default_rng(data.draw(st.integers(0, 10_000)))
    ranked = np.full((n_users, k), -1)
    rel_sets = []
    for u in range(n_users):
        length = int(rng.integers(0, min(k, n_items) + 1))
        ranked[u, :length] = rng.permutation(n_items)[:length]
        size = int(rng.integers(1, n_items + 1))
        rel_sets.append(set(rng.choice(n_items, size=size, replace=False).tolist()))
    n_rel = np.array([len(s) for s in rel_sets])
    indptr = np.r_[0, np.cumsum(n_rel)]
    items = np.concatenate([sorted(s) for s in rel_sets])
    hits = M.hit_matrix(ranked, indptr, items)
    batch = {
        "precision": M.precision_from_hits(hits, k),
        "recall": M.recall_from_hits(hits, n_rel, k),
        "ndcg": M.ndcg_from_hits(hits, n_rel, k),
        "map": M.average_precision_from_hits(hits, n_rel, k),
        "hit_rate": M.hit_rate_from_hits(hits, k),
    }
    for u in range(n_users):
        lst = [int(x) for x in ranked[u] if x >= 0]
        ref = reference(lst, rel_sets[u], k)
        for name, values in batch.items():
            assert values[u] == pytest.approx(ref[name]), (name, lst, rel_sets[u], k)
        assert M.ndcg_at_k(lst, rel_sets[u], k) == pytest.approx(ref["ndcg"])


def test_ndcg_matches_sklearn():
    rng = np.random.default_rng(3)
    n_users, n_items, k = 40, 25, 7
    y_score = rng.random((n_users, n_items))  # continuous: no ties
    y_true = (rng.random((n_users, n_items)) < 0.2).astype(int)
    y_true[:, 0] = 1  # every user has a relevant item
    ranked = np.argsort(-y_score, axis=1)[:, :k]
    ours = [M.ndcg_at_k(ranked[u].tolist(), set(np.flatnonzero(y_true[u]).tolist()), k)
            for u in range(n_users)]
    assert np.mean(ours) == pytest.approx(skm.ndcg_score(y_true, y_score, k=k))


# -- pointwise, hand-worked -----------------------------------------------------------------
Y = [1, 0, 1, 0]
S = [0.9, 0.8, 0.4, 0.4]


def test_roc_auc_hand_worked():
    # (pos, neg) pairs: (.9,.8)=1, (.9,.4)=1, (.4,.8)=0, (.4,.4)=tie=0.5 -> 2.5 / 4
    assert M.roc_auc(Y, S) == pytest.approx(0.625)


def test_pr_auc_hand_worked():
    # thresholds .9: P=1, R=.5 | .8: P=.5, R=.5 | .4 (tie of a pos and a neg): P=.5, R=1
    # AP = .5 * 1 + 0 * .5 + .5 * .5 = 0.75
    assert M.pr_auc(Y, S) == pytest.approx(0.75)


def test_log_loss_hand_worked():
    # -(ln 0.8 + ln(1 - 0.4)) / 2 = (0.2231436 + 0.5108256) / 2
    assert M.log_loss([1, 0], [0.8, 0.4]) == pytest.approx(0.3669846, rel=1e-6)


def test_regression_hand_worked():
    y, p = [3, 5, 1], [2.5, 5, 2]
    # errors .5, 0, -1: MSE = (.25 + 0 + 1) / 3
    assert M.rmse(y, p) == pytest.approx(math.sqrt(1.25 / 3))
    assert M.mae(y, p) == pytest.approx(0.5)
    # mean 3: SS_tot = 0 + 4 + 4 = 8, SS_res = 1.25 -> 1 - 1.25 / 8
    assert M.r2(y, p) == pytest.approx(0.84375)
    assert M.r2([2, 2], [2, 2]) == 1.0
    assert M.r2([2, 2], [1, 2]) == 0.0


def test_pointwise_errors():
    with pytest.raises(ValueError, match="both"):
        M.roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="0/1"):
        M.pr_auc([2, 0], [0.2, 0.3])
    with pytest.raises(ValueError, match="lengths"):
        M.rmse([1, 2], [1])
    with pytest.raises(ValueError, match="probabilities"):
        M.log_loss([1, 0], [1.5, 0.2])


def test_sigmoid_is_stable():
    x = np.array([-1000.0, -1.0, 0.0, 1.0, 1000.0])
    out = M.sigmoid(x)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, [0.0, 1 / (1 + math.e), 0.5, 1 / (1 + 1 / math.e), 1.0])


# -- pointwise against scikit-learn ---------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.integers(0, 100_000), st.integers(4, 200), st.booleans())
def test_pointwise_match_sklearn(seed, n, coarse):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    # coarse scores create many ties, which both must treat the same way
    s = rng.integers(0, 5, n) / 4 if coarse else rng.random(n)
    assert M.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s))
    assert M.pr_auc(y, s) == pytest.approx(skm.average_precision_score(y, s))
    p = np.clip(s, 0.01, 0.99)
    assert M.log_loss(y, p) == pytest.approx(skm.log_loss(y, p, labels=[0, 1]))
    ratings = rng.integers(1, 6, n).astype(float)
    preds = ratings + rng.normal(0, 1, n)
    assert M.rmse(ratings, preds) == pytest.approx(math.sqrt(skm.mean_squared_error(ratings,
                                                                                    preds)))
    assert M.mae(ratings, preds) == pytest.approx(skm.mean_absolute_error(ratings, preds))
    if np.ptp(ratings) > 0:
        assert M.r2(ratings, preds) == pytest.approx(skm.r2_score(ratings, preds))
