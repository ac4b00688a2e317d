"""The synthetic generator: seeded, the requested size, and the planted structure present."""

import numpy as np
import pandas as pd
import pytest

from libreco.data import DatasetFeat, DatasetPure
from libreco.data.synthetic import FEATURE_COLUMNS, generate


@pytest.fixture(scope="module")
def thousand():
    return generate(n_users=100, n_items=80, n_interactions=1000, seed=13)


def test_deterministic_for_a_seed(thousand):
    again = generate(n_users=100, n_items=80, n_interactions=1000, seed=13)
    pd.testing.assert_frame_equal(thousand, again)
    other = generate(n_users=100, n_items=80, n_interactions=1000, seed=14)
    assert not thousand[["user", "item"]].equals(other[["user", "item"]])


def test_shape_and_columns(thousand):
    df = thousand
    assert len(df) == 1000
    assert list(df.columns[:4]) == ["user", "item", "label", "time"]
    assert set(FEATURE_COLUMNS["user_col"] + FEATURE_COLUMNS["item_col"]) <= set(df.columns)
    assert not df.duplicated(["user", "item"]).any()
    assert df["user"].nunique() == 100  # every user appears
    assert df["item"].between(0, 79).all()
    assert df["label"].between(1, 5).all()
    assert df["time"].is_monotonic_increasing
    # features are a function of the user / the item
    assert (df.groupby("user")[["sex", "age", "occupation"]].nunique() == 1).all().all()
    assert (df.groupby("item")[["genre", "price"]].nunique() == 1).all().all()
    # and both datasets accept the frame as it is
    DatasetPure.build_trainset(df)
    DatasetFeat.build_trainset(df, **FEATURE_COLUMNS)


def test_without_features():
    df = generate(n_users=20, n_items=30, n_interactions=200, features=False, seed=1)
    assert list(df.columns) == ["user", "item", "label", "time"]


def test_planted_structure():
    df = generate(n_users=500, n_items=300, n_interactions=20_000, seed=21)
    # popularity skew: the top 10% of items take at least twice their uniform share
    counts = df["item"].value_counts().to_numpy()
    assert counts[:30].sum() / counts.sum() > 0.2
    # taste groups: users of one occupation concentrate on some genres
    share = pd.crosstab(df["occupation"], df["genre"], normalize="index")
    assert share.max(axis=1).mean() > 2 / share.shape[1]
    # ratings are higher for the user's favourite genre
    fav = share.idxmax(axis=1)
    liked = df["genre"].to_numpy() == fav.reindex(df["occupation"]).to_numpy()
    assert df["label"][liked].mean() > df["label"][~liked].mean() + 0.3


def test_requested_sizes_and_errors():
    for n in (1_000, 5_000):
        assert len(generate(n_users=200, n_items=100, n_interactions=n, seed=0)) == n
    with pytest.raises(ValueError, match="n_interactions"):
        generate(n_users=3, n_items=3, n_interactions=10)
    with pytest.raises(ValueError):
        generate(n_users=0)


def test_larger_quick_check():
    df = generate(n_users=5_000, n_items=2_000, n_interactions=200_000, features=False, seed=3)
    assert len(df) == 200_000
    assert df["user"].nunique() == 5_000
    assert not df.duplicated(["user", "item"]).any()
    assert df["item"].nunique() > 1_500
    assert np.isfinite(df["time"]).all()
