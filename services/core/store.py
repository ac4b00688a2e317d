"""Versioned models in Redis: the key layout, client construction and the version writer.

A model name (``item_cf``) owns one pointer to its active version; a version is a set of keys
written beside the active one and checked before the pointer moves. The layout (also in
``docs/redis.md``)::

    libreco:models                          hash    model name -> family
    libreco:{<model>}:active                string  active version id
    libreco:{<model>}:versions              hash    version -> writing | active | retired | deleting
    libreco:{<model>}:since                 hash    version -> unix time of its last state change
                                                    (or, while writing, of its last write)
    libreco:{<model>:<version>}:meta        hash    family, algorithm, parts, sizes, ...
    libreco:{<model>:<version>}:parts       hash    part -> JSON record of its checked keys
    libreco:{<model>:<version>}:keys        set     every data key of the version
    libreco:{<model>:<version>}:<data>      the data keys written by the family's parts

The text between braces is the Redis Cluster hash tag: the keys of one version live in one slot
(a version's data can be read by one pipeline or script), and the three keys of a model's
state live in another, so that the pointer flip is one atomic script.

Numeric values are little-endian numpy bytes with an explicit dtype (``RECORD``: an int32 index
and a float32 value per entry), identifiers are JSON. Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from services.core.config import RedisSettings

log = logging.getLogger("libreco.services")

PREFIX = "libreco"
MODELS_KEY = f"{PREFIX}:models"
RECORD = np.dtype([("index", "<i4"), ("value", "<f4")])
"""One entry of a neighbour list or of a consumed list: (inner index, similarity or label)."""

RedisClient = redis.Redis | RedisCluster

# States of a version in the model's ``versions`` hash.
WRITING, ACTIVE, RETIRED, DELETING = "writing", "active", "retired", "deleting"


# -- key layout -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelKeys:
    """The keys of one model name's state (one hash slot)."""

    name: str

    def _key(self, what: str) -> str:
        return f"{PREFIX}:{{{self.name}}}:{what}"

    @property
    def active(self) -> str:
        return self._key("active")

    @property
    def versions(self) -> str:
        return self._key("versions")

    @property
    def since(self) -> str:
        return self._key("since")


@dataclass(frozen=True)
class VersionKeys:
    """The keys of one version of a model (one hash slot); ``keys.data("sim")`` names data."""

    name: str
    version: str

    def data(self, what: str) -> str:
        return f"{PREFIX}:{{{self.name}:{self.version}}}:{what}"

    @property
    def meta(self) -> str:
        return self.data("meta")

    @property
    def parts(self) -> str:
        return self.data("parts")

    @property
    def members(self) -> str:
        return self.data("keys")


# -- values ---------------------------------------------------------------------------------
def pack_records(indices: np.ndarray, values: np.ndarray) -> bytes:
    """``RECORD`` bytes of parallel arrays of inner indices and float values."""
    out = np.empty(len(indices), dtype=RECORD)
    out["index"] = indices
    out["value"] = values
    return out.tobytes()


def unpack_records(data: bytes) -> np.ndarray:
    """The structured ``RECORD`` array encoded by :func:`pack_records`."""
    return np.frombuffer(data, dtype=RECORD)


def field_name(index: int) -> bytes:
    """Hash field of an inner user or item index (its decimal digits)."""
    return str(index).encode()


# -- clients --------------------------------------------------------------------------------
def redis_client(settings: RedisSettings, *, retries: int = 0) -> RedisClient:
    """A client for the deployment ``settings`` describe (standalone, Sentinel or Cluster).

    Parameters
    ----------
    settings : RedisSettings
    retries : int
        Retries of a command after a connection error. Services use 0: a request fails fast
        with 503 and the next one reconnects. Loaders retry a few times with a backoff.

    Notes
    -----
    Values are returned as bytes (``decode_responses=False``).
    """
    retry = Retry(ExponentialBackoff(cap=2.0, base=0.1), retries) if retries else \
        Retry(NoBackoff(), 0)
    common: dict[str, Any] = {
        "socket_timeout": settings.timeout,
        "socket_connect_timeout": settings.timeout,
        "retry": retry,
        "health_check_interval": 30,
    }
    if settings.password:
        common["password"] = settings.password
    if settings.mode == "cluster":
        common.pop("health_check_interval")
        return RedisCluster.from_url(settings.url, **common)
    if settings.mode == "sentinel":
        url_kwargs = redis.ConnectionPool.from_url(settings.url).connection_kwargs
        sentinel = Sentinel(
            list(settings.sentinels),
            socket_timeout=settings.timeout,
            sentinel_kwargs={"socket_timeout": settings.timeout,
                             **({"password": settings.password} if settings.password else {})},
        )
        for key in ("db", "username", "password"):
            if url_kwargs.get(key) is not None and key not in common:
                common[key] = url_kwargs[key]
        return sentinel.master_for(settings.sentinel_master, **common)
    return redis.Redis.from_url(settings.url, **common)


