"""Compiled neighbourhood scoring for requests answered from a worker's memory.

When a version's neighbour table and consumed lists are held in the worker
(:class:`services.knn.handler.KnnVersion`), a ranking request needs: sum the neighbour rows of
the user's items (ItemCF) or the consumed lists of the user's neighbours (UserCF) into one
score per item, drop the user's own items and keep the best ``n_rec``. Done with numpy that
takes a dozen small array operations (a sort to group equal items among them), each with its
own call overhead; compiled, it is a single pass over the touched entries.

The scores are the ones :mod:`services.knn.handler` documents, summed in the same order, and
the selection breaks ties as :func:`services.core.family.rank` does (equal scores by smaller
item). The caller falls back to the general path when the answer could need unlisted items
(fewer than ``n_rec`` items reached, or the last one scores below the fallback's best).

Each thread keeps a scratch of ``n_items + 1`` floats and integers per catalogue size, so the
cost of a request depends on the entries it touches, never on the catalogue's size.
"""

from __future__ import annotations

import threading

import numpy as np
from numba import njit

_scratch = threading.local()
MAX_SCRATCH_SIZES = 4
"""Catalogue sizes a thread keeps scratch arrays for (several models, version changes)."""


@njit(cache=True)
def _select(touched, n_touched, total, n_rec):  # pragma: no cover - compiled
    """The best ``n_rec`` of the touched items, best first, equal scores by smaller item."""
    items = np.empty(n_rec, dtype=np.int64)
    scores = np.empty(n_rec, dtype=np.float64)
    m = 0
    for t in range(n_touched):
        j = touched[t]
        s = total[j]
        if not np.isfinite(s):
            continue
        if m == n_rec:
            if s < scores[m - 1] or (s == scores[m - 1] and j > items[m - 1]):
                continue
            pos = m - 1
        else:
            pos = m
            m += 1
        while pos > 0 and (scores[pos - 1] < s or (scores[pos - 1] == s and items[pos - 1] > j)):
            scores[pos] = scores[pos - 1]
            items[pos] = items[pos - 1]
            pos -= 1
        scores[pos] = s
        items[pos] = j
    return items[:m], scores[:m]


@njit(cache=True, inline="always")
def _add(j, value, total, mark, touched, n, tick):  # pragma: no cover - compiled
    """Add ``value`` to item ``j``'s score unless ``j`` is the user's own; returns the new
    count of touched items."""
    if mark[j] == -tick:
        return n
    if mark[j] != tick:
        mark[j] = tick
        total[j] = 0.0
        touched[n] = j
        n += 1
    total[j] += value
    return n


@njit(cache=True)
def item_based_top(neighbours, similarities, consumed, labels, k, n_rec, total, mark,
                   tick):  # pragma: no cover - compiled
    """ItemCF: ``total(j) = sum over consumed i with j in N_k(i) of sim(i, j) * r_ui``.

    ``neighbours`` (n_items, >= k) holds ``n_items`` as padding; ``mark[j] == tick`` flags
    items touched by this call and ``-tick`` the user's own items.
    """
    n_items = neighbours.shape[0]
    for c in range(consumed.shape[0]):
        mark[consumed[c]] = -tick
    touched = np.empty(min(consumed.shape[0] * k, n_items), dtype=np.int64)
    n = 0
    for c in range(consumed.shape[0]):
        i = consumed[c]
        weight = np.float64(labels[c])
        for r in range(k):
            j = neighbours[i, r]
            if j < n_items:
                n = _add(j, similarities[i, r] * weight, total, mark, touched, n, tick)
    return _select(touched, n, total, n_rec)


@njit(cache=True)
def user_based_top(neighbour_ids, neighbour_sims, own, records_index, records_value, offsets,
                   n_rec, total, mark, tick):  # pragma: no cover - compiled
    """UserCF: ``total(j) = sum over neighbours v of sim(u, v) * r_vj``.

    User ``v``'s records are ``records_*[offsets[v]:offsets[v + 1]]``; ``own`` are the
    user's items.
    """
    for c in range(own.shape[0]):
        mark[own[c]] = -tick
    size = 0
    for t in range(neighbour_ids.shape[0]):
        v = neighbour_ids[t]
        size += offsets[v + 1] - offsets[v]
    touched = np.empty(min(size, total.shape[0]), dtype=np.int64)
    n = 0
    for t in range(neighbour_ids.shape[0]):
        v = neighbour_ids[t]
        sim = neighbour_sims[t]
        for p in range(offsets[v], offsets[v + 1]):
            n = _add(records_index[p], sim * np.float64(records_value[p]), total, mark,
                     touched, n, tick)
    return _select(touched, n, total, n_rec)


def scratch(n_items: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The calling thread's ``(total, mark, tick)`` for a catalogue of ``n_items``; ``tick``
    is new on every call, so nothing needs clearing between requests."""
    sizes = getattr(_scratch, "sizes", None)
    if sizes is None:
        sizes = _scratch.sizes = {}
    entry = sizes.get(n_items)
    if entry is None:
        if len(sizes) >= MAX_SCRATCH_SIZES:
            sizes.clear()
        entry = sizes[n_items] = [np.zeros(n_items + 1), np.zeros(n_items + 1, dtype=np.int64), 0]
    entry[2] += 1
    return entry[0], entry[1], entry[2]


def warm_up(record_dtype: np.dtype, neighbours: np.ndarray, similarities: np.ndarray) -> None:
    """Compile (or load from numba's cache) both kernels for the array types requests use, so
    that a version's first request does not pay for it.

    A user's records are a strided view of the version's record array, except when the user
    has a single record: numba sees that one as contiguous, a type of its own.
    """
    total, mark, tick = scratch(1)
    for n_records in (1, 2):
        records = np.zeros(n_records, dtype=record_dtype)
        item_based_top(neighbours[:1], similarities[:1], records["index"], records["value"], 1,
                       1, total, mark, tick)
        user_based_top(records["index"].astype(neighbours.dtype), similarities[0, :1],
                       records["index"], records["index"], records["value"],
                       np.zeros(2, dtype=np.int64), 1, total, mark, tick)
