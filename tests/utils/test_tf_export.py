"""save_info and save_model_tf_serving: model directory, SavedModel layout, versions, scores."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from libreco.algorithms import FM, DeepFM, Recommender  # noqa: E402
from libreco.data import DatasetFeat, DatasetPure  # noqa: E402
from libreco.data.synthetic import FEATURE_COLUMNS, generate  # noqa: E402
from libreco.utils import save_info, save_model_tf_serving  # noqa: E402
from libreco.utils.artifacts import ArtifactReader  # noqa: E402

DOCUMENTED_INPUTS = {"user_indices", "item_indices", "sparse_indices", "dense_values"}


@pytest.fixture(scope="module")
def data():
    df = generate(n_users=150, n_items=90, n_interactions=3000, seed=11)
    train, info = DatasetFeat.build_trainset(df, **FEATURE_COLUMNS)
    return df, train, info


@pytest.fixture(scope="module")
def ranking_model(data):
    _, train, info = data
    return DeepFM(task="ranking", data_info=info, n_epochs=1, hidden_units=(16,)).fit(
        train, verbose=0)


def call_signature(version_dir, inputs: dict) -> np.ndarray:
    loaded = tf.saved_model.load(str(version_dir))
    fn = loaded.signatures["predict"]
    return fn(**{k: tf.constant(v) for k, v in inputs.items()})["score"].numpy()


def test_importing_utils_does_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys, libreco.utils, libreco.algorithms; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_saved_model_scores_like_predict(data, ranking_model, tmp_path):
    df, _, info = data
    target = save_model_tf_serving(tmp_path, ranking_model, "deepfm")
    assert target == tmp_path / "deepfm" / "1"
    assert (target / "saved_model.pb").is_file() and (target / "variables").is_dir()
    rows = df.sample(64, random_state=0)
    u = info.user_map.lookup_many(rows["user"])
    i = info.item_map.lookup_many(rows["item"])
    scores = call_signature(target, ranking_model.build_inputs(u, i))
    expected = ranking_model.predict(rows["user"].tolist(), rows["item"].tolist())
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    assert ((scores > 0) & (scores < 1)).all()  # probabilities for ranking


def test_signature_names_as_documented(ranking_model, tmp_path):
    target = save_model_tf_serving(tmp_path, ranking_model, "deepfm")
    loaded = tf.saved_model.load(str(target))
    for name in ("predict", "serving_default"):
        fn = loaded.signatures[name]
        _, specs = fn.structured_input_signature
        assert set(specs) == DOCUMENTED_INPUTS
        assert specs["user_indices"].dtype == tf.int32
        assert specs["dense_values"].dtype == tf.float32
        assert specs["sparse_indices"].shape.as_list() == [None, ranking_model.n_sparse]
        assert set(fn.structured_outputs) == {"score"}
    assert save_model_tf_serving.__doc__ and all(
        f"``{n}``" in save_model_tf_serving.__doc__ for n in DOCUMENTED_INPUTS | {"seq", "seq_len"})


def test_versions_increment_and_never_overwrite(ranking_model, tmp_path):
    base = tmp_path / "deepfm"
    first = save_model_tf_serving(tmp_path, ranking_model, "deepfm")
    stamp = (first / "saved_model.pb").stat().st_mtime_ns
    (base / "7").mkdir()  # a version put there by hand
    (base / "notes").mkdir()  # not a version
    second = save_model_tf_serving(tmp_path, ranking_model, "deepfm")
    third = save_model_tf_serving(tmp_path, ranking_model, "deepfm")
    assert (first.name, second.name, third.name) == ("1", "8", "9")
    assert (first / "saved_model.pb").stat().st_mtime_ns == stamp
    assert sorted(p for p in os.listdir(base)) == ["1", "7", "8", "9", "notes"]  # no temp left


def test_failed_export_leaves_no_version(ranking_model, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        save_model_tf_serving(tmp_path, ranking_model, "deepfm")
    assert os.listdir(tmp_path / "deepfm") == []


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", 3])
def test_bad_model_name(ranking_model, tmp_path, name):
    with pytest.raises(ValueError, match="model_name"):
        save_model_tf_serving(tmp_path, ranking_model, name)


def test_not_a_tf_model(data, tmp_path):
    from libreco.algorithms import Popular

    _, train, info = data
    pop = Popular(task="ranking", data_info=info).fit(train, verbose=0)
    with pytest.raises(ValueError, match="not a TF model"):
        save_model_tf_serving(tmp_path, pop, "popular")
    with pytest.raises(ValueError, match="not a TF model"):
        save_info(tmp_path / "m", pop, train, info)


def test_unfitted_model_is_refused(data, tmp_path):
    _, _, info = data
    with pytest.raises(RuntimeError, match="not fitted"):
        save_model_tf_serving(tmp_path, FM(task="ranking", data_info=info), "fm")


def test_save_info_directory(data, ranking_model, tmp_path):
    _, train, info = data
    path = save_info(tmp_path / "deepfm_model", ranking_model, train, info)
    reader = ArtifactReader(path)
    spec = reader.manifest["tf"]
    assert reader.algorithm == "deepfm" and reader.family == "tf"
    assert spec["signature_name"] == "predict" and spec["output"] == "score"
    assert set(spec["inputs"]) == DOCUMENTED_INPUTS
    assert spec["inputs"]["sparse_indices"] == {"dtype": "int32",
                                                "shape": [-1, ranking_model.n_sparse]}
    assert spec["user_sparse_cols"] == info.features.user_sparse_cols
    assert spec["item_dense_cols"] == info.features.item_dense_cols
    assert spec["unknown_user_index"] == info.n_users
    assert spec["recent_num"] is None and spec["n_train_interactions"] == len(train)
    np.testing.assert_array_equal(reader.read_array("user_sparse.npy"), info.user_sparse)
    loaded = Recommender.load(path)
    users = info.id2user[:5]
    assert loaded.recommend_user(users, 5) == ranking_model.recommend_user(users, 5)
    with open(path / "manifest.json") as f:
        assert json.load(f)["hyperparameters"]["hidden_units"] == [16]


def test_rating_model_without_features(tmp_path):
    df = generate(n_users=80, n_items=50, n_interactions=1500, features=False, seed=2)
    train, info = DatasetPure.build_trainset(df)
    model = FM(task="rating", data_info=info, n_epochs=2).fit(train, verbose=0)
    target = save_model_tf_serving(tmp_path, model, "fm")
    u, i = np.arange(20), np.arange(20) % info.n_items
    x = model.build_inputs(u, i)
    assert set(x) == {"user_indices", "item_indices"}
    scores = call_signature(target, x)
    np.testing.assert_allclose(scores, model._predict_inner(u, i), rtol=1e-5)
    assert scores.min() > 1.0  # ratings, not probabilities
    spec = save_info(tmp_path / "m", model, train, info)
    assert ArtifactReader(spec).manifest["tf"]["output_kind"] == "rating"
