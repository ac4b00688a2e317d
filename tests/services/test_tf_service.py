"""The tf service with the SavedModel evaluated in-process, through Flask's test client on a
real redis-server: rankings against ``recommend_user``, unknown users, request features and
sequences, candidates, bad input, readiness, and exports that belong to another version."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from services.core.app import create_app
from services.core.config import ConfigError
from services.loaders.tf import load_tf
from tests.services.tf_models import TINY

tf = pytest.importorskip("tensorflow")

USERS = (0, 3, 41, 120, 199)


def make_app(redis_url: str, model_dir, **env):
    return create_app("tf", {"REDIS_URL": redis_url, "LIBRECO_MODEL_DIR": str(model_dir),
                             "LIBRECO_POLL_INTERVAL": "0", **env})


def post(client, algo: str, body: dict):
    resp = client.post(f"/{algo}/recommend", data=json.dumps(body))
    return resp.status_code, resp.get_json()


def pairs(body: dict) -> list:
    (value,) = body.values()
    return value


def assert_same_ranking(got: list, expected: list) -> None:
    assert [i for i, _ in got] == [i for i, _ in expected]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-5)


def user_row(df, user) -> dict:
    """The user's feature values as training saw them (their most recent row)."""
    row = df[df["user"] == user].sort_values("time").iloc[-1]
    return {"sex": row["sex"], "age": int(row["age"]), "occupation": row["occupation"]}


@pytest.fixture(scope="module")
def served(redis_server, tf_models):
    client = redis_server.client()
    client.flushall()
    for algo in ("deepfm", "din"):
        load_tf(tf_models.paths[algo], client=client)
    yield tf_models
    client.close()


@pytest.fixture(scope="module")
def app_client(redis_server, served):
    return make_app(redis_server.url, served.serving).test_client()


# -- rankings -------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", ["deepfm", "din"])
def test_matches_recommend_user(app_client, served, algo):
    model, info = served.models[algo], served.info
    for u in USERS:
        user = info.id2user[u]
        status, body = post(app_client, algo, {"user": user, "n_rec": 10, "algo": algo})
        assert status == 200, body
        got = pairs(body)
        assert_same_ranking(got, model.recommend_user(user, 10)[user])
        assert not {i for i, _ in got} & set(info.item_map.originals(info.consumed(u)))


def test_wide_deep_and_fm_match_recommend_user(redis_server, tf_models, tmp_path):
    from libreco.algorithms import FM, WideDeep

    client = redis_server.client()
    for cls in (WideDeep, FM):
        params = {k: v for k, v in TINY.items() if k != "hidden_units" or cls is WideDeep}
        model = cls(task="ranking", data_info=tf_models.info, **params)
        tf_models.add(model)
        load_tf(tf_models.paths[model.algorithm], client=client)
    app = make_app(redis_server.url, tf_models.serving).test_client()
    for algo in ("wide_deep", "fm"):
        for u in USERS[:3]:
            user = tf_models.info.id2user[u]
            status, body = post(app, algo, {"user": user, "n_rec": 8})
            assert status == 200, body
            assert_same_ranking(pairs(body), tf_models.models[algo].recommend_user(user, 8)[user])


def test_candidate_cap_ranks_the_most_popular_unconsumed_items(redis_server, served):
    info, model = served.info, served.models["deepfm"]
    cap = 20
    app = make_app(redis_server.url, served.serving, LIBRECO_TF_CANDIDATES=str(cap))
    client = app.test_client()
    for u in USERS[:3]:
        user = info.id2user[u]
        consumed = set(info.consumed(u).tolist())
        pool = [i for i in info.popular_items()[:cap + len(consumed)].tolist()
                if i not in consumed]
        scores = model.predict([user] * len(pool), info.item_map.originals(pool))
        best = np.argsort(-scores, kind="stable")[:5]
        status, body = post(client, "deepfm", {"user": user, "n_rec": 5})
        assert status == 200
        assert [i for i, _ in pairs(body)] == info.item_map.originals(np.asarray(pool)[best])
    # n_rec above the cap still gets n_rec items
    status, body = post(client, "deepfm", {"user": info.id2user[0], "n_rec": 50})
    assert status == 200 and len(pairs(body)) == 50


