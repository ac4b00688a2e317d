"""The knn service through Flask's test client, on a real redis-server."""

from __future__ import annotations

import json
import time
from collections import defaultdict

import numpy as np
import pytest
from prometheus_client import REGISTRY

from libreco.utils.artifacts import ArtifactReader, ArtifactWriter
from services.core.app import create_app
from services.core.config import ConfigError
from services.core.store import MODELS_KEY, ModelKeys, VersionKeys
from services.loaders.knn import load_knn
from tests.services.conftest import KnnModels, free_port

ALGOS = ("item_cf", "user_cf")


def make_app(url: str, **env):
    return create_app("knn", {"REDIS_URL": url, "LIBRECO_POLL_INTERVAL": "0", **env})


def answer(client, algo: str, body, raw: bytes | None = None):
    resp = client.post(f"/{algo}/recommend", data=raw if raw is not None else json.dumps(body))
    return resp.status_code, resp.get_json()


def pairs(body: dict) -> list:
    (key, value), = body.items()
    return value


def sample(name: str, labels: dict) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def loaded(redis_client, knn_models):
    for algo in ALGOS:
        load_knn(knn_models.paths[algo], client=redis_client)
    return knn_models


@pytest.fixture
def client(redis_server, loaded):
    return make_app(redis_server.url).test_client()


def reference_scores(path, user: int, k: int) -> dict[int, float]:
    """Neighbourhood sums computed with plain Python loops from the saved directory."""
    reader = ArtifactReader(path)
    neighbors = reader.read_array("knn/neighbors.npy")[:, :k]
    sims = reader.read_array("knn/similarities.npy")[:, :k]
    indptr = reader.read_array("consumed_indptr.npy")
    items = reader.read_array("consumed_items.npy")
    labels = reader.read_array("consumed_labels.npy")

    def consumed(u):
        return {int(i): float(r) for i, r in zip(items[indptr[u]:indptr[u + 1]],
                                                 labels[indptr[u]:indptr[u + 1]])}

    scores: dict[int, float] = defaultdict(float)
    if reader.manifest["knn"]["based_on"] == "item":
        for i, r in consumed(user).items():
            for j, s in zip(neighbors[i], sims[i]):
                if j >= 0:
                    scores[int(j)] += float(s) * r
    else:
        for v, s in zip(neighbors[user], sims[user]):
            if v >= 0:
                for j, r in consumed(int(v)).items():
                    scores[j] += float(s) * r
    for i in consumed(user):
        scores.pop(i, None)
    return dict(scores)


# -- scoring ------------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", ALGOS)
def test_matches_recommend_user(client, loaded, algo):
    model, info = loaded.models[algo], loaded.info
    k = model.k_sim
    for user in info.id2user[:40]:
        status, body = answer(client, algo, {"user": user, "n_rec": 10, "k_neighbors": k})
        assert status == 200, body
        got = pairs(body)
        expected = model.recommend_user(user, 10)[user]
        got_pos = [(i, s) for i, s in got if s > 0]
        exp_pos = [(i, s) for i, s in expected if s > 0]
        # same scores in the same order, and each item scored as the library predicts it
        np.testing.assert_allclose([s for _, s in got_pos], [s for _, s in exp_pos], rtol=1e-5)
        if got_pos:
            items = [i for i, _ in got_pos]
            np.testing.assert_allclose(model.predict([user] * len(items), items),
                                       [s for _, s in got_pos], rtol=1e-5)
        distinct = {round(s, 4) for _, s in exp_pos}
        if len(distinct) == len(exp_pos):  # no ties: the exact same items in the same order
            assert [i for i, _ in got_pos] == [i for i, _ in exp_pos]


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("k", [1, 3, 7])
def test_fewer_neighbours_match_a_plain_reference(client, loaded, algo, k):
    info = loaded.info
    for inner in range(0, 300, 37):
        user = info.id2user[inner]
        status, body = answer(client, algo, {"user": user, "n_rec": 15, "k_neighbors": k})
        assert status == 200
        got = [(i, s) for i, s in pairs(body) if s > 0]
        ref = reference_scores(loaded.paths[algo], inner, k)
        best = sorted(((s, j) for j, s in ref.items()), key=lambda t: (-t[0], t[1]))
        ranked = [(info.id2item[j], s) for s, j in best if s > 0][:15]
        assert [i for i, _ in got] == [i for i, _ in ranked]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in ranked], rtol=1e-5)


