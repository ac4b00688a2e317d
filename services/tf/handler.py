"""Scoring of the tf family (WideDeep, FM, DeepFM, YouTubeRanking, AutoInt, DIN).

A request ranks the candidate items for one user with the exported network:

1. one Redis round trip reads the user's consumed items, feature row and (sequence models)
   recent items from the active version (:mod:`services.loaders.tf` writes them); an unknown
   user reads nothing;
2. the request may add ``"user_feats": {column: value}`` (replacing the stored values of those
   columns; an unseen categorical value takes the column's out-of-vocabulary slot) and
   ``"seq": [item, ...]`` (the user's recent items, oldest first, replacing the stored sequence;
   items unknown to the model are dropped, the last ``recent_num`` are used);
3. the candidates are every item the user has not consumed, or with
   ``LIBRECO_TF_CANDIDATES=N`` the ``N`` most popular of them (at least ``n_rec``); their
   inputs are the user's row repeated beside each item's row of the version's item tables,
   which every worker holds in memory, laid out as one columnar batch
   (:mod:`services.tf.inputs`; for TF Serving each item's part of the JSON is rendered once
   per version);
4. TF Serving (``TF_SERVING_URL``) or the SavedModel in the worker (``LIBRECO_MODEL_DIR``)
   scores them in one call (:mod:`services.tf.scoring`), and the best ``n_rec`` are returned.

The request's ``"algo"`` (the guide's request script sends it) is optional; when given it must
be the URL's model name or that model's algorithm (``/din_b/recommend`` with ``"algo": "din"``),
otherwise the answer is a 400 naming the field.

Items in the request's ``seq`` count as consumed and are never recommended. A user unknown to
the model is scored with the unknown-user slot when the request gives something the model reads
(``user_feats`` for a model with user features, ``seq`` for a sequence model); otherwise the
answer is the cold-start one (``LIBRECO_COLD_START``: popular items, or 404).

The scores are the ones ``model.recommend_user`` ranks by: the same inputs go through the
same exported network.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.core import metrics
from services.core.config import Config, ConfigError
from services.core.errors import BadRequest, ServiceError, StoreUnavailable
from services.core.family import Candidates, FamilyHandler
from services.core.store import RECORD
from services.core.versions import ActiveModels, ModelVersion, Store, member_mask
from services.tf.inputs import BatchInputs, InputLayout, RankingBatch, input_spec
from services.tf.scoring import (
    InProcessScorer,
    Probe,
    RestScorer,
    Scorer,
    ServingLink,
)

MAX_SEQ = 1000
"""Longest ``seq`` a request may send."""
FLOAT32_MAX = float(np.finfo(np.float32).max)

# KEYS: the user's hashes (consumed[, user_features][, seq]); ARGV: inner user. One round trip.
READ_USER = """
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HGET', KEYS[i], ARGV[1]) or '' end
return out
"""

_EMPTY = np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class TFSettings:
    """The tf family's own settings (the shared ones are in :class:`Config`).

    Attributes
    ----------
    candidates : int
        ``LIBRECO_TF_CANDIDATES``: rank only the N most popular unconsumed items (at least
        ``n_rec``); 0 (default) ranks every item.
    retries : int
        ``LIBRECO_TF_RETRIES``: further attempts after a refused connection or a 502/503/504
        answer of TF Serving (default 2); a timeout is never retried.
    pool_size : int
        ``LIBRECO_TF_POOL``: keep-alive connections to TF Serving per worker (default 16).
    """

    candidates: int = 0
    retries: int = 2
    pool_size: int = 16

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TFSettings:
        env = os.environ if environ is None else environ
        problems: list[str] = []

        def read(name: str, default: int, lo: int) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = int(raw)
            except ValueError:
                value = lo - 1
            if value < lo:
                problems.append(f"{name}={raw!r}: expected an integer >= {lo}")
                return default
            return value

        d = cls()
        settings = cls(candidates=read("LIBRECO_TF_CANDIDATES", d.candidates, 0),
                       retries=read("LIBRECO_TF_RETRIES", d.retries, 0),
                       pool_size=read("LIBRECO_TF_POOL", d.pool_size, 1))
        if problems:
            raise ConfigError(problems)
        return settings


def make_scorer(config: Config, settings: TFSettings) -> Scorer:
    """TF Serving's REST API when ``TF_SERVING_URL`` is set, else the SavedModels in
    ``LIBRECO_MODEL_DIR``."""
    if config.tf_serving_url:
        return RestScorer(config.tf_serving_url, config.tf_timeout, settings.retries,
                          settings.pool_size)
    if config.model_dir:
        return InProcessScorer(config.model_dir)
    raise ConfigError(["TF_SERVING_URL and LIBRECO_MODEL_DIR are both unset: expected "
                       "TF_SERVING_URL=http://host:8501 (TF Serving's REST port) or "
                       "LIBRECO_MODEL_DIR=<the folder given to save_model_tf_serving>"])


@dataclass(frozen=True)
class ModelSpec:
    """What a version's ``tf_spec`` says about building the model's inputs."""

    inputs: dict[str, str]  # name -> dtype
    n_users: int
    n_items: int
    n_user_sparse: int
    n_user_dense: int
    n_item_sparse: int
    n_item_dense: int
    recent_num: int
    pad_index: int
    serving_name: str
    sparse_cols: dict[str, tuple[int, int, dict, int]]
    """User categorical column -> (position, offset, value -> position in vocabulary, size)."""
    dense_cols: dict[str, tuple[int, float, float]]
    """User numeric column -> (position, mean, std)."""
    item_cols: frozenset[str]

    @classmethod
    def from_json(cls, doc: dict[str, Any], n_users: int, n_items: int) -> ModelSpec:
        inputs = {name: d["dtype"] for name, d in doc["inputs"].items()}
        if (doc["unknown_user_index"], doc["unknown_item_index"]) != (n_users, n_items):
            raise ValueError("the unknown-user and unknown-item indices do not match the ids")
        sparse_cols = {}
        for pos, col in enumerate(doc.get("user_sparse_cols") or []):
            vocab = doc["user_sparse_vocab"][col]
            lookup: dict = {}
            for i, v in enumerate(vocab["values"]):
                lookup.setdefault(v, i)
                lookup.setdefault(str(v), i)
            sparse_cols[col] = (pos, int(vocab["offset"]), lookup, len(vocab["values"]))
        dense_cols = {}
        for pos, col in enumerate(doc.get("user_dense_cols") or []):
            scale = doc["user_dense_scale"][col]
            dense_cols[col] = (pos, float(scale["mean"]), float(scale["std"]) or 1.0)
        recent = int(doc.get("recent_num") or 0) if "seq" in inputs else 0
        spec = cls(inputs=inputs, n_users=n_users, n_items=n_items,
                   n_user_sparse=len(sparse_cols), n_user_dense=len(dense_cols),
                   n_item_sparse=int(doc.get("n_item_sparse", 0)),
                   n_item_dense=int(doc.get("n_item_dense", 0)),
                   recent_num=recent, pad_index=int(doc.get("pad_index") or n_items + 1),
                   serving_name=str(doc["serving_name"]), sparse_cols=sparse_cols,
                   dense_cols=dense_cols,
                   item_cols=frozenset((doc.get("item_sparse_cols") or [])
                                       + (doc.get("item_dense_cols") or [])))
        n_sparse, n_dense = spec.n_user_sparse + spec.n_item_sparse, \
            spec.n_user_dense + spec.n_item_dense
        if ("sparse_indices" in inputs) != (n_sparse > 0) or \
                ("dense_values" in inputs) != (n_dense > 0):
            raise ValueError("the inputs do not match the feature columns")
        return spec

    @property
    def uses_sequence(self) -> bool:
        return self.recent_num > 0

    @property
    def has_user_features(self) -> bool:
        return bool(self.sparse_cols or self.dense_cols)

    def unknown_user_row(self) -> tuple[np.ndarray, np.ndarray]:
        """The unknown user's categorical indices (every column's OOV slot) and numeric values
        (0, the training mean)."""
        sparse = np.empty(self.n_user_sparse, dtype=np.int32)
        for pos, offset, _, size in self.sparse_cols.values():
            sparse[pos] = offset + size
        return sparse, np.zeros(self.n_user_dense, dtype=np.float32)


@dataclass
class TFVersion:
    """A version's tf data, held in memory by each worker.

    Attributes
    ----------
    spec : ModelSpec
    layout : InputLayout
        The item tables (``item_sparse`` int32 of shape (n_items + 1, n_item_sparse),
        ``item_dense`` float32 of shape (n_items + 1, n_item_dense)) and how a request's
        batch becomes model inputs.
    link : ServingLink
        The exported version this Redis version scores with.
    """

    spec: ModelSpec
    layout: InputLayout
    link: ServingLink
    item_lookup: dict = field(default_factory=dict, repr=False)

    def item_index(self, item: Any) -> int:
        idx = self.item_lookup.get(item) if isinstance(item, (str, int)) else None
        if idx is None:
            idx = self.item_lookup.get(str(item), -1)
        return idx


@dataclass(frozen=True)
class TFRequest:
    """The tf fields of one request, checked against the version's model."""

    seq: np.ndarray | None = None
    """Inner indices of the request's known ``seq`` items, oldest first."""
    sparse: dict[int, int] = field(default_factory=dict)
    """User categorical position -> global index, from ``user_feats``."""
    dense: dict[int, float] = field(default_factory=dict)
    """User numeric position -> standardised value, from ``user_feats``."""

    def personal(self, spec: ModelSpec) -> bool:
        """Whether an unknown user can be scored: the request gives what the model reads."""
        return bool(self.sparse or self.dense) or (
            spec.uses_sequence and self.seq is not None and len(self.seq) > 0)


