"""evaluate(): hand-worked cases on a model with fixed scores, and its contract."""

import numpy as np
import pandas as pd
import pytest

from libreco.algorithms import Popular, Recommender
from libreco.algorithms.base import top_k_rows
from libreco.data import DatasetPure
from libreco.data.synthetic import generate
from libreco.evaluation import ALL_METRICS, evaluate
from libreco.evaluation import metrics as M

# items A..F score 0.9 .. 0.4 for every user
ITEM_SCORES = {"A": 0.9, "B": 0.8, "C": 0.7, "D": 0.6, "E": 0.5, "F": 0.4}


class FixedScores(Recommender):
    """Scores come from a table given per original item id; the same for every user."""

    algorithm = "fixed_scores"
    family = "test"

    def __init__(self, task, data_info, item_scores=None):
        super().__init__(task, data_info)
        scores = np.zeros(data_info.n_items, dtype=np.float32)
        for item, s in (item_scores or {}).items():
            scores[data_info.item_index(item)] = s
        self.item_scores = scores
        self.scored_pairs = []

    def _fit(self, train_data, neg_sampling, verbose, eval_data, **options):
        pass

    def _scores(self, users):
        return np.tile(self.item_scores, (len(users), 1))

    def _predict_inner(self, users, items):
        self.scored_pairs.append((np.array(users), np.array(items)))
        return self.item_scores[items]

    def _arrays(self):
        return {"item_scores": self.item_scores}

    def _set_arrays(self, arrays):
        self.item_scores = arrays["item_scores"]


@pytest.fixture
def hand():
    # user 1 consumed A; user 2 consumed B, C; user 3 consumed D, E, F
    train = pd.DataFrame({
        "user": [1, 2, 2, 3, 3, 3],
        "item": ["A", "B", "C", "D", "E", "F"],
        "label": [4, 5, 3, 2, 4, 1],
    })
    # test: user 1 -> {C, F} and an unknown item Z; user 2 -> {A}; user 3 -> {C};
    # user 99 is unknown
    test = pd.DataFrame({
        "user": [1, 1, 1, 2, 3, 99],
        "item": ["C", "F", "Z", "A", "C", "A"],
        "label": [5, 2, 4, 4, 1, 3],
    })
    train_data, info = DatasetPure.build_trainset(train)
    model = FixedScores("ranking", info, ITEM_SCORES).fit(train_data, verbose=0)
    return model, test, info


