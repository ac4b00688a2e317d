"""UserCF and ItemCF: the shared suite, and the blocked similarities against a slow reference."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy import sparse

from libreco.algorithms import ItemCF, Recommender, UserCF, _knn
from libreco.data import DatasetPure
from libreco.data.synthetic import generate
from tests.algorithms.model_suite import ModelSuite

# -- the shared suite -------------------------------------------------------------------------


class TestItemCFRanking(ModelSuite):
    def make_model(self, data_info):
        return ItemCF(task="ranking", data_info=data_info, k_sim=20)


class TestUserCFRanking(ModelSuite):
    def make_model(self, data_info):
        return UserCF(task="ranking", data_info=data_info, k_sim=20)


class TestItemCFJaccardRanking(ModelSuite):
    def make_model(self, data_info):
        return ItemCF(task="ranking", data_info=data_info, k_sim=30, sim_type="jaccard")


class TestItemCFRating(ModelSuite):
    task = "rating"

    def make_model(self, data_info):
        return ItemCF(task="rating", data_info=data_info, k_sim=20)


class TestUserCFPearsonRating(ModelSuite):
    task = "rating"

    def make_model(self, data_info):
        return UserCF(task="rating", data_info=data_info, k_sim=20, sim_type="pearson")


# -- slow reference ----------------------------------------------------------------------------


def reference_similarities(matrix: sparse.spmatrix, sim_type: str,
                           min_common: int = 1) -> np.ndarray:
    """The full (n, n) similarity matrix in float64 with dense numpy, diagonal zeroed."""
    x = matrix.toarray().astype(np.float64)
    present = x != 0
    common = present.astype(np.float64) @ present.T.astype(np.float64)
    if sim_type == "jaccard":
        sizes = present.sum(axis=1).astype(np.float64)
        union = sizes[:, None] + sizes[None, :] - common
        sims = np.where(common > 0, common / np.maximum(union, 1), 0.0)
    else:
        if sim_type == "pearson":
            means = x.sum(axis=1) / np.maximum(present.sum(axis=1), 1)
            x = np.where(present, x - means[:, None], 0.0)
        norms = np.linalg.norm(x, axis=1)
        unit = x / np.where(norms > 0, norms, 1.0)[:, None]
        sims = unit @ unit.T
    sims[common < min_common] = 0.0
    if sim_type == "pearson":
        sims[sims <= _knn.PEARSON_FLOOR] = 0.0
    np.fill_diagonal(sims, 0.0)
    return sims


def reference_top_k(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best first, ties by the smaller index, only positive similarities, -1 padding."""
    n = sims.shape[0]
    cols = np.broadcast_to(np.arange(n), sims.shape)
    order = np.lexsort((cols, -sims), axis=1)[:, :k]
    values = np.take_along_axis(sims, order, axis=1)
    indices = np.where(values > 0, order, -1)
    values = np.where(values > 0, values, 0.0)
    pad = k - indices.shape[1]
    if pad > 0:
        indices = np.pad(indices, ((0, 0), (0, pad)), constant_values=-1)
        values = np.pad(values, ((0, 0), (0, pad)))
    return indices, values


def random_matrix(n_rows: int, n_cols: int, density: float, seed: int,
                  integer: bool = False) -> sparse.csr_matrix:
    rng = np.random.default_rng(seed)
    m = sparse.random(n_rows, n_cols, density=density, format="csr", random_state=rng,
                      dtype=np.float64)
    m.data = rng.integers(1, 6, m.nnz).astype(np.float64) if integer else 0.5 + 4 * m.data
    return m