@pytest.mark.parametrize("algo", ALGOS)
def test_tables_in_redis_or_in_memory_answer_alike(redis_server, loaded, algo):
    in_memory = make_app(redis_server.url).test_client()
    in_redis = make_app(redis_server.url, LIBRECO_TABLE_MEMORY_MB="0").test_client()
    assert in_memory.application.extensions["libreco"].models.get(algo).extra.neighbours \
        is not None
    assert in_redis.application.extensions["libreco"].models.get(algo).extra.neighbours is None
    for inner in range(0, 300, 13):
        body = {"user": loaded.info.id2user[inner], "n_rec": 12, "k_neighbors": 1 + inner % 20}
        assert answer(in_memory, algo, body) == answer(in_redis, algo, body)


def test_k_neighbors_is_capped_at_the_saved_k(client, loaded):
    user = loaded.info.id2user[3]
    saved = loaded.models["item_cf"].k_sim
    _, at_k = answer(client, "item_cf", {"user": user, "k_neighbors": saved})
    _, above = answer(client, "item_cf", {"user": user, "k_neighbors": 10 * saved})
    assert at_k == above


def test_default_k_neighbors_and_n_rec_come_from_the_environment(redis_server, loaded):
    client = make_app(redis_server.url, LIBRECO_K_NEIGHBORS="2", LIBRECO_N_REC="4").test_client()
    user = loaded.info.id2user[5]
    _, implicit = answer(client, "item_cf", {"user": user})
    _, explicit = answer(client, "item_cf", {"user": user, "k_neighbors": 2, "n_rec": 4})
    assert implicit == explicit
    assert len(pairs(implicit)) == 4


@pytest.mark.parametrize("memory", ["512", "0"])
def test_rating_models_match_recommend_user(redis_server, redis_client, tmp_path, memory):
    models = KnnModels(tmp_path, seed=5, task="rating")
    client = make_app(redis_server.url, LIBRECO_TABLE_MEMORY_MB=memory).test_client()
    for algo in ALGOS:
        load_knn(models.paths[algo], client=redis_client)
        model = models.models[algo]
        for inner in range(0, 300, 29):
            user = models.info.id2user[inner]
            _, body = answer(client, algo, {"user": user, "n_rec": 10, "k_neighbors": 20})
            got = pairs(body)
            expected = model.recommend_user(user, 10)[user]
            np.testing.assert_allclose([s for _, s in got], [s for _, s in expected],
                                       rtol=1e-5)
            items = [i for i, _ in got]
            np.testing.assert_allclose(model.predict([user] * len(items), items),
                                       [s for _, s in got], rtol=1e-5)


# -- answers --------------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", ALGOS)
def test_answer_shape_no_consumed_no_duplicates(client, loaded, algo):
    info = loaded.info
    for inner in range(0, 300, 23):
        user = info.id2user[inner]
        status, body = answer(client, algo, {"user": user, "n_rec": 25})
        assert status == 200
        assert list(body) == [f"recommend list for user ({user})"]
        got = pairs(body)
        items = [i for i, _ in got]
        scores = [s for _, s in got]
        assert len(items) == 25 == len(set(items))
        assert not set(items) & {info.id2item[j] for j in info.consumed(inner)}
        assert all(isinstance(i, int) for i in items)
        assert all(isinstance(s, float) for s in scores)
        assert scores == sorted(scores, reverse=True)


def test_n_rec_larger_than_the_catalogue(client, loaded):
    info = loaded.info
    user = info.id2user[0]
    _, body = answer(client, "item_cf", {"user": user, "n_rec": 1000})
    items = [i for i, _ in pairs(body)]
    assert len(items) == len(set(items)) == info.n_items - len(info.consumed(0))


def test_double_encoded_body_and_unknown_keys(client, loaded):
    user = loaded.info.id2user[1]
    plain = {"user": user, "n_rec": 5}
    _, a = answer(client, "item_cf", plain)
    _, b = answer(client, "item_cf", None, raw=json.dumps(json.dumps(plain)).encode())
    _, c = answer(client, "item_cf", {**plain, "algo": "whatever", "extra": [1, 2]})
    _, d = answer(client, "item_cf", {"user": str(user), "n_rec": "5"})
    assert a == b == c
    assert pairs(d) == pairs(a)
    assert list(d) == [f"recommend list for user ({user})"]


