"""DatasetPure / DatasetFeat builds, DataInfo persistence and input validation."""

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libreco.data import DataInfo, DatasetFeat, DatasetPure, check_frame
from libreco.data.ids import group_order
from libreco.data.synthetic import FEATURE_COLUMNS, generate
from libreco.utils.artifacts import ArtifactError, ArtifactReader, ArtifactWriter


@pytest.fixture(scope="module")
def small():
    return generate(n_users=60, n_items=40, n_interactions=900, seed=3)


# -- ids ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["int", "str"])
def test_ids_round_trip(small, kind):
    df = small.copy()
    if kind == "str":
        df["user"] = "u" + df["user"].astype(str)
        df["item"] = "i" + df["item"].astype(str)
    train, info = DatasetPure.build_trainset(df)
    assert info.n_users == df["user"].nunique()
    assert info.n_items == df["item"].nunique()
    # inner -> original -> inner, and the original type is kept
    originals = [info.id2user[u] for u in train.user_indices]
    assert originals == df["user"].tolist()
    assert all(isinstance(v, int if kind == "int" else str) for v in info.id2user)
    assert [info.id2item[i] for i in train.item_indices] == df["item"].tolist()
    for u in info.id2user[:10]:
        assert info.id2user[info.user_index(u)] == u
    assert info.user_index("no-such-user") == -1
    np.testing.assert_array_equal(train.labels, df["label"].to_numpy(np.float32))


def test_consumed_in_time_order_without_repeats():
    df = pd.DataFrame({
        "user": [1, 1, 1, 2, 1],
        "item": [10, 11, 12, 10, 11],
        "label": [1, 2, 3, 4, 5],
        "time": [30, 10, 20, 5, 40],
    })
    _, info = DatasetPure.build_trainset(df)
    u1 = info.user_index(1)
    consumed = [info.id2item[i] for i in info.consumed(u1)]
    # by time: 11@10, 12@20, 10@30, 11@40 -> item 11 once, at its latest time (last label wins)
    assert consumed == [12, 10, 11]
    labels = info.consumed_labels[info.consumed_indptr[u1]:info.consumed_indptr[u1 + 1]]
    np.testing.assert_array_equal(labels, [3, 1, 5])
    assert [info.id2item[i] for i in info.recent_items(u1, 2)] == [10, 11]
    # the CSR view has sorted indices and the same labels
    row = info.user_consumed[u1]
    assert list(row.indices) == sorted(row.indices)
    assert dict(zip(row.indices.tolist(), row.data.tolist())) == {
        info.item_index(12): 3, info.item_index(10): 1, info.item_index(11): 5}
    np.testing.assert_array_equal(info.item_counts[[info.item_index(i) for i in (10, 11, 12)]],
                                  [2, 2, 1])
    assert info.global_mean == pytest.approx(3.0)


def test_popular_items_order(small):
    _, info = DatasetPure.build_trainset(small)
    top = info.popular_items(5)
    counts = info.item_counts[top]
    assert list(counts) == sorted(counts, reverse=True)
    assert counts[0] == info.item_counts.max()


# -- eval sets -----------------------------------------------------------------------------------
def test_evalset_drop_and_oov():
    train = pd.DataFrame({"user": ["a", "b"], "item": [1, 2], "label": [1.0, 2.0]})
    test = pd.DataFrame({"user": ["a", "z", "b", "a"], "item": [2, 1, 9, 1],
                         "label": [3.0, 4.0, 5.0, 6.0]})
    _, info = DatasetPure.build_trainset(train)
    dropped = DatasetPure.build_evalset(test, info, unknown="drop")
    assert len(dropped) == 2
    np.testing.assert_array_equal(dropped.labels, [3.0, 6.0])
    oov = DatasetPure.build_testset(test, info, unknown="oov")
    assert len(oov) == 4
    np.testing.assert_array_equal(oov.user_indices, [info.user_index("a"), info.n_users,
                                                     info.user_index("b"), info.user_index("a")])
    np.testing.assert_array_equal(oov.item_indices, [info.item_index(2), info.item_index(1),
                                                     info.n_items, info.item_index(1)])
    with pytest.raises(ValueError, match="unknown"):
        DatasetPure.build_evalset(test, info, unknown="keep")


def test_evalset_accepts_string_spelling_of_int_ids():
    train = pd.DataFrame({"user": [1, 2], "item": [5, 6], "label": [1, 1]})
    _, info = DatasetPure.build_trainset(train)
    test = pd.DataFrame({"user": ["1", "2"], "item": ["6", "5"], "label": [1, 1]})
    ts = DatasetPure.build_evalset(test, info)
    assert len(ts) == 2
    assert ts.user_indices.tolist() == [info.user_index(1), info.user_index(2)]


