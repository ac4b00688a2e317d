"""The vector service through Flask's test client, on a real redis-server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from libreco.algorithms import ALS, SVD
from libreco.data import DatasetPure
from libreco.data.synthetic import generate
from libreco.utils import save_vector
from services.core.app import create_app
from services.core.store import ModelKeys
from services.loaders.knn import load_knn
from services.loaders.vector import load_vector, save_faiss_index, vector2redis


class VectorModels:
    """ALS (ranking) and SVD (rating) fitted on generated data, saved with ``save_vector``."""

    def __init__(self, folder: Path, seed: int = 5, n_users: int = 300, n_items: int = 200,
                 n_interactions: int = 6000):
        df = generate(n_users=n_users, n_items=n_items, n_interactions=n_interactions,
                      seed=seed, features=False)
        self.train, self.info = DatasetPure.build_trainset(df)
        self.models = {
            "als": ALS(task="ranking", data_info=self.info, n_epochs=5).fit(self.train,
                                                                            verbose=0),
            "svd": SVD(task="rating", data_info=self.info).fit(self.train, verbose=0),
        }
        self.paths = {}
        for algo, model in self.models.items():
            path = folder / f"{algo}_{seed}"
            save_vector(path, model, self.train)
            self.paths[algo] = path


@pytest.fixture(scope="session")
def vector_models(tmp_path_factory) -> VectorModels:
    return VectorModels(tmp_path_factory.mktemp("vector"))


def make_app(url: str, **env):
    return create_app("vector", {"REDIS_URL": url, "LIBRECO_POLL_INTERVAL": "0", **env})


def answer(client, route: str, body) -> tuple[int, dict]:
    resp = client.post(f"/{route}/recommend", data=json.dumps(body))
    return resp.status_code, resp.get_json()


def pairs(body: dict) -> list:
    (value,) = body.values()
    return value


def assert_same_ranking(got: list, expected: list) -> None:
    """Same items in the same order, scores equal up to float32 rounding."""
    assert [i for i, _ in got] == [i for i, _ in expected]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-5,
                               atol=1e-6)


@pytest.fixture
def loaded(redis_client, vector_models):
    for path in vector_models.paths.values():
        vector2redis(path, client=redis_client)
    return vector_models


@pytest.fixture
def client(redis_server, loaded):
    return make_app(redis_server.url).test_client()


@pytest.mark.parametrize("algo", ["als", "svd"])
@pytest.mark.parametrize("use_faiss", [True, False])
def test_answers_are_the_models_ranking(client, loaded, algo, use_faiss):
    model = loaded.models[algo]
    for user in loaded.info.id2user[:25]:
        status, body = answer(client, algo, {"user": user, "n_rec": 10, "use_faiss": use_faiss})
        assert status == 200, body
        assert list(body) == [f"recommend list for user ({user})"]
        assert_same_ranking(pairs(body), model.recommend_user(user, 10)[user])


def test_exact_and_faiss_agree_and_exclude_consumed(client, loaded):
    info = loaded.info
    for u in range(0, info.n_users, 7):
        user = info.id2user[u]
        consumed = {info.id2item[i] for i in info.consumed(u)}
        found = {}
        for use_faiss in ("true", "false"):  # booleans as strings are accepted too
            status, body = answer(client, "als", {"user": user, "n_rec": 30,
                                                  "use_faiss": use_faiss})
            assert status == 200
            found[use_faiss] = pairs(body)
            items = [i for i, _ in found[use_faiss]]
            assert len(items) == len(set(items)) == 30
            assert not consumed & set(items)
        assert_same_ranking(found["true"], found["false"])


@pytest.mark.parametrize("use_faiss", [True, False])
def test_n_rec_beyond_the_catalogue(client, loaded, use_faiss):
    info = loaded.info
    heavy = int(np.argmax(np.diff(info.consumed_indptr)))
    for u in (0, heavy):
        status, body = answer(client, "svd", {"user": info.id2user[u], "n_rec": 1000,
                                              "use_faiss": use_faiss})
        assert status == 200
        items = [i for i, _ in pairs(body)]
        consumed = {info.id2item[i] for i in info.consumed(u)}
        assert len(items) == len(set(items)) == info.n_items - len(consumed)
        assert set(items) == set(info.id2item) - consumed
        scores = [s for _, s in pairs(body)]
        assert scores == sorted(scores, reverse=True)


def test_request_checks_and_cold_start(client, loaded):
    user = loaded.info.id2user[0]
    status, body = answer(client, "als", {"user": user, "use_faiss": "sometimes"})
    assert status == 400 and body["field"] == "use_faiss"
    status, body = answer(client, "als", {"user": user, "use_faiss": 1})
    assert status == 400 and body["field"] == "use_faiss"
    status, body = answer(client, "als", {"user": user})  # use_faiss defaults to true
    assert status == 200 and len(pairs(body)) == 10
    status, body = answer(client, "als", {"user": "nobody", "n_rec": 5})
    popular = [loaded.info.id2item[i] for i in loaded.info.popular_items(5)]
    assert status == 200 and [i for i, _ in pairs(body)] == popular
    resp = client.post("/als/recommend", data=json.dumps(json.dumps({"user": user})))
    assert resp.status_code == 200  # a JSON string holding the object


def test_default_route(redis_server, redis_client, vector_models, knn_models):
    als = vector_models.paths["als"]
    vector2redis(als, client=redis_client)
    load_knn(knn_models.paths["item_cf"], client=redis_client)  # another family: not counted
    client = make_app(redis_server.url).test_client()
    user = vector_models.info.id2user[1]
    expected = vector_models.models["als"].recommend_user(user, 10)[user]
    status, body = answer(client, "vector", {"user": user, "n_rec": 10})
    assert status == 200
    assert_same_ranking(pairs(body), expected)
    assert answer(client, "item_cf", {"user": user})[0] == 404  # not a vector model

    vector2redis(vector_models.paths["svd"], client=redis_client)
    status, body = answer(client, "vector", {"user": user})
    assert status == 404 and "LIBRECO_MODEL" in body["error"]
    chosen = make_app(redis_server.url, LIBRECO_MODEL="svd").test_client()
    status, body = answer(chosen, "vector", {"user": user, "n_rec": 10})
    assert status == 200
    assert_same_ranking(pairs(body), vector_models.models["svd"].recommend_user(user, 10)[user])
    assert chosen.get("/readyz").status_code == 200


def test_inverted_file_index_and_its_exact_fallback(redis_server, redis_client, vector_models,
                                                    tmp_path):
    """An IVF index that probes every list is exact; one that probes one list answers short
    for a long n_rec, and the service answers that request exactly instead."""
    info, model = vector_models.info, vector_models.models["als"]
    client = make_app(redis_server.url).test_client()
    user = info.id2user[3]
    for nprobe, name in ((4, "ivf_all"), (1, "ivf_one")):
        path = tmp_path / name
        save_vector(path, model, vector_models.train)
        entry = save_faiss_index(path, "IVF4,Flat", nprobe=nprobe)
        assert entry["type"] == "IVF4,Flat" and entry["params"] == {"nprobe": nprobe}
        vector2redis(path, name=name, client=redis_client)
    status, body = answer(client, "ivf_all", {"user": user, "n_rec": 10})
    assert status == 200
    assert_same_ranking(pairs(body), model.recommend_user(user, 10)[user])
    n_free = info.n_items - len(info.consumed(3))
    status, body = answer(client, "ivf_one", {"user": user, "n_rec": 1000})
    assert status == 200
    assert_same_ranking(pairs(body), model.recommend_user(user, n_free)[user])


def test_new_version_is_served_and_the_old_one_released(redis_server, redis_client,
                                                        vector_models, tmp_path):
    info = vector_models.info
    als = vector_models.models["als"]
    other = ALS(task="ranking", data_info=info, n_epochs=2, seed=99).fit(vector_models.train,
                                                                          verbose=0)
    save_vector(tmp_path / "als_b", other, vector_models.train)
    vector2redis(vector_models.paths["als"], client=redis_client)
    app = make_app(redis_server.url)
    client = app.test_client()
    users = info.id2user[:10]
    for u in users:
        assert_same_ranking(pairs(answer(client, "als", {"user": u})[1]),
                            als.recommend_user(u, 10)[u])
    first = app.extensions["libreco"].models.get("als")
    new = vector2redis(tmp_path / "als_b", name="als", client=redis_client)
    assert redis_client.get(ModelKeys("als").active).decode() == new
    for u in users:
        assert_same_ranking(pairs(answer(client, "als", {"user": u})[1]),
                            other.recommend_user(u, 10)[u])
    second = app.extensions["libreco"].models.get("als")
    assert second.version == new and first.version != new
    assert second.extra.item_vectors is not first.extra.item_vectors
    assert second.extra.index is not first.extra.index


@pytest.mark.parametrize("memory_mb", ["0", "512"])  # read per request / held by the worker
def test_missing_user_vector_is_a_503_not_a_500(redis_server, loaded, redis_client, memory_mb):
    version = redis_client.get(ModelKeys("als").active).decode()
    redis_client.hdel(f"libreco:{{als:{version}}}:user_vectors", "0")
    client = make_app(redis_server.url, LIBRECO_TABLE_MEMORY_MB=memory_mb).test_client()
    status, body = answer(client, "als", {"user": loaded.info.id2user[0]})
    assert status == 503 and "vector of user" in body["error"]
    assert answer(client, "als", {"user": loaded.info.id2user[1]})[0] == 200


def test_job_loader_adds_the_index(redis_client, vector_models, tmp_path):
    path = tmp_path / "svd"
    save_vector(path, vector_models.models["svd"], vector_models.train)
    version = load_vector(path, client=redis_client)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["vector"]["index"]["type"] == "Flat"
    assert "vector/faiss.index" in manifest["files"]
    assert redis_client.get(ModelKeys("svd").active).decode() == version
    assert load_vector(path, client=redis_client) == version  # already built: same version


@pytest.mark.parametrize("use_faiss", [True, False])
def test_answers_are_the_same_from_memory_and_from_redis(redis_server, loaded, use_faiss):
    held = make_app(redis_server.url).test_client()
    read = make_app(redis_server.url, LIBRECO_TABLE_MEMORY_MB="0").test_client()
    for app_client, expect_memory in ((held, True), (read, False)):
        state = app_client.application.extensions["libreco"]
        assert (state.models.get("als").extra.user_vectors is not None) == expect_memory
    for user in loaded.info.id2user[:40]:
        body = {"user": user, "n_rec": 15, "use_faiss": use_faiss}
        status, got = answer(held, "als", body)
        assert status == 200
        assert got == answer(read, "als", body)[1]
