"""Loaders of the tf family: a ``save_info`` directory into one Redis version.

A tf version has the common parts ``ids`` and ``consumed``, the part ``features`` and, for the
models that read a behaviour sequence (DIN, YouTubeRanking), the part ``seq``.
:func:`data_info2redis` writes ``ids``, ``consumed`` and ``features``; :func:`seq2redis` writes
``ids`` and ``seq``; the version becomes active when every part it needs is in, whichever call
comes last.

Keys of the ``features`` part (numbers are little-endian numpy bytes):

``tf_spec``
    JSON: the manifest's ``"tf"`` entry (signature, inputs, unknown-user and unknown-item
    indices, feature columns, ``recent_num``, ``pad_index``), the name of the model in TF
    Serving and under ``LIBRECO_MODEL_DIR`` (``serving_name``), and what the service needs to
    turn request features into model inputs: for each user categorical column its vocabulary
    and global offset, for each user numeric column its training mean and standard deviation.
``item_sparse``
    int32, shape (n_items + 1, n_item_sparse): global categorical indices of every item's
    features, the last row for the unknown item.
``item_dense``
    float32, shape (n_items + 1, n_item_dense): standardised numeric item features.
``user_features``
    Hash, only when the model has user features: inner user -> the user's categorical indices
    (int32, ``n_user_sparse`` of them) followed by the numeric values (float32,
    ``n_user_dense``), one fixed-width row.
``probe``
    JSON ``{"inputs": {name: rows}, "scores": [...]}``: a few input rows and the scores this
    model directory's parameters give them. The service compares them with what a SavedModel
    answers to pick the exported version that belongs to this Redis version, so a response
    never mixes one version's features with another version's network. Written when
    TensorFlow is installed where the loader runs.

Key of the ``seq`` part:

``seq``
    Hash: inner user -> the user's ``recent_num`` most recent training items (int32, fewer when
    the user has fewer), oldest first, without padding.

The service holds ``tf_spec``, the item tables and the probe in memory per active version and
reads a user's ``consumed``, ``user_features`` and ``seq`` fields in one round trip per request.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import numpy as np

from libreco.data.data_info import DataInfo
from libreco.utils.artifacts import ArtifactError
from services.core.store import RedisClient, VersionWriter
from services.loaders.common import (
    ModelDirectory,
    finish,
    get_client,
    model_name,
    open_model,
    rows_of,
    version_writer,
    write_consumed,
    write_ids,
)

log = logging.getLogger("libreco.services")

PROBE_ROWS = 16
"""Input rows of the probe that ties a Redis version to its SavedModel version."""


def data_info2redis(path: str | os.PathLike, name: str | None = None,
                    client: RedisClient | None = None, *,
                    serving_name: str | None = None) -> str:
    """Write what the tf service needs per user and per version from a ``save_info`` directory.

    Parameters
    ----------
    path : str or path
        Directory written by :func:`libreco.utils.save_info`.
    name : str, optional
        Model name in Redis and in the URL; defaults to the algorithm (``deepfm``).
    client : redis client, optional
        Defaults to ``REDIS_URL`` (``redis://localhost:6379/0``).
    serving_name : str, optional
        The model's name in TF Serving and its folder under ``LIBRECO_MODEL_DIR`` (the
        ``model_name`` given to :func:`libreco.utils.save_model_tf_serving`); defaults to the
        algorithm.

    Returns
    -------
    str
        The version id. For DIN and YouTubeRanking it becomes active once :func:`seq2redis`
        ran as well.
    """
    started = time.perf_counter()
    model = open_model(path, family="tf")
    writer = _writer(model, name, get_client(client))
    info = model.data_info()
    write_ids(writer, info)
    write_consumed(writer, info)
    if not writer.has_part("features"):
        _write_features(writer, model, info, serving_name or model.algorithm)
    return finish(writer, started)


def seq2redis(path: str | os.PathLike, name: str | None = None,
              client: RedisClient | None = None) -> str:
    """Write each user's most recent items for the sequence models (DIN, YouTubeRanking).

    The length is the model's ``recent_num`` (the ``"tf"`` entry of its manifest). Parameters
    and the returned version id are those of :func:`data_info2redis`; the version becomes
    active once both ran.

    Raises
    ------
    ValueError
        When the model reads no behaviour sequence.
    """
    started = time.perf_counter()
    model = open_model(path, family="tf")
    spec = tf_section(model)
    if not uses_sequence(spec):
        raise ValueError(f"{model.path}: {model.algorithm} reads no behaviour sequence; "
                         "only data_info2redis is needed")
    writer = _writer(model, name, get_client(client))
    info = model.data_info()
    write_ids(writer, info)
    if not writer.has_part("seq"):
        r = int(spec["recent_num"])
        blob, offsets = recent_items(info, r)
        writer.write_part("seq", hashes={"seq": rows_of(blob, offsets)})
    return finish(writer, started)


def load_tf(path: str | os.PathLike, name: str | None = None,
            client: RedisClient | None = None) -> str:
    """The tf loaders, as ``python -m jobs.load`` runs them; returns the version id."""
    client = get_client(client)
    version = data_info2redis(path, name, client)
    if uses_sequence(tf_section(open_model(path, family="tf"))):
        version = seq2redis(path, name, client)
    return version


# -- the manifest's "tf" entry -----------------------------------------------------------------
def tf_section(model: ModelDirectory) -> dict[str, Any]:
    """The manifest's ``"tf"`` entry, checked."""
    spec = model.manifest.get("tf")
    if not isinstance(spec, dict) or not isinstance(spec.get("inputs"), dict):
        raise ArtifactError(f"{model.path}: manifest has no valid 'tf' entry (write the "
                            "directory with save_info)")
    return spec


