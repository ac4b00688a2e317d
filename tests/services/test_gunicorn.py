"""The knn service end to end under a real gunicorn with two workers.

train -> save_knn -> ``python -m jobs.load`` -> gunicorn -> HTTP, then a version swap while
requests flow, Redis dying and coming back, a loader killed halfway, metrics across workers,
and the ``flask run`` development server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.core.store import ModelKeys, VersionKeys
from services.loaders.knn import load_knn
from tests.services.conftest import (
    PYTHON,
    ROOT,
    Gunicorn,
    KnnModels,
    free_port,
    http,
    wait_for,
)

pytestmark = pytest.mark.slow


def run_load(path: Path, url: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "jobs.load", "--model-dir", str(path)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": url, **env},
                          capture_output=True, text=True, timeout=120)


def recommend(base: str, algo: str, user, n_rec: int = 10, k: int | None = None):
    body = {"user": user, "n_rec": n_rec}
    if k is not None:
        body["k_neighbors"] = k
    return http("POST", f"{base}/{algo}/recommend", body)


def items_of(body: dict) -> list:
    (value,) = body.values()
    return value


def metric_samples(base: str) -> dict[tuple[str, tuple], float]:
    status, text = http("GET", base + "/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture(scope="module")
def served(redis_server, knn_models, tmp_path_factory):
    client = redis_server.client()
    client.flushall()
    for algo in ("item_cf", "user_cf"):
        done = run_load(knn_models.paths[algo], redis_server.url)
        assert done.returncode == 0, done.stderr
        assert "as version" in done.stderr
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    server = Gunicorn("services.knn.knn_deploy:app",
                      {"REDIS_URL": redis_server.url, "LIBRECO_POLL_INTERVAL": "0.1"}, log)
    yield server, client
    server.stop()
    client.close()


def test_train_save_load_serve(served, knn_models):
    server, _ = served
    info = knn_models.info
    for algo in ("item_cf", "user_cf"):
        model = knn_models.models[algo]
        for user in info.id2user[:15]:
            status, body = recommend(server.url, algo, user, k=model.k_sim)
            assert status == 200, body
            got = [(i, s) for i, s in items_of(body) if s > 0]
            expected = [(i, s) for i, s in model.recommend_user(user, 10)[user] if s > 0]
            np.testing.assert_allclose([s for _, s in got], [s for _, s in expected],
                                       rtol=1e-5)
    assert http("GET", server.url + "/readyz")[0] == 200


def test_workers_load_the_active_models_before_taking_requests(served):
    server, _ = served
    lines = server.log.read_text().splitlines()
    for pid in server.workers():
        loaded = [i for i, line in enumerate(lines) if f"worker {pid} loaded item_cf, user_cf"
                  in line]
        ready = [i for i, line in enumerate(lines) if line.rstrip().endswith(
            f"worker {pid} ready")]
        assert loaded and ready and loaded[0] < ready[0], lines[-20:]


def test_request_script(served, knn_models):
    server, _ = served
    user = knn_models.info.id2user[4]
    out = subprocess.run([PYTHON, "services/knn/knn_request.py", "--user", str(user),
                          "--k_neighbors", "5", "--n_rec", "3", "--host", "127.0.0.1",
                          "--port", str(server.port), "--algo", "user_cf"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    assert printed == recommend(server.url, "user_cf", str(user), n_rec=3, k=5)[1]


def test_new_version_while_requests_flow(served, knn_models, knn_models_b):
    server, client = served
    users = knn_models.info.id2user[:24]
    before = {u: recommend(server.url, "item_cf", u)[1] for u in users}
    results: list[tuple[float, object, int, object]] = []
    stop = threading.Event()

    def hammer(offset: int) -> None:
        i = offset
        while not stop.is_set():
            u = users[i % len(users)]
            started = time.monotonic()
            status, body = recommend(server.url, "item_cf", u)
            results.append((started, u, status, body))
            i += 1

    with ThreadPoolExecutor(6) as pool:
        for t in range(6):
            pool.submit(hammer, t * 4)
        time.sleep(0.5)
        new = load_knn(knn_models_b.paths["item_cf"], client=client)
        activated = time.monotonic()
        time.sleep(1.6)
        stop.set()
    assert client.get(ModelKeys("item_cf").active).decode() == new
    after = {u: recommend(server.url, "item_cf", u)[1] for u in users}
    assert sum(before[u] != after[u] for u in users) >= len(users) // 2  # the versions differ

    assert len(results) > 50
    assert [r for r in results if r[2] != 200] == []
    for started, u, _, body in results:
        assert body in (before[u], after[u]), "an answer matches neither version"
        if started > activated + 1.0:
            assert body == after[u], "the new version was not served within a second"
    assert any(body == before[u] for _, u, _, body in results)
    # put the first version back for the tests that follow
    load_knn(knn_models.paths["item_cf"], client=client)
    wait_for(lambda: recommend(server.url, "item_cf", users[0])[1] == before[users[0]], 2,
             what="first version served again")


def test_metrics_across_two_workers(served, knn_models):
    server, client = served
    ok = ("libreco_requests_total", (("model", "item_cf"), ("status", "200")))
    bad = ("libreco_requests_total", (("model", "unknown"), ("status", "400")))
    cold = ("libreco_cold_start_total", (("model", "item_cf"),))
    count = ("libreco_request_duration_seconds_count", (("model", "item_cf"),
                                                        ("status", "200")))
    m0 = metric_samples(server.url)
    users = knn_models.info.id2user[:40]

    def one(i: int) -> int:
        if i % 10 == 9:
            return recommend(server.url, "item_cf", f"stranger-{i}")[0]
        return recommend(server.url, "item_cf", users[i % len(users)])[0]

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(200)))
        statuses += list(pool.map(lambda _: http("POST", server.url + "/item_cf/recommend",
                                                 {"n_rec": 1})[0], range(10)))
    assert statuses.count(200) == 200 and statuses.count(400) == 10
    m1 = metric_samples(server.url)
    assert m1[ok] - m0.get(ok, 0) == 200
    assert m1[count] - m0.get(count, 0) == 200
    assert m1[cold] - m0.get(cold, 0) == 20
    assert m1[bad] - m0.get(bad, 0) == 10
    workers = server.workers()
    counted = {int(f.stem.rsplit("_", 1)[1]) for f in server.metrics_dir.glob("counter_*.db")}
    assert workers <= counted, "both workers' metrics are merged"
    version = client.get(ModelKeys("item_cf").active).decode()
    gauge = ("libreco_active_model_version", (("model", "item_cf"), ("version", version)))
    assert m1[gauge] == 1

    # a worker that dies leaves its counts in the merged metrics
    victim = sorted(workers)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(server.workers()) == 2 and victim not in server.workers(), 15,
             what="gunicorn to replace the killed worker")
    m2 = metric_samples(server.url)
    assert m2[ok] == m1[ok]
    # and child_exit drops its live gauges
    wait_for(lambda: not list(server.metrics_dir.glob(f"gauge_live*_{victim}.db")), 5,
             what="the dead worker's gauges to be removed")


def test_flask_run_from_the_service_folder(served, knn_models):
    _, client = served
    port = free_port()
    flask = Path(PYTHON).parent / "flask"
    command = [str(flask)] if flask.exists() else [PYTHON, "-m", "flask"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    url = client.connection_pool.connection_kwargs
    env.update(FLASK_APP="knn_deploy.py",
               REDIS_URL=f"redis://{url['host']}:{url['port']}/0")
    proc = subprocess.Popen([*command, "run", "--port", str(port)], cwd=ROOT / "services/knn",
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: http("GET", base + "/healthz", timeout=1)[0] == 200, 30,
                 what="flask run")
        status, body = recommend(base, "item_cf", knn_models.info.id2user[0])
        assert status == 200 and len(items_of(body)) == 10
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0].decode()
    assert "Traceback" not in out, out


def test_loader_killed_halfway_leaves_the_active_version(served, tmp_path):
    server, client = served
    big = KnnModels(tmp_path, seed=31, n_users=8000, n_items=1000, n_interactions=80_000)
    users = big.info.id2user[:5]
    active = client.get(ModelKeys("item_cf").active).decode()
    before = {u: recommend(server.url, "item_cf", u)[1] for u in users}
    url = client.connection_pool.connection_kwargs
    proc = subprocess.Popen(
        [PYTHON, "-m", "jobs.load", "--model-dir", str(big.paths["item_cf"])], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "LIBRECO_LOAD_BATCH": "1",
             "REDIS_URL": f"redis://{url['host']}:{url['port']}/0"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def halfway() -> str | None:
        for version, state in client.hgetall(ModelKeys("item_cf").versions).items():
            if state == b"writing" and \
                    client.hlen(VersionKeys("item_cf", version.decode()).data("consumed")):
                return version.decode()
        assert proc.poll() is None, "the loader finished before it could be killed"
        return None

    dying = wait_for(halfway, 60, interval=0.001, what="the loader to be halfway")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert client.get(ModelKeys("item_cf").active).decode() == active
    assert client.hget(ModelKeys("item_cf").versions, dying) == b"writing"
    assert {u: recommend(server.url, "item_cf", u)[1] for u in users} == before
    assert http("GET", server.url + "/readyz")[0] == 200


def test_redis_restart_while_serving(knn_models, redis_factory, gunicorn_factory):
    redis_a = redis_factory()
    client = redis_a.client()
    load_knn(knn_models.paths["item_cf"], client=client)
    server = gunicorn_factory({"REDIS_URL": redis_a.url, "LIBRECO_POLL_INTERVAL": "0.1",
                               "LIBRECO_REDIS_TIMEOUT": "0.5"})
    user = knn_models.info.id2user[2]
    status, expected = recommend(server.url, "item_cf", user)
    assert status == 200
    workers = server.workers()
    client.save()  # the restarted server reads this snapshot
    redis_a.kill()

    for _ in range(5):
        started = time.monotonic()
        status, body = recommend(server.url, "item_cf", user)
        assert status == 503 and body["status"] == 503 and "unavailable" in body["error"]
        assert time.monotonic() - started < 2
    status, body = http("GET", server.url + "/readyz")
    assert status == 503 and body["ready"] is False
    assert http("GET", server.url + "/healthz")[0] == 200

    redis_a.start()
    restarted = time.monotonic()
    wait_for(lambda: recommend(server.url, "item_cf", user) == (200, expected), 5,
             interval=0.1, what="recovery after Redis came back")
    assert time.monotonic() - restarted < 5
    assert server.workers() == workers, "a worker crashed or was restarted"
    errors = metric_samples(server.url)[("libreco_store_errors_total", ())]
    assert errors >= 5
    client.close()


def test_config_error_stops_gunicorn_with_a_clear_message(tmp_path):
    log = tmp_path / "bad.log"
    with open(log, "w") as out:
        proc = subprocess.run(
            [PYTHON, "-m", "gunicorn", "-c", "python:services.gunicorn_conf",
             "services.knn.knn_deploy:app"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "LIBRECO_PORT": str(free_port()),
                 "LIBRECO_COLD_START": "maybe"}, timeout=60)
    assert proc.returncode != 0
    assert "LIBRECO_COLD_START='maybe'" in log.read_text()


def test_sigterm_finishes_in_flight_requests(knn_models, redis_server, gunicorn_factory):
    client = redis_server.client()
    client.flushall()
    load_knn(knn_models.paths["user_cf"], client=client)
    server = gunicorn_factory({"REDIS_URL": redis_server.url})
    user = knn_models.info.id2user[1]
    results = []

    def keep_asking() -> None:
        for _ in range(20):
            try:
                results.append(recommend(server.url, "user_cf", user)[0])
            except OSError:
                results.append("refused")
                return

    thread = threading.Thread(target=keep_asking)
    thread.start()
    time.sleep(0.05)
    server.proc.send_signal(signal.SIGTERM)
    thread.join(30)
    assert server.proc.wait(30) == 0, server.log.read_text()[-3000:]
    # every request either got its answer or found the port closed; none was cut off
    assert all(r in (200, "refused") for r in results)
