"""The TF rankers (WideDeep, FM, DeepFM, AutoInt, YouTubeRanking, DIN): the shared suite, plus
what the TF base promises on its own."""

from __future__ import annotations

import logging

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from libreco.algorithms import (  # noqa: E402
    DIN,
    FM,
    AutoInt,
    DeepFM,
    Recommender,
    WideDeep,
    YouTubeRanking,
)
from libreco.algorithms.tf_base import roc_auc  # noqa: E402
from libreco.data import DatasetFeat, DatasetPure  # noqa: E402
from libreco.data.synthetic import FEATURE_COLUMNS, generate  # noqa: E402
from libreco.evaluation import evaluate  # noqa: E402
from tests.algorithms.model_suite import ModelSuite  # noqa: E402

FAST = {"n_epochs": 4, "batch_size": 256, "lr": 3e-3}


class TestWideDeepSuite(ModelSuite):
    dataset = "feat"

    def make_model(self, data_info):
        return WideDeep(task="ranking", data_info=data_info, hidden_units=(32, 16), **FAST)


class TestFMSuite(ModelSuite):
    dataset = "feat"

    def make_model(self, data_info):
        return FM(task="ranking", data_info=data_info, **FAST)


class TestDeepFMSuite(ModelSuite):
    dataset = "feat"

    def make_model(self, data_info):
        return DeepFM(task="ranking", data_info=data_info, hidden_units=(32, 16), dropout=0.1,
                      **FAST)


class TestDeepFMRatingSuite(ModelSuite):
    task = "rating"
    dataset = "feat"

    def make_model(self, data_info):
        return DeepFM(task="rating", data_info=data_info, hidden_units=(32, 16), **FAST)


class TestAutoIntSuite(ModelSuite):
    dataset = "feat"

    def make_model(self, data_info):
        return AutoInt(task="ranking", data_info=data_info, hidden_units=(32, 16), **FAST)


class TestYouTubeRankingSuite(ModelSuite):
    dataset = "feat"

    def make_model(self, data_info):
        return YouTubeRanking(task="ranking", data_info=data_info, hidden_units=(32, 16),
                              **FAST)


class TestDINSuite(ModelSuite):
    dataset = "feat"

    def make_model(self, data_info):
        return DIN(task="ranking", data_info=data_info, hidden_units=(32, 16), **FAST)


# -- data and fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    df = generate(n_users=120, n_items=80, n_interactions=3000, seed=3)
    train, info = DatasetFeat.build_trainset(df, **FEATURE_COLUMNS)
    return df, train, info


@pytest.fixture(scope="module")
def small_model(small):
    _, train, info = small
    return DeepFM(task="ranking", data_info=info, n_epochs=1, hidden_units=(24, 8),
                  embed_size=6).fit(train, verbose=0)


# -- seeds ---------------------------------------------------------------------------------------
def test_same_seed_same_parameters_other_seed_differs(small):
    _, train, info = small
    def fit(seed):
        return DeepFM(task="ranking", data_info=info, n_epochs=1, hidden_units=(16,),
                      dropout=0.3, seed=seed).fit(train, verbose=0)._arrays()

    a, b, c = fit(5), fit(5), fit(6)
    assert a.keys() == b.keys() == c.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert any(not np.allclose(a[n], c[n]) for n in a)


def test_refit_starts_from_fresh_parameters_and_verbose_0_is_silent(small, caplog):
    _, train, info = small
    model = FM(task="ranking", data_info=info, n_epochs=1)
    with caplog.at_level(logging.INFO, logger="libreco"):
        first = {k: v.copy() for k, v in model.fit(train, verbose=0)._arrays().items()}
    assert not [r for r in caplog.records if "epoch" in r.getMessage()]
    second = model.fit(train, verbose=0)._arrays()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


# -- data without features -------------------------------------------------------------------------
def test_pure_data_uses_ids_only(suite_frames):
    train_df, test_df = suite_frames
    train, info = DatasetPure.build_trainset(train_df)
    model = FM(task="ranking", data_info=info, **FAST).fit(train, verbose=0)
    assert set(model.input_signature()) == {"user_indices", "item_indices"}
    assert "sparse_embed" not in model._arrays()
    from libreco.algorithms import Popular

    pop = Popular(task="ranking", data_info=info).fit(train, verbose=0)
    ndcg = evaluate(model, test_df, metrics=["ndcg"])["ndcg"]
    assert ndcg > evaluate(pop, test_df, metrics=["ndcg"])["ndcg"]


