"""The vector loaders: faiss indexes in model directories, the Redis layout, faiss recall."""

from __future__ import annotations

import json
import os
import threading

import faiss
import numpy as np
import pytest

from libreco.algorithms import Recommender
from libreco.utils import save_vector
from libreco.utils.artifacts import ArtifactError, ArtifactReader
from services.core.store import RECORD, ModelKeys, VersionKeys, unpack_records
from services.loaders import family_loader
from services.loaders import vector as loader
from services.loaders.vector import (
    build_index,
    load_vector,
    save_faiss_index,
    vector2redis,
)
from services.vector.handler import VectorVersion, exact, search
from tests.services.test_vector_service import VectorModels


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> VectorModels:
    return VectorModels(tmp_path_factory.mktemp("vector_loader"), seed=8)


def clustered(n: int, dim: int, rng: np.random.Generator, n_clusters: int = 50) -> np.ndarray:
    """Vectors around ``n_clusters`` random centres, with spread norms."""
    centres = rng.standard_normal((n_clusters, dim))
    points = centres[rng.integers(0, n_clusters, n)] + 0.4 * rng.standard_normal((n, dim))
    return (points * rng.uniform(0.5, 1.5, (n, 1))).astype(np.float32)


def test_family_registry():
    assert family_loader("vector") is load_vector


def test_index_in_the_model_directory(models, tmp_path):
    path = tmp_path / "als"
    model = models.models["als"]
    save_vector(path, model, models.train)
    before = json.loads((path / "manifest.json").read_text())
    entry = save_faiss_index(path)
    assert entry == {"file": "vector/faiss.index", "type": "Flat", "params": {},
                     "n_items": models.info.n_items, "dim": before["vector"]["dim"]}
    reader = ArtifactReader(path)  # every file, the index included, checks out
    assert reader.has("vector/faiss.index")
    after = reader.manifest
    assert after["vector"] == {**before["vector"], "index": entry}
    for key in ("algorithm", "family", "created_at", "hyperparameters", "data_summary"):
        assert after[key] == before[key]
    assert set(after["files"]) == set(before["files"]) | {"vector/faiss.index"}
    index = faiss.read_index(str(path / "vector/faiss.index"))
    assert index.ntotal == models.info.n_items
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT
    user = models.info.id2user[0]
    assert Recommender.load(path).recommend_user(user, 5) == model.recommend_user(user, 5)

    entry = save_faiss_index(path, "HNSW16", efSearch=40, efConstruction=60)
    assert entry["type"] == "HNSW16" and entry["params"] == {"efSearch": 40}
    index = faiss.read_index(str(path / "vector/faiss.index"))
    assert index.hnsw.efSearch == 40 and index.hnsw.efConstruction == 60
    ArtifactReader(path)
    with pytest.raises(ValueError, match="cannot build index type 'Bogus7'"):
        save_faiss_index(path, "Bogus7")
    with pytest.raises(ValueError, match="unknown faiss parameters"):
        save_faiss_index(path, "Flat", n_probe=3)
    with pytest.raises(ValueError, match="nprobe"):
        save_faiss_index(path, "Flat", nprobe=3)
    ArtifactReader(path)  # failed builds left the directory as it was


def test_default_index_by_catalogue_size():
    assert loader.default_index(loader.EXACT_BELOW - 1) == ("Flat", {})
    index_type, params = loader.default_index(100_000)
    nlist = loader.ivf_lists(100_000)
    assert index_type == f"IVF{nlist},SQ8" and 1 <= params["nprobe"] < nlist
    assert 100_000 // nlist >= 39  # enough points per list to train k-means
    vectors = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="shape"):
        build_index(vectors[0])