def uses_sequence(spec: dict[str, Any]) -> bool:
    return spec.get("recent_num") is not None and "seq" in spec["inputs"]


def parts_of(spec: dict[str, Any]) -> tuple[str, ...]:
    return ("ids", "consumed", "features", "seq") if uses_sequence(spec) else \
        ("ids", "consumed", "features")


def _writer(model: ModelDirectory, name: str | None, client: RedisClient) -> VersionWriter:
    spec = tf_section(model)
    summary = model.manifest.get("data_summary") or {}
    meta = {
        "n_users": summary.get("n_users", ""),
        "n_items": summary.get("n_items", ""),
        "uses_sequence": uses_sequence(spec),
        "recent_num": spec.get("recent_num") or 0,
    }
    return version_writer(model, model_name(model, name), client, parts_of(spec), meta)


# -- the features part -------------------------------------------------------------------------
def service_spec(model: ModelDirectory, info: DataInfo, serving_name: str) -> dict[str, Any]:
    """``tf_spec``: the manifest's entry plus how request features become model inputs."""
    spec = dict(tf_section(model))
    feats = info.features
    user_sparse = list(spec.get("user_sparse_cols") or [])
    user_dense = list(spec.get("user_dense_cols") or [])
    if (info.user_sparse.shape[1], info.user_dense.shape[1]) != (len(user_sparse),
                                                                 len(user_dense)):
        raise ArtifactError(f"{model.path}: the 'tf' entry's user feature columns do not match "
                            "the saved feature tables")
    if (spec.get("unknown_user_index"), spec.get("unknown_item_index")) != (info.n_users,
                                                                             info.n_items):
        raise ArtifactError(f"{model.path}: the 'tf' entry's unknown-user and unknown-item "
                            "indices do not match the saved ids")
    spec["serving_name"] = serving_name
    spec["user_sparse_vocab"] = {c: {"offset": feats.offsets[c], "values": feats.vocab[c]}
                                 for c in user_sparse}
    spec["user_dense_scale"] = {c: {"mean": feats.dense_mean[c], "std": feats.dense_std[c]}
                                for c in user_dense}
    spec["n_item_sparse"] = int(info.item_sparse.shape[1])
    spec["n_item_dense"] = int(info.item_dense.shape[1])
    return spec


def user_feature_rows(info: DataInfo) -> tuple[bytes, np.ndarray]:
    """Every known user's feature row as bytes, and the row offsets (``rows_of`` input)."""
    n = info.n_users
    sparse = np.ascontiguousarray(info.user_sparse[:n], dtype="<i4").view(np.uint8)
    dense = np.ascontiguousarray(info.user_dense[:n], dtype="<f4").view(np.uint8)
    table = np.concatenate([sparse.reshape(n, -1), dense.reshape(n, -1)], axis=1)
    width = table.shape[1]
    return table.tobytes(), np.arange(n + 1, dtype=np.int64) * width


def recent_items(info: DataInfo, recent_num: int) -> tuple[bytes, np.ndarray]:
    """Each user's last ``recent_num`` consumed items (int32 bytes) and the row offsets."""
    indptr = info.consumed_indptr
    ends = indptr[1:]
    starts = np.maximum(indptr[:-1], ends - recent_num)
    lengths = ends - starts
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    # positions starts[u] .. ends[u] - 1 of every user, concatenated
    pos = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1] - starts, lengths)
    items = info.consumed_items[pos].astype("<i4")
    return items.tobytes(), offsets * 4


def _write_features(writer: VersionWriter, model: ModelDirectory, info: DataInfo,
                    serving_name: str) -> None:
    spec = service_spec(model, info, serving_name)
    strings = {
        "tf_spec": json.dumps(spec, ensure_ascii=False).encode(),
        "item_sparse": np.ascontiguousarray(info.item_sparse, dtype="<i4").tobytes(),
        "item_dense": np.ascontiguousarray(info.item_dense, dtype="<f4").tobytes(),
    }
    probe = probe_scores(model)
    if probe is not None:
        strings["probe"] = json.dumps(probe).encode()
    hashes = {}
    if spec.get("user_sparse_cols") or spec.get("user_dense_cols"):
        blob, offsets = user_feature_rows(info)
        hashes["user_features"] = rows_of(blob, offsets)
    writer.write_part("features", strings=strings, hashes=hashes)


def probe_scores(model: ModelDirectory) -> dict[str, Any] | None:
    """A few input rows and the scores the directory's parameters give them.

    Rows pair users spread over the user range (and the unknown user) with items spread over
    the item range; sequence models get each user's training sequence. Returns None (the
    service then uses the newest SavedModel) when TensorFlow is not installed here.
    """
    try:
        import tensorflow as tf
    except ImportError:
        log.warning("%s: TensorFlow is not installed, so no probe is stored; the service will "
                    "use the newest SavedModel version", model.path)
        return None
    from libreco.algorithms import Recommender

    fitted = Recommender.load(model.path)
    info = fitted.data_info
    rng = np.random.default_rng(0)
    users = rng.integers(0, info.n_users + 1, PROBE_ROWS).astype(np.int32)
    items = rng.integers(0, info.n_items, PROBE_ROWS).astype(np.int32)
    users[0] = info.n_users  # the unknown user's row is part of the network too
    x = fitted.build_inputs(users, items)
    _, predict = fitted.serving_module()
    scores = predict({k: tf.constant(v) for k, v in x.items()})["score"].numpy()
    return {"inputs": {k: v.tolist() for k, v in x.items()},
            "scores": np.asarray(scores, dtype=np.float64).tolist()}

