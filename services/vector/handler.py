"""Scoring of the vector family (SVD, SVD++, ALS, BPR, YouTubeMatch) from user and item vectors.

A user's score for item ``i`` is the inner product ``p_u . q_i`` of the vectors written by
:func:`libreco.utils.save_vector` (biases folded in), so ranking by it reproduces the model's
``recommend_user``.

Per version, each worker reads once (:meth:`VectorHandler.load_version`) the ``(n_items, dim)``
float32 item matrix and the faiss index stored with the version (see
:mod:`services.loaders.vector`); they are swapped with the version, so one answer never mixes
two versions. When the user vectors and consumed lists fit ``LIBRECO_TABLE_MEMORY_MB`` too
(5,000 users x 64 factors take 1.3 MB, 500,000 consumed items 4 MB), the worker copies them
as well and a request reads nothing from Redis (it only checks that Redis is still there, see
:meth:`~services.core.versions.Store.check_alive`); otherwise one script call reads the user's
vector and consumed items in one round trip. Then:

* ``"use_faiss": false`` (exact): one matrix-vector product over every item, consumed items
  set to ``-inf``, and ``np.argpartition`` for the best ``n_rec``;
* ``"use_faiss": true`` (default): the index is asked for ``n_rec`` plus the number of
  consumed items (at most the catalogue), the consumed ones are dropped, and the rest are
  scored exactly with their vectors. When an approximate index returns too few items (an
  inverted file whose probed lists are short), the request is answered by the exact path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from services.core.config import Config
from services.core.errors import StoreUnavailable
from services.core.family import Candidates, FamilyHandler
from services.core.openapi import boolean_field
from services.core.request import bool_field
from services.core.store import RECORD
from services.core.versions import (
    ConsumedLists,
    ModelVersion,
    Store,
    consumed_bytes,
    member_mask,
    read_consumed,
    read_rows,
)

log = logging.getLogger("libreco.services")

_thread = threading.local()

# KEYS: user_vectors, consumed; ARGV: user field. The user's vector and consumed records
# ('' when missing).
USER_DATA = """
return {redis.call('HGET', KEYS[1], ARGV[1]) or '', redis.call('HGET', KEYS[2], ARGV[1]) or ''}
"""


@dataclass(frozen=True)
class VectorVersion:
    """The vectors and index of one version, held by a worker while it serves the version.

    Attributes
    ----------
    dim : int
    item_vectors : np.ndarray of float32, shape (n_items, dim)
        Read-only, C-contiguous.
    index : faiss.Index
        Inner-product index over ``item_vectors`` (faiss id = inner item index).
    index_type : str
        Its ``faiss.index_factory`` string.
    exact_index : bool
        Whether the index returns exactly the best items (``Flat``), so that it is never
        second-guessed.
    user_vectors : np.ndarray of float32, shape (n_users, dim), or None
        Held in memory, or None when requests read them from Redis.
    vector_missing : np.ndarray of bool, shape (n_users,), or None
        Users whose vector was missing or malformed in Redis (their requests fail with 503).
    consumed : ConsumedLists or None
        Every user's consumed records, held with ``user_vectors``.
    """

    dim: int
    item_vectors: np.ndarray
    index: faiss.Index
    index_type: str
    exact_index: bool
    user_vectors: np.ndarray | None = None
    vector_missing: np.ndarray | None = None
    consumed: ConsumedLists | None = None


class VectorHandler(FamilyHandler):
    """Inner-product scoring, exact or through faiss (``use_faiss``, default true).

    Notes
    -----
    Each search runs on the request's thread alone: the handler limits faiss (OpenMP) and
    the BLAS library numpy uses to one thread per call, since gunicorn already runs as many
    requests at once as there are cores to use.
    """

    family = "vector"
    default_route = "vector"

    def __init__(self, store: Store, config: Config):
        super().__init__(store, config)
        self._user_data = store.script(USER_DATA)
        single_threaded_math()

    def load_version(self, version: ModelVersion) -> VectorVersion:
        meta = version.meta
        name = f"model {version.name!r} version {version.version}"
        try:
            dim = int(meta["dim"])
            item_chunks = int(meta["item_chunks"])
            index_chunks = int(meta["index_chunks"])
            index_type = meta.get("index_type", "")
        except (KeyError, ValueError) as e:
            raise StoreUnavailable(f"{name} has invalid vector metadata ({e})") from None
        keys = version.keys
        blobs = self.store.pipeline_execute(
            [("get", (keys.data(f"item_vectors:{c}"),)) for c in range(item_chunks)]
            + [("get", (keys.data(f"faiss_index:{c}"),)) for c in range(index_chunks)],
            what="version read")
        if any(b is None for b in blobs):
            raise StoreUnavailable(f"{name} misses item vectors or its index in the store")
        items = b"".join(blobs[:item_chunks])
        if dim < 1 or len(items) != 4 * dim * version.n_items:
            raise StoreUnavailable(f"{name}: item vectors read back with {len(items)} bytes, "
                                   f"expected {4 * dim * version.n_items}")
        item_vectors = np.frombuffer(items, dtype="<f4").reshape(version.n_items, dim)
        try:
            index = faiss.deserialize_index(np.frombuffer(b"".join(blobs[item_chunks:]),
                                                          dtype=np.uint8))
        except RuntimeError as e:
            raise StoreUnavailable(f"{name}: the faiss index cannot be read ({e})") from None
        if index.ntotal != version.n_items or index.d != dim or \
                index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise StoreUnavailable(f"{name}: the faiss index does not match the item vectors")
        user_vectors = missing = consumed = None
        lists_bytes = consumed_bytes(version)
        if lists_bytes is not None and version.n_users * dim * 4 + lists_bytes <= \
                self.config.table_memory_mb * 2**20:
            rows = read_rows(self.store, keys.data("user_vectors"), version.n_users)
            width = 4 * dim
            missing = np.array([row is None or len(row) != width for row in rows])
            if missing.any():  # those users' requests fail, as they do when read one by one
                log.warning("%s: %d user vectors are missing or malformed", name,
                            int(missing.sum()))
            user_vectors = np.frombuffer(
                b"".join(bytes(width) if bad else row for row, bad in zip(rows, missing)),
                dtype="<f4").reshape(-1, dim)
            consumed = read_consumed(self.store, version)
        return VectorVersion(dim=dim, item_vectors=item_vectors, index=index,
                             index_type=index_type, exact_index=isinstance(index, faiss.IndexFlat),
                             user_vectors=user_vectors, vector_missing=missing,
                             consumed=consumed)

    def openapi_fields(self) -> dict[str, Any]:
        """The vector request fields, for :mod:`services.core.openapi`."""
        return {"use_faiss": boolean_field("search with the version's faiss index (default "
                                           "true) or score every item exactly")}

    def parse_params(self, body: Mapping[str, Any], version: ModelVersion) -> bool:
        return bool_field(body, "use_faiss", True)

    def candidates(self, version: ModelVersion, user: int, params: Any,
                   n_rec: int) -> Candidates:
        info: VectorVersion = version.extra
        if info.user_vectors is not None:
            self.store.check_alive()
            if info.vector_missing[user]:
                raise StoreUnavailable(f"model {version.name!r}: the vector of user {user} is "
                                       "missing or malformed in the store")
            vector = info.user_vectors[user]
            consumed = info.consumed.of(user)["index"].astype(np.int64)
        else:
            keys = version.keys
            raw_vector, raw_consumed = self.store.run(
                self._user_data, [keys.data("user_vectors"), keys.data("consumed")], [user])
            if len(raw_vector) != 4 * info.dim:
                raise StoreUnavailable(f"model {version.name!r}: the vector of user {user} is "
                                       "missing or malformed in the store")
            vector = np.frombuffer(raw_vector, dtype="<f4")
            consumed = np.frombuffer(raw_consumed, dtype=RECORD)["index"].astype(np.int64)
        if params:
            found = search(info, vector, consumed, n_rec)
            if found is not None:
                return found
        return exact(info, vector, consumed, n_rec)


def exact(info: VectorVersion, vector: np.ndarray, consumed: np.ndarray,
          n_rec: int) -> Candidates:
    """The best ``n_rec`` unconsumed items by one product over the whole item matrix."""
    scores = info.item_vectors @ vector
    scores[consumed] = -np.inf
    n_items = len(scores)
    if n_rec < n_items:
        top = np.argpartition(scores, n_items - n_rec)[n_items - n_rec:]
    else:
        top = np.arange(n_items)
    return Candidates(top, scores[top].astype(np.float64), consumed)


def search(info: VectorVersion, vector: np.ndarray, consumed: np.ndarray,
           n_rec: int) -> Candidates | None:
    """The best ``n_rec`` unconsumed items the faiss index finds, scored exactly.

    Returns None when an approximate index found fewer than ``n_rec`` unconsumed items
    while the catalogue has more (the caller answers exactly instead).
    """
    n_items = info.item_vectors.shape[0]
    k = min(n_rec + len(consumed), n_items)
    one_faiss_thread()
    _, found = info.index.search(vector.reshape(1, -1), k)
    items = found[0]
    items = items[items >= 0]
    fresh = items[~member_mask(items, consumed)]
    if not info.exact_index and len(fresh) < min(n_rec, n_items - len(consumed)):
        return None
    scores = info.item_vectors[fresh] @ vector
    return Candidates(fresh, scores.astype(np.float64), consumed)


def one_faiss_thread() -> None:
    """Keep faiss searches of the calling thread on that thread.

    OpenMP's thread count belongs to each thread: a request thread that gunicorn starts
    after the worker's set-up begins with the default (every core), whatever the thread that
    built the app chose. Set once per thread.
    """
    if not getattr(_thread, "one_faiss_thread", False):
        faiss.omp_set_num_threads(1)
        _thread.one_faiss_thread = True


def single_threaded_math() -> None:
    """One thread per faiss search and per numpy product (see :class:`VectorHandler`); the
    BLAS limit holds for the whole process, the faiss one for the calling thread (request
    threads call :func:`one_faiss_thread`)."""
    one_faiss_thread()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        log.info("threadpoolctl is not installed: numpy's BLAS keeps its own thread count "
                 "(set OPENBLAS_NUM_THREADS=1 for the vector service)")
        return
    threadpool_limits(1, user_api="blas")
