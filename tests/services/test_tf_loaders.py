"""data_info2redis and seq2redis: the tf version's keys, activation order, reruns, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from libreco.algorithms import Popular
from libreco.utils.artifacts import ArtifactError
from services.core.store import RECORD, ModelKeys, VersionKeys
from services.loaders import family_loader
from services.loaders.tf import data_info2redis, load_tf, seq2redis

tf = pytest.importorskip("tensorflow")


def active(client, name: str) -> str | None:
    raw = client.get(ModelKeys(name).active)
    return raw.decode() if raw is not None else None


def test_features_part_holds_the_models_tables(redis_client, tf_models):
    version = data_info2redis(tf_models.paths["deepfm"], client=redis_client)
    assert active(redis_client, "deepfm") == version
    keys = VersionKeys("deepfm", version)
    info = tf_models.info
    meta = {k.decode(): v.decode() for k, v in redis_client.hgetall(keys.meta).items()}
    assert meta["family"] == "tf" and meta["algorithm"] == "deepfm"
    assert json.loads(meta["parts"]) == ["ids", "consumed", "features"]

    spec = json.loads(redis_client.get(keys.data("tf_spec")))
    assert spec["serving_name"] == "deepfm"
    assert spec["inputs"] == tf_models.models["deepfm"].serving_spec()["inputs"]
    item_sparse = np.frombuffer(redis_client.get(keys.data("item_sparse")), dtype="<i4")
    np.testing.assert_array_equal(item_sparse.reshape(info.item_sparse.shape), info.item_sparse)
    item_dense = np.frombuffer(redis_client.get(keys.data("item_dense")), dtype="<f4")
    np.testing.assert_array_equal(item_dense.reshape(info.item_dense.shape), info.item_dense)

    n_sparse = info.user_sparse.shape[1]
    for u in (0, 17, info.n_users - 1):
        row = redis_client.hget(keys.data("user_features"), str(u))
        np.testing.assert_array_equal(np.frombuffer(row[:4 * n_sparse], dtype="<i4"),
                                      info.user_sparse[u])
        np.testing.assert_array_equal(np.frombuffer(row[4 * n_sparse:], dtype="<f4"),
                                      info.user_dense[u])
        consumed = np.frombuffer(redis_client.hget(keys.data("consumed"), str(u)), RECORD)
        np.testing.assert_array_equal(consumed["index"], info.consumed(u))
    assert redis_client.hlen(keys.data("user_features")) == info.n_users


def test_probe_is_what_the_exported_model_answers(redis_client, tf_models):
    version = data_info2redis(tf_models.paths["deepfm"], client=redis_client)
    probe = json.loads(redis_client.get(VersionKeys("deepfm", version).data("probe")))
    loaded = tf.saved_model.load(str(tf_models.serving / "deepfm" / "1"))
    spec = tf_models.models["deepfm"].serving_spec()["inputs"]
    inputs = {k: tf.constant(np.asarray(v, dtype=spec[k]["dtype"]))
              for k, v in probe["inputs"].items()}
    scores = loaded.signatures["predict"](**inputs)["score"].numpy()
    np.testing.assert_allclose(scores, probe["scores"], rtol=1e-5, atol=1e-6)
    assert len(set(np.round(probe["scores"], 6))) > 1  # the rows tell versions apart
    assert tf_models.info.n_users in probe["inputs"]["user_indices"]


@pytest.mark.parametrize("seq_first", [False, True])
def test_sequence_model_activates_once_both_loaders_ran(redis_client, tf_models, seq_first):
    path = tf_models.paths["din"]
    first, second = (seq2redis, data_info2redis) if seq_first else (data_info2redis, seq2redis)
    version = first(path, client=redis_client)
    assert active(redis_client, "din") is None
    assert second(path, client=redis_client) == version
    assert active(redis_client, "din") == version

    model = tf_models.models["din"]
    seq, seq_len = model.user_sequences(np.arange(tf_models.info.n_users))
    key = VersionKeys("din", version).data("seq")
    for u in (0, 5, tf_models.info.n_users - 1):
        stored = np.frombuffer(redis_client.hget(key, str(u)), dtype="<i4")
        np.testing.assert_array_equal(stored, seq[u, :seq_len[u]])
    assert max(len(v) for v in redis_client.hvals(key)) == 4 * model.recent_num


def test_jobs_load_runs_the_tf_loaders(redis_client, redis_server, tf_models, monkeypatch):
    from jobs.load import main

    assert family_loader("tf") is load_tf
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    assert main(["--model-dir", str(tf_models.paths["din"]), "--name", "din_b"]) == 0
    version = active(redis_client, "din_b")
    assert version is not None
    assert redis_client.hget("libreco:models", "din_b") == b"tf"
    assert redis_client.hlen(VersionKeys("din_b", version).data("seq")) == tf_models.info.n_users


def test_rerun_keeps_the_checked_parts(redis_client, tf_models):
    path = tf_models.paths["deepfm"]
    version = data_info2redis(path, client=redis_client)
    parts_key = VersionKeys("deepfm", version).parts
    before = redis_client.hgetall(parts_key)
    assert data_info2redis(path, client=redis_client) == version
    assert redis_client.hgetall(parts_key) == before  # nothing was written again


def test_wrong_directories_are_refused(redis_client, tf_models, tmp_path, suite_data):
    with pytest.raises(ValueError, match="no behaviour sequence"):
        seq2redis(tf_models.paths["deepfm"], client=redis_client)
    train, _, info = suite_data["pure"]
    Popular(task="ranking", data_info=info).fit(train, verbose=0).save(tmp_path / "pop")
    with pytest.raises(ArtifactError, match="loads tf models"):
        data_info2redis(tmp_path / "pop", client=redis_client)
    assert redis_client.keys("*") == []
