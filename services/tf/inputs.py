"""The inputs of the exported ``predict`` signature for one request: one user beside many items.

Every row of a request's batch holds the same user part (user index, user features, behaviour
sequence) beside one candidate item's part (item index, item features). :class:`InputLayout`
holds a version's item tables and lays a :class:`RankingBatch` out in two forms:

* :meth:`InputLayout.arrays`: numpy columns, for the SavedModel in the worker;
* :meth:`InputLayout.json_inputs`: the JSON text of TF Serving's columnar ``"inputs"`` object.
  Each item's part of every row is rendered to text once per version (on first use), so a
  request only joins ready-made fragments: for 30,000 candidates that is a few milliseconds,
  where converting the arrays with ``json.dumps(array.tolist())`` takes two orders of magnitude
  longer. :func:`reference_json_inputs` is that slow form; the tests check that both give the
  same values.

Numeric values are written as the shortest decimal that reads back as the same float32, which
is what TF Serving turns them into.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np


class ModelInputs(ABC):
    """Columnar inputs of the ``predict`` signature, in the form each scorer sends."""

    @property
    @abstractmethod
    def n_rows(self) -> int:
        """Number of rows (scores expected back)."""

    @abstractmethod
    def arrays(self) -> dict[str, np.ndarray]:
        """Input name -> numpy column of ``n_rows`` rows."""

    def json_inputs(self) -> bytes:
        """The JSON object of TF Serving's columnar ``"inputs"``."""
        return reference_json_inputs(self.arrays())


class ArrayInputs(ModelInputs):
    """Inputs given as numpy columns."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self._arrays = arrays

    @property
    def n_rows(self) -> int:
        return len(next(iter(self._arrays.values()))) if self._arrays else 0

    def arrays(self) -> dict[str, np.ndarray]:
        return self._arrays


@dataclass(frozen=True)
class InputSpec:
    """The shape of a model's inputs.

    Attributes
    ----------
    names : tuple of str
        The signature's inputs, among ``user_indices``, ``item_indices``, ``sparse_indices``,
        ``dense_values``, ``seq``, ``seq_len``.
    n_user_sparse, n_item_sparse : int
        Categorical columns of the user and of the item (user columns come first in a row).
    n_user_dense, n_item_dense : int
        Numeric columns of the user and of the item.
    recent_num : int
        Length of the ``seq`` input (0 for models without one).
    pad_index : int
        The item index that pads a short sequence.
    """

    names: tuple[str, ...]
    n_user_sparse: int = 0
    n_item_sparse: int = 0
    n_user_dense: int = 0
    n_item_dense: int = 0
    recent_num: int = 0
    pad_index: int = 0


@dataclass(frozen=True)
class RankingBatch:
    """One user beside each of ``items``.

    Attributes
    ----------
    user : int
        Inner user index (``n_users`` for an unknown user).
    items : np.ndarray of int64, shape (n,)
        Inner item indices.
    user_sparse : np.ndarray of int32, shape (n_user_sparse,)
        Global categorical indices of the user's features.
    user_dense : np.ndarray of float32, shape (n_user_dense,)
        Standardised numeric user features.
    seq : np.ndarray of int32, shape (k,)
        The user's recent items, oldest first (only the last ``recent_num`` are used).
    """

    user: int
    items: np.ndarray
    user_sparse: np.ndarray
    user_dense: np.ndarray
    seq: np.ndarray

    @property
    def n_rows(self) -> int:
        return len(self.items)


class InputLayout:
    """A version's item tables and the two layouts of a batch (see the module docstring).

    Parameters
    ----------
    spec : InputSpec
    item_sparse : np.ndarray of int32, shape (n_items + 1, n_item_sparse)
    item_dense : np.ndarray of float32, shape (n_items + 1, n_item_dense)
    """

    def __init__(self, spec: InputSpec, item_sparse: np.ndarray, item_dense: np.ndarray):
        if item_sparse.shape[1] != spec.n_item_sparse or item_dense.shape[1] != spec.n_item_dense:
            raise ValueError(f"item tables of shapes {item_sparse.shape} and {item_dense.shape} "
                             f"do not have {spec.n_item_sparse} and {spec.n_item_dense} columns")
        self.spec = spec
        self.item_sparse = item_sparse
        self.item_dense = item_dense
        self._fragments: dict[str, np.ndarray] | None = None
        self._lock = threading.Lock()

    # -- arrays -------------------------------------------------------------------------------
    def sequence_row(self, seq: np.ndarray) -> tuple[np.ndarray, int]:
        """The last ``recent_num`` items of ``seq``, left-aligned and padded, and their count."""
        r = self.spec.recent_num
        recent = seq[-r:] if len(seq) else seq
        row = np.full(r, self.spec.pad_index, dtype=np.int32)
        row[:len(recent)] = recent
        return row, len(recent)

    def arrays(self, batch: RankingBatch) -> dict[str, np.ndarray]:
        """Columnar numpy inputs: the user's fields followed by the item's in every row."""
        spec, items, n = self.spec, batch.items, batch.n_rows
        x: dict[str, np.ndarray] = {}
        if "user_indices" in spec.names:
            x["user_indices"] = np.full(n, batch.user, dtype=np.int32)
        if "item_indices" in spec.names:
            x["item_indices"] = items.astype(np.int32)
        if "sparse_indices" in spec.names:
            sparse = np.empty((n, spec.n_user_sparse + spec.n_item_sparse), dtype=np.int32)
            sparse[:, :spec.n_user_sparse] = batch.user_sparse
            sparse[:, spec.n_user_sparse:] = self.item_sparse[items]
            x["sparse_indices"] = sparse
        if "dense_values" in spec.names:
            dense = np.empty((n, spec.n_user_dense + spec.n_item_dense), dtype=np.float32)
            dense[:, :spec.n_user_dense] = batch.user_dense
            dense[:, spec.n_user_dense:] = self.item_dense[items]
            x["dense_values"] = dense
        if "seq" in spec.names:
            row, length = self.sequence_row(batch.seq)
            x["seq"] = np.broadcast_to(row, (n, spec.recent_num))
            x["seq_len"] = np.full(n, length, dtype=np.int32)
        return x

    # -- TF Serving's columnar JSON -----------------------------------------------------------
    def fragments(self) -> dict[str, np.ndarray]:
        """Per item (object arrays of str, one entry per row of the item tables): the text of
        its index and of its categorical and numeric values, comma-separated. Built once."""
        found = self._fragments
        if found is not None:
            return found
        with self._lock:
            if self._fragments is None:
                n_rows = len(self.item_sparse)
                self._fragments = {
                    "item_indices": _as_text(np.arange(n_rows, dtype=np.int64)[:, None]),
                    "sparse_indices": _as_text(self.item_sparse),
                    "dense_values": _as_text(self.item_dense),
                }
            return self._fragments

    def json_inputs(self, batch: RankingBatch) -> bytes:
        """The JSON object of TF Serving's columnar ``"inputs"`` for ``batch``."""
        spec, n = self.spec, batch.n_rows
        if n == 0:
            return json.dumps({k: [] for k in spec.names}).encode()
        frags = self.fragments()
        chosen = batch.items
        parts: list[str] = []
        for name in spec.names:
            if name == "user_indices":
                text = _repeat(str(int(batch.user)), n)
            elif name == "item_indices":
                text = "[" + ",".join(frags["item_indices"][chosen].tolist()) + "]"
            elif name == "sparse_indices":
                text = _rows(_values_text(batch.user_sparse), frags["sparse_indices"][chosen],
                             spec.n_item_sparse > 0)
            elif name == "dense_values":
                text = _rows(_values_text(batch.user_dense), frags["dense_values"][chosen],
                             spec.n_item_dense > 0)
            elif name == "seq":
                row, _ = self.sequence_row(batch.seq)
                text = _repeat("[" + _values_text(row) + "]", n)
            elif name == "seq_len":
                _, length = self.sequence_row(batch.seq)
                text = _repeat(str(length), n)
            else:
                raise ValueError(f"unknown model input {name!r}")
            parts.append(f'"{name}":{text}')
        return ("{" + ",".join(parts) + "}").encode()


