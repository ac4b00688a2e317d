"""The tf service under gunicorn in REST mode while TF Serving goes away and comes back.

Real gunicorn (two workers) and a real redis-server; TF Serving is the REST test double
(:mod:`services.testing.tf_serving_double`, the real wire protocol), stopped and started again
on its port while 32 kept-alive connections post requests of known users (bounded in requests
and seconds, 127.0.0.1 only). While it is down every answer is a JSON 503; within 5 s of its
return every answer is the one from before; no connection fails and the workers stay the same.
Then ``promtool check metrics`` reads the service's ``/metrics``.
"""

from __future__ import annotations

import pytest

from services.loaders.tf import load_tf
from services.testing.tf_serving_double import TFServingDouble
from tests.ops.promtool import promtool_check, require_promtool
from tests.ops.scenarios import answers_of, outage, outage_problems
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
    requests = [("/deepfm/recommend", u, {"user": u, "n_rec": 10})
                for u in (models.info.id2user[i] for i in range(30))]
    # double.start binds the same port and returns once the model is AVAILABLE again
    report = outage(server.url, requests, answers_of(server.url, requests), double.stop,
                    double.start, server.workers, connections=CONNECTIONS, down=3.0)
    assert outage_problems(report) == [], report
    assert http("GET", server.url + "/readyz")[0] == 200


def test_promtool_accepts_the_tf_metrics(served):
    require_promtool()
    server, _, models = served
    for u in [models.info.id2user[0], "stranger"]:
        assert http("POST", f"{server.url}/deepfm/recommend", {"user": u})[0] == 200
    assert http("POST", f"{server.url}/deepfm/recommend", {"user": 1, "n_rec": 0})[0] == 400
    promtool_check(server.url)