# -- unknown users, request features and sequences --------------------------------------------
@pytest.mark.parametrize("algo", ["deepfm", "din"])
def test_unknown_user_gets_popular_items(app_client, served, algo):
    status, body = post(app_client, algo, {"user": "stranger", "n_rec": 7})
    assert status == 200
    assert [tuple(p) for p in pairs(body)] == \
        [tuple(p) for p in served.models[algo].popular_recommendations(7)]


def test_user_feats_give_an_unknown_user_a_personal_answer(app_client, served):
    popular = [i for i, _ in served.models["deepfm"].popular_recommendations(10)]
    answers = []
    for feats in ({"sex": "F", "age": 22, "occupation": "occ0"},
                  {"sex": "M", "age": 50, "occupation": "occ7"}):
        status, body = post(app_client, "deepfm", {"user": "stranger", "user_feats": feats})
        assert status == 200, body
        answers.append([i for i, _ in pairs(body)])
    assert answers[0] != answers[1]
    assert answers[0] != popular and answers[1] != popular
    # an unseen value takes the column's out-of-vocabulary slot, like an absent column
    _, unseen = post(app_client, "deepfm", {"user": "stranger",
                                            "user_feats": {"sex": "F", "occupation": "astronaut"}})
    _, absent = post(app_client, "deepfm", {"user": "stranger", "user_feats": {"sex": "F"}})
    assert pairs(unseen) == pairs(absent)


@pytest.mark.parametrize("algo", ["deepfm", "din"])
def test_user_feats_equal_to_the_stored_ones_change_nothing(app_client, served, algo):
    for u in USERS[:3]:
        user = served.info.id2user[u]
        _, plain = post(app_client, algo, {"user": user})
        _, restated = post(app_client, algo, {"user": user,
                                               "user_feats": user_row(served.df, user)})
        assert_same_ranking(pairs(restated), pairs(plain))


def test_sequence_reaches_din(app_client, served):
    info = served.info
    popular = [i for i, _ in served.models["din"].popular_recommendations(10)]
    seqs = [info.item_map.originals(info.consumed(u)[-5:]) for u in (1, 2)]
    answers = []
    for seq in seqs:
        status, body = post(app_client, "din", {"user": "stranger", "seq": seq})
        assert status == 200, body
        items = [i for i, _ in pairs(body)]
        assert not set(items) & set(seq)  # the sequence counts as consumed
        answers.append(items)
    assert answers[0] != answers[1] and answers[0] != popular
    # unknown items in the sequence are dropped
    _, noisy = post(app_client, "din", {"user": "stranger",
                                        "seq": ["no-such-item", *seqs[0], 10**9]})
    assert [i for i, _ in pairs(noisy)] == answers[0]


def test_known_users_stored_sequence_matches_the_request_sequence(app_client, served):
    info, model = served.info, served.models["din"]
    for u in USERS[:3]:
        user = info.id2user[u]
        recent = info.item_map.originals(info.recent_items(u, model.recent_num))
        _, stated = post(app_client, "din", {"user": user, "seq": recent})
        _, stored = post(app_client, "din", {"user": user})
        assert_same_ranking(pairs(stated), pairs(stored))
    # another sequence for the same user changes the ranking
    _, other = post(app_client, "din", {"user": info.id2user[0],
                                        "seq": info.item_map.originals(info.consumed(7)[-5:])})
    _, own = post(app_client, "din", {"user": info.id2user[0]})
    assert [i for i, _ in pairs(other)] != [i for i, _ in pairs(own)]


def test_sequence_alone_does_not_personalise_a_model_without_one(app_client, served):
    status, body = post(app_client, "deepfm", {"user": "stranger", "seq": [served.info.id2item[0]]})
    assert status == 200
    assert [tuple(p) for p in pairs(body)] == \
        [tuple(p) for p in served.models["deepfm"].popular_recommendations(10)]