class TFHandler(FamilyHandler):
    """The tf family; see the module docstring."""

    family = "tf"
    scores_unknown_users = True

    def __init__(self, store: Store, config: Config):
        super().__init__(store, config)
        self.settings = TFSettings.from_env(config.environ or None)
        self.scorer = make_scorer(config, self.settings)
        self._read_user = store.script(READ_USER)

    # -- per version ----------------------------------------------------------------------------
    def load_version(self, version: ModelVersion) -> TFVersion:
        keys = version.keys
        raw_spec, raw_sparse, raw_dense, raw_probe = self.store.pipeline_execute(
            [("get", (keys.data(k),)) for k in ("tf_spec", "item_sparse", "item_dense",
                                                  "probe")], what="version read")
        bad = f"model {version.name!r} version {version.version} has invalid tf data"
        try:
            spec = ModelSpec.from_json(json.loads(raw_spec), version.n_users, version.n_items)
            rows = version.n_items + 1
            item_sparse = np.frombuffer(raw_sparse, dtype="<i4").reshape(rows,
                                                                         spec.n_item_sparse)
            item_dense = np.frombuffer(raw_dense, dtype="<f4").reshape(rows, spec.n_item_dense)
            probe = Probe.from_json(raw_probe, spec.inputs) if raw_probe is not None else None
            layout = InputLayout(input_spec(spec.inputs, spec.n_user_sparse, spec.n_item_sparse,
                                            spec.n_user_dense, spec.n_item_dense,
                                            spec.recent_num, spec.pad_index),
                                 item_sparse, item_dense)
            if isinstance(self.scorer, RestScorer):
                layout.fragments()  # the items' JSON text, before the first request needs it
        except (TypeError, ValueError, KeyError) as e:
            raise StoreUnavailable(f"{bad} ({type(e).__name__}: {e})") from None
        lookup: dict = {}
        for i, item in enumerate(version.item_ids):
            lookup.setdefault(item, i)
        for i, item in enumerate(version.item_ids):
            lookup.setdefault(str(item), i)
        link = ServingLink(self.scorer, spec.serving_name, probe, self.config.poll_interval)
        return TFVersion(spec, layout, link, lookup)

    def check_ready(self, models: ActiveModels, names: Sequence[str]) -> None:
        """Ready when each active model has an exported version to score with (TF Serving
        reports it AVAILABLE, or its SavedModel loads)."""
        for name in names:
            models.get(name).extra.link.check_ready()

    # -- per request ----------------------------------------------------------------------------
    def openapi_fields(self) -> dict[str, Any]:
        """The tf request fields, for :mod:`services.core.openapi`."""
        item_id = {"type": ["string", "number"]}
        return {
            "algo": {"type": ["string", "null"],
                     "description": "optional; when given, the URL's model name or its "
                                    "algorithm (\"din\"), otherwise 400"},
            "seq": {"description": "the user's recent items (original ids), oldest first, "
                                   "replacing the stored sequence; unknown items are dropped",
                    "anyOf": [{"type": "array", "items": item_id, "maxItems": MAX_SEQ},
                              {"type": "null"}]},
            "user_feats": {"description": "user feature column -> value, replacing the stored "
                                          "values; columns must be the model's user features "
                                          "(400 otherwise), numeric ones take numbers",
                           "anyOf": [{"type": "object",
                                      "additionalProperties": {"type": ["string", "number",
                                                                        "null"]}},
                                     {"type": "null"}]},
        }

    def parse_params(self, body: Mapping[str, Any], version: ModelVersion) -> TFRequest:
        tv: TFVersion = version.extra
        _check_algo(body.get("algo"), version)
        seq = _parse_seq(body.get("seq"), tv)
        sparse, dense = _parse_user_feats(body.get("user_feats"), tv.spec)
        return TFRequest(seq=seq, sparse=sparse, dense=dense)

    def candidates(self, version: ModelVersion, user: int, params: Any,
                   n_rec: int) -> Candidates:
        tv: TFVersion = version.extra
        spec = tv.spec
        req: TFRequest = params
        if user < 0 and not req.personal(spec):
            return self._cold_start(version, n_rec)
        if user >= 0:
            consumed, user_sparse, user_dense, seq = self._read(version, tv, user)
        else:
            consumed = _EMPTY
            user_sparse, user_dense = spec.unknown_user_row()
            seq = np.empty(0, dtype=np.int32)
        for pos, value in req.sparse.items():
            user_sparse[pos] = value
        for pos, value in req.dense.items():
            user_dense[pos] = value
        exclude = consumed
        if req.seq is not None:
            seq = req.seq
            exclude = np.concatenate([consumed, req.seq.astype(np.int64)])
        items = self._candidate_items(version, exclude, n_rec)
        batch = RankingBatch(spec.n_users if user < 0 else user, items, user_sparse, user_dense,
                             seq)
        scores = tv.link.score(BatchInputs(tv.layout, batch))
        return Candidates(items, scores.astype(np.float64), exclude)

    def _cold_start(self, version: ModelVersion, n_rec: int) -> Candidates:
        if self.config.cold_start == "404":
            raise ServiceError(404, f"the user is not known to model {version.name!r}; send "
                               "'user_feats' or 'seq' to score an unknown user", field="user")
        metrics.cold_start(version.name)
        items, scores = version.popular(n_rec)
        return Candidates(items, scores, _EMPTY)

    def _read(self, version: ModelVersion, tv: TFVersion,
              user: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The user's consumed items, feature row (writable copies) and stored sequence."""
        spec, keys = tv.spec, version.keys
        names = ["consumed"]
        if spec.has_user_features:
            names.append("user_features")
        if spec.uses_sequence:
            names.append("seq")
        found = dict(zip(names, self.store.run(self._read_user, [keys.data(n) for n in names],
                                               [user])))
        consumed = np.frombuffer(found["consumed"], dtype=RECORD)["index"].astype(np.int64)
        row = found.get("user_features", b"")
        width = 4 * (spec.n_user_sparse + spec.n_user_dense)
        if len(row) != width:
            raise StoreUnavailable(f"model {version.name!r} version {version.version}: the "
                                   f"feature row of user {user} is missing or malformed")
        split = 4 * spec.n_user_sparse
        user_sparse = np.frombuffer(row[:split], dtype="<i4").astype(np.int32)
        user_dense = np.frombuffer(row[split:], dtype="<f4").astype(np.float32)
        seq = np.frombuffer(found.get("seq", b""), dtype="<i4").astype(np.int32)
        return consumed, user_sparse, user_dense, seq

    def _candidate_items(self, version: ModelVersion, exclude: np.ndarray,
                         n_rec: int) -> np.ndarray:
        cap = self.settings.candidates
        if cap and cap < version.n_items:
            pool = version.popular_items[:max(cap, n_rec) + len(exclude)]
        else:
            pool = np.arange(version.n_items, dtype=np.int64)
        if len(exclude):
            pool = pool[~member_mask(pool, exclude)]
        return pool.astype(np.int64, copy=False)


def _check_algo(value: Any, version: ModelVersion) -> None:
    """``algo`` is optional; when given it must name the URL's model or its algorithm."""
    if value is None or value in (version.name, version.algorithm):
        return
    raise BadRequest(f"'algo' is {json.dumps(value)[:64]} but the URL names model {version.name!r} "
                     f"({version.algorithm}); send the model's name or leave 'algo' out",
                     field="algo")


def _parse_seq(value: Any, tv: TFVersion) -> np.ndarray | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise BadRequest("'seq' must be a JSON array of item ids, oldest first", field="seq")
    if len(value) > MAX_SEQ:
        raise BadRequest(f"'seq' may hold at most {MAX_SEQ} items, got {len(value)}",
                         field="seq")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (str, int, float)) or (
                isinstance(item, float) and not math.isfinite(item)):
            raise BadRequest("'seq' must hold item ids (strings or numbers)", field="seq")
    known = [i for i in (tv.item_index(item) for item in value) if i >= 0]
    return np.asarray(known, dtype=np.int32)


