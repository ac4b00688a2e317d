"""The tf service over TF Serving's REST API (through the REST test double) against the same
service evaluating the SavedModels in-process, on a real redis-server: identical rankings,
columnar requests on kept-alive connections, readiness, retries, timeouts."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from services.loaders.tf import load_tf
from services.testing.tf_serving_double import TFServingDouble
from tests.services.conftest import RedisServer
from tests.services.test_tf_service import assert_same_ranking, make_app, pairs, post

tf = pytest.importorskip("tensorflow")

ALGOS = ("deepfm", "din", "youtube_ranking")
SEQUENCE_ALGOS = ("din", "youtube_ranking")
USERS = (0, 3, 41, 120, 199)
FEATS = ({"sex": "F", "age": 22, "occupation": "occ0"},
         {"sex": "M", "age": 50, "occupation": "occ7"})


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    """A private redis-server: other modules flush the session's one."""
    server = RedisServer(tmp_path_factory.mktemp("redis_rest")).start()
    client = server.client()
    yield server, client
    client.close()
    server.stop()


@pytest.fixture(scope="module")
def served(redis, tf_models):
    _, client = redis
    for algo in ALGOS:
        load_tf(tf_models.paths[algo], client=client)
    load_tf(tf_models.paths["din"], name="din_b", client=client)
    return tf_models


@pytest.fixture(scope="module")
def double(served):
    with TFServingDouble({a: served.serving / a for a in ALGOS}, num_versions=2) as server:
        yield server


@pytest.fixture(scope="module")
def apps(redis, served, double):
    """(in-process client, REST client)."""
    server, _ = redis
    local = make_app(server.url, served.serving).test_client()
    rest = make_app(server.url, "", TF_SERVING_URL=double.url).test_client()
    return local, rest


def requests_for(algo: str, info) -> list[dict]:
    """Known users, unknown users with features, and (sequence models) stated sequences."""
    bodies: list[dict] = [{"user": info.id2user[u], "n_rec": 10, "algo": algo} for u in USERS]
    bodies += [{"user": "stranger", "n_rec": 7, "user_feats": f} for f in FEATS]
    bodies.append({"user": info.id2user[5], "n_rec": 25, "user_feats": {"age": 70}})
    if algo in SEQUENCE_ALGOS:
        for u in (1, 2):
            seq = info.item_map.originals(info.consumed(u)[-6:])
            bodies.append({"user": "stranger", "seq": seq})
            bodies.append({"user": info.id2user[9], "seq": seq, "n_rec": 12})
    return bodies


@pytest.mark.parametrize("algo", ALGOS)
def test_rest_ranks_like_in_process(apps, served, algo):
    local, rest = apps
    info = served.info
    for body in requests_for(algo, info):
        status, expected = post(local, algo, body)
        assert status == 200, expected
        status, got = post(rest, algo, body)
        assert status == 200, got
        assert list(got) == list(expected)
        assert_same_ranking(pairs(got), pairs(expected))
    # and both are the model's own ranking
    user = info.id2user[USERS[1]]
    _, got = post(rest, algo, {"user": user, "n_rec": 10, "algo": algo})
    assert_same_ranking(pairs(got), served.models[algo].recommend_user(user, 10)[user])


def test_requests_are_columnar_on_kept_alive_connections(apps, served, double):
    _, rest = apps
    post(rest, "deepfm", {"user": served.info.id2user[0]})  # the link is bound
    connections, forms = double.connections, dict(double.predict_forms)
    for u in range(30):
        status, _ = post(rest, "deepfm" if u % 2 else "din", {"user": served.info.id2user[u]})
        assert status == 200
    assert double.predict_forms["inputs"] - forms.get("inputs", 0) == 30
    assert double.predict_forms["instances"] == forms.get("instances", 0)
    assert double.connections - connections <= 1  # at most one reconnect after idling


@pytest.mark.parametrize("algo", SEQUENCE_ALGOS)
def test_sequence_changes_the_ranking_over_rest(apps, served, algo):
    _, rest = apps
    info, model = served.info, served.models[algo]
    popular = [i for i, _ in model.popular_recommendations(10)]
    user = info.id2user[0]
    _, own = post(rest, algo, {"user": user})
    answers, seq_bodies = [], []
    for u in (7, 8):
        seq = info.item_map.originals(info.consumed(u)[-5:])
        status, body = post(rest, algo, {"user": user, "seq": seq})
        assert status == 200
        items = [i for i, _ in pairs(body)]
        assert not set(items) & set(seq)
        answers.append(items)
        seq_bodies.append(body)
        # an unknown user with the same sequence gets a personal answer too
        status, body = post(rest, algo, {"user": "stranger", "seq": seq})
        assert status == 200 and [i for i, _ in pairs(body)] != popular
    assert answers[0] != answers[1]
    # the stated sequence replaces the stored one: the scores move even where a small model
    # keeps the same order
    assert all(pairs(b) != pairs(own) for b in seq_bodies)


def test_algo_must_name_the_model(apps, served):
    _, rest = apps
    user = served.info.id2user[0]
    status, body = post(rest, "din_b", {"user": user, "algo": "din"})
    assert status == 200 and len(pairs(body)) == 10  # the algorithm of a renamed model
    status, same = post(rest, "din_b", {"user": user, "algo": "din_b"})
    assert status == 200 and same == body
    for algo in ("deepfm", 7, ["din"]):
        status, answer = post(rest, "din_b", {"user": user, "algo": algo})
        assert status == 400 and answer["field"] == "algo" and "din_b" in answer["error"]


