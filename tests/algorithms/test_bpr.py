"""BPR: the shared suite, and the compiled loop against the interpreter."""

import numpy as np
import pytest

from libreco.algorithms import BPR
from libreco.algorithms._mf import bpr_epoch, normal
from libreco.data import DatasetPure
from libreco.data.synthetic import generate
from tests.algorithms.model_suite import ModelSuite


class TestBPRSuite(ModelSuite):
    def make_model(self, data_info):
        return BPR(task="ranking", data_info=data_info)


@pytest.fixture(scope="module")
def small():
    df = generate(n_users=60, n_items=40, n_interactions=900, features=False, seed=5)
    return DatasetPure.build_trainset(df)


def test_compiled_loop_matches_interpreter():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 10, 200).astype(np.int32)
    pos, neg = rng.integers(0, 15, (2, 200)).astype(np.int32)
    fast = [normal(rng, (10, 4), 0.1), normal(rng, (15, 4), 0.1),
            rng.normal(0, 0.1, 15).astype(np.float32)]
    slow = [a.copy() for a in fast]
    loss_fast = bpr_epoch(users, pos, neg, *fast, 0.05, 0.01)
    loss_slow = bpr_epoch.py_func(users, pos, neg, *slow, 0.05, 0.01)
    assert loss_fast == pytest.approx(loss_slow, rel=1e-5)
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_step_raises_the_positive_above_the_negative():
    rng = np.random.default_rng(1)
    p, q = normal(rng, (1, 8), 0.1), normal(rng, (2, 8), 0.1)
    bias = np.zeros(2, dtype=np.float32)
    before = p[0] @ (q[0] - q[1])
    one = np.zeros(20, dtype=np.int32)
    bpr_epoch(one, one, one + 1, p, q, bias, 0.1, 0.0)
    assert p[0] @ (q[0] - q[1]) + bias[0] - bias[1] > before


def test_same_seed_same_model(small):
    train, info = small
    a = BPR("ranking", info, n_epochs=3, batch_size=256, seed=2).fit(train, verbose=0)
    b = BPR("ranking", info, n_epochs=3, batch_size=256, seed=2).fit(train, verbose=0)
    c = BPR("ranking", info, n_epochs=3, batch_size=256, seed=9).fit(train, verbose=0)
    for name, arr in a._arrays().items():
        np.testing.assert_array_equal(arr, b._arrays()[name])
    assert not np.array_equal(a.user_factors, c.user_factors)


def test_ranking_only(small):
    train, info = small
    with pytest.raises(ValueError, match="ranking"):
        BPR("rating", info)
    with pytest.raises(NotImplementedError, match="neg_sampling"):
        BPR("ranking", info, n_epochs=1).fit(train, neg_sampling=False, verbose=0)