def test_redis_layout(models, redis_client, tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "CHUNK_BYTES", 4096)  # several chunks per value
    path = tmp_path / "svd"
    save_vector(path, models.models["svd"], models.train)
    version = vector2redis(path, client=redis_client)
    assert not (path / "vector/faiss.index").exists()  # built for Redis only
    assert redis_client.get(ModelKeys("svd").active).decode() == version
    keys = VersionKeys("svd", version)
    meta = {k.decode(): v.decode() for k, v in redis_client.hgetall(keys.meta).items()}
    users = np.load(path / "vector/user_vectors.npy")
    items = np.load(path / "vector/item_vectors.npy")
    n_chunks = -(-items.nbytes // 4096)
    assert meta["dim"] == str(items.shape[1]) and meta["item_chunks"] == str(n_chunks)
    assert meta["index_type"] == "Flat" and json.loads(meta["index_params"]) == {}
    assert set(json.loads(meta["parts"])) == {"ids", "consumed", "vectors", "index"}

    for u in (0, 7, models.info.n_users - 1):
        raw = redis_client.hget(keys.data("user_vectors"), str(u))
        np.testing.assert_array_equal(np.frombuffer(raw, dtype="<f4"), users[u])
        consumed = unpack_records(redis_client.hget(keys.data("consumed"), str(u)))
        np.testing.assert_array_equal(consumed["index"], models.info.consumed(u))
    assert redis_client.hlen(keys.data("user_vectors")) == models.info.n_users
    assert all(redis_client.strlen(keys.data(f"item_vectors:{c}")) <= 4096
               for c in range(n_chunks))
    joined = b"".join(redis_client.get(keys.data(f"item_vectors:{c}"))
                      for c in range(n_chunks))
    np.testing.assert_array_equal(np.frombuffer(joined, dtype="<f4").reshape(items.shape),
                                  items)
    blob = b"".join(redis_client.get(keys.data(f"faiss_index:{c}"))
                    for c in range(int(meta["index_chunks"])))
    index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
    assert index.ntotal == len(items)
    popular = unpack_records(redis_client.get(keys.data("popular")))
    assert popular.dtype == RECORD
    np.testing.assert_array_equal(popular["index"], models.info.popular_items())

    # a second run finds every part written and checked
    written = redis_client.hgetall(keys.parts)
    assert vector2redis(path, client=redis_client) == version
    assert redis_client.hgetall(keys.parts) == written


def test_load_vector_when_the_directory_cannot_be_written(models, redis_client, tmp_path,
                                                         monkeypatch):
    path = tmp_path / "als"
    save_vector(path, models.models["als"], models.train)

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(loader, "save_faiss_index", read_only)
    version = load_vector(path, client=redis_client)
    assert redis_client.get(ModelKeys("als").active).decode() == version
    assert not (path / "vector/faiss.index").exists()
    meta = redis_client.hgetall(VersionKeys("als", version).meta)
    assert meta[b"index_type"] == b"Flat"


def test_wrong_family_and_damaged_vectors(models, redis_client, knn_models, tmp_path):
    with pytest.raises(ArtifactError, match="knn"):
        vector2redis(knn_models.paths["item_cf"], client=redis_client)
    path = tmp_path / "als"
    save_vector(path, models.models["als"], models.train)
    with open(path / "vector/item_vectors.npy", "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\x00\x00\xc0\x7f")  # a NaN, behind the manifest's back
    with pytest.raises(ArtifactError, match="sha256"):
        vector2redis(path, client=redis_client)
    assert redis_client.keys("*") == []


def test_faiss_recall_at_10_against_exact_search():
    """The default index of a 20,000 x 32 catalogue (an inverted file) finds at least 95% of
    the exact top 10, through the service's own search and exclusion of consumed items."""
    rng = np.random.default_rng(3)
    items = clustered(20_000, 32, rng)
    users = clustered(300, 32, rng)
    index, index_type, _ = build_index(items)
    assert index_type.startswith("IVF")
    faiss.omp_set_num_threads(1)
    version = VectorVersion(dim=32, item_vectors=items, index=index, index_type=index_type,
                            exact_index=False)
    hits = 0
    for u, vector in enumerate(users):
        consumed = rng.choice(len(items), size=u % 40, replace=False).astype(np.int64)
        approx = search(version, vector, consumed, 10)
        truth = exact(version, vector, consumed, 10)
        assert approx is not None and not np.isin(approx.items, consumed).any()
        hits += len(np.intersect1d(approx.items[np.argsort(-approx.scores)[:10]],
                                   truth.items))
    assert hits / (10 * len(users)) >= 0.95


def test_search_stays_on_the_calling_thread():
    """OpenMP's thread count is per thread: a request thread started after the service's
    set-up still searches on one thread."""
    rng = np.random.default_rng(5)
    items = clustered(2_000, 8, rng)
    index, index_type, _ = build_index(items, "IVF8,Flat", nprobe=2)
    version = VectorVersion(dim=8, item_vectors=items, index=index, index_type=index_type,
                            exact_index=False)
    seen = []

    def request() -> None:
        search(version, items[0], np.zeros(0, dtype=np.int64), 5)
        seen.append(faiss.omp_get_max_threads())

    thread = threading.Thread(target=request)
    thread.start()
    thread.join()
    assert seen == [1]
