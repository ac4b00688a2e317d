"""Loaders of the knn family: a ``save_knn`` directory into one Redis version.

A knn version has three parts: ``ids`` (common), ``sim`` and ``consumed``.
:func:`sim2redis` writes ``ids`` and ``sim``, :func:`user_consumed2redis` writes ``ids`` and
``consumed``; whichever runs second (in any order, any process) activates the version.

The ``sim`` part holds the hash ``sim``: inner item (ItemCF) or user (UserCF) -> its ``k``
neighbours as ``RECORD`` bytes (neighbour, similarity), best first, padded with (-1, 0) to a
fixed width of ``8 * k`` bytes; and the strings ``base_users`` and ``base_items``: the rating
baseline ``b_uj = base_users[u] + base_items[j]`` as little-endian float32 (rating models score
neighbours' labels relative to it).
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from libreco.data.data_info import DataInfo
from libreco.utils.artifacts import ArtifactError
from services.core.store import RECORD, RedisClient, VersionWriter
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

PARTS = ("ids", "sim", "consumed")


def sim2redis(path: str | os.PathLike, name: str | None = None,
              client: RedisClient | None = None) -> str:
    """Write the neighbour lists of a ``save_knn`` directory into Redis.

    Parameters
    ----------
    path : str or path
        Directory written by :func:`libreco.utils.save_knn`.
    name : str, optional
        Model name in Redis and in the URL; defaults to the algorithm (``item_cf``).
    client : redis client, optional
        Defaults to ``REDIS_URL`` (``redis://localhost:6379/0``).

    Returns
    -------
    str
        The version id. It becomes active once :func:`user_consumed2redis` ran as well.
    """
    started = time.perf_counter()
    model = open_model(path, family="knn")
    writer = _writer(model, name, get_client(client))
    info = model.data_info()
    write_ids(writer, info)
    if not writer.has_part("sim"):
        base_users, base_items = baseline_tables(info)
        writer.write_part("sim", strings={"base_users": base_users.tobytes(),
                                          "base_items": base_items.tobytes()},
                          hashes={"sim": _neighbour_rows(model, info.n_users, info.n_items)})
    return finish(writer, started)


def user_consumed2redis(path: str | os.PathLike, name: str | None = None,
                        client: RedisClient | None = None) -> str:
    """Write the users' consumed items of a ``save_knn`` directory into Redis.

    Parameters and the returned version id are those of :func:`sim2redis`; the version
    becomes active once both ran.
    """
    started = time.perf_counter()
    model = open_model(path, family="knn")
    writer = _writer(model, name, get_client(client))
    info = model.data_info()
    write_ids(writer, info)
    write_consumed(writer, info)
    return finish(writer, started)


def load_knn(path: str | os.PathLike, name: str | None = None,
             client: RedisClient | None = None) -> str:
    """Both knn loaders, as ``python -m jobs.load`` runs them; returns the version id."""
    client = get_client(client)
    sim2redis(path, name, client)
    return user_consumed2redis(path, name, client)


def knn_section(model: ModelDirectory) -> dict:
    """The manifest's ``knn`` section, checked."""
    section = model.manifest.get("knn")
    if not isinstance(section, dict) or section.get("based_on") not in ("item", "user"):
        raise ArtifactError(f"{model.path}: manifest has no valid 'knn' section "
                            "(write the directory with save_knn)")
    return section


def baseline_tables(info: DataInfo) -> tuple[np.ndarray, np.ndarray]:
    """The rating baseline ``b_uj = base_users[u] + base_items[j]`` the models predict with.

    Computed by :func:`libreco.algorithms._knn.baseline` from the training labels, so that
    the service's rating scores stay those of ``recommend_user``.
    """
    from libreco.algorithms._knn import baseline

    base_users, base_items = baseline(info.user_consumed)
    return np.asarray(base_users, dtype="<f4"), np.asarray(base_items, dtype="<f4")


def _writer(model: ModelDirectory, name: str | None, client: RedisClient) -> VersionWriter:
    section = knn_section(model)
    info = model.manifest.get("data_summary") or {}
    meta = {
        "k": int(section["k"]),
        "based_on": section["based_on"],
        "sim_type": section.get("sim_type", ""),
        "n_users": info.get("n_users", ""),
        "n_items": info.get("n_items", ""),
        "n_interactions": info.get("n_interactions", ""),
    }
    return version_writer(model, model_name(model, name), client, PARTS, meta)


def _neighbour_rows(model: ModelDirectory, n_users: int,
                    n_items: int) -> list[tuple[bytes, bytes]]:
    section = knn_section(model)
    neighbors = model.reader.read_array("knn/neighbors.npy")
    sims = model.reader.read_array("knn/similarities.npy")
    n = n_items if section["based_on"] == "item" else n_users
    k = int(section["k"])
    if neighbors.shape != (n, k) or sims.shape != (n, k):
        raise ArtifactError(f"{model.path}: knn/neighbors.npy and knn/similarities.npy must "
                            f"have shape ({n}, {k}), got {neighbors.shape} and {sims.shape}")
    if neighbors.size and (neighbors.min() < -1 or neighbors.max() >= n):
        raise ArtifactError(f"{model.path}: knn/neighbors.npy holds indices outside [-1, {n})")
    if not np.isfinite(sims).all():
        raise ArtifactError(f"{model.path}: knn/similarities.npy has NaN or infinite values")
    table = np.empty((n, k), dtype=RECORD)
    table["index"] = neighbors
    table["value"] = np.where(neighbors >= 0, sims, 0.0)
    width = k * RECORD.itemsize
    return rows_of(table.tobytes(), np.arange(n + 1, dtype=np.int64) * width)