# -- features ----------------------------------------------------------------------------------
def test_feature_ranges_and_oov_slots(small):
    train, info = DatasetFeat.build_trainset(small, **FEATURE_COLUMNS)
    feats = info.features
    assert feats.user_sparse_cols == ["sex", "occupation"]
    assert feats.item_sparse_cols == ["genre"]
    assert feats.dense_cols == ["age", "price"]
    # each field owns [offset, offset + len(vocab) + 1): contiguous, disjoint, OOV last
    start = 0
    for col in feats.sparse_cols:
        assert feats.offsets[col] == start
        assert set(feats.vocab[col]) == set(small[col].unique())
        assert feats.oov_index(col) == start + len(feats.vocab[col])
        start += len(feats.vocab[col]) + 1
    assert feats.n_sparse_features == start
    # tables: known rows use in-vocabulary indices, the extra last row is the OOV slot
    assert info.user_sparse.shape == (info.n_users + 1, 2)
    assert info.item_sparse.shape == (info.n_items + 1, 1)
    for j, col in enumerate(feats.user_sparse_cols):
        known = info.user_sparse[:-1, j]
        assert known.min() >= feats.offsets[col] and known.max() < feats.oov_index(col)
        assert info.user_sparse[-1, j] == feats.oov_index(col)
    assert feats.sparse_index("genre", "never-seen") == feats.oov_index("genre")
    value = feats.vocab["genre"][0]
    assert feats.sparse_index("genre", value) == feats.offsets["genre"]
    # the feature of a user is the value of the user's row
    u = int(small["user"].iloc[0])
    sex = small.loc[small["user"] == u, "sex"].iloc[-1]
    assert info.user_sparse[info.user_index(u), 0] == feats.sparse_index("sex", sex)
    # indices per training row: user fields then item fields
    assert train.sparse_indices.shape == (len(small), 3)
    assert train.dense_values.shape == (len(small), 2)


def test_dense_scaling_stats(small):
    _, info = DatasetFeat.build_trainset(small, **FEATURE_COLUMNS)
    feats = info.features
    ages = small["age"].to_numpy(float)
    assert feats.dense_mean["age"] == pytest.approx(ages.mean())
    assert feats.dense_std["age"] == pytest.approx(ages.std())
    u = int(small["user"].iloc[5])
    age = small.loc[small["user"] == u, "age"].iloc[-1]
    j = feats.user_dense_cols.index("age")
    assert info.user_dense[info.user_index(u), j] == pytest.approx(
        (age - ages.mean()) / ages.std(), rel=1e-5)
    assert feats.dense_value("age", age) == pytest.approx(info.user_dense[info.user_index(u), j],
                                                          rel=1e-5)
    np.testing.assert_array_equal(info.user_dense[-1], 0.0)  # unknown user: the mean
    constant = small.assign(price=3.0)
    _, info_c = DatasetFeat.build_trainset(constant, **FEATURE_COLUMNS)
    assert info_c.features.dense_std["price"] == 1.0  # no division by zero
    assert np.isfinite(info_c.item_dense).all()


def test_feature_column_errors(small):
    with pytest.raises(ValueError, match="'nope'"):
        DatasetFeat.build_trainset(small, user_col=["nope"], sparse_col=["nope"])
    with pytest.raises(ValueError, match="'age'"):
        DatasetFeat.build_trainset(small, user_col=["age"], item_col=["age"], dense_col=["age"])
    with pytest.raises(ValueError, match="'sex'"):
        DatasetFeat.build_trainset(small, user_col=["sex"])
    bad = small.assign(price=small["price"].astype(object))
    bad.loc[0, "price"] = "cheap"
    with pytest.raises(ValueError, match="'price'"):
        DatasetFeat.build_trainset(bad, **FEATURE_COLUMNS)


# -- persistence -------------------------------------------------------------------------------
def save_info(info, path):
    with ArtifactWriter(path, "test", "test") as w:
        info.save(w)


@pytest.mark.parametrize("kind", ["pure", "feat"])
def test_data_info_save_load(small, tmp_path, kind):
    df = small.assign(user="u" + small["user"].astype(str))
    if kind == "pure":
        _, info = DatasetPure.build_trainset(df)
    else:
        _, info = DatasetFeat.build_trainset(df, **FEATURE_COLUMNS)
    save_info(info, tmp_path / "m")
    loaded = DataInfo.load(ArtifactReader(tmp_path / "m"))
    assert loaded.id2user == info.id2user and loaded.id2item == info.id2item
    assert loaded.n_users == info.n_users and loaded.n_items == info.n_items
    for name in ("consumed_indptr", "consumed_items", "consumed_labels", "item_counts",
                 "user_sparse", "item_sparse", "user_dense", "item_dense"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(info, name), err_msg=name)
    assert loaded.global_mean == info.global_mean
    assert (loaded.user_consumed != info.user_consumed).nnz == 0
    if kind == "feat":
        assert loaded.features.to_json() == info.features.to_json()
        assert loaded.features.sparse_index("genre", "never-seen") == \
            info.features.oov_index("genre")
    else:
        assert not loaded.has_features
    # nothing but JSON and .npy on disk
    suffixes = {p.suffix for p in (tmp_path / "m").rglob("*") if p.is_file()}
    assert suffixes <= {".json", ".npy"}