def test_string_ids_keep_their_type(redis_server, redis_client, tmp_path, knn_models):
    # the same model with string ids: rewrite the id maps of the saved directory
    src = ArtifactReader(knn_models.paths["item_cf"])
    target = tmp_path / "item_cf_str"
    extra = {k: v for k, v in src.manifest.items()
             if k not in ("format_version", "algorithm", "family", "library_version",
                          "created_at", "hyperparameters", "data_summary", "metrics", "files")}
    with ArtifactWriter(target, "item_cf", "knn", src.manifest["hyperparameters"],
                        src.manifest["data_summary"], extra=extra) as w:
        for name in src.files:
            if name == "user_ids.json":
                w.write_json(name, [f"u{u}" for u in src.read_json(name)])
            elif name == "item_ids.json":
                w.write_json(name, [f"i{i}" for i in src.read_json(name)])
            elif name.endswith(".json"):
                w.write_json(name, src.read_json(name))
            else:
                w.write_array(name, src.read_array(name))
    load_knn(target, name="item_cf_str", client=redis_client)
    load_knn(knn_models.paths["item_cf"], client=redis_client)
    client = make_app(redis_server.url).test_client()
    user = knn_models.info.id2user[7]
    _, as_str = answer(client, "item_cf_str", {"user": f"u{user}", "n_rec": 8})
    _, as_int = answer(client, "item_cf", {"user": user, "n_rec": 8})
    assert [i for i, _ in pairs(as_str)] == [f"i{i}" for i, _ in pairs(as_int)]
    assert [s for _, s in pairs(as_str)] == [s for _, s in pairs(as_int)]


# -- cold start -----------------------------------------------------------------------------------
def test_unknown_user_gets_popular_items(client, loaded):
    before = sample("libreco_cold_start_total", {"model": "item_cf"})
    status, body = answer(client, "item_cf", {"user": "no-such-user", "n_rec": 7})
    assert status == 200
    expected = loaded.models["item_cf"].popular_recommendations(7)
    assert [i for i, _ in pairs(body)] == [i for i, _ in expected]
    np.testing.assert_allclose([s for _, s in pairs(body)], [s for _, s in expected])
    assert list(body) == ["recommend list for user (no-such-user)"]
    assert sample("libreco_cold_start_total", {"model": "item_cf"}) == before + 1


def test_unknown_user_404_when_configured(redis_server, loaded):
    client = make_app(redis_server.url, LIBRECO_COLD_START="404").test_client()
    status, body = answer(client, "user_cf", {"user": 123456789})
    assert status == 404
    assert body["status"] == 404 and "123456789" in body["error"]