def _parse_user_feats(value: Any, spec: ModelSpec) -> tuple[dict[int, int], dict[int, float]]:
    if value is None:
        return {}, {}
    if not isinstance(value, dict):
        raise BadRequest("'user_feats' must be a JSON object of user feature column -> value",
                         field="user_feats")
    sparse: dict[int, int] = {}
    dense: dict[int, float] = {}
    for col, v in value.items():
        if col in spec.sparse_cols:
            if v is None:
                continue
            if isinstance(v, (dict, list)):
                raise BadRequest(f"'user_feats.{col}' must be a string or a number",
                                 field="user_feats")
            pos, offset, lookup, size = spec.sparse_cols[col]
            found = lookup.get(v) if isinstance(v, (str, int, float)) else None
            if found is None:
                found = lookup.get(str(v), size)  # unseen value: the column's OOV slot
            sparse[pos] = offset + found
        elif col in spec.dense_cols:
            if v is None:
                continue
            try:
                number = float(v) if not isinstance(v, bool) else math.nan
            except (TypeError, ValueError, OverflowError):  # 10**400 does not fit a float
                number = math.nan
            pos, mean, std = spec.dense_cols[col]
            scaled = (number - mean) / std
            if not math.isfinite(number) or not abs(scaled) <= FLOAT32_MAX:
                raise BadRequest(f"'user_feats.{col}' must be a finite number within float32 "
                                 "range", field="user_feats")
            dense[pos] = scaled
        else:
            known = sorted([*spec.sparse_cols, *spec.dense_cols])
            what = "an item feature" if col in spec.item_cols else "not a feature"
            listed = ", ".join(known) if known else "none"
            raise BadRequest(f"'user_feats' field {str(col)[:64]!r} is {what} of this model's "
                             f"users (user features: {listed})", field="user_feats")
    return sparse, dense
