"""Versioned model storage in Redis: layout, checks, activation, cleanup, failed loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import redis
from redis.crc import key_slot

from libreco.utils.artifacts import ArtifactReader
from services.core.config import RedisSettings
from services.core.store import (
    MODELS_KEY,
    RECORD,
    LoadError,
    ModelKeys,
    VersionKeys,
    VersionWriter,
    redis_client,
)
from services.loaders.knn import load_knn, sim2redis, user_consumed2redis


def version_keys(client: redis.Redis, name: str, version: str) -> list[str]:
    return sorted(k.decode() for k in client.scan_iter(match=f"libreco:{{{name}:{version}}}:*"))


def state(client: redis.Redis, name: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in client.hgetall(ModelKeys(name).versions).items()}


def active(client: redis.Redis, name: str) -> str | None:
    value = client.get(ModelKeys(name).active)
    return value.decode() if value is not None else None


def test_keys_of_a_version_share_one_hash_slot(redis_client, knn_models):
    version = load_knn(knn_models.paths["item_cf"], client=redis_client)
    keys = version_keys(redis_client, "item_cf", version)
    assert {k.rsplit(":", 1)[1] for k in keys} >= {
        "meta", "parts", "keys", "user_ids", "item_ids", "popular", "sim", "base_users",
        "base_items", "consumed"}
    assert len({key_slot(k.encode()) for k in keys}) == 1
    model = ModelKeys("item_cf")
    assert len({key_slot(k.encode()) for k in (model.active, model.versions, model.since)}) == 1
    members = {m.decode() for m in redis_client.smembers(VersionKeys("item_cf", version).members)}
    assert members == {k for k in keys if not k.endswith((":meta", ":parts", ":keys"))}
    assert redis_client.hget(MODELS_KEY, "item_cf") == b"knn"


def test_values_are_numpy_bytes_and_json(redis_client, knn_models):
    path = knn_models.paths["item_cf"]
    version = load_knn(path, client=redis_client)
    keys = VersionKeys("item_cf", version)
    reader = ArtifactReader(path)
    neighbors = reader.read_array("knn/neighbors.npy")
    sims = reader.read_array("knn/similarities.npy")
    for i in (0, 17, len(neighbors) - 1):
        row = np.frombuffer(redis_client.hget(keys.data("sim"), str(i)), dtype=RECORD)
        np.testing.assert_array_equal(row["index"], neighbors[i])
        np.testing.assert_array_equal(row["value"], np.where(neighbors[i] >= 0, sims[i], 0))
    info = knn_models.info
    for u in (0, 99):
        row = np.frombuffer(redis_client.hget(keys.data("consumed"), str(u)), dtype=RECORD)
        np.testing.assert_array_equal(row["index"], info.consumed(u))
    assert json.loads(redis_client.get(keys.data("user_ids"))) == info.id2user
    assert json.loads(redis_client.get(keys.data("item_ids"))) == info.id2item
    popular = np.frombuffer(redis_client.get(keys.data("popular")), dtype=RECORD)
    np.testing.assert_array_equal(popular["index"], info.popular_items())
    for key in redis_client.scan_iter(match=f"libreco:{{item_cf:{version}}}:*"):
        if redis_client.type(key) == b"string":
            assert not redis_client.get(key).startswith(b"\x80")  # no pickle protocol header


def test_two_loaders_in_any_order_make_one_version(redis_client, knn_models):
    path = knn_models.paths["user_cf"]
    first = user_consumed2redis(path, client=redis_client)
    assert active(redis_client, "user_cf") is None
    assert state(redis_client, "user_cf") == {first: "writing"}
    second = sim2redis(path, client=redis_client)
    assert first == second
    assert active(redis_client, "user_cf") == first
    parts = redis_client.hgetall(VersionKeys("user_cf", first).parts)
    # running again finds everything in place: nothing is rewritten
    assert load_knn(path, client=redis_client) == first
    assert redis_client.hgetall(VersionKeys("user_cf", first).parts) == parts
    assert state(redis_client, "user_cf") == {first: "active"}


def test_custom_name(redis_client, knn_models):
    version = load_knn(knn_models.paths["item_cf"], name="shop-a", client=redis_client)
    assert active(redis_client, "shop-a") == version
    assert active(redis_client, "item_cf") is None
    with pytest.raises(ValueError, match="model name"):
        load_knn(knn_models.paths["item_cf"], name="no spaces", client=redis_client)


def test_old_version_kept_for_the_grace_period_then_deleted(redis_client, knn_models,
                                                             knn_models_b, monkeypatch):
    v1 = load_knn(knn_models.paths["item_cf"], client=redis_client)
    v2 = load_knn(knn_models_b.paths["item_cf"], client=redis_client)
    assert active(redis_client, "item_cf") == v2
    assert state(redis_client, "item_cf") == {v1: "retired", v2: "active"}
    assert version_keys(redis_client, "item_cf", v1)  # still there for requests in flight
    # a later load past the grace period removes it
    monkeypatch.setenv("LIBRECO_VERSION_GRACE", "0")
    v3 = load_knn(knn_models.paths["item_cf"], client=redis_client)
    assert v3 == v1  # the same directory again: a roll-back to the first version
    assert active(redis_client, "item_cf") == v1
    assert state(redis_client, "item_cf") == {v1: "active"}
    assert version_keys(redis_client, "item_cf", v2) == []
    assert version_keys(redis_client, "item_cf", v1)


class Injected(RuntimeError):
    pass


def fail_after(monkeypatch, n_flushes: int) -> None:
    """Make loaders raise after ``n_flushes`` write round trips (a load dying halfway)."""
    calls = {"n": 0}
    original = VersionWriter._heartbeat

    def heartbeat(self, pipe):
        calls["n"] += 1
        if calls["n"] > n_flushes:
            raise Injected("load killed")
        original(self, pipe)

    monkeypatch.setattr(VersionWriter, "FLUSH_COMMANDS", 1)
    monkeypatch.setenv("LIBRECO_LOAD_BATCH", "10")
    monkeypatch.setattr(VersionWriter, "_heartbeat", heartbeat)


def test_a_load_dying_halfway_leaves_the_active_version(redis_client, knn_models,
                                                        knn_models_b, monkeypatch):
    v1 = load_knn(knn_models.paths["item_cf"], client=redis_client)
    with monkeypatch.context() as m:
        fail_after(m, 12)
        with pytest.raises(Injected):
            load_knn(knn_models_b.paths["item_cf"], client=redis_client)
    assert active(redis_client, "item_cf") == v1
    (v2,) = set(state(redis_client, "item_cf")) - {v1}
    assert state(redis_client, "item_cf") == {v1: "active", v2: "writing"}
    written = version_keys(redis_client, "item_cf", v2)
    assert any(k.endswith(":sim") for k in written)  # some data was written
    assert not redis_client.hexists(VersionKeys("item_cf", v2).meta, "state")
    # running the load again finishes the job: checked parts are kept, the rest rewritten
    parts_before = set(redis_client.hkeys(VersionKeys("item_cf", v2).parts))
    assert load_knn(knn_models_b.paths["item_cf"], client=redis_client) == v2
    assert active(redis_client, "item_cf") == v2
    assert parts_before < set(redis_client.hkeys(VersionKeys("item_cf", v2).parts))


def test_stale_unfinished_versions_are_deleted(redis_client, knn_models, knn_models_b,
                                               monkeypatch):
    with monkeypatch.context() as m:
        fail_after(m, 3)
        with pytest.raises(Injected):
            load_knn(knn_models_b.paths["user_cf"], client=redis_client)
    (dead,) = state(redis_client, "user_cf")
    assert version_keys(redis_client, "user_cf", dead)
    # within the staleness limit an unfinished version may still be completed: kept
    v1 = load_knn(knn_models.paths["user_cf"], client=redis_client)
    assert version_keys(redis_client, "user_cf", dead)
    monkeypatch.setenv("LIBRECO_STALE_AFTER", "0")
    load_knn(knn_models.paths["user_cf"], client=redis_client)
    assert version_keys(redis_client, "user_cf", dead) == []
    assert state(redis_client, "user_cf") == {v1: "active"}


def test_data_that_reads_back_wrong_is_not_activated(redis_client, knn_models, knn_models_b,
                                                     monkeypatch):
    v1 = load_knn(knn_models.paths["item_cf"], client=redis_client)
    original = VersionWriter._write_hash

    def corrupting(self, key, pairs):
        record = original(self, key, pairs)
        self.client.hset(key, pairs[0][0], b"garbage")
        return record

    monkeypatch.setattr(VersionWriter, "_write_hash", corrupting)
    with pytest.raises(LoadError, match="reads back different"):
        load_knn(knn_models_b.paths["item_cf"], client=redis_client)
    assert active(redis_client, "item_cf") == v1


def test_vanished_keys_are_rewritten(redis_client, knn_models):
    version = load_knn(knn_models.paths["item_cf"], client=redis_client)
    keys = VersionKeys("item_cf", version)
    redis_client.hdel(keys.data("sim"), "3")
    writer = VersionWriter(redis_client, "item_cf", version, "knn", ("ids", "sim", "consumed"),
                           {})
    assert not writer.has_part("sim")
    assert writer.missing_parts() == ["sim"]
    load_knn(knn_models.paths["item_cf"], client=redis_client)
    assert redis_client.hexists(keys.data("sim"), "3")


def test_only_a_written_version_can_be_activated(redis_client):
    writer = VersionWriter(redis_client, "m", "v1", "knn", ("a",), {})
    writer.begin()
    assert writer.activate() is False  # part "a" missing
    writer.write_part("a", strings={"blob": b"\x00\x01"}, hashes={"h": [(b"1", b"x")]})
    with pytest.raises(ValueError, match="not one of"):
        writer.write_part("b", strings={"blob": b""})
    redis_client.hset(ModelKeys("m").versions, "v1", "deleting")
    with pytest.raises(redis.ResponseError, match="cannot be activated"):
        writer.activate()
    redis_client.hset(ModelKeys("m").versions, "v1", "writing")
    assert writer.activate() is True
    assert active(redis_client, "m") == "v1"


def test_client_construction_per_mode():
    standalone = redis_client(RedisSettings(url="redis://example.invalid:6380/3", timeout=0.7))
    kwargs = standalone.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("example.invalid", 6380, 3)
    assert kwargs["socket_timeout"] == 0.7 == kwargs["socket_connect_timeout"]
    sentinel = redis_client(RedisSettings(url="redis://:pw@ignored:1/2", mode="sentinel",
                                          sentinels=(("s1", 26379), ("s2", 26380)),
                                          sentinel_master="main", password="secret"))
    pool = sentinel.connection_pool
    assert pool.service_name == "main"
    assert pool.connection_kwargs["db"] == 2
    assert pool.connection_kwargs["password"] == "secret"
    assert [c.connection_pool.connection_kwargs["host"]
            for c in pool.sentinel_manager.sentinels] == ["s1", "s2"]