# -- errors ---------------------------------------------------------------------------------------
BAD_BODIES = [
    ({}, "user"),
    ({"user": None}, "user"),
    ({"user": True}, "user"),
    ({"user": [1]}, "user"),
    ({"user": {"id": 1}}, "user"),
    ({"user": "x" * 10_000}, "user"),
    ({"user": 1, "n_rec": 0}, "n_rec"),
    ({"user": 1, "n_rec": -3}, "n_rec"),
    ({"user": 1, "n_rec": 1001}, "n_rec"),
    ({"user": 1, "n_rec": 2.5}, "n_rec"),
    ({"user": 1, "n_rec": True}, "n_rec"),
    ({"user": 1, "n_rec": "ten"}, "n_rec"),
    ({"user": 1, "n_rec": [10]}, "n_rec"),
    ({"user": 1, "k_neighbors": 0}, "k_neighbors"),
    ({"user": 1, "k_neighbors": False}, "k_neighbors"),
    ({"user": 1, "k_neighbors": "many"}, "k_neighbors"),
    ({"user": 1, "k_neighbors": {"k": 1}}, "k_neighbors"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_bad_fields_are_400_naming_the_field(client, body, field):
    status, answer_body = answer(client, "item_cf", body)
    assert status == 400
    assert answer_body["status"] == 400
    assert answer_body["field"] == field
    assert field in answer_body["error"]


@pytest.mark.parametrize("raw", [
    b"", b"   ", b"not json", b"{", b"[1, 2]", b"42", b"null", b'"just a string"',
    json.dumps(json.dumps([1, 2])).encode(), b"[" * 100_000 + b"]" * 100_000,
    b'{"user": NaN}', b'{"user": Infinity}', b"\xff\xfe", b'{"user": 1' + b"9" * 5000 + b"}",
])
def test_malformed_bodies_are_400(client, raw):
    status, body = answer(client, "item_cf", None, raw=raw)
    assert status in (400, 413)
    assert body["status"] == status and body["error"]


def test_oversized_body_is_413_json(client):
    status, body = answer(client, "item_cf", None, raw=b'{"user": "' + b"x" * (2 << 20) + b'"}')
    assert status == 413 and body["status"] == 413


def test_unknown_model_path_and_method(client, redis_client):
    status, body = answer(client, "no_such_model", {"user": 1})
    assert status == 404 and "no_such_model" in body["error"]
    status, body = answer(client, "bad name!", {"user": 1})
    assert status == 404
    resp = client.get("/item_cf/recommend")
    assert resp.status_code == 405 and resp.get_json()["status"] == 405
    assert "POST" in resp.headers["Allow"]
    resp = client.get("/nowhere")
    assert resp.status_code == 404 and resp.get_json()["status"] == 404


def test_model_of_another_family_is_404(client, redis_client):
    redis_client.hset(MODELS_KEY, "als", "vector")
    redis_client.set(ModelKeys("als").active, "v1")
    status, body = answer(client, "als", {"user": 1})
    assert status == 404 and "vector" in body["error"]


def test_unhandled_errors_are_logged_500_json(client, caplog, monkeypatch):
    app_handler = client.application.extensions["libreco"].handler

    def broken(*args, **kwargs):
        raise RuntimeError("scoring bug")

    monkeypatch.setattr(app_handler, "recommend", broken)
    with caplog.at_level("ERROR", logger="libreco.services"):
        status, body = answer(client, "item_cf", {"user": 0})
    assert status == 500 and body == {"error": "internal error", "status": 500}
    assert any("/item_cf/recommend" in r.getMessage() and r.exc_info for r in caplog.records)


def test_config_errors_name_the_variable(redis_server):
    with pytest.raises(ConfigError, match="LIBRECO_N_REC"):
        make_app(redis_server.url, LIBRECO_N_REC="ten")


# -- health, readiness, Redis down ------------------------------------------------------------
def test_health_and_readiness(redis_server, redis_client, knn_models):
    client = make_app(redis_server.url).test_client()
    assert client.get("/healthz").get_json()["status"] == "ok"
    resp = client.get("/readyz")
    assert resp.status_code == 503 and "no knn model" in resp.get_json()["reason"]
    version = load_knn(knn_models.paths["item_cf"], client=redis_client)
    resp = client.get("/readyz")
    assert resp.status_code == 200
    assert resp.get_json() == {"ready": True, "models": {"item_cf": version}}
    waiting = make_app(redis_server.url, LIBRECO_MODEL="user_cf").test_client()
    resp = waiting.get("/readyz")
    assert resp.status_code == 503 and "user_cf" in resp.get_json()["reason"]


def test_redis_unreachable_is_503_and_health_stays_up():
    client = make_app(f"redis://127.0.0.1:{free_port()}/0", LIBRECO_REDIS_TIMEOUT="0.5") \
        .test_client()
    before = sample("libreco_store_errors_total", {})
    started = time.monotonic()
    status, body = answer(client, "item_cf", {"user": 1})
    assert status == 503 and body["status"] == 503 and "unavailable" in body["error"]
    assert time.monotonic() - started < 2
    assert client.get("/healthz").status_code == 200
    resp = client.get("/readyz")
    assert resp.status_code == 503 and resp.get_json()["ready"] is False
    assert sample("libreco_store_errors_total", {}) >= before + 2


def test_new_version_is_served_without_restart(redis_server, redis_client, knn_models,
                                               knn_models_b):
    v1 = load_knn(knn_models.paths["item_cf"], client=redis_client)
    client = create_app("knn", {"REDIS_URL": redis_server.url,
                                "LIBRECO_POLL_INTERVAL": "0.2"}).test_client()
    users = knn_models.info.id2user[:30]
    first = {u: answer(client, "item_cf", {"user": u})[1] for u in users}
    v2 = load_knn(knn_models_b.paths["item_cf"], client=redis_client)
    assert v1 != v2
    switched = time.monotonic()
    while True:
        now = {u: answer(client, "item_cf", {"user": u})[1] for u in users}
        if now != first:
            break
        assert time.monotonic() - switched < 1.0, "new version not served within a second"
        time.sleep(0.02)
    assert sample("libreco_active_model_version", {"model": "item_cf", "version": v2}) == 1
    assert sample("libreco_active_model_version", {"model": "item_cf", "version": v1}) == 0
    # the old version is still in Redis (grace period) but no longer served
    assert redis_client.exists(VersionKeys("item_cf", v1).meta)


def test_metrics_count_requests_by_model_and_status(client, loaded):
    labels = {"model": "item_cf", "status": "200"}
    before = sample("libreco_requests_total", labels)
    before_400 = sample("libreco_requests_total", {"model": "unknown", "status": "400"})
    for _ in range(3):
        answer(client, "item_cf", {"user": loaded.info.id2user[0]})
    answer(client, "item_cf", {"n_rec": 3})
    assert sample("libreco_requests_total", labels) == before + 3
    assert sample("libreco_requests_total", {"model": "unknown", "status": "400"}) == \
        before_400 + 1
    text = client.get("/metrics").get_data(as_text=True)
    assert "libreco_request_duration_seconds_bucket" in text
    assert 'libreco_requests_total{model="item_cf",status="200"}' in text