class BatchInputs(ModelInputs):
    """A :class:`RankingBatch` in a version's :class:`InputLayout`."""

    def __init__(self, layout: InputLayout, batch: RankingBatch):
        self.layout = layout
        self.batch = batch

    @property
    def n_rows(self) -> int:
        return self.batch.n_rows

    def arrays(self) -> dict[str, np.ndarray]:
        return self.layout.arrays(self.batch)

    def json_inputs(self) -> bytes:
        return self.layout.json_inputs(self.batch)


def reference_json_inputs(arrays: dict[str, np.ndarray]) -> bytes:
    """The plain form of :meth:`InputLayout.json_inputs`: ``json.dumps`` of the arrays."""
    return json.dumps({k: np.asarray(v).tolist() for k, v in arrays.items()}).encode()


def _as_text(table: np.ndarray) -> np.ndarray:
    """Each row of a 2-d table as its comma-separated values (an object array of str)."""
    n_rows, n_cols = table.shape
    out = np.empty(n_rows, dtype=object)
    if n_cols == 0:
        out[:] = ""
        return out
    if table.dtype.kind == "f" and not np.isfinite(table).all():
        raise ValueError("numeric features must be finite to be sent as JSON")
    # numpy writes float32 as the shortest decimal that reads back as the same float32
    cells = table.astype(str)
    out[:] = [",".join(row) for row in cells.tolist()]
    return out


def _values_text(values: np.ndarray) -> str:
    """A 1-d array as comma-separated values."""
    return _as_text(np.asarray(values).reshape(1, -1))[0] if len(values) else ""


def _repeat(text: str, n: int) -> str:
    """A JSON array holding ``text`` ``n`` times."""
    return "[" + ",".join([text] * n) + "]"


def _rows(user_text: str, item_texts: np.ndarray, has_item_part: bool) -> str:
    """A JSON array of rows, each the user's values followed by one item's values."""
    if not has_item_part:
        return _repeat("[" + user_text + "]", len(item_texts))
    head = "[" + user_text + "," if user_text else "["
    return "[" + head + ("]," + head).join(item_texts.tolist()) + "]]"


def input_spec(names: Any, n_user_sparse: int, n_item_sparse: int, n_user_dense: int,
               n_item_dense: int, recent_num: int, pad_index: int) -> InputSpec:
    """An :class:`InputSpec` with the signature's input names in a fixed order."""
    order = ("user_indices", "item_indices", "sparse_indices", "dense_values", "seq", "seq_len")
    known = set(names)
    unknown = known - set(order)
    if unknown:
        raise ValueError(f"unknown model inputs: {sorted(unknown)}")
    return InputSpec(tuple(k for k in order if k in known), n_user_sparse, n_item_sparse,
                     n_user_dense, n_item_dense, recent_num, pad_index)
