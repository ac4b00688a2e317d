"""Scoring of the knn family (UserCF, ItemCF) from the neighbour lists in Redis.

Each request is one round trip: a Lua script reads the user's consumed items and the
neighbour lists it needs inside the version's hash slot and returns them as two or a few
binary strings, which numpy decodes without a Python loop over items.

Scores, with ``N_k(x)`` the first ``k`` (``k_neighbors``) saved neighbours of ``x``, ``I(u)``
the items user ``u`` consumed and ``r`` the training labels:

* item-based: ``total(u, j) = sum_{i in I(u), j in N_k(i)} sim(i, j) * r_ui``;
* user-based: ``total(u, j) = sum_{v in N_k(u)} sim(u, v) * r_vj``;
* ``task="ranking"`` ranks by ``total``; ``task="rating"`` by ``total / weight``, where
  ``weight`` sums the same similarities without the labels, and items no neighbour reaches
  score the user's mean label.

These are the sums :class:`libreco.algorithms.ItemCF` and ``UserCF`` rank by in
``recommend_user`` when ``k_neighbors`` equals the model's ``k_sim``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.core.config import Config
from services.core.errors import StoreUnavailable
from services.core.family import Candidates, FamilyHandler
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


@dataclass(frozen=True)
class KnnVersion:
    """The knn facts of a version, from its meta hash."""

    k: int
    based_on: str  # "item" or "user"
    task: str  # "ranking" or "rating"


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
        try:
            info = KnnVersion(k=int(meta["k"]), based_on=meta["based_on"],
                              task=meta.get("task", "ranking"))
        except (KeyError, ValueError) as e:
            raise StoreUnavailable(f"model {version.name!r} version {version.version} has no "
                                   f"valid knn metadata ({e})") from None
        if info.based_on not in ("item", "user") or info.k < 1:
            raise StoreUnavailable(f"model {version.name!r} version {version.version} has "
                                   f"invalid knn metadata {info}")
        return info

    def parse_params(self, body: Mapping[str, Any], version: ModelVersion) -> int:
        k = int_field(body, "k_neighbors", self.config.k_neighbors, 1)
        return min(k, version.extra.k)

    def candidates(self, version: ModelVersion, user: int, params: Any,
                   n_rec: int) -> Candidates:
        info: KnnVersion = version.extra
        k = int(params)
        if info.based_on == "item":
            consumed, items, sims, labels = self._item_contributions(version, user, k)
        else:
            consumed, items, sims, labels = self._user_contributions(version, user, k)
        exclude = consumed["index"].astype(np.int64)
        implicit = float(consumed["value"].mean()) if info.task == "rating" and \
            len(consumed) else 0.0
        if len(items) == 0:
            return Candidates(_EMPTY_I, _EMPTY_F, exclude, implicit)
        candidates, inverse = np.unique(items, return_inverse=True)
        total = np.bincount(inverse, weights=sims * labels, minlength=len(candidates))
        if info.task == "rating":
            weight = np.bincount(inverse, weights=sims, minlength=len(candidates))
            scores = np.divide(total, weight, out=np.full_like(total, implicit),
                               where=weight > 0)
        else:
            scores = total
        return Candidates(candidates, scores, exclude, implicit)

    def _item_contributions(self, version: ModelVersion, user: int,
                            k: int) -> tuple[np.ndarray, ...]:
        keys = version.keys
        own, rows = self.store.run(self._item_based,
                                   [keys.data("consumed"), keys.data("sim")],
                                   [user, k * RECORD.itemsize])
        consumed = np.frombuffer(own, dtype=RECORD)
        table = np.frombuffer(rows, dtype=RECORD)
        if len(table) != len(consumed) * k:
            raise StoreUnavailable(f"model {version.name!r}: neighbour lists read back with "
                                   "an unexpected size")
        items = table["index"]
        valid = items >= 0
        sims = table["value"].astype(np.float64)[valid]
        labels = np.repeat(consumed["value"].astype(np.float64), k)[valid]
        return consumed, items[valid], sims, labels

    def _user_contributions(self, version: ModelVersion, user: int,
                            k: int) -> tuple[np.ndarray, ...]:
        keys = version.keys
        found = self.store.run(self._user_based, [keys.data("sim"), keys.data("consumed")],
                               [user, k])
        consumed = np.frombuffer(found[0], dtype=RECORD)
        neighbours = np.frombuffer(found[1], dtype=RECORD)
        lists = found[2:]
        if not lists:
            return consumed, _EMPTY_I, _EMPTY_F, _EMPTY_F
        lengths = np.fromiter((len(b) for b in lists), dtype=np.int64, count=len(lists))
        records = np.frombuffer(b"".join(lists), dtype=RECORD)
        sims = np.repeat(neighbours["value"][:len(lists)].astype(np.float64),
                         lengths // RECORD.itemsize)
        return consumed, records["index"], sims, records["value"].astype(np.float64)
