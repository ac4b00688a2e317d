"""The vector service end to end under a real gunicorn with two workers.

ALS -> save_vector -> ``python -m jobs.load`` (adds the faiss index) -> gunicorn -> HTTP, then
a version swap while requests flow, Redis dying and coming back, the request script and the
``flask run`` development server.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from libreco.algorithms import ALS
from libreco.utils import save_vector
from services.core.store import ModelKeys
from services.loaders.vector import vector2redis
from tests.services.conftest import PYTHON, ROOT, Gunicorn, free_port, http, wait_for
from tests.services.test_vector_service import VectorModels, assert_same_ranking, pairs

pytestmark = pytest.mark.slow
APP = "services.vector.vector_deploy:app"


def recommend(base: str, route: str, user, n_rec: int = 10, use_faiss=None):
    body = {"user": user, "n_rec": n_rec}
    if use_faiss is not None:
        body["use_faiss"] = use_faiss
    return http("POST", f"{base}/{route}/recommend", body)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> VectorModels:
    folder = tmp_path_factory.mktemp("vector_e2e")
    models = VectorModels(folder, seed=13)
    other = ALS(task="ranking", data_info=models.info, n_epochs=2, seed=77)
    models.models["als_b"] = other.fit(models.train, verbose=0)
    models.paths["als_b"] = folder / "als_b"
    save_vector(models.paths["als_b"], other, models.train)
    return models


@pytest.fixture(scope="module")
def served(redis_server, models, tmp_path_factory):
    client = redis_server.client()
    client.flushall()
    done = subprocess.run([PYTHON, "-m", "jobs.load", "--model-dir", str(models.paths["als"])],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT),
                               "REDIS_URL": redis_server.url})
    assert done.returncode == 0, done.stderr
    manifest = json.loads((models.paths["als"] / "manifest.json").read_text())
    assert manifest["vector"]["index"]["file"] in manifest["files"]
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    server = Gunicorn(APP, {"REDIS_URL": redis_server.url, "LIBRECO_POLL_INTERVAL": "0.1"},
                      log)
    yield server, client
    server.stop()
    client.close()


def test_train_save_load_serve(served, models):
    server, _ = served
    model = models.models["als"]
    for user in models.info.id2user[:15]:
        expected = model.recommend_user(user, 10)[user]
        for route, use_faiss in (("als", True), ("als", False), ("vector", None),
                                 ("vector", "false")):
            status, body = recommend(server.url, route, user, use_faiss=use_faiss)
            assert status == 200, body
            assert_same_ranking(pairs(body), expected)
    status, body = http("GET", server.url + "/readyz")
    assert status == 200 and list(body["models"]) == ["als"]


def test_request_script(served, models):
    server, _ = served
    user = models.info.id2user[4]
    out = subprocess.run([PYTHON, "services/vector/vector_request.py", "--user", str(user),
                          "--n_rec", "3", "--use_faiss", "false", "--host", "127.0.0.1",
                          "--port", str(server.port)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == recommend(server.url, "vector", str(user), n_rec=3,
                                               use_faiss=False)[1]
    out = subprocess.run([PYTHON, "services/vector/vector_request.py", "--user", str(user),
                          "--use_faiss", "perhaps"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "true or false" in out.stderr


def test_new_version_while_requests_flow(served, models):
    server, client = served
    users = models.info.id2user[:24]
    before = {u: recommend(server.url, "als", u)[1] for u in users}
    results: list[tuple[float, object, int, object]] = []
    stop = threading.Event()

    def hammer(offset: int) -> None:
        i = offset
        while not stop.is_set():
            u = users[i % len(users)]
            started = time.monotonic()
            status, body = recommend(server.url, "als", u, use_faiss=i % 2 == 0)
            results.append((started, u, status, body))
            i += 1

    with ThreadPoolExecutor(6) as pool:
        for t in range(6):
            pool.submit(hammer, t * 4)
        time.sleep(0.5)
        new = vector2redis(models.paths["als_b"], name="als", client=client)
        activated = time.monotonic()
        time.sleep(1.6)
        stop.set()
    assert client.get(ModelKeys("als").active).decode() == new
    after = {u: recommend(server.url, "als", u)[1] for u in users}
    for u in users:
        assert_same_ranking(pairs(after[u]), models.models["als_b"].recommend_user(u, 10)[u])
    assert sum(before[u] != after[u] for u in users) >= len(users) // 2

    assert len(results) > 50
    assert [r for r in results if r[2] != 200] == []
    for started, u, _, body in results:
        assert same_answer(body, before[u]) or same_answer(body, after[u]), \
            "an answer matches neither version"
        if started > activated + 1.0:
            assert same_answer(body, after[u]), "the new version was not served within a second"
    assert any(same_answer(body, before[u]) for _, u, _, body in results)
    vector2redis(models.paths["als"], client=client)  # the first version again


def same_answer(a: dict, b: dict) -> bool:
    """Same items in the same order and scores equal up to float32 rounding (the exact and
    the faiss path may round the last bit differently)."""
    x, y = pairs(a), pairs(b)
    return [i for i, _ in x] == [i for i, _ in y] and \
        np.allclose([s for _, s in x], [s for _, s in y], rtol=1e-5, atol=1e-6)


def test_redis_restart_while_serving(models, redis_factory, gunicorn_factory):
    redis_a = redis_factory()
    client = redis_a.client()
    vector2redis(models.paths["svd"], client=client)
    server = gunicorn_factory({"REDIS_URL": redis_a.url, "LIBRECO_POLL_INTERVAL": "0.1",
                               "LIBRECO_REDIS_TIMEOUT": "0.5"}, app=APP)
    user = models.info.id2user[2]
    status, expected = recommend(server.url, "vector", user)
    assert status == 200
    workers = server.workers()
    client.save()  # the restarted server reads this snapshot (without the script cache)
    redis_a.kill()

    for use_faiss in (True, False, True, False):
        started = time.monotonic()
        status, body = recommend(server.url, "svd", user, use_faiss=use_faiss)
        assert status == 503 and "unavailable" in body["error"]
        assert time.monotonic() - started < 2
    assert http("GET", server.url + "/readyz")[0] == 503
    assert http("GET", server.url + "/healthz")[0] == 200

    redis_a.start()
    restarted = time.monotonic()
    for use_faiss in (True, False):
        wait_for(lambda f=use_faiss: recommend(server.url, "svd", user, use_faiss=f)
                 == (200, expected), 5, interval=0.1, what="recovery after Redis came back")
    assert time.monotonic() - restarted < 5
    assert server.workers() == workers, "a worker crashed or was restarted"
    client.close()


def test_flask_run_from_the_service_folder(served, models):
    _, client = served
    port = free_port()
    flask = Path(PYTHON).parent / "flask"
    command = [str(flask)] if flask.exists() else [PYTHON, "-m", "flask"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    url = client.connection_pool.connection_kwargs
    env.update(FLASK_APP="vector_deploy.py",
               REDIS_URL=f"redis://{url['host']}:{url['port']}/0")
    proc = subprocess.Popen([*command, "run", "--port", str(port)],
                            cwd=ROOT / "services/vector", env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: http("GET", base + "/healthz", timeout=1)[0] == 200, 30,
                 what="flask run")
        status, body = recommend(base, "vector", models.info.id2user[0], use_faiss=False)
        assert status == 200 and len(pairs(body)) == 10
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0].decode()
    assert "Traceback" not in out, out
