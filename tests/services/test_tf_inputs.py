"""The two layouts of a ranking batch agree: the JSON rendered from per-item text reads back as
exactly the numpy columns (the slow reference form is ``json.dumps`` of those columns)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.tf.inputs import (
    ArrayInputs,
    BatchInputs,
    InputLayout,
    RankingBatch,
    input_spec,
    reference_json_inputs,
)

N_ITEMS = 500
DTYPES = {"user_indices": np.int32, "item_indices": np.int32, "sparse_indices": np.int32,
          "dense_values": np.float32, "seq": np.int32, "seq_len": np.int32}


def layout_of(n_user_sparse: int, n_item_sparse: int, n_user_dense: int, n_item_dense: int,
              recent_num: int, seed: int = 0) -> InputLayout:
    rng = np.random.default_rng(seed)
    names = ["user_indices", "item_indices"]
    if n_user_sparse + n_item_sparse:
        names.append("sparse_indices")
    if n_user_dense + n_item_dense:
        names.append("dense_values")
    if recent_num:
        names += ["seq", "seq_len"]
    spec = input_spec(names, n_user_sparse, n_item_sparse, n_user_dense, n_item_dense,
                      recent_num, N_ITEMS + 1)
    item_sparse = rng.integers(0, 10**6, (N_ITEMS + 1, n_item_sparse)).astype(np.int32)
    # values of every magnitude, negative zero and float32's extremes
    item_dense = (rng.standard_normal((N_ITEMS + 1, n_item_dense))
                  * 10.0 ** rng.integers(-30, 30, (N_ITEMS + 1, n_item_dense))).astype(np.float32)
    if n_item_dense:
        item_dense[0, 0] = -0.0
        item_dense[1, 0] = np.finfo(np.float32).max
        item_dense[2, 0] = np.finfo(np.float32).tiny
    return InputLayout(spec, item_sparse, item_dense)


def batch_of(layout: InputLayout, n: int, seq_len: int, seed: int = 1) -> RankingBatch:
    rng = np.random.default_rng(seed)
    spec = layout.spec
    return RankingBatch(
        user=int(rng.integers(0, 1000)),
        items=rng.choice(N_ITEMS + 1, n, replace=False).astype(np.int64),
        user_sparse=rng.integers(0, 99, spec.n_user_sparse).astype(np.int32),
        user_dense=rng.standard_normal(spec.n_user_dense).astype(np.float32) / 3,
        seq=rng.integers(0, N_ITEMS, seq_len).astype(np.int32))


def read_back(text: bytes) -> dict[str, np.ndarray]:
    doc = json.loads(text)
    return {k: np.asarray(v, dtype=DTYPES[k]) for k, v in doc.items()}


@pytest.mark.parametrize("shape", [
    (3, 1, 1, 1, 0),   # DeepFM on generated data
    (3, 1, 1, 1, 10),  # DIN, YouTubeRanking
    (0, 0, 0, 0, 0),   # no features
    (0, 2, 0, 3, 0),   # item features only
    (2, 0, 1, 0, 4),   # user features only
    (0, 0, 0, 0, 5),   # a sequence, no features
])
@pytest.mark.parametrize("n, seq_len", [(1, 0), (37, 3), (400, 25)])
def test_json_reads_back_as_the_arrays(shape, n, seq_len):
    layout = layout_of(*shape)
    batch = batch_of(layout, n, seq_len if shape[4] else 0)
    arrays = layout.arrays(batch)
    fast = read_back(layout.json_inputs(batch))
    assert list(fast) == list(arrays) == list(layout.spec.names)
    for k, column in arrays.items():
        assert fast[k].shape == column.shape, k
        np.testing.assert_array_equal(fast[k], column, err_msg=k)
        assert np.array_equal(np.signbit(fast[k]), np.signbit(column)), k
    # the plain form holds the same values
    plain = read_back(reference_json_inputs(arrays))
    for k in arrays:
        np.testing.assert_array_equal(plain[k], fast[k])


def test_rows_put_the_user_before_the_item_and_pad_the_sequence():
    layout = layout_of(2, 1, 1, 1, 4)
    batch = RankingBatch(7, np.array([5, 9]), np.array([11, 12], dtype=np.int32),
                         np.array([0.5], dtype=np.float32), np.array([1, 2, 3, 4, 6, 8]))
    x = read_back(layout.json_inputs(batch))
    np.testing.assert_array_equal(x["user_indices"], [7, 7])
    np.testing.assert_array_equal(x["item_indices"], [5, 9])
    np.testing.assert_array_equal(x["sparse_indices"][:, :2], [[11, 12], [11, 12]])
    np.testing.assert_array_equal(x["sparse_indices"][:, 2], layout.item_sparse[[5, 9], 0])
    np.testing.assert_array_equal(x["dense_values"][:, 1], layout.item_dense[[5, 9], 0])
    np.testing.assert_array_equal(x["seq"], [[3, 4, 6, 8]] * 2)  # the last recent_num
    np.testing.assert_array_equal(x["seq_len"], [4, 4])

    short = RankingBatch(7, np.array([5]), batch.user_sparse, batch.user_dense, np.array([2]))
    x = read_back(layout.json_inputs(short))
    np.testing.assert_array_equal(x["seq"], [[2, N_ITEMS + 1, N_ITEMS + 1, N_ITEMS + 1]])
    np.testing.assert_array_equal(x["seq_len"], [1])


def test_empty_batch_and_wrappers():
    layout = layout_of(3, 1, 1, 1, 10)
    empty = RankingBatch(0, np.empty(0, dtype=np.int64), np.zeros(3, np.int32),
                         np.zeros(1, np.float32), np.empty(0, np.int32))
    assert json.loads(layout.json_inputs(empty)) == {k: [] for k in layout.spec.names}
    inputs = BatchInputs(layout, batch_of(layout, 12, 4))
    assert inputs.n_rows == 12 and inputs.json_inputs() == layout.json_inputs(inputs.batch)
    arrays = inputs.arrays()
    plain = ArrayInputs(arrays)
    assert plain.n_rows == 12
    assert read_back(plain.json_inputs()).keys() == arrays.keys()


def test_bad_tables_are_refused():
    spec = input_spec(["user_indices", "item_indices", "dense_values"], 0, 0, 0, 1, 0, 0)
    with pytest.raises(ValueError, match="columns"):
        InputLayout(spec, np.zeros((3, 0), np.int32), np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="finite"):
        InputLayout(spec, np.zeros((3, 0), np.int32),
                    np.array([[np.nan]] * 3, np.float32)).fragments()
    with pytest.raises(ValueError, match="unknown model inputs"):
        input_spec(["user_indices", "extra"], 0, 0, 0, 0, 0, 0)
