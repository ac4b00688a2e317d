"""Faults while the knn service is under load, and its metrics through promtool.

Real gunicorn (two workers), a real redis-server of the test's own, and a load generator of 32
kept-alive connections on 127.0.0.1 (:mod:`tests.ops.load`), bounded in requests and seconds:

* a new model version activated mid-load: no failed request, and every answer is exactly one
  version's answer (the two versions are trained on different data, so that answers tell them
  apart);
* Redis killed and restarted mid-load: JSON 503 answers while it is down, full recovery within
  5 s of its return, no connection error and the same gunicorn workers throughout;
* ``python -m jobs.load`` killed with SIGKILL halfway through a load mid-load: the previous
  version keeps answering, and a later complete load activates cleanly;
* ``promtool check metrics`` on ``/metrics`` of the knn, vector and all-families services.

The tf service's faults (TF Serving going away) are in ``tests/services/test_tf_faults.py``.
``python -m benchmarks.faults`` runs the same scenarios longer and records the numbers.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from services.loaders.knn import load_knn
from services.loaders.vector import load_vector
from tests.ops.promtool import promtool_check, require_promtool
from tests.ops.scenarios import (
    answers_of,
    killed_load,
    killed_load_problems,
    outage,
    outage_problems,
    swap_problems,
    version_swap,
)
from tests.services.conftest import Gunicorn, KnnModels, RedisServer, http, wait_for

pytestmark = pytest.mark.slow

CONNECTIONS = 32


@pytest.fixture(scope="module")
def knn(tmp_path_factory) -> tuple[KnnModels, KnnModels]:
    """Two ItemCF versions trained on different data over the same user ids."""
    folder = tmp_path_factory.mktemp("ops_knn")
    return KnnModels(folder), KnnModels(folder, seed=23, n_interactions=5000)


@pytest.fixture
def private_redis(tmp_path) -> Any:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (make redis)")
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def gunicorn(tmp_path) -> Any:
    started: list[Gunicorn] = []

    def make(env: dict[str, str], app: str = "services.knn.knn_deploy:app") -> Gunicorn:
        g = Gunicorn(app, {"LIBRECO_POLL_INTERVAL": "0.1", **env},
                     tmp_path / f"gunicorn{len(started)}.log")
        started.append(g)
        return g

    yield make
    for g in started:
        g.stop()


def requests_for(users: list, model: str = "item_cf") -> list[tuple[str, Any, Any]]:
    return [(f"/{model}/recommend", u, {"user": u, "n_rec": 10}) for u in users]


def served(url: str, user: Any, expected: Any, times: int = 20, same: bool = True) -> bool:
    """``times`` requests in a row answer ``expected`` (or, with ``same=False``, anything
    else). Each opens its own connection, so every gunicorn worker (each notices a new version
    on its own) is asked in all likelihood."""
    return all((http("POST", f"{url}/item_cf/recommend", {"user": user, "n_rec": 10})[1]
                == expected) == same for _ in range(times))


# -- a new version under load -------------------------------------------------------------------
def test_version_swap_under_load(knn, private_redis, gunicorn):
    a, b = knn
    client = private_redis.client()
    load_knn(a.paths["item_cf"], client=client)
    server = gunicorn({"REDIS_URL": private_redis.url})
    users = list(a.info.id2user[:40])
    expected_a = answers_of(server.url, requests_for(users))
    load_knn(b.paths["item_cf"], client=client)
    wait_for(lambda: served(server.url, users[0], expected_a[users[0]], same=False), 5,
             what="the second version")
    expected_b = answers_of(server.url, requests_for(users))
    load_knn(a.paths["item_cf"], client=client)
    wait_for(lambda: served(server.url, users[0], expected_a[users[0]]), 5,
             what="the first version again")
    users = [u for u in users if expected_a[u] != expected_b[u]]
    assert len(users) >= 20, "the two versions answer alike"

    report = version_swap(server.url, requests_for(users), expected_a, expected_b,
                          lambda: load_knn(b.paths["item_cf"], client=client),
                          connections=CONNECTIONS)
    assert swap_problems(report) == [], report
    assert report["requests"] >= 200
    client.close()


# -- Redis going away under load ------------------------------------------------------------------
def test_redis_killed_and_restarted_under_load(knn, private_redis, gunicorn):
    a, _ = knn
    client = private_redis.client()
    load_knn(a.paths["item_cf"], client=client)
    client.save()  # the restarted server reads this snapshot
    client.close()
    server = gunicorn({"REDIS_URL": private_redis.url, "LIBRECO_REDIS_TIMEOUT": "0.5"})
    requests = requests_for(list(a.info.id2user[:40]))
    report = outage(server.url, requests, answers_of(server.url, requests), private_redis.kill,
                    private_redis.start, server.workers, connections=CONNECTIONS)
    assert outage_problems(report) == [], report
    assert http("GET", server.url + "/readyz")[0] == 200


# -- a loader killed halfway under load -----------------------------------------------------------
def test_loader_killed_halfway_then_a_complete_load(knn, private_redis, gunicorn, tmp_path):
    a, _ = knn
    big = KnnModels(tmp_path, seed=31, n_users=20_000, n_items=1000, n_interactions=200_000)
    client = private_redis.client()
    load_knn(a.paths["item_cf"], client=client)
    server = gunicorn({"REDIS_URL": private_redis.url})
    requests = requests_for(list(a.info.id2user[:40]))
    expected_a = answers_of(server.url, requests)
    report = killed_load(server.url, requests, expected_a, client, big.paths["item_cf"],
                         "item_cf", private_redis.url, connections=CONNECTIONS)
    assert killed_load_problems(report) == [], report
    # versions are named by their content: the complete load finished the killed one's version
    assert report["new_version_is_the_killed_ones"]
    assert sum(expected_a[k] != v for k, v in report["expected_new"].items()) >= 20
    assert http("GET", server.url + "/readyz")[0] == 200
    client.close()


# -- promtool -------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["knn", "vector", "all"])
def test_promtool_accepts_the_metrics(family, knn, private_redis, gunicorn, tmp_path):
    require_promtool()
    a, _ = knn
    client = private_redis.client()
    models = {"knn": ["item_cf"], "vector": ["als"], "all": ["item_cf", "als"]}[family]
    if "item_cf" in models:
        load_knn(a.paths["item_cf"], client=client)
    if "als" in models:
        from tests.services.test_vector_service import VectorModels

        vector = VectorModels(tmp_path / "vector", n_interactions=3000)
        load_vector(vector.paths["als"], client=client)
    app = {"knn": "services.knn.knn_deploy:app", "vector": "services.vector.vector_deploy:app",
           "all": "services.all_deploy:app"}[family]
    server = gunicorn({"REDIS_URL": private_redis.url}, app=app)
    users = list(a.info.id2user[:5])
    for model in models:
        for u in [*users, "stranger"]:
            assert http("POST", f"{server.url}/{model}/recommend", {"user": u})[0] == 200
        assert http("POST", f"{server.url}/{model}/recommend", {"n_rec": 1})[0] == 400
    assert http("POST", f"{server.url}/no_such_model/recommend", {"user": 1})[0] == 404
    promtool_check(server.url)
    client.close()