def describe(client: RedisClient) -> str:
    """Where a client points, without credentials (for log lines)."""
    try:
        kwargs = client.connection_pool.connection_kwargs  # type: ignore[union-attr]
        if "path" in kwargs:
            return f"unix:{kwargs['path']}"
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
    except AttributeError:
        return type(client).__name__


# -- scripts on a model's state (all keys in the model's slot) -------------------------------
# KEYS: versions, since; ARGV: version, now. Marks a version as being written (an active one
# stays active) and reports its previous state.
_BEGIN = """
local state = redis.call('HGET', KEYS[1], ARGV[1])
if state == 'deleting' then return 'deleting' end
if state ~= 'active' then redis.call('HSET', KEYS[1], ARGV[1], 'writing') end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return state or ''
"""

# KEYS: active, versions, since; ARGV: version, now. The one atomic step of a load: point the
# model at the version and retire the previous one.
_FLIP = """
local state = redis.call('HGET', KEYS[2], ARGV[1])
if state ~= 'writing' and state ~= 'active' then
  return redis.error_reply('version ' .. ARGV[1] .. ' cannot be activated from state '
                           .. tostring(state))
end
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], 'active')
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
if old and old ~= ARGV[1] then
  redis.call('HSET', KEYS[2], old, 'retired')
  redis.call('HSET', KEYS[3], old, ARGV[2])
end
return old or ''
"""