def test_tampered_directory_names_the_file(small, tmp_path):
    _, info = DatasetPure.build_trainset(small)
    save_info(info, tmp_path / "m")
    target = tmp_path / "m" / "consumed_items.npy"
    raw = bytearray(target.read_bytes())
    raw[-1] ^= 0xFF  # same size, different content
    target.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="consumed_items.npy"):
        ArtifactReader(tmp_path / "m")


def test_truncated_directory_names_the_file(small, tmp_path):
    _, info = DatasetPure.build_trainset(small)
    save_info(info, tmp_path / "m")
    target = tmp_path / "m" / "item_ids.json"
    target.write_bytes(target.read_bytes()[:-3])
    with pytest.raises(ArtifactError, match="item_ids.json"):
        ArtifactReader(tmp_path / "m")
    (tmp_path / "m" / "item_ids.json").unlink()
    with pytest.raises(ArtifactError, match="item_ids.json"):
        ArtifactReader(tmp_path / "m")


def test_manifest_lists_every_file(small, tmp_path):
    _, info = DatasetPure.build_trainset(small)
    save_info(info, tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    on_disk = {p.relative_to(tmp_path / "m").as_posix()
               for p in (tmp_path / "m").rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk


# -- bad input ---------------------------------------------------------------------------------
GOOD = {"user": [1, 2], "item": [3, 4], "label": [1.0, 0.0]}


@pytest.mark.parametrize("change, match", [
    (lambda d: d.drop(columns="item"), "'item'"),
    (lambda d: d.drop(columns="label"), "'label'"),
    (lambda d: d.assign(user=[1, None]), "'user'.*missing"),
    (lambda d: d.assign(item=[np.nan, 4]), "'item'.*missing"),
    (lambda d: d.iloc[:0], "empty"),
    (lambda d: d.assign(label=["good", "bad"]), "'label'.*numeric"),
    (lambda d: d.assign(label=[1.0, np.nan]), "'label'.*missing"),
    (lambda d: d.assign(label=[True, False]), "'label'.*numeric"),
    (lambda d: d.assign(time=["monday", "tuesday"]), "'time'"),
])
def test_bad_input_names_the_column(change, match):
    df = change(pd.DataFrame(GOOD))
    with pytest.raises(ValueError, match=match):
        DatasetPure.build_trainset(df)
    with pytest.raises(ValueError, match=match):
        check_frame(df)


def test_numeric_strings_are_accepted_as_labels():
    df = pd.DataFrame(GOOD).assign(label=["1", "2.5"])
    train, _ = DatasetPure.build_trainset(df)
    np.testing.assert_array_equal(train.labels, [1.0, 2.5])


def test_not_a_frame():
    with pytest.raises(ValueError, match="DataFrame"):
        DatasetPure.build_trainset({"user": [1]})


# -- fast paths against slow references ------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.integers(0, 60), st.integers(1, 6), st.integers(1, 5), st.booleans(),
       st.integers(0, 10_000))
def test_consumed_matches_reference(n_rows, n_users, n_items, with_time, seed):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"user": rng.integers(0, n_users, n_rows),
                       "item": rng.integers(0, n_items, n_rows),
                       "label": rng.integers(1, 6, n_rows)})
    if with_time:
        df["time"] = rng.integers(0, 4, n_rows)  # ties keep frame order
    if n_rows == 0:
        return
    _, info = DatasetPure.build_trainset(df)
    ordered = df.sort_values("time", kind="stable") if with_time else df
    for user, rows in ordered.groupby("user", sort=False):
        latest = {}
        for item, label in zip(rows["item"], rows["label"]):
            latest.pop(item, None)  # a repeat moves the item to its latest place
            latest[item] = label
        u = info.user_index(user)
        got = [info.id2item[i] for i in info.consumed(u)]
        labels = info.consumed_labels[info.consumed_indptr[u]:info.consumed_indptr[u + 1]]
        assert got == list(latest)
        assert labels.tolist() == list(latest.values())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 7), max_size=80))
def test_group_order_is_a_stable_argsort(codes):
    codes = np.array(codes, dtype=np.int64)
    np.testing.assert_array_equal(group_order(codes, 8), np.argsort(codes, kind="stable"))


def test_datetime_time_becomes_unix_seconds():
    when = pd.to_datetime(["2024-03-01", "2024-01-01"])
    df = pd.DataFrame({"user": [1, 1], "item": [1, 2], "label": [1, 1], "time": when})
    train, info = DatasetPure.build_trainset(df)
    np.testing.assert_allclose(train.times, [1709251200.0, 1704067200.0])
    assert [info.id2item[i] for i in info.consumed(0)] == [2, 1]
    aware = df.assign(time=when.tz_localize("UTC"))
    np.testing.assert_allclose(DatasetPure.build_trainset(aware)[0].times, train.times)