def test_ranking_metrics_hand_worked(hand):
    model, test, _ = hand
    res = evaluate(model, test, metrics=["precision", "recall", "ndcg", "map", "hit_rate",
                                         "coverage"], k=2)
    # top 2 after removing consumed items:
    #   user 1 (consumed A): B C  -> relevant {C, F}: hits 0 1
    #   user 2 (consumed B, C): A D -> relevant {A}: hits 1 0
    #   user 3 (consumed D, E, F): A B -> relevant {C}: hits 0 0
    # user 99 is skipped and Z is dropped (unknown="drop")
    ndcg_u1 = (1 / np.log2(3)) / (1 + 1 / np.log2(3))  # 0.6309 / 1.6309 = 0.38685
    assert res["precision"] == pytest.approx((0.5 + 0.5 + 0) / 3)
    assert res["recall"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert res["ndcg"] == pytest.approx((ndcg_u1 + 1 + 0) / 3)
    assert res["map"] == pytest.approx((0.5 / 2 + 1 + 0) / 3)  # AP u1 = (1/2) / min(2, 2)
    assert res["hit_rate"] == pytest.approx(2 / 3)
    assert res["coverage"] == pytest.approx(4 / 6)  # B, C, A, D of 6 items
    assert list(res) == ["precision", "recall", "ndcg", "map", "hit_rate", "coverage"]
    assert all(isinstance(v, float) for v in res.values())


def test_unknown_item_kept_as_oov_lowers_recall(hand):
    model, test, _ = hand
    res = evaluate(model, test, metrics=["recall", "ndcg"], k=2, unknown="oov")
    # user 1's relevant set is now {C, F, Z}: recall 1/3; ideal DCG still counts min(3, 2) = 2
    ndcg_u1 = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
    assert res["recall"] == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert res["ndcg"] == pytest.approx((ndcg_u1 + 1 + 0) / 3)


def test_relevance_threshold(hand):
    model, test, _ = hand
    res = evaluate(model, test, metrics=["recall", "precision"], k=2, relevance_threshold=4)
    # labels >= 4: user 1 {C}, user 2 {A}; user 3's only row (label 1) is not relevant
    assert res["recall"] == pytest.approx((1 + 1) / 2)
    assert res["precision"] == pytest.approx((0.5 + 0.5) / 2)


def test_regression_metrics_hand_worked(hand):
    _, test, info = hand
    train_data = DatasetPure.build_trainset(pd.DataFrame({
        "user": [1, 2, 2, 3, 3, 3], "item": list("ABCDEF"), "label": [4, 5, 3, 2, 4, 1]}))[0]
    model = FixedScores("rating", train_data.data_info,
                        {"A": 4.0, "B": 3.0, "C": 3.5, "D": 2.0, "E": 1.0, "F": 2.5})
    model.fit(train_data, verbose=0)
    res = evaluate(model, test, metrics=["rmse", "mae", "r2"])
    # known rows: (1,C) 5 vs 3.5, (1,F) 2 vs 2.5, (2,A) 4 vs 4, (3,C) 1 vs 3.5
    err = np.array([1.5, -0.5, 0.0, -2.5])
    labels = np.array([5, 2, 4, 1])
    assert res["rmse"] == pytest.approx(np.sqrt(np.mean(err ** 2)))  # sqrt(8.75 / 4)
    assert res["mae"] == pytest.approx(np.mean(np.abs(err)))  # 4.5 / 4
    assert res["r2"] == pytest.approx(1 - np.sum(err ** 2) / np.sum((labels - 3) ** 2))
    # with oov the unknown rows are predicted as the global mean of the training labels
    mean = 19 / 6
    err_oov = np.r_[err, 4 - mean, 3 - mean]  # (1, Z) label 4, (99, A) label 3
    res = evaluate(model, test, metrics=["rmse"], unknown="oov")
    assert res["rmse"] == pytest.approx(np.sqrt(np.mean(err_oov ** 2)), rel=1e-6)


def test_defaults_per_task(hand):
    model, test, _ = hand
    assert list(evaluate(model, test)) == ["precision", "recall", "ndcg"]
    rating = FixedScores("rating", model.data_info, ITEM_SCORES).fit(
        DatasetPure.build_evalset(test, model.data_info), verbose=0)
    assert list(evaluate(rating, test)) == ["rmse", "mae"]


def test_unknown_metric_lists_valid_ones(hand):
    model, test, _ = hand
    with pytest.raises(ValueError, match="valid metrics") as err:
        evaluate(model, test, metrics=["ndcg", "auc"])
    assert "'auc'" in str(err.value) and "roc_auc" in str(err.value)
    with pytest.raises(ValueError, match="k must"):
        evaluate(model, test, k=0)


def test_nothing_left_raises(hand):
    model, _, _ = hand
    only_unknown = pd.DataFrame({"user": [99], "item": ["A"], "label": [1]})
    with pytest.raises(ValueError, match="no test rows"):
        evaluate(model, only_unknown, metrics=["ndcg"])


def test_transformed_set_gives_the_same(hand):
    model, test, info = hand
    metrics = ["precision", "ndcg", "map"]
    ts = DatasetPure.build_evalset(test, info, unknown="oov")
    assert evaluate(model, ts, metrics=metrics, k=2, unknown="oov") == \
        evaluate(model, test, metrics=metrics, k=2, unknown="oov")
    assert evaluate(model, ts, metrics=metrics, k=2) == evaluate(model, test, metrics=metrics,
                                                                   k=2)


def test_classification_on_ranking_model(hand):
    model, test, info = hand
    model.scored_pairs.clear()
    res = evaluate(model, test, metrics=["roc_auc", "pr_auc", "log_loss"], seed=3)
    users, items = model.scored_pairs[-1]
    n = len(users) // 2
    # 4 known positives, then one negative per positive
    assert n == 4
    test_pairs = set(zip(DatasetPure.build_evalset(test, info).user_indices.tolist(),
                         DatasetPure.build_evalset(test, info).item_indices.tolist()))
    for u, i in zip(users[n:], items[n:]):
        assert i not in info.consumed(u)  # never a training item of the user
        assert (u, i) not in test_pairs  # never one of the user's test items
    y = np.r_[np.ones(n), np.zeros(n)]
    scores = model.item_scores[items]
    assert res["roc_auc"] == pytest.approx(M.roc_auc(y, scores))
    assert res["pr_auc"] == pytest.approx(M.pr_auc(y, scores))
    # scores all in [0, 1] are used as probabilities
    assert res["log_loss"] == pytest.approx(M.log_loss(y, scores))
    # same seed, same negatives
    assert evaluate(model, test, metrics=["roc_auc"], seed=3)["roc_auc"] == res["roc_auc"]


def test_log_loss_uses_sigmoid_outside_unit_interval(hand):
    model, test, info = hand
    logits = FixedScores("ranking", info, {k: 10 * v - 5 for k, v in ITEM_SCORES.items()})
    logits.fit(DatasetPure.build_evalset(test, info), verbose=0)
    res = evaluate(logits, test, metrics=["log_loss"], seed=3)
    users, items = logits.scored_pairs[-1]
    n = len(users) // 2
    y = np.r_[np.ones(n), np.zeros(n)]
    assert res["log_loss"] == pytest.approx(M.log_loss(y, M.sigmoid(logits.item_scores[items])))


def test_classification_on_rating_model_needs_threshold(hand):
    model, test, info = hand
    rating = FixedScores("rating", info, ITEM_SCORES).fit(
        DatasetPure.build_evalset(test, info), verbose=0)
    with pytest.raises(ValueError, match="relevance_threshold"):
        evaluate(rating, test, metrics=["roc_auc"])
    with pytest.raises(ValueError, match="log_loss"):
        evaluate(rating, test, metrics=["log_loss"], relevance_threshold=4)
    res = evaluate(rating, test, metrics=["roc_auc"], relevance_threshold=4)
    # known rows (1,C) 5 ->pos .7, (1,F) 2 ->neg .4, (2,A) 4 ->pos .9, (3,C) 1 ->neg .7
    # pairs: (.7,.4)=1, (.7,.7)=.5, (.9,.4)=1, (.9,.7)=1 -> 3.5 / 4
    assert res["roc_auc"] == pytest.approx(0.875)


def test_sample_users_is_seeded_subset():
    df = generate(n_users=300, n_items=200, n_interactions=8000, seed=11)
    rng = np.random.default_rng(0)
    test_mask = rng.random(len(df)) < 0.2
    test_mask &= df.duplicated("user").to_numpy()
    train_data, info = DatasetPure.build_trainset(df[~test_mask])
    model = Popular("ranking", info).fit(train_data, verbose=0)
    test = df[test_mask]
    a = evaluate(model, test, metrics=["ndcg", "recall"], sample_users=50, seed=1)
    b = evaluate(model, test, metrics=["ndcg", "recall"], sample_users=50, seed=1)
    full = evaluate(model, test, metrics=["ndcg", "recall"])
    everyone = evaluate(model, test, metrics=["ndcg", "recall"], sample_users=10_000)
    assert a == b
    assert everyone == full
    assert a != full  # 50 of ~300 users give a different mean
    with pytest.raises(ValueError, match="sample_users"):
        evaluate(model, test, sample_users=0)


def test_all_metrics_on_popular_are_sane():
    df = generate(n_users=200, n_items=150, n_interactions=5000, seed=5)
    test_mask = (np.random.default_rng(1).random(len(df)) < 0.2) & df.duplicated("user").values
    train_data, info = DatasetPure.build_trainset(df[~test_mask])
    model = Popular("ranking", info).fit(train_data, verbose=0)
    res = evaluate(model, df[test_mask], metrics=list(ALL_METRICS), k=10)
    for name in ("precision", "recall", "ndcg", "map", "hit_rate", "coverage", "roc_auc",
                 "pr_auc"):
        assert 0.0 <= res[name] <= 1.0, name
    # popularity ranks held-out items above random unconsumed ones
    assert res["roc_auc"] > 0.5
    assert res["log_loss"] > 0


@pytest.mark.parametrize("m", [7, 64, 300, 1000, 1037, 1600])
def test_top_k_rows_matches_full_sort(m):
    rng = np.random.default_rng(m)
    scores = rng.random((50, m)).astype(np.float32)
    scores[rng.random((50, m)) < 0.05] = -np.inf
    scores[0] = 0.5  # all ties: lower item index first
    scores[1, : m - 2] = -np.inf  # fewer finite scores than k
    scores[2] = np.round(scores[2] * 4) / 4  # heavy ties at the threshold
    for k in (1, 5, min(m, 20)):
        expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(top_k_rows(scores, k), expected)
