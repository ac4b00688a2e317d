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

import os
import shutil
import signal
import subprocess
import time
from typing import Any

import pytest

from services.core.store import ModelKeys, VersionKeys
from services.loaders.knn import load_knn
from services.loaders.vector import load_vector
from tests.ops.load import LoadGenerator, json_error
from tests.ops.promtool import promtool_check, require_promtool
from tests.services.conftest import PYTHON, ROOT, Gunicorn, KnnModels, RedisServer, http, wait_for

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


def answers_of(url: str, users: list, model: str = "item_cf") -> dict:
    out = {}
    for u in users:
        status, body = http("POST", f"{url}/{model}/recommend", {"user": u, "n_rec": 10})
        assert status == 200, body
        out[u] = body
    return out


def requests_for(users: list, model: str = "item_cf") -> list[tuple[str, Any, Any]]:
    return [(f"/{model}/recommend", u, {"user": u, "n_rec": 10}) for u in users]


def served(url: str, user: Any, expected: Any) -> bool:
    return http("POST", f"{url}/item_cf/recommend", {"user": user, "n_rec": 10})[1] == expected


# -- a new version under load -------------------------------------------------------------------
def test_version_swap_under_load(knn, private_redis, gunicorn):
    a, b = knn
    client = private_redis.client()
    load_knn(a.paths["item_cf"], client=client)
    server = gunicorn({"REDIS_URL": private_redis.url})
    users = list(a.info.id2user[:40])
    expected_a = answers_of(server.url, users)
    load_knn(b.paths["item_cf"], client=client)
    wait_for(lambda: not served(server.url, users[0], expected_a[users[0]]), 5,
             what="the second version")
    expected_b = answers_of(server.url, users)
    load_knn(a.paths["item_cf"], client=client)
    wait_for(lambda: served(server.url, users[0], expected_a[users[0]]), 5,
             what="the first version again")
    users = [u for u in users if expected_a[u] != expected_b[u]]
    assert len(users) >= 20, "the two versions answer alike"

    with LoadGenerator(server.url, requests_for(users), CONNECTIONS, max_requests=40_000,
                       max_seconds=30) as load:
        load.wait(1.0)
        version = load_knn(b.paths["item_cf"], client=client)
        activated = time.monotonic()
        load.wait(2.0)
    assert client.get(ModelKeys("item_cf").active).decode() == version

    answers = load.answers
    assert len(answers) >= 200
    assert load.statuses() == {200: len(answers)}, "failed requests"
    which = []
    for ans in answers:
        is_a, is_b = ans.body == expected_a[ans.key], ans.body == expected_b[ans.key]
        assert is_a != is_b, f"an answer for user {ans.key} is neither version's (mixed)"
        which.append("a" if is_a else "b")
        if ans.started > activated + 1.0:
            assert is_b, "the new version was not served a second after its activation"
    assert "a" in which and "b" in which
    client.close()


# -- Redis going away under load ------------------------------------------------------------------
def test_redis_killed_and_restarted_under_load(knn, private_redis, gunicorn):
    a, _ = knn
    client = private_redis.client()
    load_knn(a.paths["item_cf"], client=client)
    client.save()  # the restarted server reads this snapshot
    client.close()
    server = gunicorn({"REDIS_URL": private_redis.url, "LIBRECO_REDIS_TIMEOUT": "0.5"})
    users = list(a.info.id2user[:40])
    expected = answers_of(server.url, users)
    workers = server.workers()

    with LoadGenerator(server.url, requests_for(users), CONNECTIONS, max_requests=60_000,
                       max_seconds=40) as load:
        load.wait(1.0)
        killed = time.monotonic()
        private_redis.kill()
        load.wait(2.0)
        restarting = time.monotonic()
        private_redis.start()
        back = time.monotonic()

        def recovered() -> bool:
            recent = load.between(time.monotonic() - 0.3, time.monotonic())
            return bool(recent) and all(r.status == 200 for r in recent)

        assert load.wait_until(recovered, 10) is not None, "no recovery within 10 s"
        load.wait(1.0)
    answers = load.answers
    statuses = load.statuses()
    assert set(statuses) <= {200, 503}, f"unexpected answers: {statuses}"
    # asked and answered while Redis was down (a request queued then may be answered after)
    down = [x for x in load.between(killed + 0.2, restarting) if x.ended < restarting]
    assert len(down) >= 50 and all(x.status == 503 for x in down), load.statuses(down)
    assert all(json_error(x) for x in answers if x.status == 503)
    assert "unavailable" in next(x for x in answers if x.status == 503).body["error"]
    assert all(x.body == expected[x.key] for x in answers if x.status == 200)
    last_error = max(x.started for x in answers if x.status != 200)
    assert last_error - back < 5.0, f"errors until {last_error - back:.2f}s after Redis came back"
    assert len([x for x in answers if x.started > last_error]) >= 50
    assert server.workers() == workers, "a worker crashed or was restarted"
    assert http("GET", server.url + "/readyz")[0] == 200


# -- a loader killed halfway under load -----------------------------------------------------------
def test_loader_killed_halfway_then_a_complete_load(knn, private_redis, gunicorn, tmp_path):
    a, _ = knn
    big = KnnModels(tmp_path, seed=31, n_users=8000, n_items=1000, n_interactions=80_000)
    client = private_redis.client()
    first = load_knn(a.paths["item_cf"], client=client)
    server = gunicorn({"REDIS_URL": private_redis.url})
    users = list(a.info.id2user[:40])
    expected_a = answers_of(server.url, users)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": private_redis.url}
    command = [PYTHON, "-m", "jobs.load", "--model-dir", str(big.paths["item_cf"])]

    with LoadGenerator(server.url, requests_for(users), CONNECTIONS, max_requests=60_000,
                       max_seconds=90) as load:
        loader = subprocess.Popen(command, cwd=ROOT, env={**env, "LIBRECO_LOAD_BATCH": "1"},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def halfway() -> str | None:
            for version, state in client.hgetall(ModelKeys("item_cf").versions).items():
                if state == b"writing" and \
                        client.hlen(VersionKeys("item_cf", version.decode()).data("consumed")):
                    return version.decode()
            assert loader.poll() is None, "the loader finished before it could be killed"
            return None

        dying = wait_for(halfway, 60, interval=0.005, what="the loader to be halfway")
        loader.send_signal(signal.SIGKILL)
        loader.wait(10)
        killed = time.monotonic()
        load.wait(1.0)
        assert client.get(ModelKeys("item_cf").active).decode() == first
        assert client.hget(ModelKeys("item_cf").versions, dying) == b"writing"
        reloading = time.monotonic()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)
        activated = time.monotonic()
        assert done.returncode == 0, done.stderr
        load.wait(1.5)
    # versions are named by their content: the complete load finished the killed one's version
    second = client.get(ModelKeys("item_cf").active).decode()
    assert second == dying != first
    assert client.hget(ModelKeys("item_cf").versions, second) == b"active"
    assert client.hget(VersionKeys("item_cf", second).meta, "state") == b"complete"
    expected_big = answers_of(server.url, users)
    assert sum(expected_a[u] != expected_big[u] for u in users) >= 20

    answers = load.answers
    assert load.statuses() == {200: len(answers)}, "failed requests"
    for x in answers:
        assert x.body in (expected_a[x.key], expected_big[x.key]), "an answer of neither version"
        if x.started < reloading:
            assert x.body == expected_a[x.key], "the killed load changed what is served"
        if x.started > activated + 1.0:
            assert x.body == expected_big[x.key], "the complete load was not served"
    assert len(load.between(killed, reloading)) >= 20
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