def test_unknown_names_and_items_over_rest(apps, served):
    _, rest = apps
    user = served.info.id2user[0]
    status, body = post(rest, "din", {"user": user, "user_feats": {"hobby": "chess"}})
    assert status == 400 and body["field"] == "user_feats" and "hobby" in body["error"]
    seq = served.info.item_map.originals(served.info.consumed(4)[-4:])
    _, clean = post(rest, "din", {"user": "stranger", "seq": seq})
    status, noisy = post(rest, "din", {"user": "stranger", "seq": ["no-such-item", *seq, -1]})
    assert status == 200 and noisy == clean
    # a sequence of unknown items only says nothing: the cold-start answer
    status, body = post(rest, "din", {"user": "stranger", "seq": ["no-such-item"]})
    assert status == 200
    assert [tuple(p) for p in pairs(body)] == \
        [tuple(p) for p in served.models["din"].popular_recommendations(10)]


# -- readiness and failures ---------------------------------------------------------------------
def test_ready_when_tf_serving_reports_available(apps):
    _, rest = apps
    resp = rest.get("/readyz")
    assert resp.status_code == 200
    assert set(resp.get_json()["models"]) >= {*ALGOS, "din_b"}


def test_not_ready_while_loading_or_missing(redis, served):
    server, _ = redis
    loading = TFServingDouble({"deepfm": served.serving / "deepfm"}, load_delay=1.0,
                              poll_seconds=0.1).start(wait=0)
    try:
        client = make_app(server.url, "", TF_SERVING_URL=loading.url,
                          LIBRECO_MODEL="deepfm").test_client()
        # before the double has found the version (no version yet) or while it loads it
        # (LOADING), the model is not AVAILABLE: not ready, and requests get 503
        resp = client.get("/readyz")
        error = resp.get_json()["error"]
        assert resp.status_code == 503 and "deepfm" in error
        assert "AVAILABLE" in error or "no version" in error
        status, body = post(client, "deepfm", {"user": served.info.id2user[0]})
        assert status == 503 and "deepfm" in body["error"]
        started = time.monotonic()
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() - started < 20, "the version never became AVAILABLE"
            time.sleep(0.05)
        assert time.monotonic() - started >= 0.5
        status, _ = post(client, "deepfm", {"user": served.info.id2user[0]})
        assert status == 200

        # a model TF Serving does not know is not ready either
        other = make_app(server.url, "", TF_SERVING_URL=loading.url,
                         LIBRECO_MODEL="din").test_client()
        resp = other.get("/readyz")
        assert resp.status_code == 503 and "din" in resp.get_json()["error"]
        status, body = post(other, "din", {"user": served.info.id2user[0]})
        assert status == 503 and body["error"]
    finally:
        loading.stop()


class FlakyDouble(TFServingDouble):
    """Answers the next ``failures`` predict requests with TF Serving's 503."""

    failures = 0

    def handle(self, method, path, body):
        if path.endswith(":predict") and self.failures > 0:
            self.failures -= 1
            self.requests += 1
            return 503, {"error": "Service unavailable"}
        return super().handle(method, path, body)


@pytest.mark.parametrize("retries", [0, 2])
def test_bounded_retries(redis, served, retries):
    server, _ = redis
    with FlakyDouble({"deepfm": served.serving / "deepfm"}) as flaky:
        client = make_app(server.url, "", TF_SERVING_URL=flaky.url,
                          LIBRECO_TF_RETRIES=str(retries)).test_client()
        user = served.info.id2user[0]
        status, expected = post(client, "deepfm", {"user": user})
        assert status == 200
        flaky.failures = retries  # as many as the retries absorb
        before = flaky.requests
        assert post(client, "deepfm", {"user": user}) == (200, expected)
        assert flaky.requests - before == retries + 1
        flaky.failures = retries + 1  # one more than that
        before = flaky.requests
        status, body = post(client, "deepfm", {"user": user})
        assert status == 503 and "503" in body["error"]
        assert flaky.requests - before == retries + 1
        assert post(client, "deepfm", {"user": user}) == (200, expected)


def test_silent_tf_serving_times_out_without_retries(redis, served):
    """A server that accepts connections and never answers: 503 after the timeout, once."""
    server, _ = redis
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        client = make_app(server.url, "", TF_SERVING_URL=f"http://127.0.0.1:{port}",
                          LIBRECO_TF_TIMEOUT="0.3", LIBRECO_TF_RETRIES="3").test_client()
        for _ in range(2):
            started = time.monotonic()
            status, body = post(client, "deepfm", {"user": served.info.id2user[0]})
            took = time.monotonic() - started
            assert status == 503 and "within 0.3s" in body["error"]
            assert 0.25 < took < 1.5  # one wait, not one per retry
        resp = client.get("/readyz")
        assert resp.status_code == 503 and resp.get_json()["ready"] is False
        # the cold-start answer needs no scores
        status, _ = post(client, "deepfm", {"user": "stranger"})
        assert status == 200


def test_refused_connection_is_503_json(redis, served):
    server, _ = redis
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        client = make_app(server.url, "", TF_SERVING_URL=f"http://127.0.0.1:{port}").test_client()
        started = time.monotonic()
        status, body = post(client, "din", {"user": served.info.id2user[0]})
        assert status == 503 and "cannot be reached" in body["error"]
        assert time.monotonic() - started < 2
        assert np.isfinite(time.monotonic())
