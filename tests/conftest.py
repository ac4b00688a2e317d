"""Session-wide fixtures: generated data shared by the model suites."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from libreco.data import DatasetFeat, DatasetPure
from libreco.data.synthetic import FEATURE_COLUMNS, generate


def holdout(df: pd.DataFrame, fraction: float = 0.2, seed: int = 0):
    """Per-user random hold-out written out here so the suites do not depend on the splitters."""
    rng = np.random.default_rng(seed)
    test = rng.random(len(df)) < fraction
    # keep at least one training row per user
    first = ~df.duplicated("user", keep="first").to_numpy()
    test &= ~first
    return df[~test].reset_index(drop=True), df[test].reset_index(drop=True)


@pytest.fixture(scope="session")
def suite_frames():
    df = generate(n_users=400, n_items=300, n_interactions=16_000, seed=7)
    return holdout(df)


@pytest.fixture(scope="session")
def suite_data(suite_frames):
    """``{"pure": (train, test_df, data_info), "feat": (...)}`` on the same split."""
    train_df, test_df = suite_frames
    out = {}
    train, info = DatasetPure.build_trainset(train_df)
    out["pure"] = (train, test_df, info)
    train_f, info_f = DatasetFeat.build_trainset(train_df, **FEATURE_COLUMNS)
    out["feat"] = (train_f, test_df, info_f)
    return out
