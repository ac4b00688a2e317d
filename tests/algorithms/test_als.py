"""ALS: the shared suite for both tasks, and the solver against the normal equations."""

import numpy as np
import pytest

from libreco.algorithms import ALS
from libreco.algorithms.als import _Block
from libreco.data import DatasetPure
from libreco.data.synthetic import generate
from tests.algorithms.model_suite import ModelSuite


class TestALSRanking(ModelSuite):
    def make_model(self, data_info):
        return ALS(task="ranking", data_info=data_info)


class TestALSRating(ModelSuite):
    task = "rating"

    def make_model(self, data_info):
        return ALS(task="rating", data_info=data_info)


@pytest.fixture(scope="module")
def small():
    df = generate(n_users=80, n_items=50, n_interactions=1200, features=False, seed=4)
    return DatasetPure.build_trainset(df)


def _normal_equations(model, u):
    """Dense system of user ``u`` for implicit ALS, built straight from the paper's formula."""
    y = model.item_factors.astype(np.float64)
    r = np.zeros(model.data_info.n_items)
    consumed = model.data_info.user_consumed
    row = slice(consumed.indptr[u], consumed.indptr[u + 1])
    r[consumed.indices[row]] = consumed.data[row]
    c = 1.0 + model.alpha * r
    p = (r > 0).astype(np.float64)
    a = y.T @ (c[:, None] * y) + model.reg * np.eye(y.shape[1])
    return a, y.T @ (c * p)


def test_exact_solver_solves_the_normal_equations(small):
    train, info = small
    model = ALS("ranking", info, embed_size=6, n_epochs=2, use_cg=False).fit(train, verbose=0)
    # one more user half-step from the fitted item factors must solve each user's system
    model._implicit_epoch(info.user_consumed.astype(np.float32), info.user_consumed.T.tocsr())
    model._solve(model.user_factors, model.item_factors, info.user_consumed.astype(np.float32),
                 model.alpha * info.user_consumed.data, 1 + model.alpha * info.user_consumed.data,
                 model.item_factors.T @ model.item_factors,
                 np.full(info.n_users, model.reg, dtype=np.float32))
    for u in (0, 5, 17):
        a, b = _normal_equations(model, u)
        np.testing.assert_allclose(model.user_factors[u], np.linalg.solve(a, b),
                                   rtol=1e-3, atol=1e-4)


def test_conjugate_gradient_converges_to_the_exact_solution(small):
    _, info = small
    rng = np.random.default_rng(1)
    rows = info.user_consumed.astype(np.float32)
    y = rng.normal(0, 0.3, (info.n_items, 5)).astype(np.float32)
    weight = (3.0 * rows.data).astype(np.float32)
    block = _Block(y, rows.indices, rows.indptr, weight, y.T @ y,
                   np.full(info.n_users, 0.5, dtype=np.float32))
    b = block.gather(1.0 + weight)
    exact = block.exact(b)
    start = np.zeros_like(exact)
    assert np.abs(block.conjugate_gradient(start, b, 1) - exact).max() > 1e-3
    np.testing.assert_allclose(block.conjugate_gradient(start, b, 5), exact, atol=1e-3)


@pytest.mark.parametrize("task", ["ranking", "rating"])
def test_compiled_solver_matches_numpy_reference(small, task, monkeypatch):
    train, info = small
    fast = ALS(task, info, embed_size=8, n_epochs=3).fit(train, verbose=0)
    monkeypatch.setattr(ALS, "compiled", False)
    slow = ALS(task, info, embed_size=8, n_epochs=3).fit(train, verbose=0)
    for name, arr in fast._arrays().items():
        np.testing.assert_allclose(arr, slow._arrays()[name], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("task", ["ranking", "rating"])
def test_more_alternations_lower_the_loss(small, task):
    train, info = small

    def loss(model):
        scores = model.user_item_vectors()[0] @ model.user_item_vectors()[1].T
        consumed = info.user_consumed
        rows = np.repeat(np.arange(info.n_users), np.diff(consumed.indptr))
        if task == "rating":
            return np.mean((scores[rows, consumed.indices] - consumed.data) ** 2)
        p = np.zeros_like(scores)
        p[rows, consumed.indices] = 1.0
        c = 1.0 + np.where(p > 0, model.alpha * consumed.toarray(), 0.0)
        return np.sum(c * (p - scores) ** 2)

    one = ALS(task, info, embed_size=8, n_epochs=1, use_cg=False).fit(train, verbose=0)
    five = ALS(task, info, embed_size=8, n_epochs=5, use_cg=False).fit(train, verbose=0)
    assert loss(five) < loss(one)


def test_same_seed_same_model(small):
    train, info = small
    a = ALS("ranking", info, n_epochs=2, seed=3).fit(train, verbose=0)
    b = ALS("ranking", info, n_epochs=2, seed=3).fit(train, verbose=0)
    np.testing.assert_array_equal(a.user_factors, b.user_factors)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)


def test_vectors_fold_the_biases(small):
    train, info = small
    model = ALS("rating", info, embed_size=4, n_epochs=2).fit(train, verbose=0)
    user_vecs, item_vecs = model.user_item_vectors()
    expected = (info.global_mean + model.user_bias[:, None] + model.item_bias[None, :]
                + model.user_factors @ model.item_factors.T)
    np.testing.assert_allclose(user_vecs @ item_vecs.T, expected, rtol=1e-5, atol=1e-5)


def test_bad_parameters(small):
    _, info = small
    with pytest.raises(ValueError, match="cg_steps"):
        ALS("ranking", info, cg_steps=0)
    with pytest.raises(ValueError, match="alpha"):
        ALS("ranking", info, alpha=-1.0)
