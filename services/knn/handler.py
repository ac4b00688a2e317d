"""Scoring of the knn family (UserCF, ItemCF) from the neighbour lists in Redis.

Each request is one Redis round trip, decoded by numpy without a Python loop over items:

* when the version's neighbour table and its users' consumed lists together fit in
  ``LIBRECO_TABLE_MEMORY_MB`` (10,000 rows of 20 neighbours take 2.3 MB, 1,000,000 consumed
  items 8 MB), each worker copies both once per version and a request reads nothing from
  Redis: it only checks that Redis is still there, without a round trip while the worker's
  connection stays open (:meth:`~services.core.versions.Store.check_alive`);
* when only the neighbour table fits, a request reads the consumed lists it needs (ItemCF:
  the user's, one ``HGET``; UserCF: the user's and the neighbours', one ``HMGET``);
* otherwise a Lua script reads the user's consumed items and the neighbour lists they need
  inside the version's hash slot and returns them as a few binary strings.

Scores, with ``N_k(x)`` the first ``k`` (``k_neighbors``) saved neighbours of ``x``, ``I(u)``
the items user ``u`` consumed and ``r`` the training labels:

* item-based: ``total(u, j) = sum_{i in I(u), j in N_k(i)} sim(i, j) * r_ui``;
* user-based: ``total(u, j) = sum_{v in N_k(u)} sim(u, v) * r_vj``;
* ``task="ranking"`` ranks by ``total``, and items no neighbour reaches score 0 (the most
  popular of them fill an answer that runs short);
* ``task="rating"`` ranks by the baseline ``b_uj = base_users[u] + base_items[j]`` plus the
  similarity-weighted mean residual of the same neighbours: item-based
  ``b_uj + sum sim(i, j) (r_ui - b_ui) / sum sim(i, j)``, user-based
  ``b_uj + sum sim(u, v) (r_vj - b_vj) / sum sim(u, v)`` over the neighbours who consumed
  ``j``; items no neighbour reaches score ``b_uj``.

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
from services.core.openapi import integer_field
from services.core.request import int_field
from services.core.store import RECORD
from services.core.versions import (
    ConsumedLists,
    ModelVersion,
    Store,
    consumed_bytes,
    read_consumed,
    read_rows,
)
from services.knn import scoring

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


def group(items: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort ``items`` (inner indices below ``n_items``) and find the runs of equal ones.

    Returns the distinct items (ascending), the start of each run in the sorted order, and
    the sorting permutation: ``np.add.reduceat(x[order], starts)`` sums ``x`` per item.
    Catalogues of up to 65,536 items sort as 16-bit keys (a radix sort, several times
    faster than sorting 32-bit ones).
    """
    keys = items.astype(np.uint16) if n_items <= 1 << 16 else items
    order = np.argsort(keys, kind="stable")
    ordered = items[order]
    first = np.empty(len(ordered), dtype=bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    return ordered[starts], starts, order


@dataclass(frozen=True)
class KnnVersion:
    """The knn facts and tables of a version, read once per worker.

    Attributes
    ----------
    k : int
        Neighbours saved per row.
    based_on : {"item", "user"}
    task : {"ranking", "rating"}
    base_users, base_items : np.ndarray of float64, shapes (n_users,) and (n_items,)
        The rating baseline ``b_uj = base_users[u] + base_items[j]``.
    popular : Fallback
        Unlisted items at score 0, most popular first (ranking).
    by_base : Fallback
        Unlisted items by ``base_items``, highest first (rating; offset by the user's term).
    neighbours, similarities : np.ndarray, shape (n, k), int32 and float64, or None
        The neighbour lists in memory, or None when they are read from Redis per request.
    consumed : ConsumedLists or None
        Every user's consumed items and labels, or None when they are read from Redis per
        request.
    """

    k: int
    based_on: str
    task: str
    base_users: np.ndarray
    base_items: np.ndarray
    popular: Fallback
    by_base: Fallback
    neighbours: np.ndarray | None
    similarities: np.ndarray | None
    consumed: ConsumedLists | None = None


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
        raw_users, raw_items = self.store.pipeline_execute([
            ("get", (version.keys.data("base_users"),)),
            ("get", (version.keys.data("base_items"),)),
        ], what="version read")
        if raw_users is None or len(raw_users) != 4 * version.n_users or \
                raw_items is None or len(raw_items) != 4 * version.n_items:
            raise StoreUnavailable(f"model {version.name!r} version {version.version} has no "
                                   "valid baseline tables")
        base_users = np.frombuffer(raw_users, dtype="<f4").astype(np.float64)
        base_items = np.frombuffer(raw_items, dtype="<f4").astype(np.float64)
        by_base = np.argsort(-base_items, kind="stable")
        n_rows = version.n_items if based_on == "item" else version.n_users
        budget = self.config.table_memory_mb * 2**20
        table_bytes = n_rows * k * 12  # int32 + float64
        table = self._table(version, n_rows, k) if table_bytes <= budget else None
        neighbours = similarities = consumed = None
        if table is not None:
            neighbours = table["index"].copy()
            similarities = table["value"].astype(np.float64)
            if based_on == "item":  # padding points at the sentinel item n_items, weight 0
                neighbours[neighbours < 0] = version.n_items
            lists_bytes = consumed_bytes(version)
            if lists_bytes is not None and table_bytes + lists_bytes <= budget:
                consumed = read_consumed(self.store, version)
                if task == "ranking":
                    scoring.warm_up(RECORD, neighbours, similarities)
        return KnnVersion(k=k, based_on=based_on, task=task, base_users=base_users,
                          base_items=base_items, popular=Fallback(version.popular_items, 0.0),
                          by_base=Fallback(by_base, base_items[by_base]),
                          neighbours=neighbours, similarities=similarities,
                          consumed=consumed)

    def _table(self, version: ModelVersion, n_rows: int, k: int) -> np.ndarray:
        """The whole neighbour table, shape (n_rows, k) of ``RECORD``."""
        rows = read_rows(self.store, version.keys.data("sim"), n_rows)
        width = k * RECORD.itemsize
        if any(row is None or len(row) != width for row in rows):
            raise StoreUnavailable(f"model {version.name!r} version {version.version} has "
                                   "missing or malformed neighbour lists")
        return np.frombuffer(b"".join(rows), dtype=RECORD).reshape(n_rows, k)

    def openapi_fields(self) -> dict[str, Any]:
        """The knn request fields, for :mod:`services.core.openapi`."""
        return {"k_neighbors": integer_field(
            f"neighbours used per item or user (default {self.config.k_neighbors}); more than "
            "the model saved count as all of them", 1)}

    def parse_params(self, body: Mapping[str, Any], version: ModelVersion) -> int:
        k = int_field(body, "k_neighbors", self.config.k_neighbors, 1)
        return min(k, version.extra.k)

    def recommend(self, version: ModelVersion, user: int, params: Any,
                  n_rec: int) -> tuple[np.ndarray, np.ndarray]:
        """Ranking versions held in memory go through the compiled kernels of
        :mod:`services.knn.scoring`; every other case, and answers that could need items no
        neighbour reaches, through :meth:`candidates` and ``rank``."""
        info: KnnVersion = version.extra
        if info.task == "ranking" and info.consumed is not None:
            self.store.check_alive()
            k = int(params)
            total, mark, tick = scoring.scratch(version.n_items)
            own = info.consumed.of(user)
            if info.based_on == "item":
                items, scores = scoring.item_based_top(
                    info.neighbours, info.similarities, own["index"], own["value"], k, n_rec,
                    total, mark, tick)
            else:
                row = info.neighbours[user, :k]
                valid = row >= 0
                items, scores = scoring.user_based_top(
                    row[valid], info.similarities[user, :k][valid], own["index"],
                    info.consumed.records["index"], info.consumed.records["value"],
                    info.consumed.offsets,
                    n_rec, total, mark, tick)
            # items nobody reached score 0: they can only matter when the list runs short
            # or ends below 0 (negative similarities)
            if len(items) == n_rec and scores[-1] >= 0.0:
                return items, scores
        return super().recommend(version, user, params, n_rec)

    def candidates(self, version: ModelVersion, user: int, params: Any,
                   n_rec: int) -> Candidates:
        info: KnnVersion = version.extra
        if info.based_on == "item":
            return self._item_based_scores(version, info, user, int(params))
        return self._user_based_scores(version, info, user, int(params))

    def _item_based_scores(self, version: ModelVersion, info: KnnVersion, user: int,
                           k: int) -> Candidates:
        keys = version.keys
        n_items = version.n_items
        if info.neighbours is not None:
            if info.consumed is not None:
                self.store.check_alive()
                consumed = info.consumed.of(user)
            else:
                own = self.store.command("HGET", keys.data("consumed"), user)
                consumed = np.frombuffer(own or b"", dtype=RECORD)
            exclude = consumed["index"]
            neighbours = info.neighbours[exclude, :k]  # one contiguous copy of the rows
            sims = info.similarities[exclude, :k]
        else:
            own, rows = self.store.run(self._item_based,
                                       [keys.data("consumed"), keys.data("sim")],
                                       [user, k * RECORD.itemsize])
            consumed = np.frombuffer(own, dtype=RECORD)
            exclude = consumed["index"]
            table = np.frombuffer(rows, dtype=RECORD)
            if len(table) != len(consumed) * k:
                raise StoreUnavailable(f"model {version.name!r}: neighbour lists read back "
                                       "with an unexpected size")
            neighbours = np.where(table["index"] < 0, n_items, table["index"])
            sims = table["value"].astype(np.float64)
        rating = info.task == "rating"
        fallback = self._fallback(info, user)
        if len(exclude) == 0:
            return Candidates(_EMPTY_I, _EMPTY_F, exclude, fallback)
        labels = consumed["value"]
        if rating:  # r_ui - b_ui
            labels = labels - (info.base_users[user] + info.base_items[exclude])
        sims = sims.reshape(len(exclude), -1)
        contribution = (sims * labels[:, None]).ravel()  # float64, as sims are
        items, starts, order = group(neighbours.ravel(), n_items + 1)
        total = np.add.reduceat(contribution[order], starts)
        n = len(items) - 1 if items[-1] == n_items else len(items)  # drop the sentinel
        items, total = items[:n], total[:n]
        if not rating:
            return Candidates(items, total, exclude, fallback)
        weight = np.add.reduceat(sims.ravel()[order], starts)[:n]
        return Candidates(items, _with_baseline(info, user, items, total, weight),
                          exclude, fallback)

    def _user_based_scores(self, version: ModelVersion, info: KnnVersion, user: int,
                           k: int) -> Candidates:
        keys = version.keys
        if info.neighbours is not None:
            row = info.neighbours[user, :k]
            valid = row >= 0
            neighbour_ids, neighbour_sims = row[valid], info.similarities[user, :k][valid]
            if info.consumed is not None:
                self.store.check_alive()
                lists = [info.consumed.of(user)]
                lists += [info.consumed.of(v) for v in neighbour_ids.tolist()]
            else:
                found = self.store.command("HMGET", keys.data("consumed"), user,
                                           *neighbour_ids.tolist())
                lists = [np.frombuffer(b or b"", dtype=RECORD) for b in found]
        else:
            found = self.store.run(self._user_based, [keys.data("sim"), keys.data("consumed")],
                                   [user, k])
            row = np.frombuffer(found[1], dtype=RECORD)
            neighbour_ids, neighbour_sims = row["index"], row["value"].astype(np.float64)
            lists = [np.frombuffer(b or b"", dtype=RECORD) for b in (found[0], *found[2:])]
        consumed = lists[0]
        exclude = consumed["index"]
        rating = info.task == "rating"
        fallback = self._fallback(info, user)
        lengths = np.fromiter((len(a) for a in lists[1:]), dtype=np.int64,
                              count=len(lists) - 1)
        if not lengths.any():
            return Candidates(_EMPTY_I, _EMPTY_F, exclude, fallback)
        records = np.concatenate(lists[1:])
        sims = np.repeat(neighbour_sims[:len(lengths)], lengths)
        labels = records["value"].astype(np.float64)
        if rating:  # r_vj - b_vj
            owners = np.repeat(neighbour_ids[:len(lengths)], lengths)
            labels = labels - (info.base_users[owners] + info.base_items[records["index"]])
        items, starts, order = group(records["index"], version.n_items)
        total = np.add.reduceat((sims * labels)[order], starts)
        if not rating:
            return Candidates(items, total, exclude, fallback)
        weight = np.add.reduceat(sims[order], starts)
        return Candidates(items, _with_baseline(info, user, items, total, weight),
                          exclude, fallback)

    @staticmethod
    def _fallback(info: KnnVersion, user: int) -> Fallback:
        """Scores of the items no neighbour reaches: 0, or the baseline ``b_uj``."""
        if info.task != "rating":
            return info.popular
        fb = info.by_base
        return Fallback(fb.items, fb.scores, offset=float(info.base_users[user]))


def _with_baseline(info: KnnVersion, user: int, items: np.ndarray, total: np.ndarray,
                   weight: np.ndarray) -> np.ndarray:
    """``b_uj + total / weight`` with ``weight`` the summed similarities per item."""
    offset = np.divide(total, weight, out=np.zeros_like(total), where=weight > 0)
    return info.base_users[user] + info.base_items[items] + offset
