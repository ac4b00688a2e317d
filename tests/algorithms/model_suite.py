"""The behaviour every algorithm must show, run by each algorithm's test module.

Subclass :class:`ModelSuite` in a ``test_*.py`` module, set ``task`` and ``dataset`` and
implement ``make_model``; pytest then runs every ``test_*`` method below against one model fitted
once per class on generated data with planted structure.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from libreco.algorithms import NonFiniteError, Popular, Recommender
from libreco.evaluation import evaluate


class ModelSuite:
    task = "ranking"
    dataset = "pure"  # "pure" or "feat"
    fit_kwargs: dict = {}
    # how much better than Popular the model must be (NDCG@10 ratio for ranking, RMSE
    # difference for rating)
    min_ndcg_ratio = 1.05
    min_rmse_gain = 0.01

    def make_model(self, data_info) -> Recommender:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, suite_data):
        inst = cls()
        train, test_df, info = suite_data[inst.dataset]
        model = inst.make_model(info)
        model.fit(train, verbose=0, **inst.fit_kwargs)
        return model, train, test_df, info

    @pytest.fixture(scope="class")
    @classmethod
    def popular_scores(cls, suite_data):
        inst = cls()
        train, test_df, info = suite_data[inst.dataset]
        pop = Popular(task=inst.task, data_info=info).fit(train, verbose=0)
        metric = "ndcg" if inst.task == "ranking" else "rmse"
        return evaluate(pop, test_df, metrics=[metric], k=10)[metric]

    # -- learning ---------------------------------------------------------------------------
    def test_beats_popular(self, fitted, popular_scores):
        model, _, test_df, _ = fitted
        if self.task == "ranking":
            ndcg = evaluate(model, test_df, metrics=["ndcg"], k=10)["ndcg"]
            assert ndcg >= popular_scores * self.min_ndcg_ratio, (ndcg, popular_scores)
        else:
            rmse = evaluate(model, test_df, metrics=["rmse"])["rmse"]
            assert rmse <= popular_scores - self.min_rmse_gain, (rmse, popular_scores)

    # -- recommend_user ---------------------------------------------------------------------
    def test_no_consumed_no_duplicates_exact_count(self, fitted):
        model, _, _, info = fitted
        users = info.id2user[:25]
        recs = model.recommend_user(users, n_rec=10)
        assert list(recs) == users
        for u in users:
            items = [i for i, _ in recs[u]]
            scores = [s for _, s in recs[u]]
            consumed = set(info.id2item[j] for j in info.consumed(info.user_index(u)))
            assert len(items) == 10
            assert len(set(items)) == 10
            assert not consumed & set(items)
            assert all(isinstance(s, float) and math.isfinite(s) for s in scores)
            assert scores == sorted(scores, reverse=True)

    def test_more_than_catalogue(self, fitted):
        model, _, _, info = fitted
        u = info.id2user[0]
        n_left = info.n_items - len(info.consumed(0))
        recs = model.recommend_user(u, n_rec=info.n_items + 50)[u]
        assert len(recs) == n_left
        assert len({i for i, _ in recs}) == n_left
        unfiltered = model.recommend_user(u, n_rec=info.n_items + 50, filter_consumed=False)[u]
        assert len(unfiltered) == info.n_items

    def test_unknown_user_gets_popular(self, fitted):
        model, _, _, info = fitted
        recs = model.recommend_user("no-such-user", n_rec=5)["no-such-user"]
        expected = [info.id2item[i] for i in info.popular_items(5)]
        assert [i for i, _ in recs] == expected
        with pytest.raises(KeyError):
            model.recommend_user("no-such-user", n_rec=5, cold_start="raise")

    def test_batch_matches_single(self, fitted):
        model, _, _, info = fitted
        users = info.id2user[5:12]
        batch = model.recommend_user(users, n_rec=7)
        for u in users:
            single = model.recommend_user(u, n_rec=7)[u]
            assert [i for i, _ in single] == [i for i, _ in batch[u]]
            np.testing.assert_allclose([s for _, s in single], [s for _, s in batch[u]],
                                       rtol=1e-4, atol=1e-5)

    def test_bad_n_rec(self, fitted):
        model, _, _, info = fitted
        for bad in (0, -3, 2.5, "10"):
            with pytest.raises(ValueError):
                model.recommend_user(info.id2user[0], n_rec=bad)

    # -- predict ----------------------------------------------------------------------------
    def test_predict_single_and_batch(self, fitted):
        model, _, _, info = fitted
        users, items = info.id2user[:6], info.id2item[:6]
        batch = model.predict(users, items)
        assert batch.shape == (6,)
        for u, i, b in zip(users, items, batch):
            single = model.predict(u, i)
            assert isinstance(single, float)
            assert single == pytest.approx(float(b), rel=1e-4, abs=1e-5)
        unknown = model.predict("no-such-user", items[0])
        assert unknown == pytest.approx(model.default_prediction)
        with pytest.raises(ValueError):
            model.predict(users[:2], items[:3])

    def test_predict_agrees_with_ranking(self, fitted):
        model, _, _, info = fitted
        u = info.id2user[3]
        recs = model.recommend_user(u, n_rec=5)[u]
        preds = model.predict([u] * len(recs), [i for i, _ in recs])
        assert np.all(np.diff(preds) <= 1e-4), preds

    # -- persistence ------------------------------------------------------------------------
    def test_save_load_identical(self, fitted, tmp_path):
        model, _, _, info = fitted
        model.save(tmp_path / "model")
        loaded = Recommender.load(tmp_path / "model")
        assert type(loaded) is type(model)
        users = info.id2user[:10] + ["no-such-user"]
        a = model.recommend_user(users, n_rec=10)
        b = loaded.recommend_user(users, n_rec=10)
        for u in users:
            assert [i for i, _ in a[u]] == [i for i, _ in b[u]]
            np.testing.assert_allclose([s for _, s in a[u]], [s for _, s in b[u]], rtol=1e-5)
        assert type(model).load(tmp_path / "model").algorithm == model.algorithm

    def test_non_finite_parameters_raise(self, fitted):
        model, _, _, _ = fitted
        arrays = {k: np.array(v, copy=True) for k, v in model._arrays().items()}
        float_names = [k for k, v in arrays.items() if v.dtype.kind == "f" and v.size]
        assert float_names, "the model has no float parameters to check"
        name = float_names[0]
        arrays[name].flat[0] = np.nan
        clone = type(model)(task=model.task, data_info=model.data_info, **model.params)
        clone._set_arrays(arrays)
        with pytest.raises(NonFiniteError, match="try"):
            clone.check_finite()
