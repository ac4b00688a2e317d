"""save_knn: the model directory the knn loaders read, and its round trip through load."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from libreco.algorithms import ItemCF, Popular, Recommender, UserCF
from libreco.data import DatasetPure
from libreco.data.synthetic import generate
from libreco.utils import save_knn
from libreco.utils.artifacts import ArtifactReader


@pytest.fixture(scope="module")
def data():
    df = generate(n_users=150, n_items=100, n_interactions=3000, seed=5)
    # string users and int items: both types must survive the JSON id maps
    df["user"] = "u" + df["user"].astype(str)
    train, info = DatasetPure.build_trainset(df)
    return train, info


@pytest.fixture(scope="module", params=[ItemCF, UserCF])
def model(request, data):
    train, info = data
    return request.param(task="ranking", data_info=info, k_sim=15).fit(train, verbose=0)


def test_directory_round_trip(model, data, tmp_path):
    train, info = data
    meta = save_knn(tmp_path / "knn_model", model, train, k=10)
    reader = ArtifactReader(tmp_path / "knn_model")
    assert reader.algorithm == model.algorithm and reader.family == "knn"
    assert reader.manifest["knn"] == meta == {
        "k": 10, "based_on": model.based_on, "sim_type": "cosine", "k_sim": 15,
        "n": model.n_entities, "score": "sum_sim_label"}

    neighbors = reader.read_array("knn/neighbors.npy")
    sims = reader.read_array("knn/similarities.npy")
    assert neighbors.dtype == np.int32 and sims.dtype == np.float32
    assert neighbors.shape == sims.shape == (model.n_entities, 10)
    np.testing.assert_array_equal(neighbors, model.sim_indices[:, :10])
    np.testing.assert_array_equal(sims, model.sim_values[:, :10])
    popular = reader.read_array("knn/popular_items.npy")
    np.testing.assert_array_equal(popular, info.popular_items())

    # the same directory loads back as the model and recommends the same
    loaded = Recommender.load(tmp_path / "knn_model")
    assert type(loaded) is type(model)
    users = info.id2user[:8]
    a, b = model.recommend_user(users, 10), loaded.recommend_user(users, 10)
    assert a == b


def test_neighbours_best_first_without_self_or_repeats(model, data, tmp_path):
    train, _ = data
    save_knn(tmp_path / "m", model, train, k=15)
    reader = ArtifactReader(tmp_path / "m")
    neighbors = reader.read_array("knn/neighbors.npy")
    sims = reader.read_array("knn/similarities.npy")
    assert (np.diff(sims, axis=1) <= 0).all()
    valid = neighbors >= 0
    assert (sims[valid] > 0).all() and (sims[~valid] == 0).all()
    # padding only at the end of a row
    assert (np.diff(valid.astype(int), axis=1) <= 0).all()
    assert not (neighbors == np.arange(len(neighbors))[:, None]).any()
    for row in neighbors:
        kept = row[row >= 0]
        assert len(np.unique(kept)) == len(kept)


def test_k_larger_than_k_sim_is_capped(model, data, tmp_path):
    train, _ = data
    meta = save_knn(tmp_path / "m", model, train, k=100)
    assert meta["k"] == 15
    reader = ArtifactReader(tmp_path / "m")
    assert reader.read_array("knn/neighbors.npy").shape == (model.n_entities, 15)


def test_ids_keep_their_types(model, data, tmp_path):
    train, info = data
    save_knn(tmp_path / "m", model, train)
    with open(tmp_path / "m" / "user_ids.json", encoding="utf-8") as f:
        users = json.load(f)
    with open(tmp_path / "m" / "item_ids.json", encoding="utf-8") as f:
        items = json.load(f)
    assert users == info.id2user and all(isinstance(u, str) for u in users)
    assert items == info.id2item and all(isinstance(i, int) for i in items)


def test_consumed_items_with_labels(model, data, tmp_path):
    train, info = data
    save_knn(tmp_path / "m", model, train)
    reader = ArtifactReader(tmp_path / "m")
    indptr = reader.read_array("consumed_indptr.npy")
    items = reader.read_array("consumed_items.npy")
    labels = reader.read_array("consumed_labels.npy")
    u = 4
    got = dict(zip(items[indptr[u]:indptr[u + 1]].tolist(),
                   labels[indptr[u]:indptr[u + 1]].tolist()))
    row = info.user_consumed[u]
    assert got == dict(zip(row.indices.tolist(), row.data.tolist()))


def test_serving_formula_reproduces_recommend_user(model, data, tmp_path):
    """The scoring written in the save_knn docstring, from the files alone."""
    train, info = data
    save_knn(tmp_path / "m", model, train, k=15)
    reader = ArtifactReader(tmp_path / "m")
    neighbors = reader.read_array("knn/neighbors.npy")
    sims = reader.read_array("knn/similarities.npy")
    indptr = reader.read_array("consumed_indptr.npy")
    items = reader.read_array("consumed_items.npy")
    labels = reader.read_array("consumed_labels.npy")
    based_on = reader.manifest["knn"]["based_on"]
    for u in range(0, info.n_users, 17):
        scores: dict[int, float] = {}
        if based_on == "item":
            for i, r in zip(items[indptr[u]:indptr[u + 1]], labels[indptr[u]:indptr[u + 1]]):
                for j, s in zip(neighbors[i], sims[i]):
                    if j >= 0:
                        scores[j] = scores.get(j, 0.0) + float(s) * float(r)
        else:
            for v, s in zip(neighbors[u], sims[u]):
                if v < 0:
                    continue
                for j, r in zip(items[indptr[v]:indptr[v + 1]], labels[indptr[v]:indptr[v + 1]]):
                    scores[j] = scores.get(j, 0.0) + float(s) * float(r)
        consumed = set(items[indptr[u]:indptr[u + 1]].tolist())
        expected = {info.id2item[j]: s for j, s in scores.items() if j not in consumed}
        user = info.id2user[u]
        for item, score in model.recommend_user(user, n_rec=5)[user]:
            if score > 0:
                assert score == pytest.approx(expected[item], rel=1e-4)
        top = sorted(expected.values(), reverse=True)[:1]
        got = model.recommend_user(user, n_rec=1)[user]
        if top:
            assert got[0][1] == pytest.approx(top[0], rel=1e-4)


def test_rejects_wrong_model_and_data(data, tmp_path):
    train, info = data
    with pytest.raises(ValueError, match="UserCF or ItemCF"):
        save_knn(tmp_path / "m", Popular(task="ranking", data_info=info).fit(train, verbose=0),
                 train)
    model = ItemCF(task="ranking", data_info=info, k_sim=5).fit(train, verbose=0)
    other_train, _ = DatasetPure.build_trainset(pd.DataFrame(
        {"user": [1, 2], "item": [1, 2], "label": [1.0, 1.0]}))
    with pytest.raises(ValueError, match="fitted on"):
        save_knn(tmp_path / "m", model, other_train)
    with pytest.raises(ValueError, match="k must"):
        save_knn(tmp_path / "m", model, train, k=0)
    assert not (tmp_path / "m").exists()
