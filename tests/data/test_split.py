"""Splitters: partitions, per-user guarantees, determinism, and agreement with a slow reference."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libreco.data import (
    random_split,
    split_by_num,
    split_by_num_chrono,
    split_by_ratio,
    split_by_ratio_chrono,
)
from libreco.data.synthetic import generate


@pytest.fixture(scope="module")
def df():
    out = generate(n_users=200, n_items=150, n_interactions=6000, seed=2)
    out["row"] = np.arange(len(out))
    return out


def rows(part):
    return part["row"].tolist()


def assert_partition(df, parts):
    all_rows = sorted(r for p in parts for r in rows(p))
    assert all_rows == list(range(len(df)))
    for p in parts:
        assert rows(p) == sorted(rows(p))  # frame order kept
        assert isinstance(p.index, pd.RangeIndex) and p.index.start == 0


# -- random_split ------------------------------------------------------------------------------
def test_random_split_partition_and_sizes(df):
    train, test = random_split(df, test_size=0.25, seed=1)
    assert_partition(df, [train, test])
    assert len(test) == round(0.25 * len(df))
    parts = random_split(df, multi_ratios=[0.7, 0.2, 0.1], seed=1)
    assert_partition(df, parts)
    assert [len(p) for p in parts] == [4200, 1200, 600]


def test_random_split_seeded(df):
    a = random_split(df, seed=5)[1]
    b = random_split(df, seed=5)[1]
    c = random_split(df, seed=6)[1]
    assert rows(a) == rows(b)
    assert rows(a) != rows(c)


def test_random_split_filter_unknown():
    df = pd.DataFrame({"user": np.arange(50), "item": np.arange(50), "label": 1})
    train, test = random_split(df, filter_unknown=True)
    assert len(train) == 40 and len(test) == 0  # every user and item appears once


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1])
def test_bad_test_size(df, bad):
    with pytest.raises(ValueError, match="test_size"):
        random_split(df, test_size=bad)
    with pytest.raises(ValueError, match="test_size"):
        split_by_ratio(df, test_size=bad)


def test_bad_multi_ratios(df):
    for bad in ([1.0], [0.5, -0.5], [0.5, np.nan]):
        with pytest.raises(ValueError, match="multi_ratios"):
            split_by_ratio(df, multi_ratios=bad)


# -- per-user splits ---------------------------------------------------------------------------
def test_split_by_ratio_per_user_counts(df):
    train, test = split_by_ratio(df, test_size=0.2, filter_unknown=False, seed=3)
    assert_partition(df, [train, test])
    n = df.groupby("user").size()
    n_test = test.groupby("user").size().reindex(n.index, fill_value=0)
    # round(0.8 * n) rows stay in train, at least one
    expected = n - np.maximum(np.rint(0.8 * n), 1)
    pd.testing.assert_series_equal(n_test, expected.astype(n_test.dtype), check_names=False)


def test_split_by_ratio_keeps_one_training_row():
    df = pd.DataFrame({"user": [1, 2, 2, 3, 3, 3], "item": [1, 1, 2, 1, 2, 3], "label": 1})
    train, test = split_by_ratio(df, test_size=0.9, filter_unknown=False)
    # users with 1, 2, 3 rows keep 1 each: round(0.1 * n) = 0 -> clipped to 1
    assert train["user"].tolist() == [1, 2, 3]
    assert sorted(test["user"].tolist()) == [2, 3, 3]


def test_split_by_ratio_not_shuffled_takes_last_rows():
    df = pd.DataFrame({"user": [1] * 5 + [2] * 5, "item": list(range(5)) * 2,
                       "label": range(10)})
    train, test = split_by_ratio(df, test_size=0.4, shuffle=False, filter_unknown=False)
    assert test["label"].tolist() == [3, 4, 8, 9]


def test_split_by_ratio_seeded(df):
    a = split_by_ratio(df, seed=1)[1]
    assert rows(a) == rows(split_by_ratio(df, seed=1)[1])
    assert rows(a) != rows(split_by_ratio(df, seed=2)[1])


def test_split_by_ratio_multi(df):
    parts = split_by_ratio(df, multi_ratios=[0.6, 0.2, 0.2], filter_unknown=False, seed=4)
    assert_partition(df, parts)
    users = set(parts[0]["user"])
    assert set(parts[1]["user"]) <= users and set(parts[2]["user"]) <= users
    # a user with 10 rows: cuts at round(6) and round(8) -> 6, 2, 2
    u = df["user"].value_counts()
    ten = u[u == 10].index
    if len(ten):
        sizes = [int((p["user"] == ten[0]).sum()) for p in parts]
        assert sizes == [6, 2, 2]


def test_filter_unknown_drops_unseen_items():
    df = pd.DataFrame({"user": [1, 1, 2, 2], "item": [10, 11, 10, 12], "label": 1})
    # not shuffled: the last row of each user goes to test; 11 and 12 never reach train
    train, test = split_by_num(df, test_size=1, shuffle=False, filter_unknown=True)
    assert train["item"].tolist() == [10, 10]
    assert len(test) == 0
    train, test = split_by_num(df, test_size=1, shuffle=False, filter_unknown=False)
    assert test["item"].tolist() == [11, 12]


def test_split_by_num(df):
    train, test = split_by_num(df, test_size=3, filter_unknown=False, seed=0)
    assert_partition(df, [train, test])
    n = df.groupby("user").size()
    n_test = test.groupby("user").size().reindex(n.index, fill_value=0)
    assert (n_test == np.minimum(3, n - 1)).all()
    with pytest.raises(ValueError, match="test_size"):
        split_by_num(df, test_size=0)
    with pytest.raises(ValueError, match="test_size"):
        split_by_num(df, test_size=0.5)


def test_chrono_splits_take_latest_rows(df):
    shuffled = df.sample(frac=1.0, random_state=0).reset_index(drop=True)
    shuffled["row"] = np.arange(len(shuffled))
    train, test = split_by_num_chrono(shuffled, test_size=2, filter_unknown=False)
    last_train = train.groupby("user")["time"].max()
    first_test = test.groupby("user")["time"].min()
    assert (first_test >= last_train.reindex(first_test.index)).all()
    train, test = split_by_ratio_chrono(shuffled, test_size=0.3, filter_unknown=False)
    assert_partition(df, [train, test])
    last_train = train.groupby("user")["time"].max()
    first_test = test.groupby("user")["time"].min()
    assert (first_test >= last_train.reindex(first_test.index)).all()


def test_chrono_datetime_time():
    df = pd.DataFrame({"user": [1, 1, 1], "item": [1, 2, 3], "label": 1,
                       "time": pd.to_datetime(["2024-03-01", "2024-01-01", "2024-02-01"])})
    train, test = split_by_num_chrono(df, filter_unknown=False)
    assert test["item"].tolist() == [1]


def test_chrono_without_time_names_the_column(df):
    with pytest.raises(ValueError, match="'time'"):
        split_by_ratio_chrono(df.drop(columns="time"))
    with pytest.raises(ValueError, match="'time'"):
        split_by_num_chrono(df.drop(columns="time"))


def test_split_input_errors(df):
    with pytest.raises(ValueError, match="'user'"):
        split_by_ratio(df.drop(columns="user"))
    with pytest.raises(ValueError, match="empty"):
        split_by_num(df.iloc[:0])
    with pytest.raises(ValueError, match="DataFrame"):
        random_split(df.to_numpy())


def test_string_ids(df):
    s = df.assign(user="u" + df["user"].astype(str))
    a = split_by_ratio(s, seed=9)
    b = split_by_ratio(df, seed=9)
    assert rows(a[1]) == rows(b[1])


# -- a slow reference ----------------------------------------------------------------------------
def reference_chrono(df, test_size):
    """The same split written with a loop over users."""
    test_rows = []
    for _, g in df.groupby("user", sort=False):
        g = g.sort_values("time", kind="stable")
        n_test = min(test_size, len(g) - 1)
        test_rows += g["row"].tolist()[len(g) - n_test:]
    return sorted(test_rows)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.integers(1, 4), st.integers(0, 10_000))
def test_num_chrono_matches_reference(n_rows, test_size, seed):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"user": rng.integers(0, 8, n_rows), "item": rng.integers(0, 5, n_rows),
                       "label": 1, "time": rng.integers(0, 6, n_rows)})  # ties in time
    df["row"] = np.arange(n_rows)
    train, test = split_by_num_chrono(df, test_size=test_size, filter_unknown=False)
    assert rows(test) == reference_chrono(df, test_size)
    assert set(train["user"]) == set(df["user"])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 80), st.floats(0.05, 0.95), st.integers(0, 10_000))
def test_ratio_split_properties(n_rows, test_size, seed):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"user": rng.integers(0, 10, n_rows), "item": rng.integers(0, 6, n_rows),
                       "label": 1})
    df["row"] = np.arange(n_rows)
    train, test = split_by_ratio(df, test_size=test_size, filter_unknown=False, seed=seed)
    assert_partition(df, [train, test])
    assert set(train["user"]) == set(df["user"])  # every user keeps a training row
    train, test = split_by_ratio(df, test_size=test_size, seed=seed)
    assert set(test["item"]) <= set(train["item"])
    assert set(test["user"]) <= set(train["user"])