# -- unknown users, items and feature values --------------------------------------------------
def test_unseen_rows_start_at_zero(small):
    _, _, info = small
    model = DeepFM(task="ranking", data_info=info, n_epochs=1)
    model._build()
    arrays = model._arrays()
    assert not arrays["user_embed"][info.n_users].any()
    assert not arrays["item_embed"][info.n_items].any()
    for col in info.features.sparse_cols:
        assert not arrays["sparse_embed"][info.features.oov_index(col)].any()
    assert arrays["user_embed"][:info.n_users].any()


def test_unknown_user_input_is_scored_from_features(small, small_model):
    _, _, info = small
    model = small_model
    items = np.arange(info.n_items)
    x = model.build_inputs(np.full(info.n_items, info.n_users), items)
    scores = model._run(x)
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
    assert np.ptp(scores) > 0  # items still differ by their own features


# -- training loop -------------------------------------------------------------------------------
def test_early_stopping_keeps_the_best_epoch(small, monkeypatch):
    df, train, info = small
    eval_data = DatasetFeat.build_evalset(df.sample(200, random_state=0), info)
    model = FM(task="ranking", data_info=info, n_epochs=10, patience=2)
    values = iter([0.60, 0.70, 0.65, 0.66, 0.90, 0.95])
    snapshots = []

    def fake_metric(watch, data, metric):
        assert metric == "roc_auc"
        snapshots.append({k: v.copy() for k, v in model._arrays().items()})
        return next(values)

    monkeypatch.setattr(model, "_eval_metric", fake_metric)
    model.fit(train, verbose=0, eval_data=eval_data)
    assert len(snapshots) == 4  # epochs 3 and 4 did not improve on epoch 2
    for name, value in model._arrays().items():
        np.testing.assert_array_equal(value, snapshots[1][name], err_msg=name)


def test_eval_metric_is_logged_each_epoch(small, caplog):
    df, train, info = small
    eval_data = DatasetFeat.build_evalset(df.sample(300, random_state=1), info)
    model = FM(task="ranking", data_info=info, n_epochs=2, patience=None)
    with caplog.at_level(logging.INFO, logger="libreco"):
        model.fit(train, verbose=1, eval_data=eval_data, metrics=["roc_auc"])
    lines = [r.getMessage() for r in caplog.records if "epoch" in r.getMessage()]
    assert len([m for m in lines if "eval_roc_auc=" in m]) == 2, lines
    assert model.eval_results["roc_auc"] > 0.5


def test_rating_starts_near_the_mean_and_learns(small):
    df, train, info = small
    model = FM(task="rating", data_info=info, n_epochs=3, lr=5e-3).fit(train, verbose=0)
    preds = model.predict(df["user"].tolist()[:500], df["item"].tolist()[:500])
    assert abs(float(np.mean(preds)) - info.global_mean) < 0.5
    rmse = float(np.sqrt(np.mean((preds - df["label"].to_numpy()[:500]) ** 2)))
    assert rmse < float(df["label"].std())


def test_scores_blocks_match_pairs(small, small_model, monkeypatch):
    _, _, info = small
    model = small_model
    import libreco.algorithms.tf_base as tf_base

    users = np.arange(7)
    whole = model._scores(users)
    monkeypatch.setattr(tf_base, "SCORE_ROWS", info.n_items * 2 + 3)  # odd-sized chunks
    np.testing.assert_allclose(model._scores(users), whole, rtol=1e-6)
    u, i = np.repeat(users, info.n_items), np.tile(np.arange(info.n_items), len(users))
    np.testing.assert_allclose(model._predict_inner(u, i), whole.ravel(), rtol=1e-6)


# -- parameters ------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [
    {"embed_size": 0}, {"n_epochs": 1.5}, {"lr": 0}, {"lr": -1.0}, {"batch_size": 0},
    {"reg": -0.1}, {"num_neg": 0}, {"hidden_units": (16, 0)}, {"hidden_units": "64"},
    {"dropout": 1.0}, {"seed": -1}, {"patience": 0},
])
def test_bad_parameters_are_named(small, bad):
    _, _, info = small
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        DeepFM(task="ranking", data_info=info, **bad)


def test_unknown_fit_option_is_refused(small):
    _, train, info = small
    with pytest.raises(ValueError, match="no_such_option"):
        FM(task="ranking", data_info=info, n_epochs=1).fit(train, verbose=0, no_such_option=1)