def assert_valid_top_k(indices, values, sims, k):
    """``indices``/``values`` are a correct top-k of the dense ``sims`` (ties in any order)."""
    ref_idx, ref_val = reference_top_k(sims, k)
    assert indices.shape == values.shape == ref_idx.shape
    assert indices.dtype == np.int32 and values.dtype == np.float32
    np.testing.assert_allclose(values, ref_val, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(indices >= 0, ref_idx >= 0)
    rows = np.nonzero(indices >= 0)
    # each chosen neighbour truly has the similarity reported
    np.testing.assert_allclose(values[rows], sims[rows[0], indices[rows]], rtol=1e-5,
                               atol=1e-6)
    assert not (indices == np.arange(len(indices))[:, None]).any(), "a row is its own neighbour"
    for r in range(len(indices)):
        chosen = indices[r][indices[r] >= 0]
        assert len(set(chosen.tolist())) == len(chosen)
    assert (np.diff(values, axis=1) <= 0).all(), "not best first"


@pytest.mark.parametrize("sim_type", _knn.SIM_TYPES)
@pytest.mark.parametrize("k", [1, 4, 25])
def test_blocked_matches_dense_reference(sim_type, k):
    matrix = random_matrix(90, 60, 0.12, seed=k, integer=sim_type == "jaccard")
    indices, values = _knn.top_k_similarities(matrix, k, sim_type, block_size=7)
    assert_valid_top_k(indices, values, reference_similarities(matrix, sim_type), k)


@pytest.mark.parametrize("sim_type", _knn.SIM_TYPES)
@pytest.mark.parametrize("segments", [1, 2, 50])
def test_bound_on_the_kth_value_is_safe(sim_type, segments, monkeypatch):
    # coarse or fine segments: the lower bound on each row's k-th value prunes more or less
    monkeypatch.setattr(_knn, "SEGMENTS_PER_K", segments)
    matrix = random_matrix(150, 40, 0.2, seed=3, integer=sim_type == "jaccard")
    indices, values = _knn.top_k_similarities(matrix, 6, sim_type, block_size=16)
    assert_valid_top_k(indices, values, reference_similarities(matrix, sim_type), 6)


@pytest.mark.parametrize("sim_type", _knn.SIM_TYPES)
def test_min_common(sim_type):
    matrix = random_matrix(80, 50, 0.2, seed=11, integer=True)
    indices, values = _knn.top_k_similarities(matrix, 8, sim_type, min_common=3, block_size=9)
    sims = reference_similarities(matrix, sim_type, min_common=3)
    assert_valid_top_k(indices, values, sims, 8)
    present = (matrix.toarray() != 0).astype(int)
    common = present @ present.T
    rows = np.nonzero(indices >= 0)
    assert (common[rows[0], indices[rows]] >= 3).all()


def test_exact_neighbours_without_ties():
    matrix = random_matrix(70, 50, 0.15, seed=5)
    indices, _ = _knn.top_k_similarities(matrix, 10, "cosine", block_size=8)
    ref_idx, _ = reference_top_k(reference_similarities(matrix, "cosine"), 10)
    np.testing.assert_array_equal(indices, ref_idx)


@pytest.mark.parametrize("sim_type", _knn.SIM_TYPES)
def test_block_size_threads_and_kernel_do_not_change_the_result(sim_type, monkeypatch):
    matrix = random_matrix(120, 80, 0.1, seed=2, integer=True)
    base = _knn.top_k_similarities(matrix, 10, sim_type, block_size=120, num_threads=1)
    for block, threads in [(1, 1), (5, 2), (33, 2), (1000, 1), (None, 0)]:
        got = _knn.top_k_similarities(matrix, 10, sim_type, block_size=block,
                                      num_threads=threads)
        np.testing.assert_array_equal(got[0], base[0])
        np.testing.assert_array_equal(got[1], base[1])
    # scipy's two-pass product gives the same answer as the one-pass kernel
    monkeypatch.setattr(_knn, "_csr_matmat", None)
    got = _knn.top_k_similarities(matrix, 10, sim_type, block_size=13)
    np.testing.assert_array_equal(got[0], base[0])
    np.testing.assert_allclose(got[1], base[1], rtol=1e-6)


def test_memory_grows_with_blocks_not_n_squared():
    n, k = 3000, 10
    matrix = random_matrix(n, 400, 0.02, seed=9)
    dense_bytes = n * n * 4
    tracemalloc.start()
    try:
        indices, values = _knn.top_k_similarities(matrix, k, "cosine", block_size=32,
                                                  num_threads=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < dense_bytes / 6, (peak, dense_bytes)
    assert indices.shape == (n, k)
    # and the tiny blocks give the same answer as large ones
    big = _knn.top_k_similarities(matrix, k, "cosine", block_size=1024)
    np.testing.assert_array_equal(indices, big[0])
    np.testing.assert_array_equal(values, big[1])


def test_rows_without_positive_neighbours_are_padded():
    # row 3 shares no column with any other row; pearson of a constant row is 0 everywhere
    dense = np.array([[1, 1, 0, 0, 0], [1, 0, 1, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 2, 0],
                      [3, 3, 3, 0, 0]], dtype=np.float64)
    matrix = sparse.csr_matrix(dense)
    indices, values = _knn.top_k_similarities(matrix, 3, "cosine")
    assert (indices[3] == -1).all() and (values[3] == 0).all()
    indices, values = _knn.top_k_similarities(matrix, 3, "pearson")
    assert (indices == -1).all() and (values == 0).all()


@pytest.mark.parametrize("bad", [{"k": 0}, {"sim_type": "euclid"}, {"min_common": 0},
                                 {"block_size": 0}])
def test_bad_arguments(bad):
    args = {"k": 3, "sim_type": "cosine", "min_common": 1, "block_size": None} | bad
    with pytest.raises(ValueError):
        _knn.top_k_similarities(random_matrix(10, 10, 0.3, seed=0), **args)


# -- models ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    df = generate(n_users=120, n_items=90, n_interactions=2500, seed=3)
    train, info = DatasetPure.build_trainset(df)
    return train, info


@pytest.mark.parametrize("cls", [ItemCF, UserCF])
@pytest.mark.parametrize("sim_type", _knn.SIM_TYPES)
def test_model_neighbours_match_reference(small, cls, sim_type):
    train, info = small
    model = cls(task="ranking", data_info=info, k_sim=7, sim_type=sim_type, block_size=11)
    model.fit(train, verbose=0)
    assert model.sim_indices.shape == (model.n_entities, 7)
    assert_valid_top_k(model.sim_indices, model.sim_values,
                       reference_similarities(model.similarity_input(), sim_type), 7)


@pytest.mark.parametrize("cls", [ItemCF, UserCF])
@pytest.mark.parametrize("weighting", ["label", "binary", "inverse_frequency"])
def test_similarity_input_weighting(small, cls, weighting):
    _, info = small
    model = cls(task="ranking", data_info=info, weighting=weighting)
    got = model.similarity_input().toarray()
    labels = info.user_consumed.toarray().astype(np.float64)
    rows = labels if cls is UserCF else labels.T
    if weighting == "binary":
        expected = (rows != 0).astype(np.float64)
    elif weighting == "inverse_frequency":
        per_column = (rows != 0).sum(axis=0)
        expected = rows / np.sqrt(np.maximum(per_column, 1))[None, :]
    else:
        expected = rows
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_default_weighting(small):
    _, info = small
    assert ItemCF(task="ranking", data_info=info).weighting == "inverse_frequency"
    assert UserCF(task="ranking", data_info=info).weighting == "label"
    assert ItemCF(task="ranking", data_info=info).params["weighting"] == "inverse_frequency"


@pytest.mark.parametrize("cls", [ItemCF, UserCF])
def test_ranking_scores_are_sums_of_similarity_times_label(small, cls):
    train, info = small
    model = cls(task="ranking", data_info=info, k_sim=10).fit(train, verbose=0)
    labels = info.user_consumed.toarray().astype(np.float64)
    sim = np.zeros((model.n_entities, model.n_entities))
    for a in range(model.n_entities):
        for b, s in zip(model.sim_indices[a], model.sim_values[a]):
            if b >= 0:
                sim[a, b] = s
    # ItemCF: sum over consumed items i of sim(i, j) * r_ui; UserCF: over neighbours v of
    # sim(u, v) * r_vj
    expected = labels @ sim if cls is ItemCF else sim @ labels
    users = np.arange(info.n_users)
    np.testing.assert_allclose(model._scores(users), expected, rtol=1e-5, atol=1e-6)
    u, i = np.meshgrid(users[:30], np.arange(info.n_items))
    np.testing.assert_allclose(model._predict_inner(u.ravel(), i.ravel()),
                               expected[u.ravel(), i.ravel()], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [ItemCF, UserCF])
def test_rating_is_baseline_plus_weighted_mean_residual(small, cls):
    train, info = small
    model = cls(task="rating", data_info=info, k_sim=10).fit(train, verbose=0)
    labels = info.user_consumed.toarray().astype(np.float64)
    rated = labels != 0
    # baseline with shrunk biases, written out densely
    lam = _knn.BIAS_SHRINKAGE
    mu = labels[rated].mean()
    item_bias = np.where(rated, labels - mu, 0).sum(axis=0) / (rated.sum(axis=0) + lam)
    user_bias = (np.where(rated, labels - mu - item_bias[None, :], 0).sum(axis=1)
                 / (rated.sum(axis=1) + lam))
    base = mu + user_bias[:, None] + item_bias[None, :]
    rng = np.random.default_rng(0)
    for u, j in zip(rng.integers(0, info.n_users, 40), rng.integers(0, info.n_items, 40)):
        if cls is ItemCF:
            # items u consumed that have j among their neighbours
            pairs = [(s, labels[u, i] - base[u, i]) for i in np.nonzero(rated[u])[0]
                     for b, s in zip(model.sim_indices[i], model.sim_values[i]) if b == j]
        else:
            # neighbours of u that consumed j
            pairs = [(s, labels[v, j] - base[v, j])
                     for v, s in zip(model.sim_indices[u], model.sim_values[u])
                     if v >= 0 and rated[v, j]]
        weight = sum(s for s, _ in pairs)
        expected = base[u, j] + (sum(s * d for s, d in pairs) / weight if weight > 0 else 0.0)
        got = model.predict(info.id2user[u], info.id2item[j])
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-5), (u, j)
        assert model._scores(np.array([u]))[0, j] == pytest.approx(expected, rel=1e-5,
                                                                   abs=1e-5)


def test_load_restores_neighbours_and_parameters(small, tmp_path):
    train, info = small
    model = UserCF(task="ranking", data_info=info, k_sim=5, sim_type="pearson",
                   min_common=2, weighting="inverse_frequency", block_size=17)
    model.fit(train, verbose=0)
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert isinstance(loaded, UserCF)
    assert (loaded.k_sim, loaded.sim_type, loaded.min_common, loaded.weighting,
            loaded.block_size) == (5, "pearson", 2, "inverse_frequency", 17)
    np.testing.assert_array_equal(loaded.sim_indices, model.sim_indices)
    np.testing.assert_array_equal(loaded.sim_values, model.sim_values)


@pytest.mark.parametrize("bad", [{"k_sim": 0}, {"k_sim": 2.5}, {"sim_type": "dot"},
                                 {"min_common": 0}, {"block_size": -1}, {"weighting": "tf"}])
def test_bad_model_parameters(small, bad):
    _, info = small
    with pytest.raises(ValueError):
        ItemCF(task="ranking", data_info=info, **bad)


def test_k_sim_larger_than_catalogue(small):
    train, info = small
    model = ItemCF(task="ranking", data_info=info, k_sim=info.n_items + 10).fit(train,
                                                                                verbose=0)
    assert model.sim_indices.shape == (info.n_items, info.n_items + 10)
    assert (model.sim_indices[:, info.n_items - 1:] == -1).all()
    recs = model.recommend_user(info.id2user[0], n_rec=5)[info.id2user[0]]
    assert len(recs) == 5


@pytest.mark.parametrize("budget", [1, 7, 1 << 22])
def test_pair_dots_in_chunks(budget):
    left = random_matrix(30, 20, 0.3, seed=1)
    right_t = random_matrix(25, 20, 0.3, seed=2)
    rng = np.random.default_rng(3)
    rows, cols = rng.integers(0, 30, 200), rng.integers(0, 25, 200)
    expected = (left.toarray() @ right_t.toarray().T)[rows, cols]
    np.testing.assert_allclose(_knn.pair_dots(left, right_t, rows, cols, budget), expected,
                               rtol=1e-12)