def test_unknown_user_404_when_configured(redis_server, served):
    client = make_app(redis_server.url, served.serving, LIBRECO_COLD_START="404").test_client()
    status, body = post(client, "deepfm", {"user": "stranger"})
    assert status == 404 and body["field"] == "user"
    status, _ = post(client, "deepfm", {"user": "stranger", "user_feats": {"sex": "F"}})
    assert status == 200


@pytest.mark.parametrize("body, field", [
    ({"seq": "1,2,3"}, "seq"),
    ({"seq": [[1]]}, "seq"),
    ({"seq": list(range(1001))}, "seq"),
    ({"user_feats": ["sex", "F"]}, "user_feats"),
    ({"user_feats": {"hobby": "chess"}}, "user_feats"),
    ({"user_feats": {"genre": "genre1"}}, "user_feats"),
    ({"user_feats": {"age": "old"}}, "user_feats"),
    ({"user_feats": {"sex": {"a": 1}}}, "user_feats"),
    ({"n_rec": 0}, "n_rec"),
])
def test_bad_fields_are_400_naming_the_field(app_client, served, body, field):
    status, answer = post(app_client, "din", {"user": served.info.id2user[0], **body})
    assert status == 400, answer
    assert answer["field"] == field and answer["error"]


# -- configuration, readiness, exported versions -----------------------------------------------
def test_configuration_errors_name_the_variable(redis_server):
    with pytest.raises(ConfigError, match="TF_SERVING_URL and LIBRECO_MODEL_DIR"):
        create_app("tf", {"REDIS_URL": redis_server.url, "LIBRECO_MODEL_DIR": "",
                          "TF_SERVING_URL": ""})
    with pytest.raises(ConfigError, match="LIBRECO_TF_CANDIDATES"):
        make_app(redis_server.url, "/tmp", LIBRECO_TF_CANDIDATES="-3")


def test_ready_in_process(app_client):
    resp = app_client.get("/readyz")
    assert resp.status_code == 200 and set(resp.get_json()["models"]) >= {"deepfm", "din"}


def test_missing_saved_model_is_503_and_popular_answers_go_on(redis_server, served, tmp_path):
    client = make_app(redis_server.url, tmp_path, LIBRECO_MODEL="deepfm").test_client()
    status, body = post(client, "deepfm", {"user": served.info.id2user[0]})
    assert status == 503 and "no SavedModel" in body["error"]
    status, _ = post(client, "deepfm", {"user": "stranger"})
    assert status == 200
    resp = client.get("/readyz")
    assert resp.status_code == 503 and not resp.get_json()["ready"]


def test_scores_come_from_the_export_of_the_active_version(redis_server, redis_factory, served,
                                                          tmp_path):
    """A newer export that Redis has not activated yet is not used; once its model directory
    is loaded, it is."""
    from libreco.algorithms import DeepFM
    from libreco.utils import save_info, save_model_tf_serving

    info, first = served.info, served.models["deepfm"]
    serving = tmp_path / "serving"
    shutil.copytree(served.serving / "deepfm" / "1", serving / "deepfm" / "1")
    second = DeepFM(task="ranking", data_info=info, **{**TINY, "seed": 99}).fit(served.train,
                                                                                 verbose=0)
    assert save_model_tf_serving(serving, second, "deepfm") == serving / "deepfm" / "2"
    save_info(tmp_path / "second", second, served.train, info)

    redis = redis_factory()
    load_tf(served.paths["deepfm"], client=redis.client())
    client = make_app(redis.url, serving).test_client()
    user = info.id2user[3]
    _, body = post(client, "deepfm", {"user": user})
    assert_same_ranking(pairs(body), first.recommend_user(user, 10)[user])

    load_tf(tmp_path / "second", client=redis.client())
    _, body = post(client, "deepfm", {"user": user})
    assert_same_ranking(pairs(body), second.recommend_user(user, 10)[user])