# KEYS: active, versions, since; ARGV: version, expected state, latest allowed since, now.
# Claims a version for deletion unless it changed meanwhile or is the active one.
_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
local since = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if since > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], 'deleting')
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
return 1
"""


class LoadError(RuntimeError):
    """A version could not be written or did not check out; the active version is untouched."""


@dataclass
class KeyRecord:
    """What a part wrote into one key, as checked by reading it back."""

    kind: str  # "string" or "hash"
    count: int  # bytes of a string, fields of a hash
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "count": self.count, "sha256": self.sha256}


class VersionWriter:
    """Writes the parts of one version of a model, checks them, and activates the version.

    A family declares the parts a version needs (knn: ``ids``, ``sim``, ``consumed``); each
    loader call writes some of them. Whichever call finds every part present and checked
    flips the model's pointer, so the calls may come in any order, from separate processes,
    and may be repeated: a part already written and checked is not written again.

    Parameters
    ----------
    client : redis.Redis or RedisCluster
    name : str
        Model name (``item_cf``).
    version : str
        Version id, derived from the model directory (the same directory gives the same id).
    family : str
        ``knn``, ``vector`` or ``tf``.
    parts : sequence of str
        Every part the version needs before it can serve.
    meta : mapping
        Facts about the version for the services (algorithm, sizes, ...); values are stored
        as strings (JSON for lists and dicts).
    grace_period : float
        Seconds a retired version is kept after a newer one became active, so that requests
        in flight finish on it.
    stale_after : float
        Seconds after its last write when an unfinished version (a load that died) is deleted.
    batch : int
        Hash fields per HSET command when writing.

    Examples
    --------
    >>> w = VersionWriter(client, "item_cf", "3f2a...", "knn", ["ids", "sim", "consumed"], {})
    >>> w.begin()
    >>> if not w.has_part("sim"):
    ...     w.write_part("sim", hashes={"sim": rows})
    >>> w.activate()
    """

    FLUSH_COMMANDS = 16  # commands per pipeline round trip while writing

    def __init__(self, client: RedisClient, name: str, version: str, family: str,
                 parts: Sequence[str], meta: Mapping[str, Any], *, grace_period: float = 60.0,
                 stale_after: float = 3600.0, batch: int = 1000):
        self.client = client
        self.name = name
        self.version = version
        self.family = family
        self.parts = tuple(parts)
        self.meta = dict(meta)
        self.grace_period = float(grace_period)
        self.stale_after = float(stale_after)
        self.batch = max(1, int(batch))
        self.model = ModelKeys(name)
        self.keys = VersionKeys(name, version)
        self._begin = client.register_script(_BEGIN)
        self._flip = client.register_script(_FLIP)
        self._clock_offset = 0.0

    # -- bookkeeping ------------------------------------------------------------------------
    def now(self) -> float:
        """Redis server time, so that loaders on different hosts agree on ages."""
        now = redis_time(self.client)
        self._clock_offset = now - time.time()
        return now

    def begin(self, wait: float = 30.0) -> str:
        """Register the version as being written (an active version stays active).

        Returns the state it had before ("" for a new version). Waits while a cleanup is
        deleting an old copy of the same version.
        """
        deadline = time.monotonic() + wait
        while True:
            previous = _text(self._begin(keys=[self.model.versions, self.model.since],
                                         args=[self.version, self.now()]))
            if previous != DELETING:
                break
            if time.monotonic() > deadline:
                raise LoadError(f"{self.name} version {self.version} is still being deleted "
                                "by another loader; try again later")
            time.sleep(0.2)
        meta = {"family": self.family, "parts": json.dumps(list(self.parts)),
                **{k: _meta_value(v) for k, v in self.meta.items()}}
        self.client.hset(MODELS_KEY, self.name, self.family)
        self.client.hset(self.keys.meta, mapping=meta)
        return previous

    def _heartbeat(self, pipe: Any) -> None:
        pipe.hset(self.model.since, self.version, repr(time.time() + self._clock_offset))

    def recorded_parts(self) -> dict[str, dict[str, Any]]:
        raw = self.client.hgetall(self.keys.parts)
        return {_text(k): json.loads(v) for k, v in raw.items()}

    def has_part(self, part: str) -> bool:
        """Whether ``part`` was written and checked, and its keys are still all there."""
        record = self.recorded_parts().get(part)
        return record is not None and self._still_there(record)

    def _still_there(self, record: Mapping[str, Any]) -> bool:
        keys = record.get("keys", {})
        pipe = self.client.pipeline(transaction=False)
        for suffix, rec in keys.items():
            key = self.keys.data(suffix)
            if rec["kind"] == "hash":
                pipe.hlen(key)
            else:
                pipe.strlen(key)
        counts = pipe.execute()
        return all(int(c) == rec["count"] for c, rec in zip(counts, keys.values()))

    # -- writing ----------------------------------------------------------------------------
    def write_part(self, part: str, strings: Mapping[str, bytes] | None = None,
                   hashes: Mapping[str, Sequence[tuple[bytes, bytes]]] | None = None) -> None:
        """Write the keys of one part, read them back, and record the part as checked.

        Parameters
        ----------
        part : str
            One of the version's ``parts``.
        strings : mapping of key suffix -> bytes
        hashes : mapping of key suffix -> sequence of (field, value) pairs

        Raises
        ------
        LoadError
            When a key reads back different from what was written.
        """
        if part not in self.parts:
            raise ValueError(f"part {part!r} is not one of this version's parts {self.parts}")
        strings = dict(strings or {})
        hashes = dict(hashes or {})
        t0 = time.perf_counter()
        all_keys = [self.keys.data(s) for s in (*strings, *hashes)]
        pipe = self.client.pipeline(transaction=False)
        pipe.hdel(self.keys.parts, part)
        pipe.sadd(self.keys.members, *all_keys)
        pipe.delete(*all_keys)  # what a load that died here may have left
        self._heartbeat(pipe)
        pipe.execute()

        records: dict[str, KeyRecord] = {}
        for suffix, value in strings.items():
            self.client.set(self.keys.data(suffix), value)
            records[suffix] = KeyRecord("string", len(value), hashlib.sha256(value).hexdigest())
        for suffix, pairs in hashes.items():
            records[suffix] = self._write_hash(self.keys.data(suffix), pairs)

        self._verify(strings, hashes, records)
        record = {"keys": {s: r.to_json() for s, r in records.items()}, "written_at": time.time()}
        self.client.hset(self.keys.parts, part, json.dumps(record))
        log.info("%s %s: part %s written and checked (%s) in %.2fs", self.name, self.version,
                 part, ", ".join(f"{s}={r.count}" for s, r in records.items()),
                 time.perf_counter() - t0)

    def _write_hash(self, key: str, pairs: Sequence[tuple[bytes, bytes]]) -> KeyRecord:
        pipe = self.client.pipeline(transaction=False)
        pending = 0
        for start in range(0, len(pairs), self.batch):
            chunk = pairs[start:start + self.batch]
            pipe.hset(key, mapping=dict(chunk))
            pending += 1
            if pending >= self.FLUSH_COMMANDS:
                self._heartbeat(pipe)
                pipe.execute()
                pending = 0
        if pending:
            self._heartbeat(pipe)
            pipe.execute()
        return KeyRecord("hash", len(pairs), _hash_digest(pairs))

    def _verify(self, strings: Mapping[str, bytes], hashes: Mapping[str, Sequence[tuple]],
                records: Mapping[str, KeyRecord]) -> None:
        for suffix in strings:
            stored = self.client.get(self.keys.data(suffix))
            if stored is None or hashlib.sha256(stored).hexdigest() != records[suffix].sha256:
                raise LoadError(f"{self.keys.data(suffix)} reads back different from what was "
                                "written")
        for suffix, pairs in hashes.items():
            key = self.keys.data(suffix)
            n = self.client.hlen(key)
            if n != len(pairs):
                raise LoadError(f"{key} has {n} fields after writing {len(pairs)}")
            digest = hashlib.sha256()
            step = max(self.batch, 1000)
            for start in range(0, len(pairs), step):
                fields = [f for f, _ in pairs[start:start + step]]
                values = self.client.hmget(key, fields)
                for f, v in zip(fields, values):
                    if v is None:
                        raise LoadError(f"{key} lost field {_text(f)} while being written")
                    _digest_pair(digest, f, v)
            if digest.hexdigest() != records[suffix].sha256:
                raise LoadError(f"{key} reads back different from what was written")

    # -- activation and cleanup -------------------------------------------------------------
    def missing_parts(self) -> list[str]:
        """Parts not yet written and checked (or whose keys vanished)."""
        recorded = self.recorded_parts()
        return [p for p in self.parts if p not in recorded or not self._still_there(recorded[p])]

    def activate(self) -> bool:
        """Flip the model's pointer to this version when every part is present and checked.

        Returns True when the version is now active, False when parts are still missing (a
        later loader call will activate it). Afterwards deletes the versions whose grace
        period or staleness limit has passed.
        """
        missing = self.missing_parts()
        if missing:
            log.info("%s %s: waiting for parts %s before activation", self.name, self.version,
                     ", ".join(missing))
            return False
        now = self.now()
        self.client.hset(self.keys.meta, mapping={"state": "complete", "activated_at": now})
        previous = _text(self._flip(keys=[self.model.active, self.model.versions,
                                          self.model.since], args=[self.version, now]))
        if previous and previous != self.version:
            log.info("%s: version %s active (was %s; kept %.0fs for requests in flight)",
                     self.name, self.version, previous, self.grace_period)
        else:
            log.info("%s: version %s active", self.name, self.version)
        self.cleanup()
        return True

    def cleanup(self) -> list[str]:
        """Delete retired versions past the grace period and unfinished ones gone stale."""
        return cleanup_versions(self.client, self.name, grace_period=self.grace_period,
                                stale_after=self.stale_after, keep=(self.version,))


def cleanup_versions(client: RedisClient, name: str, *, grace_period: float = 60.0,
                     stale_after: float = 3600.0, keep: Iterable[str] = ()) -> list[str]:
    """Delete the versions of ``name`` nobody serves any more; returns their ids.

    Retired versions go ``grace_period`` seconds after they were replaced; versions still
    being written go when nothing was written to them for ``stale_after`` seconds (their
    loader died); a deletion that itself died is retried after ``grace_period``.
    """
    model = ModelKeys(name)
    claim = client.register_script(_CLAIM)
    now = redis_time(client)
    states = {_text(k): _text(v) for k, v in client.hgetall(model.versions).items()}
    since = {_text(k): float(v) for k, v in client.hgetall(model.since).items()}
    keep = set(keep)
    deleted = []
    for version, state in states.items():
        if version in keep:
            continue
        limit = stale_after if state == WRITING else grace_period
        if state not in (WRITING, RETIRED, DELETING):
            continue
        latest = now - limit
        if since.get(version, 0.0) > latest:
            continue
        if not claim(keys=[model.active, model.versions, model.since],
                     args=[version, state, latest, now]):
            continue
        _delete_version(client, VersionKeys(name, version))
        pipe = client.pipeline(transaction=False)
        pipe.hdel(model.versions, version)
        pipe.hdel(model.since, version)
        pipe.execute()
        log.info("%s: deleted %s version %s", name, state, version)
        deleted.append(version)
    return deleted


def _delete_version(client: RedisClient, keys: VersionKeys) -> None:
    members = [_text(m) for m in client.smembers(keys.members)]
    for start in range(0, len(members), 500):
        client.delete(*members[start:start + 500])
    client.delete(keys.members, keys.parts, keys.meta)


# -- helpers --------------------------------------------------------------------------------
def redis_time(client: RedisClient) -> float:
    """The Redis server's clock, in seconds since the epoch."""
    seconds, micros = client.time()
    return seconds + micros / 1e6


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _meta_value(value: Any) -> str:
    if isinstance(value, (dict, list, tuple, bool)) or value is None:
        return json.dumps(value)
    return str(value)


def _digest_pair(digest: Any, field: bytes, value: bytes) -> None:
    digest.update(len(field).to_bytes(4, "little"))
    digest.update(field)
    digest.update(len(value).to_bytes(8, "little"))
    digest.update(value)


def _hash_digest(pairs: Sequence[tuple[bytes, bytes]]) -> str:
    digest = hashlib.sha256()
    for f, v in pairs:
        _digest_pair(digest, f, v)
    return digest.hexdigest()
