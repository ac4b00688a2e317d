"""The tf service under gunicorn in REST mode while TF Serving goes away and comes back.

Real gunicorn (two workers) and a real redis-server; TF Serving is the REST test double
(:mod:`services.testing.tf_serving_double`, the real wire protocol), stopped and started again
on its port while 32 kept-alive connections post requests of known users (bounded in requests
and seconds, 127.0.0.1 only). While it is down every answer is a JSON 503; within 5 s of its
return every answer is the one from before; no connection fails and the workers stay the same.
Then ``promtool check metrics`` reads the service's ``/metrics``.
"""

from __future__ import annotations

import time

import pytest

from services.loaders.tf import load_tf
from services.testing.tf_serving_double import TFServingDouble
from tests.ops.load import LoadGenerator, json_error
from tests.ops.promtool import promtool_check, require_promtool
from tests.services.conftest import Gunicorn, RedisServer, http

pytestmark = pytest.mark.slow
pytest.importorskip("tensorflow")

CONNECTIONS = 32


@pytest.fixture(scope="module")
def served(tmp_path_factory, tf_models):
    """redis-server with DeepFM loaded, the REST double, and the tf service in REST mode."""
    folder = tmp_path_factory.mktemp("tf_faults")
    redis = RedisServer(folder / "redis").start()
    client = redis.client()
    load_tf(tf_models.paths["deepfm"], client=client)
    client.close()
    double = TFServingDouble({"deepfm": tf_models.serving / "deepfm"}).start()
    server = Gunicorn("services.tf.tf_deploy:app",
                      {"REDIS_URL": redis.url, "TF_SERVING_URL": double.url,
                       "LIBRECO_POLL_INTERVAL": "0.1", "LIBRECO_TF_TIMEOUT": "2"},
                      folder / "gunicorn.log")
    yield server, double, tf_models
    server.stop()
    double.stop()
    redis.stop()


def test_tf_serving_stopped_and_restarted_under_load(served):
    server, double, models = served
    users = [models.info.id2user[u] for u in range(30)]
    expected = {}
    for u in users:
        status, body = http("POST", f"{server.url}/deepfm/recommend", {"user": u, "n_rec": 10})
        assert status == 200, body
        expected[u] = body
    workers = server.workers()
    requests = [("/deepfm/recommend", u, {"user": u, "n_rec": 10}) for u in users]

    with LoadGenerator(server.url, requests, CONNECTIONS, max_requests=40_000,
                       max_seconds=60) as load:
        load.wait(1.0)
        stopped = time.monotonic()
        double.stop()
        load.wait(2.0)
        restarting = time.monotonic()
        double.start()  # the same port; returns once the model is AVAILABLE again
        back = time.monotonic()

        def recovered() -> bool:
            recent = load.between(time.monotonic() - 0.3, time.monotonic())
            return bool(recent) and all(r.status == 200 for r in recent)

        assert load.wait_until(recovered, 10) is not None, "no recovery within 10 s"
        load.wait(1.0)
    answers = load.answers
    statuses = load.statuses()
    assert set(statuses) <= {200, 503}, f"unexpected answers: {statuses}"
    down = [x for x in load.between(stopped + 0.2, restarting) if x.ended < restarting]
    assert len(down) >= 20 and all(x.status == 503 for x in down), load.statuses(down)
    assert all(json_error(x) for x in answers if x.status == 503)
    assert all(x.body == expected[x.key] for x in answers if x.status == 200)
    last_error = max(x.started for x in answers if x.status != 200)
    assert last_error - back < 5.0, f"errors until {last_error - back:.2f}s after the return"
    assert len([x for x in answers if x.started > last_error]) >= 20
    assert server.workers() == workers, "a worker crashed or was restarted"
    assert http("GET", server.url + "/readyz")[0] == 200


def test_promtool_accepts_the_tf_metrics(served):
    require_promtool()
    server, _, models = served
    for u in [models.info.id2user[0], "stranger"]:
        assert http("POST", f"{server.url}/deepfm/recommend", {"user": u})[0] == 200
    assert http("POST", f"{server.url}/deepfm/recommend", {"user": 1, "n_rec": 0})[0] == 400
    promtool_check(server.url)
