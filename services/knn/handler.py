"""Scoring of the knn family (UserCF, ItemCF) from the neighbour lists in Redis.

Each request is one round trip: a Lua script reads the user's consumed items and the
neighbour lists it needs inside the version's hash slot and returns them as two or a few
binary strings, which numpy decodes without a Python loop over items.

Scores, with ``N_k(x)`` the first ``k`` (``k_neighbors``) saved neighbours of ``x``, ``I(u)``
the items user ``u`` consumed and ``r`` the training labels:

* item-based: ``total(u, j) = sum_{i in I(u), j in N_k(i)} sim(i, j) * r_ui``;
* user-based: ``total(u, j) = sum_{v in N_k(u)} sim(u, v) * r_vj``;
* ``task="ranking"`` ranks by ``total``, and items no neighbour reaches score 0 (the most
  popular of them fill an answer that runs short);
* ``task="rating"`` ranks by a centred weighted mean: item-based
  ``m_j + sum sim(i, j) (r_ui - m_i) / sum sim(i, j)`` with item means ``m``, user-based
  ``m_u + sum sim(u, v) (r_vj - m_v) / sum sim(u, v)`` with user means; items no neighbour
  reaches score ``m_j`` (item-based) or ``m_u`` (user-based).

These are the scores :class:`libreco.algorithms.ItemCF` and ``UserCF`` rank by in
``recommend_user`` when ``k_neighbors`` equals the model's ``k_sim``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.core.config import Config
from services.core.errors import StoreUnavailable
from services.core.family import Candidates, Fallback, FamilyHandler
from services.core.request import int_field
from services.core.store import RECORD
from services.core.versions import ModelVersion, Store

# KEYS: consumed, sim; ARGV: user field, bytes kept of each neighbour list (k * 8). Returns
# the user's consumed records and the first k neighbours of each consumed item, concatenated
# (rows of fixed width).
ITEM_BASED = """
local own = redis.call('HGET', KEYS[1], ARGV[1])
if not own then return {'', ''} end
local keep = tonumber(ARGV[2])
local missing = string.rep(struct.pack('<i4f', -1, 0), keep / 8)
local out, fields = {}, {}
local n = #own / 8
for i = 0, n - 1 do
  fields[#fields + 1] = tostring(struct.unpack('<i4', own, i * 8 + 1))
  if #fields == 512 or i == n - 1 then
    local rows = redis.call('HMGET', KEYS[2], unpack(fields))
    for j = 1, #fields do
      local row = rows[j]
      if row and #row >= keep then
        out[#out + 1] = string.sub(row, 1, keep)
      else
        out[#out + 1] = missing
      end
    end
    fields = {}
  end
end
return {own, table.concat(out)}
"""

# KEYS: sim, consumed; ARGV: user field, k. Returns the user's consumed records, the user's
# first k neighbour records, and each of those neighbours' consumed records.
USER_BASED = """
local row = redis.call('HGET', KEYS[1], ARGV[1]) or ''
local own = redis.call('HGET', KEYS[2], ARGV[1]) or ''
local k = math.min(tonumber(ARGV[2]), #row / 8)
local fields = {}
for i = 0, k - 1 do
  local v = struct.unpack('<i4', row, i * 8 + 1)
  if v < 0 then break end
  fields[#fields + 1] = tostring(v)
end
local out = {own, string.sub(row, 1, #fields * 8)}
if #fields > 0 then
  local lists = redis.call('HMGET', KEYS[2], unpack(fields))
  for j = 1, #fields do out[#out + 1] = lists[j] or '' end
end
return out
"""

_EMPTY_I = np.empty(0, dtype=np.int64)
_EMPTY_F = np.empty(0, dtype=np.float64)


def group(items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort ``items`` and find the runs of equal ones.

    Returns the distinct items (ascending), the start of each run in the sorted order, and
    the sorting permutation: ``np.add.reduceat(x[order], starts)`` sums ``x`` per item.
    """
    order = np.argsort(items, kind="stable")
    ordered = items[order]
    first = np.empty(len(ordered), dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    return ordered[starts].astype(np.int64), starts, order


@dataclass(frozen=True)
class KnnVersion:
    """The knn facts and tables of a version, read once per worker.

    Attributes
    ----------
    k : int
        Neighbours saved per row.
    based_on : {"item", "user"}
    task : {"ranking", "rating"}
    item_means : np.ndarray of float64, shape (n_items,)
        Mean training label per item (rating ItemCF centres on it).
    popular : Fallback
        Unlisted items at score 0, most popular first (ranking).
    by_mean : Fallback
        Unlisted items at their mean label, highest first (rating ItemCF).
    """

    k: int
    based_on: str
    task: str
    item_means: np.ndarray
    popular: Fallback
    by_mean: Fallback


class KnnHandler(FamilyHandler):
    """UserCF and ItemCF: ``k_neighbors`` (default ``LIBRECO_K_NEIGHBORS``, at most the saved
    ``k``) neighbours per consumed item or per user."""

    family = "knn"

    def __init__(self, store: Store, config: Config):
        super().__init__(store, config)
        self._item_based = store.script(ITEM_BASED)
        self._user_based = store.script(USER_BASED)

    def load_version(self, version: ModelVersion) -> KnnVersion:
        meta = version.meta
        bad = f"model {version.name!r} version {version.version} has invalid knn metadata"
        try:
            k, based_on, task = int(meta["k"]), meta["based_on"], meta.get("task", "ranking")
        except (KeyError, ValueError) as e:
            raise StoreUnavailable(f"{bad} ({e})") from None
        if based_on not in ("item", "user") or task not in ("ranking", "rating") or k < 1:
            raise StoreUnavailable(bad)
        raw = self.store.pipeline_execute([("get", (version.keys.data("item_means"),))],
                                          what="version read")[0]
        if raw is None or len(raw) != 4 * version.n_items:
            raise StoreUnavailable(f"model {version.name!r} version {version.version} has no "
                                   "valid item means")
        means = np.frombuffer(raw, dtype="<f4").astype(np.float64)
        by_mean = np.argsort(-means, kind="stable")
        return KnnVersion(k=k, based_on=based_on, task=task, item_means=means,
                          popular=Fallback(version.popular_items, 0.0),
                          by_mean=Fallback(by_mean, means[by_mean]))

    def parse_params(self, body: Mapping[str, Any], version: ModelVersion) -> int:
        k = int_field(body, "k_neighbors", self.config.k_neighbors, 1)
        return min(k, version.extra.k)

    def candidates(self, version: ModelVersion, user: int, params: Any,
                   n_rec: int) -> Candidates:
        info: KnnVersion = version.extra
        if info.based_on == "item":
            return self._item_based_scores(version, info, user, int(params))
        return self._user_based_scores(version, info, user, int(params))

    def _item_based_scores(self, version: ModelVersion, info: KnnVersion, user: int,
                           k: int) -> Candidates:
        keys = version.keys
        own, rows = self.store.run(self._item_based,
                                   [keys.data("consumed"), keys.data("sim")],
                                   [user, k * RECORD.itemsize])
        consumed = np.frombuffer(own, dtype=RECORD)
        table = np.frombuffer(rows, dtype=RECORD)
        if len(table) != len(consumed) * k:
            raise StoreUnavailable(f"model {version.name!r}: neighbour lists read back with "
                                   "an unexpected size")
        exclude = consumed["index"].astype(np.int64)
        rating = info.task == "rating"
        fallback = info.by_mean if rating else info.popular
        neighbours = table["index"]
        valid = neighbours >= 0
        if not valid.any():
            return Candidates(_EMPTY_I, _EMPTY_F, exclude, fallback)
        labels = consumed["value"].astype(np.float64)
        if rating:  # r_ui - m_i
            labels = labels - info.item_means[exclude]
        sims = table["value"].astype(np.float64)[valid]
        items, starts, order = group(neighbours[valid])
        total = np.add.reduceat((sims * np.repeat(labels, k)[valid])[order], starts)
        if not rating:
            return Candidates(items, total, exclude, fallback)
        # m_j + sum sim(i, j) (r_ui - m_i) / sum sim(i, j)
        weight = np.add.reduceat(sims[order], starts)
        scores = info.item_means[items] + np.divide(total, weight, out=np.zeros_like(total),
                                                    where=weight > 0)
        return Candidates(items, scores, exclude, fallback)

    def _user_based_scores(self, version: ModelVersion, info: KnnVersion, user: int,
                           k: int) -> Candidates:
        keys = version.keys
        found = self.store.run(self._user_based, [keys.data("sim"), keys.data("consumed")],
                               [user, k])
        consumed = np.frombuffer(found[0], dtype=RECORD)
        neighbours = np.frombuffer(found[1], dtype=RECORD)
        exclude = consumed["index"].astype(np.int64)
        rating = info.task == "rating"
        own_mean = _mean32(consumed["value"]) if rating else 0.0
        fallback = Fallback(version.popular_items, own_mean) if rating else info.popular
        lists = [b for b in found[2:] if b]
        lengths = np.fromiter((len(b) // RECORD.itemsize for b in found[2:]), dtype=np.int64,
                              count=len(found) - 2)
        if not lists:
            return Candidates(_EMPTY_I, _EMPTY_F, exclude, fallback)
        records = np.frombuffer(b"".join(lists), dtype=RECORD)
        present = lengths > 0
        lengths = lengths[present]
        sims = np.repeat(neighbours["value"][:len(present)][present].astype(np.float64),
                         lengths)
        labels = records["value"].astype(np.float64)
        if rating:  # r_vj - m_v
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            means = (np.add.reduceat(labels, starts) / lengths).astype(np.float32)
            labels = labels - np.repeat(means.astype(np.float64), lengths)
        items, starts, order = group(records["index"])
        total = np.add.reduceat((sims * labels)[order], starts)
        if not rating:
            return Candidates(items, total, exclude, fallback)
        # m_u + sum sim(u, v) (r_vj - m_v) / sum sim(u, v)
        weight = np.add.reduceat(sims[order], starts)
        scores = own_mean + np.divide(total, weight, out=np.zeros_like(total), where=weight > 0)
        return Candidates(items, scores, exclude, fallback)


def _mean32(values: np.ndarray) -> float:
    """The mean as the library keeps it (float32)."""
    return float(np.float32(values.astype(np.float64).mean())) if len(values) else 0.0
