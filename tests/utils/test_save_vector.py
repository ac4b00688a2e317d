"""save_vector: the exported vectors reproduce the model, and the directory still loads."""

import json

import numpy as np
import pytest

from libreco.algorithms import ALS, BPR, SVD, Popular, Recommender, SVDpp
from libreco.data import DatasetPure
from libreco.data.synthetic import generate
from libreco.utils import save_vector
from libreco.utils.artifacts import ArtifactReader


@pytest.fixture(scope="module")
def data():
    df = generate(n_users=120, n_items=80, n_interactions=3000, features=False, seed=11)
    return DatasetPure.build_trainset(df)


MODELS = [
    (SVD, "rating", {"n_epochs": 3}),
    (SVD, "ranking", {"n_epochs": 3}),
    (SVDpp, "rating", {"n_epochs": 3}),
    (ALS, "ranking", {"n_epochs": 3}),
    (ALS, "rating", {"n_epochs": 3}),
    (BPR, "ranking", {"n_epochs": 3}),
]


@pytest.mark.parametrize(("cls", "task", "params"), MODELS,
                         ids=[f"{c.__name__}-{t}" for c, t, _ in MODELS])
def test_vectors_reproduce_scores_and_ranking(tmp_path, data, cls, task, params):
    train, info = data
    model = cls(task, info, **params).fit(train, verbose=0)
    entry = save_vector(tmp_path / "m", model, train)

    reader = ArtifactReader(tmp_path / "m")
    assert reader.manifest["vector"] == entry
    assert entry["metric"] == "inner_product"
    user_vecs = reader.read_array("vector/user_vectors.npy")
    item_vecs = reader.read_array("vector/item_vectors.npy")
    assert user_vecs.dtype == item_vecs.dtype == np.float32
    assert user_vecs.shape == (info.n_users, entry["dim"])
    assert item_vecs.shape == (info.n_items, entry["dim"])

    users = np.arange(info.n_users)
    scores = user_vecs @ item_vecs.T
    np.testing.assert_allclose(scores, model._scores(users), rtol=1e-6, atol=1e-6)

    # rank with the saved vectors alone, consumed items dropped, as a serving process would
    indptr = reader.read_array("consumed_indptr.npy")
    consumed = reader.read_array("consumed_items.npy")
    item_ids = json.loads((tmp_path / "m" / "item_ids.json").read_text())
    user_ids = json.loads((tmp_path / "m" / "user_ids.json").read_text())
    recs = model.recommend_user(user_ids[:20], n_rec=10)
    for u in range(20):
        row = scores[u].copy()
        row[consumed[indptr[u]:indptr[u + 1]]] = -np.inf
        top = np.argsort(-row, kind="stable")[:10]
        assert [item_ids[i] for i in top] == [i for i, _ in recs[user_ids[u]]]

    loaded = Recommender.load(tmp_path / "m")
    assert type(loaded) is cls
    np.testing.assert_array_equal(loaded.user_item_vectors()[0], user_vecs)
    np.testing.assert_array_equal(loaded.user_item_vectors()[1], item_vecs)


def test_rejects_models_without_vectors(tmp_path, data):
    train, info = data
    with pytest.raises(ValueError, match="user_item_vectors"):
        save_vector(tmp_path / "m", Popular("ranking", info).fit(train, verbose=0), train)
    assert not (tmp_path / "m").exists()


def test_rejects_other_training_data(tmp_path, data):
    train, info = data
    model = BPR("ranking", info, n_epochs=1).fit(train, verbose=0)
    other, _ = DatasetPure.build_trainset(
        generate(n_users=30, n_items=20, n_interactions=300, features=False, seed=1))
    with pytest.raises(ValueError, match="fitted on"):
        save_vector(tmp_path / "m", model, other)


def test_accepts_any_model_with_vectors(tmp_path, data):
    """The format does not depend on the vector family: any user_item_vectors() is exported."""
    train, info = data

    class Fixed(Popular):
        def user_item_vectors(self):
            return (np.ones((info.n_users, 1), dtype=np.float32),
                    self.item_scores[:, None].astype(np.float32))

    model = Fixed("ranking", info).fit(train, verbose=0)
    model.algorithm = "popular"
    entry = save_vector(tmp_path / "m", model, train)
    assert entry["dim"] == 1
    reader = ArtifactReader(tmp_path / "m")
    np.testing.assert_array_equal(reader.read_array("vector/item_vectors.npy")[:, 0],
                                  model.item_scores)
