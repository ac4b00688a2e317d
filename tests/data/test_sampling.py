"""Negative sampling: never a consumed item, seeded, weighted, and its failure modes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

from libreco.data import DatasetPure, NegativeSampler, sample_negatives
from libreco.data.sampling import MAX_ROUNDS
from libreco.data.synthetic import generate


def csr(rows, n_items):
    """CSR matrix from a list of item lists, one per user."""
    indptr = np.r_[0, np.cumsum([len(r) for r in rows])]
    indices = np.concatenate([sorted(r) for r in rows]).astype(np.int32) if rows else []
    return sparse.csr_matrix((np.ones(len(indices)), indices, indptr),
                             shape=(len(rows), n_items))


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_never_a_consumed_item(data):
    n_items = data.draw(st.integers(2, 40))
    n_users = data.draw(st.integers(1, 12))
    # every user leaves at least one item free
    rows = [data.draw(st.sets(st.integers(0, n_items - 1), max_size=n_items - 1))
            for _ in range(n_users)]
    consumed = csr([list(r) for r in rows], n_items)
    users = np.array(data.draw(st.lists(st.integers(0, n_users - 1), min_size=1, max_size=50)))
    n_neg = data.draw(st.integers(1, 4))
    weighted = data.draw(st.booleans())
    weights = None
    if weighted:
        weights = np.array(data.draw(st.lists(st.floats(0.01, 10), min_size=n_items,
                                              max_size=n_items)))
    neg = sample_negatives(users, consumed, n_items, n_neg=n_neg, item_weights=weights,
                           seed=data.draw(st.integers(0, 2 ** 32 - 1)))
    assert neg.dtype == np.int32
    assert neg.shape == (len(users) * n_neg,)
    for u, i in zip(np.repeat(users, n_neg), neg):
        assert 0 <= i < n_items
        assert int(i) not in rows[u]


def test_on_a_real_data_info():
    df = generate(n_users=300, n_items=120, n_interactions=9000, seed=4)
    train, info = DatasetPure.build_trainset(df)
    neg = sample_negatives(train.user_indices, info.user_consumed, info.n_items, n_neg=3,
                           seed=0, flat=False)
    assert neg.shape == (len(train), 3)
    hit = info.user_consumed[np.repeat(train.user_indices, 3), neg.ravel()]
    assert not np.asarray(hit).any()


def test_seeded():
    consumed = csr([[0, 1], [2], [3, 4, 5]], 50)
    users = np.array([0, 1, 2, 0, 1, 2])
    a = sample_negatives(users, consumed, 50, n_neg=5, seed=3)
    b = sample_negatives(users, consumed, 50, n_neg=5, seed=3)
    c = sample_negatives(users, consumed, 50, n_neg=5, seed=4)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    rng = np.random.default_rng(1)
    assert sample_negatives(users, consumed, 50, seed=rng).shape == (6,)


def test_uniform_distribution():
    consumed = csr([[0, 1]], 10)
    neg = sample_negatives(np.zeros(80_000, dtype=int), consumed, 10, seed=0)
    counts = np.bincount(neg, minlength=10)
    assert counts[:2].sum() == 0
    # 8 free items, 10,000 each expected; 5 standard deviations is ~ 470
    assert np.abs(counts[2:] - 10_000).max() < 500


def test_popularity_weighted_distribution():
    weights = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 10.0])
    consumed = csr([[5]], 6)  # the heaviest item is consumed
    neg = sample_negatives(np.zeros(100_000, dtype=int), consumed, 6, item_weights=weights,
                           seed=1)
    counts = np.bincount(neg, minlength=6)
    assert counts[0] == 0 and counts[5] == 0  # zero weight and consumed
    # the free mass is 1 + 2 + 3 + 4 = 10: shares .1 .2 .3 .4
    np.testing.assert_allclose(counts[1:5] / 100_000, [0.1, 0.2, 0.3, 0.4], atol=0.01)


def test_nearly_full_user_uses_exact_fallback():
    n_items = 2000
    free = 1234
    consumed = csr([[i for i in range(n_items) if i != free]], n_items)
    neg = sample_negatives(np.zeros(20, dtype=int), consumed, n_items, seed=0)
    # a uniform draw hits the one free item with probability 1/2000, so after MAX_ROUNDS
    # rounds most entries are still open and the exact draw must finish them
    assert MAX_ROUNDS < 200
    assert (neg == free).all()


def test_user_with_nothing_left_raises():
    consumed = csr([[0, 1, 2], [0]], 3)
    with pytest.raises(ValueError, match="user 0"):
        sample_negatives(np.array([1, 0]), consumed, 3)
    # only zero-weight items are free
    with pytest.raises(ValueError, match="weight"):
        sample_negatives(np.array([1]), consumed, 3, item_weights=np.array([1.0, 0.0, 0.0]))
    # the other user is fine
    assert set(sample_negatives(np.array([1] * 20), consumed, 3, seed=0)) <= {1, 2}


def test_argument_errors():
    consumed = csr([[0]], 4)
    with pytest.raises(ValueError, match="user_indices"):
        sample_negatives(np.array([1]), consumed, 4)
    with pytest.raises(ValueError, match="user_indices"):
        sample_negatives(np.array([0.5]), consumed, 4)
    with pytest.raises(ValueError, match="n_neg"):
        sample_negatives(np.array([0]), consumed, 4, n_neg=0)
    with pytest.raises(ValueError, match="item_weights"):
        sample_negatives(np.array([0]), consumed, 4, item_weights=np.ones(3))
    with pytest.raises(ValueError, match="item_weights"):
        sample_negatives(np.array([0]), consumed, 4, item_weights=-np.ones(4))
    with pytest.raises(ValueError, match="CSR"):
        sample_negatives(np.array([0]), consumed.toarray(), 4)
    assert sample_negatives(np.array([], dtype=int), consumed, 4).shape == (0,)


def test_sampler_reuse_and_membership():
    consumed = csr([[1, 3], [], [0, 2, 4]], 5)
    sampler = NegativeSampler(consumed, 5, seed=0)
    users = np.array([0, 0, 1, 2, 2])
    items = np.array([1, 2, 0, 2, 3])
    np.testing.assert_array_equal(sampler.is_consumed(users, items),
                                  [True, False, False, True, False])
    first = sampler.sample(np.array([0, 2]), n_neg=2, flat=False)
    assert first.shape == (2, 2)
    assert set(first[0]) <= {0, 2, 4} and set(first[1]) <= {1, 3}


def test_unsorted_csr_is_accepted():
    m = sparse.csr_matrix((np.ones(3), np.array([4, 0, 2]), np.array([0, 3])), shape=(1, 6))
    assert not m.has_sorted_indices
    neg = sample_negatives(np.zeros(200, dtype=int), m, 6, seed=0)
    assert set(neg) <= {1, 3, 5}
