"""Loaders of the vector family: a ``save_vector`` directory into one Redis version.

:func:`save_faiss_index` adds a faiss index over the item vectors to the model directory
(``vector/faiss.index``, listed and checksummed in its manifest); :func:`vector2redis` writes
the version. ``python -m jobs.load`` runs both (:func:`load_vector`).

A vector version has four parts:

``ids``, ``consumed``
    The common parts (:mod:`services.loaders.common`).
``vectors``
    Hash ``user_vectors``: inner user -> its ``dim`` components as little-endian float32
    (``4 * dim`` bytes). Strings ``item_vectors:0`` .. ``item_vectors:<n - 1>``: the
    ``(n_items, dim)`` little-endian float32 item matrix in row order, cut into chunks of at
    most :data:`CHUNK_BYTES` (the services join them).
``index``
    Strings ``faiss_index:0`` .. ``faiss_index:<n - 1>``: the bytes of
    ``faiss.serialize_index``, chunked the same way.

The version's ``meta`` hash records ``dim``, ``n_users``, ``n_items``, ``item_chunks``,
``index_chunks``, ``index_type`` and ``index_params`` (JSON), so that a service reads the whole
version in one pipeline and a request needs one round trip (the user's vector and consumed
items, read by one script).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import faiss
import numpy as np

from libreco.utils.artifacts import ArtifactError, ArtifactReader, ArtifactWriter
from libreco.utils.save_vector import ITEM_VECTORS, USER_VECTORS
from services.core.store import RedisClient
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

PARTS = ("ids", "consumed", "vectors", "index")
INDEX_FILE = "vector/faiss.index"
CHUNK_BYTES = 8 << 20
"""Largest Redis value written for item vectors and the index: far below Redis's 512 MB limit,
and small enough that one value does not hold the server for long."""

EXACT_BELOW = 20_000
"""Catalogues smaller than this get an exact index (``Flat``) by default: scanning every item
costs a fraction of a millisecond there (``benchmarks/results/vector_service.md``)."""

PROBE_ONE_IN = 6
"""The default inverted file probes one list in this many."""

SEARCH_PARAMS = ("nprobe", "efSearch", "k_factor", "ht", "max_codes")
BUILD_PARAMS = ("efConstruction",)


# -- faiss index ----------------------------------------------------------------------------
def default_index(n_items: int) -> tuple[str, dict[str, int]]:
    """The index type and search parameters chosen for a catalogue of ``n_items``.

    ``Flat`` (exact) below :data:`EXACT_BELOW` items, otherwise an inverted file with
    ``nlist = 4 sqrt(n_items)`` lists (at most ``n_items / 39``, what k-means needs to train)
    of which a search probes one in :data:`PROBE_ONE_IN`, over 8-bit codes (``SQ8``).

    The codes only choose the candidates: the service scores what the index returns with the
    float32 item vectors, and asks for ``n_rec`` plus the user's consumed items, so an item
    of the exact top ``n_rec`` is missed only when its coded score falls behind that many
    others. The codes are a quarter of the bytes of float32 lists, so probing one list in six
    takes less time than probing one in eight of ``IVF{nlist},Flat``, with higher recall
    (``benchmarks/results/vector_service.md``).
    """
    if n_items < EXACT_BELOW:
        return "Flat", {}
    nlist = ivf_lists(n_items)
    return f"IVF{nlist},SQ8", {"nprobe": max(1, math.ceil(nlist / PROBE_ONE_IN))}


def ivf_lists(n_items: int) -> int:
    """``nlist`` of the default inverted file: ``4 sqrt(n)``, at most ``n / 39``, at least 1."""
    return max(1, min(int(4 * math.sqrt(n_items)), n_items // 39))


def build_index(item_vectors: np.ndarray, index_type: str | None = None,
                **params: int | float) -> tuple[faiss.Index, str, dict[str, Any]]:
    """An inner-product faiss index over ``item_vectors``.

    Parameters
    ----------
    item_vectors : np.ndarray of float32, shape (n_items, dim)
        Row ``i`` is the item of inner index ``i``; faiss ids are the row numbers.
    index_type : str, optional
        A ``faiss.index_factory`` string (``"Flat"``, ``"IVF1024,Flat"``, ``"HNSW32"``,
        ``"IVF{nlist},PQ16"``, ``"IVF{nlist},SQ8"``; ``{nlist}`` becomes the default number
        of lists for the catalogue). Default: :func:`default_index`.
    **params
        faiss parameters: ``nprobe``, ``efSearch`` (and the other search parameters of
        ``faiss.ParameterSpace``) are kept with the index and applied by the service;
        ``efConstruction`` applies while building.

    Returns
    -------
    index : faiss.Index
        Trained, holding every item, metric ``METRIC_INNER_PRODUCT``.
    index_type : str
        The factory string used.
    search_params : dict
        The search parameters, as the service applies them.

    Raises
    ------
    ValueError
        For an unknown index type or parameter, or item vectors of the wrong shape or dtype.
    """
    vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise ValueError(f"item_vectors must have shape (n_items, dim) with both > 0, got "
                         f"{np.shape(item_vectors)}")
    n_items, dim = vectors.shape
    unknown = sorted(set(params) - set(SEARCH_PARAMS) - set(BUILD_PARAMS))
    if unknown:
        raise ValueError(f"unknown faiss parameters {unknown}; known: "
                         f"{sorted(SEARCH_PARAMS + BUILD_PARAMS)}")
    if index_type is None:
        index_type, defaults = default_index(n_items)
        params = {**defaults, **params}
    index_type = index_type.replace("{nlist}", str(ivf_lists(n_items)))
    try:
        index = faiss.index_factory(dim, index_type, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise ValueError(f"faiss cannot build index type {index_type!r}: "
                         f"{_faiss_message(e)}") from None
    build = {k: v for k, v in params.items() if k in BUILD_PARAMS}
    search = {k: v for k, v in params.items() if k in SEARCH_PARAMS}
    set_parameters(index, build)
    t0 = time.perf_counter()
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    set_parameters(index, search)
    log.info("faiss index %s over %d items x %d built in %.2fs", index_type, n_items, dim,
             time.perf_counter() - t0)
    return index, index_type, search


def set_parameters(index: faiss.Index, params: Mapping[str, Any]) -> None:
    """Apply faiss parameters (``{"nprobe": 32}``) to an index, naming a bad one."""
    space = faiss.ParameterSpace()
    for name, value in params.items():
        try:
            space.set_index_parameter(index, name, float(value))
        except RuntimeError:
            raise ValueError(f"faiss parameter {name}={value!r} does not apply to a "
                             f"{type(index).__name__}") from None


def save_faiss_index(path: str | os.PathLike, index_type: str | None = None,
                     **params: int | float) -> dict[str, Any]:
    """Build a faiss index over a ``save_vector`` directory's item vectors and add it there.

    The index is written to ``vector/faiss.index`` and the directory is published again
    through :class:`~libreco.utils.artifacts.ArtifactWriter` (the other files are hard-linked,
    or copied across file systems), so that its manifest lists and checksums the index: the
    directory stays verifiable, and it loads as a new version. Its manifest's ``vector``
    entry gains ``"index": {"file", "type", "params", "n_items", "dim"}``.

    Parameters
    ----------
    path : str or path
        A directory written by :func:`libreco.utils.save_vector`.
    index_type : str, optional
        A ``faiss.index_factory`` string; see :func:`build_index`. Default: exact (``Flat``)
        below :data:`EXACT_BELOW` items, an inverted file above.
    **params
        faiss parameters, e.g. ``nprobe=32`` for ``IVF``, ``efSearch=128`` for ``HNSW``.

    Returns
    -------
    dict
        The manifest's new ``vector["index"]`` entry.

    Examples
    --------
    >>> save_vector("als_model", model, train_data)
    >>> save_faiss_index("als_model", "IVF{nlist},Flat", nprobe=64)
    >>> vector2redis("als_model")
    """
    model = open_model(path, family="vector")
    section = vector_section(model)
    items = item_vectors(model, section)
    index, used_type, search = build_index(items, index_type, **params)
    entry = {"file": INDEX_FILE, "type": used_type, "params": search,
             "n_items": int(items.shape[0]), "dim": int(items.shape[1])}
    republish(model, {"vector": {**section, "index": entry}},
              lambda target: faiss.write_index(index, str(target)), INDEX_FILE)
    log.info("%s: faiss index %s written to %s", model.path, used_type, INDEX_FILE)
    return entry


def republish(model: ModelDirectory, manifest_update: Mapping[str, Any], write: Any,
              new_file: str) -> None:
    """Publish ``model``'s directory again with one more file and updated manifest entries.

    Every listed file but ``new_file`` is hard-linked (copied when linking fails) into the
    new directory; ``write(target_path)`` writes ``new_file``.
    """
    manifest = model.manifest
    kept = {k: v for k, v in manifest.items()
            if k not in ("format_version", "algorithm", "family", "hyperparameters",
                         "data_summary", "metrics", "files")}
    kept.update(manifest_update)
    with ArtifactWriter(model.path, manifest["algorithm"], manifest["family"],
                        manifest.get("hyperparameters"), manifest.get("data_summary"),
                        manifest.get("metrics"), extra=kept) as writer:
        for name in model.reader.files:
            if name == new_file:
                continue
            target = writer.file_path(name)
            try:
                os.link(model.path / name, target)
            except OSError:
                target.write_bytes((model.path / name).read_bytes())
        write(writer.file_path(new_file))
    ArtifactReader(model.path)  # check what was published


def read_index(model: ModelDirectory, n_items: int, dim: int) -> tuple[faiss.Index, str,
                                                                        dict[str, Any]] | None:
    """The index :func:`save_faiss_index` stored in the directory, or None."""
    entry = vector_section(model).get("index")
    if not isinstance(entry, dict) or not model.reader.has(str(entry.get("file"))):
        return None
    index = faiss.read_index(str(model.path / entry["file"]))
    if index.ntotal != n_items or index.d != dim or \
            index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ArtifactError(f"{model.path / entry['file']}: the index holds {index.ntotal} "
                            f"vectors of {index.d} dimensions (metric {index.metric_type}); "
                            f"expected {n_items} x {dim}, inner product. Run save_faiss_index "
                            "again")
    params = dict(entry.get("params") or {})
    set_parameters(index, params)
    return index, str(entry.get("type", "")), params


# -- Redis ----------------------------------------------------------------------------------
def vector2redis(path: str | os.PathLike, name: str | None = None,
                 client: RedisClient | None = None) -> str:
    """Write a ``save_vector`` directory into Redis as a new version, and activate it.

    User vectors go to a hash (one field per user); item vectors and the faiss index are
    stored with the version and read once per version by each service worker. When the
    directory has no index (:func:`save_faiss_index` was not run), the default index for the
    catalogue is built here and stored in Redis only.

    Parameters
    ----------
    path : str or path
        Directory written by :func:`libreco.utils.save_vector` (and, optionally,
        :func:`save_faiss_index`).
    name : str, optional
        Model name in Redis and in the URL; defaults to the algorithm (``als``).
    client : redis client, optional
        Defaults to ``REDIS_URL`` (``redis://localhost:6379/0``).

    Returns
    -------
    str
        The version id (active when this returns).
    """
    started = time.perf_counter()
    model = open_model(path, family="vector")
    section = vector_section(model)
    users = _read_vectors(model, USER_VECTORS, section["n_users"], section["dim"])
    items = item_vectors(model, section)
    stored = read_index(model, *items.shape)
    if stored is None:
        log.info("%s: no faiss index in the directory (see save_faiss_index); building the "
                 "default one", model.path)
        stored = build_index(items)
    index, index_type, search = stored
    index_blob = faiss.serialize_index(index).tobytes()
    item_chunks = chunks(items.astype("<f4", copy=False).tobytes())
    index_chunks = chunks(index_blob)
    meta = {"dim": items.shape[1], "n_users": users.shape[0], "n_items": items.shape[0],
            "item_chunks": len(item_chunks), "index_chunks": len(index_chunks),
            "index_type": index_type, "index_params": search, "metric": "inner_product"}
    info = model.data_info()
    meta["n_interactions"] = len(info.consumed_items)
    if info.n_users != users.shape[0] or info.n_items != items.shape[0]:
        raise ArtifactError(f"{model.path}: vectors for {users.shape[0]} users and "
                            f"{items.shape[0]} items, id maps for {info.n_users} and "
                            f"{info.n_items}")
    writer = version_writer(model, model_name(model, name), get_client(client), PARTS, meta)
    write_ids(writer, info)
    write_consumed(writer, info)
    if not writer.has_part("vectors"):
        width = users.shape[1] * 4
        rows = rows_of(users.astype("<f4", copy=False).tobytes(),
                       np.arange(users.shape[0] + 1, dtype=np.int64) * width)
        writer.write_part("vectors", hashes={"user_vectors": rows},
                          strings={f"item_vectors:{c}": b for c, b in enumerate(item_chunks)})
    if not writer.has_part("index"):
        writer.write_part("index",
                          strings={f"faiss_index:{c}": b for c, b in enumerate(index_chunks)})
    return finish(writer, started)


def load_vector(path: str | os.PathLike, name: str | None = None,
                client: RedisClient | None = None) -> str:
    """What ``python -m jobs.load`` runs for a vector directory; returns the version id.

    Adds the default faiss index to the directory when it has none (when the directory
    cannot be written, :func:`vector2redis` builds the index for Redis only), then runs
    :func:`vector2redis`.
    """
    model = open_model(path, family="vector")
    if not isinstance(vector_section(model).get("index"), dict):
        try:
            save_faiss_index(path)
        except OSError as e:
            log.warning("%s: cannot add the faiss index to the directory (%s); the index is "
                        "built for Redis only", path, e)
    return vector2redis(path, name, client)


# -- helpers --------------------------------------------------------------------------------
def vector_section(model: ModelDirectory) -> dict[str, Any]:
    """The manifest's ``vector`` section, checked."""
    section = model.manifest.get("vector")
    ok = isinstance(section, dict) and all(
        isinstance(section.get(k), int) and section[k] > 0 for k in ("dim", "n_users", "n_items"))
    if not ok:
        raise ArtifactError(f"{model.path}: manifest has no valid 'vector' section (write the "
                            "directory with save_vector)")
    if section.get("metric", "inner_product") != "inner_product":
        raise ArtifactError(f"{model.path}: vector metric {section['metric']!r} is not "
                            "supported (inner_product only)")
    return section


def item_vectors(model: ModelDirectory, section: Mapping[str, Any]) -> np.ndarray:
    """The directory's item vectors, checked: (n_items, dim) float32."""
    return _read_vectors(model, ITEM_VECTORS, section["n_items"], section["dim"])


def _read_vectors(model: ModelDirectory, name: str, n: int, dim: int) -> np.ndarray:
    array = model.reader.read_array(name)
    if array.shape != (n, dim) or array.dtype != np.float32:
        raise ArtifactError(f"{model.path / name}: expected float32 of shape ({n}, {dim}), "
                            f"got {array.dtype} of shape {array.shape}")
    if not np.isfinite(array).all():
        raise ArtifactError(f"{model.path / name}: has NaN or infinite values")
    return np.ascontiguousarray(array)


def chunks(blob: bytes, size: int | None = None) -> list[bytes]:
    """``blob`` cut into pieces of at most ``size`` bytes (default :data:`CHUNK_BYTES`)."""
    size = size or CHUNK_BYTES
    return [blob[start:start + size] for start in range(0, len(blob), size)] or [b""]


def _faiss_message(error: Exception) -> str:
    """faiss's own words without the C++ location (``Error in ... at file:line: <what>``)."""
    text = str(error).strip()
    return text.rsplit(": ", 1)[-1] if text.startswith("Error in ") else text
