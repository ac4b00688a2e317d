import numpy as np

from libreco.algorithms import Popular
from tests.algorithms.model_suite import ModelSuite


class TestPopularSuite(ModelSuite):
    """Popular runs the shared suite; instead of beating itself it must rank by popularity."""

    def make_model(self, data_info):
        return Popular(task="ranking", data_info=data_info)

    def test_beats_popular(self, fitted):
        model, _, _, info = fitted
        u = info.id2user[0]
        consumed = set(info.consumed(0).tolist())
        expected = [info.id2item[i] for i in info.popular_items() if i not in consumed][:10]
        assert [i for i, _ in model.recommend_user(u, n_rec=10)[u]] == expected

    def test_predict_agrees_with_ranking(self, fitted):
        model, _, _, info = fitted
        counts = info.item_counts
        preds = model.predict([info.id2user[0]] * info.n_items, info.id2item)
        assert np.array_equal(np.argsort(-preds, kind="stable"),
                              np.argsort(-counts, kind="stable"))


def test_rating_popular_predicts_item_means(suite_data):
    train, _, info = suite_data["pure"]
    model = Popular(task="rating", data_info=info).fit(train, verbose=0)
    item = int(train.item_indices[0])
    expected = train.labels[train.item_indices == item].mean()
    assert model.predict(info.id2user[0], info.id2item[item]) == float(np.float32(expected))
