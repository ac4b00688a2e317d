"""SVD and SVD++: the shared suite for both tasks, and the training arithmetic."""

import numpy as np
import pytest

from libreco.algorithms import SVD, SVDpp
from libreco.algorithms._mf import group_by_user, normal, svdpp_epoch
from libreco.data import DatasetPure
from libreco.data.synthetic import generate
from tests.algorithms.model_suite import ModelSuite


class TestSVDRating(ModelSuite):
    task = "rating"

    def make_model(self, data_info):
        return SVD(task="rating", data_info=data_info)


class TestSVDRanking(ModelSuite):
    def make_model(self, data_info):
        return SVD(task="ranking", data_info=data_info, n_epochs=10)


class TestSVDppRating(ModelSuite):
    task = "rating"

    def make_model(self, data_info):
        return SVDpp(task="rating", data_info=data_info)


class TestSVDppRanking(ModelSuite):
    def make_model(self, data_info):
        return SVDpp(task="ranking", data_info=data_info, n_epochs=10)


@pytest.fixture(scope="module")
def small():
    df = generate(n_users=60, n_items=40, n_interactions=900, features=False, seed=3)
    return DatasetPure.build_trainset(df)


@pytest.mark.parametrize("cls", [SVD, SVDpp])
@pytest.mark.parametrize("task", ["rating", "ranking"])
def test_same_seed_same_model(small, cls, task):
    train, info = small
    a = cls(task, info, n_epochs=3, seed=5).fit(train, verbose=0)
    b = cls(task, info, n_epochs=3, seed=5).fit(train, verbose=0)
    c = cls(task, info, n_epochs=3, seed=6).fit(train, verbose=0)
    for name, arr in a._arrays().items():
        np.testing.assert_array_equal(arr, b._arrays()[name])
    assert not np.array_equal(a.user_factors, c.user_factors)


@pytest.mark.parametrize("cls", [SVD, SVDpp])
def test_vectors_reproduce_predictions(small, cls):
    train, info = small
    model = cls("rating", info, n_epochs=3).fit(train, verbose=0)
    user_vecs, item_vecs = model.user_item_vectors()
    assert user_vecs.dtype == item_vecs.dtype == np.float32
    assert user_vecs.shape == (info.n_users, model.embed_size + 2)
    # the folded product is mu + b_u + b_i + (p_u [+ implicit term]) · q_i
    implicit = 0.0
    if cls is SVDpp:
        implicit = model._implicit_matrix() @ model.implicit_factors
    expected = (info.global_mean + model.user_bias[:, None] + model.item_bias[None, :]
                + (model.user_factors + implicit) @ model.item_factors.T)
    np.testing.assert_allclose(user_vecs @ item_vecs.T, expected, rtol=1e-5, atol=1e-5)
    u, i = np.array([0, 3, 7]), np.array([1, 2, 5])
    np.testing.assert_allclose(model._predict_inner(u, i), expected[u, i], rtol=1e-5, atol=1e-5)


def test_rating_learns_the_planted_labels(small):
    train, info = small
    model = SVD("rating", info, n_epochs=30).fit(train, verbose=0)
    pred = model._predict_inner(train.user_indices, train.item_indices)
    train_rmse = np.sqrt(np.mean((pred - train.labels) ** 2))
    assert train_rmse < np.std(train.labels) * 0.8


def _svdpp_reference(user_order, row_indptr, items, labels, consumed, p, q, bu, bi, y, mu, lr,
                     reg):
    """SVD++ per-row SGD written the textbook way: every row updates every y_j of N(u)."""
    for u in user_order:
        n_u = consumed[u]
        norm = 1.0 / np.sqrt(len(n_u))
        for r in range(row_indptr[u], row_indptr[u + 1]):
            i = items[r]
            z = norm * y[n_u].sum(axis=0)
            err = labels[r] - (mu + bu[u] + bi[i] + q[i] @ (p[u] + z))
            bu[u] += lr * (err - reg * bu[u])
            bi[i] += lr * (err - reg * bi[i])
            pu, qi = p[u].copy(), q[i].copy()
            p[u] += lr * (err * qi - reg * pu)
            q[i] += lr * (err * (pu + z) - reg * qi)
            y[n_u] += lr * (err * norm * qi - reg * y[n_u])


def test_svdpp_kernel_matches_textbook_updates(small):
    """The kernel's closed-form implicit updates equal updating every y_j after every row."""
    train, info = small
    rng = np.random.default_rng(0)
    d = 4
    consumed = info.user_consumed
    params = [normal(rng, (info.n_users, d), 0.1).astype(np.float64),
              normal(rng, (info.n_items, d), 0.1).astype(np.float64),
              np.zeros(info.n_users), np.zeros(info.n_items),
              normal(rng, (info.n_items, d), 0.1).astype(np.float64)]
    reference = [a.copy() for a in params]
    u = train.user_indices.astype(np.int64)
    rows, indptr, order = group_by_user(u, info.n_users, rng)
    items = train.item_indices[rows].astype(np.int32)
    labels = train.labels[rows].astype(np.float64)
    mu, lr, reg = float(labels.mean()), 0.01, 0.05
    svdpp_epoch(order, indptr, items, labels, consumed.indptr.astype(np.int64),
                consumed.indices.astype(np.int32), *params, mu, lr, reg, False)
    lists = [consumed.indices[consumed.indptr[k]:consumed.indptr[k + 1]]
             for k in range(info.n_users)]
    _svdpp_reference(order, indptr, items, labels, lists, *reference, mu, lr, reg)
    for got, want in zip(params, reference):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("bad", [{"embed_size": 0}, {"n_epochs": -1}, {"lr": 0},
                                 {"reg": -0.1}, {"batch_size": 2.5}, {"embed_size": True}])
def test_bad_parameters(small, bad):
    _, info = small
    with pytest.raises(ValueError, match=next(iter(bad))):
        SVD("rating", info, **bad)