def test_loaded_parameters_must_fit_the_network(small, small_model):
    _, _, info = small
    model = small_model
    arrays = model._arrays()
    arrays["user_embed"] = arrays["user_embed"][:, :4]
    clone = DeepFM(task="ranking", data_info=info, **model.params)
    with pytest.raises(ValueError, match="user_embed"):
        clone._set_arrays(arrays)
    arrays.pop("user_embed")
    with pytest.raises(ValueError, match="missing"):
        clone._set_arrays(arrays)


def test_save_load_keeps_hyperparameters(small_model, tmp_path):
    model = small_model
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert loaded.hidden_units == (24, 8) and loaded.embed_size == 6
    np.testing.assert_array_equal(loaded._scores(np.arange(5)), model._scores(np.arange(5)))


# -- helpers with a slow reference ----------------------------------------------------------------
def test_roc_auc_matches_pair_counting():
    rng = np.random.default_rng(0)
    labels = rng.random(60) < 0.4
    scores = np.round(rng.random(60), 1)  # ties
    pos, neg = scores[labels], scores[~labels]
    slow = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert roc_auc(labels, scores) == pytest.approx(slow)


def test_lazy_adam_matches_reference_on_touched_rows():
    import tensorflow as tf

    from libreco.algorithms._tf.optim import Adam

    table = tf.Variable(np.arange(12, dtype=np.float32).reshape(6, 2))
    opt = Adam([table], lr=0.1)

    @tf.function
    def step(rows):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(tf.gather(table, rows)))
        g = tape.gradient(loss, [table])
        opt.apply(g)
        return g[0].indices, g[0].values

    before = table.numpy().copy()
    m = np.zeros_like(before)
    v = np.zeros_like(before)
    w = before.copy()
    for t, rows in enumerate([[0, 2, 2], [2, 3]], start=1):
        idx, vals = step(tf.constant(rows))
        g = np.zeros_like(w)
        np.add.at(g, idx.numpy(), vals.numpy())
        touched = np.unique(rows)
        m[touched] = 0.9 * m[touched] + 0.1 * g[touched]
        v[touched] = 0.999 * v[touched] + 0.001 * g[touched] ** 2
        lr_t = 0.1 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        w[touched] -= lr_t * m[touched] / (np.sqrt(v[touched]) + 1e-8)
    np.testing.assert_allclose(table.numpy(), w, rtol=1e-5)
    np.testing.assert_array_equal(table.numpy()[[1, 4, 5]], before[[1, 4, 5]])


def test_chunked_training_matches_batch_by_batch(small, monkeypatch):
    import libreco.algorithms.tf_base as tf_base

    _, train, info = small
    params = {"n_epochs": 2, "hidden_units": (16,), "dropout": 0.2, "batch_size": 100}
    monkeypatch.setattr(tf_base, "CHUNKED_FROM_STEPS", 10 ** 9)
    plain = DeepFM(task="ranking", data_info=info, **params).fit(train, verbose=0)._arrays()
    monkeypatch.setattr(tf_base, "CHUNKED_FROM_STEPS", 1)
    monkeypatch.setattr(tf_base, "STEPS_PER_CALL", 7)  # chunks end inside an epoch
    chunked = DeepFM(task="ranking", data_info=info, **params).fit(train, verbose=0)._arrays()
    for name in plain:
        np.testing.assert_allclose(chunked[name], plain[name], rtol=1e-5, atol=1e-6,
                                   err_msg=name)


def test_youtube_ranking_pool_starts_on_the_most_recent_items(small):
    import tensorflow as tf

    from libreco.algorithms._tf.layers import recency_pool, recency_positions

    _, _, info = small
    model = YouTubeRanking(task="ranking", data_info=info, recent_num=4)
    model._build()
    emb = tf.constant(np.eye(4, dtype=np.float32)[None])  # item j of the sequence is e_j
    seq_len = tf.constant([3])
    mask = tf.constant([[1.0, 1.0, 1.0, 0.0]])
    pooled = recency_pool(emb, mask, model.recency, recency_positions(seq_len, 4)).numpy()[0]
    # weights proportional to 1 / (1 + recency) over the three valid entries, newest last
    expected = np.array([1 / 3, 1 / 2, 1.0, 0.0]) / (1 / 3 + 1 / 2 + 1.0)
    np.testing.assert_allclose(pooled, expected, rtol=1e-5)
