"""BPR: the shared suite, and the compiled loop against the interpreter."""

import numba
import numpy as np
import pandas as pd
import pytest

from libreco.algorithms import BPR
from libreco.algorithms._mf import bpr_epoch, normal, unconsumed_item
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


def consumed_csr(n_users, n_items, rng, share=0.3):
    """Sorted CSR (indptr, indices) of a random consumed set, at least one item free per user."""
    indptr, indices = [0], []
    for _ in range(n_users):
        items = np.flatnonzero(rng.random(n_items) < share)
        indices.extend(items[items != n_items - 1])
        indptr.append(len(indices))
    return np.array(indptr, dtype=np.int64), np.array(indices, dtype=np.int32)


def seeds(n, seed=0):
    return np.random.default_rng(seed).integers(1, 2**63, n).astype(np.uint64)


def test_compiled_loop_matches_interpreter():
    rng = np.random.default_rng(0)
    indptr, indices = consumed_csr(10, 15, rng)
    users = rng.integers(0, 10, 200).astype(np.int32)
    pos = rng.integers(0, 15, 200).astype(np.int32)
    fast = [normal(rng, (10, 4), 0.1), normal(rng, (15, 4), 0.1),
            rng.normal(0, 0.1, 15).astype(np.float32)]
    slow = [a.copy() for a in fast]
    order_fast, order_slow = np.arange(200), np.arange(200)
    state_fast, state_slow = seeds(1), seeds(1)
    loss_fast = bpr_epoch(order_fast, users, pos, indptr, indices, 15, *fast, 0.05, 0.01,
                          state_fast)
    loss_slow = bpr_epoch.py_func(order_slow, users, pos, indptr, indices, 15, *slow, 0.05,
                                  0.01, state_slow)
    assert loss_fast == pytest.approx(loss_slow, rel=1e-5)
    np.testing.assert_array_equal(order_fast, order_slow)
    np.testing.assert_array_equal(state_fast, state_slow)
    assert sorted(order_fast) == list(range(200)) and list(order_fast) != list(range(200))
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_negatives_are_unconsumed_and_uniform():
    # user 0 consumed 195 of 200 items: mostly the exact draw after the rejected ones
    rng = np.random.default_rng(3)
    indptr, indices = consumed_csr(5, 200, rng)
    free0 = np.setdiff1d(np.arange(200), np.arange(195))
    indptr = np.r_[0, 195, 195 + indptr[1:]].astype(np.int64)
    indices = np.r_[np.arange(195), indices].astype(np.int32)
    state = seeds(1)
    for u in range(6):
        consumed = set(indices[indptr[u]:indptr[u + 1]])
        draws = [unconsumed_item(indptr, indices, 200, u, state, 0) for _ in range(2000)]
        assert not consumed & set(draws)
        if u == 0:
            counts = np.bincount(draws, minlength=200)[free0]
            assert counts.min() > 300  # 400 expected for each of the 5 free items


def test_step_raises_the_positive_above_the_negative():
    rng = np.random.default_rng(1)
    p, q = normal(rng, (1, 8), 0.1), normal(rng, (2, 8), 0.1)
    bias = np.zeros(2, dtype=np.float32)
    before = p[0] @ (q[0] - q[1])
    one = np.zeros(20, dtype=np.int32)
    # the user consumed item 0 only, so every negative is item 1
    indptr, indices = np.array([0, 1], dtype=np.int64), np.array([0], dtype=np.int32)
    bpr_epoch(np.arange(20), one, one, indptr, indices, 2, p, q, bias, 0.1, 0.0, seeds(1))
    assert p[0] @ (q[0] - q[1]) + bias[0] - bias[1] > before


def test_one_thread_same_seed_same_model(small):
    train, info = small
    a = BPR("ranking", info, n_epochs=3, seed=2, num_threads=1).fit(train, verbose=0)
    b = BPR("ranking", info, n_epochs=3, seed=2, num_threads=1).fit(train, verbose=0)
    c = BPR("ranking", info, n_epochs=3, seed=9, num_threads=1).fit(train, verbose=0)
    for name, arr in a._arrays().items():
        np.testing.assert_array_equal(arr, b._arrays()[name])
    assert not np.array_equal(a.user_factors, c.user_factors)


def test_threads_leave_numba_setting_alone(small):
    train, info = small
    before = numba.get_num_threads()
    model = BPR("ranking", info, n_epochs=2, num_threads=2).fit(train, verbose=0)
    assert numba.get_num_threads() == before
    assert np.isfinite(model.user_factors).all()
    with pytest.raises(ValueError, match="num_threads"):
        BPR("ranking", info, num_threads=-1)


def test_user_who_consumed_everything_is_an_error():
    df = generate(n_users=20, n_items=10, n_interactions=150, features=False, seed=1)
    full = df.drop_duplicates("item").assign(user=df["user"].iloc[0])
    train, info = DatasetPure.build_trainset(pd.concat([df, full], ignore_index=True))
    if info.user_consumed.getnnz(axis=1).max() < info.n_items:
        pytest.skip("generated data left every user an unconsumed item")
    with pytest.raises(ValueError, match="consumed every item"):
        BPR("ranking", info, n_epochs=1).fit(train, verbose=0)


def test_ranking_only(small):
    train, info = small
    with pytest.raises(ValueError, match="ranking"):
        BPR("rating", info)
    with pytest.raises(NotImplementedError, match="neg_sampling"):
        BPR("ranking", info, n_epochs=1).fit(train, neg_sampling=False, verbose=0)
