"""What a worker knows about the active version of each model, and its Redis access.

A worker keeps, per model name, the immutable data of the version it serves (id lists,
popularity, the family's own tables) and checks the model's pointer at most every
``LIBRECO_POLL_INTERVAL`` seconds. A request resolves its :class:`ModelVersion` once and reads
only that version's keys, so an answer never mixes two versions; a retired version's keys stay
in Redis for a grace period, longer than any request takes.
"""

from __future__ import annotations

import json
import logging
import math
import select
import socket
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import redis
from redis._parsers import BaseParser
from redis.cluster import RedisCluster
from redis.commands.core import Script

from services.core import metrics
from services.core.errors import NotFound, StoreUnavailable
from services.core.store import (
    MODELS_KEY,
    RECORD,
    ModelKeys,
    RedisClient,
    VersionKeys,
    unpack_records,
)

if TYPE_CHECKING:
    from services.core.family import FamilyHandler

log = logging.getLogger("libreco.services")
LOG_EVERY = 10.0  # seconds between two log lines about store errors in one worker


class Store:
    """Redis access for request handling: every Redis error becomes a 503 answer.

    Failures are counted in ``libreco_store_errors_total`` and logged at most once every
    ``LOG_EVERY`` seconds per worker (with the number of failures since the last line), so an
    outage does not flood the log. Connections are re-opened by the next call.

    :meth:`command` is the per-request path: one read-only command on a connection owned by
    the calling thread, packed and parsed with the client's connection class but without the
    client's pool and retry layers (a standalone or Sentinel client; a Cluster client goes
    through its own routing).
    """

    def __init__(self, client: RedisClient):
        self.client = client
        self._last_log = 0.0
        self._unlogged = 0
        self._local = threading.local()
        self._direct = not isinstance(client, RedisCluster)
        self.suspect = False
        """Set when a background check of the store failed; :meth:`check_alive` then pings."""

    def fail(self, what: str, error: Exception) -> NoReturn:
        metrics.store_error()
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY:
            extra = f" ({self._unlogged} more failures since the last report)" if \
                self._unlogged else ""
            log.warning("Redis %s failed: %s: %s%s", what, type(error).__name__, error, extra)
            self._last_log = now
            self._unlogged = 0
        else:
            self._unlogged += 1
        raise StoreUnavailable(f"the model store is unavailable ({what} failed: "
                               f"{type(error).__name__}); try again shortly")

    def command(self, *args: bytes | str | int, what: str = "read") -> Any:
        """Run one read-only command in one round trip and return its answer.

        A connection that went stale while idle (e.g. Redis restarted) is re-opened and the
        command sent once more; any other failure is a 503.
        """
        if not self._direct:
            try:
                return self.client.execute_command(*args)
            except redis.exceptions.RedisError as e:
                self.fail(what, e)
        packed = pack_command(args)
        local = self._local
        for attempt in (0, 1):
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = self.client.connection_pool.make_connection()
                local.proven = False
            try:
                answer = _round_trip(conn, packed)
            except redis.exceptions.NoScriptError:
                raise  # run() loads the script and tries again
            except redis.exceptions.ResponseError as e:
                self.fail(what, e)
            except redis.exceptions.RedisError as e:
                conn.disconnect()
                stale = local.proven and isinstance(e, redis.exceptions.ConnectionError)
                local.proven = False
                if attempt == 0 and stale:
                    continue
                self.fail(what, e)
            local.proven = True
            return answer
        raise AssertionError("unreachable")

    def check_alive(self, what: str = "read") -> None:
        """Make sure Redis still answers, for requests that need no data from it.

        A request answered from a worker's memory asks Redis nothing, yet must still fail with
        a 503 while Redis is away. This looks at the calling thread's idle connection without
        blocking (one ``select`` with no wait): while Redis keeps it open, Redis is up.
        When Redis closed it (Redis stopped or restarted), after the version poller met a
        failure, or before the thread's first command, a ``PING`` decides, which also re-opens
        the connection.
        """
        conn = getattr(self._local, "conn", None)
        sock = conn._sock if conn is not None and self._direct else None
        if sock is not None and not self.suspect:
            try:
                if not select.select((sock,), (), (), 0)[0]:
                    return  # open and idle
            except (OSError, ValueError):
                pass
            conn.disconnect()  # closed by Redis, or bytes nobody asked for: start afresh
        self.command("PING", what=what)
        self.suspect = False

    def script(self, lua: str) -> Script:
        """Register a Lua script; run it with :meth:`run`."""
        return self.client.register_script(lua)

    def run(self, script: Script, keys: Sequence[str], args: Sequence[Any],
            what: str = "read") -> Any:
        """Run a read-only script in one round trip (all ``keys`` must share a hash tag)."""
        if self._direct:
            try:
                return self.command("EVALSHA", script.sha, len(keys), *keys, *args, what=what)
            except redis.exceptions.NoScriptError:
                pass  # Redis restarted without its script cache
        try:
            return script(keys=keys, args=args)  # loads the script when Redis lost it
        except redis.exceptions.RedisError as e:
            self.fail(what, e)

    def pipeline_execute(self, commands: Sequence[tuple[str, tuple[Any, ...]]],
                         what: str = "read") -> list[Any]:
        """Send ``(command name, args)`` pairs in one pipeline and return the answers."""
        try:
            pipe = self.client.pipeline(transaction=False)
            for name, args in commands:
                getattr(pipe, name)(*args)
            return pipe.execute()
        except redis.exceptions.RedisError as e:
            self.fail(what, e)

    def ping(self) -> None:
        try:
            self.client.ping()
        except redis.exceptions.RedisError as e:
            self.fail("ping", e)


def pack_command(args: Sequence[bytes | str | int]) -> bytes:
    """The RESP encoding of one command."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


def _round_trip(conn: Any, packed: bytes) -> Any:
    """Send one packed command on ``conn`` and read its RESP2 answer straight off the socket.

    The connection class still opens the socket (TLS, authentication, database, Sentinel
    discovery); only the request's bytes skip redis-py's buffered parser, which costs more
    than the command itself for one short answer. Socket problems become redis-py's
    ``ConnectionError`` / ``TimeoutError``, error answers its ``ResponseError`` family.
    """
    if str(getattr(conn, "protocol", 2)) == "3":  # RESP3 answers: leave them to redis-py
        conn.send_packed_command([packed], check_health=False)
        return conn.read_response()
    if conn._sock is None:
        conn.connect()
    try:
        conn._sock.sendall(packed)
        return _Reply(conn._sock).read()
    except TimeoutError:
        raise redis.exceptions.TimeoutError("Timeout reading from Redis") from None
    except OSError as e:
        raise redis.exceptions.ConnectionError(f"Error while talking to Redis: {e}") from None


class _Reply:
    """The RESP2 answer to one command, read from a socket that carries nothing else."""

    __slots__ = ("sock", "buf", "pos")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""
        self.pos = 0

    def _more(self, at_least: int = 1) -> None:
        chunks = [self.buf[self.pos:]]
        have = len(chunks[0])
        while True:
            chunk = self.sock.recv(max(65536, at_least - have))
            if not chunk:
                raise redis.exceptions.ConnectionError("Redis closed the connection")
            chunks.append(chunk)
            have += len(chunk)
            if have >= at_least:
                break
        self.buf = b"".join(chunks)
        self.pos = 0

    def _line(self) -> bytes:
        end = self.buf.find(b"\r\n", self.pos)
        while end < 0:
            self._more(len(self.buf) - self.pos + 1)
            end = self.buf.find(b"\r\n", self.pos)
        line = self.buf[self.pos:end]
        self.pos = end + 2
        return line

    def read(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            if len(self.buf) - self.pos < n + 2:
                self._more(n + 2)
            data = self.buf[self.pos:self.pos + n]
            self.pos += n + 2
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        if kind == b":":
            return int(rest)
        if kind == b"+":
            return rest
        if kind == b"-":
            raise BaseParser.parse_error(rest.decode(errors="replace"))
        raise redis.exceptions.InvalidResponse(f"unexpected answer from Redis: {line[:40]!r}")


ROW_BATCH = 4096
"""Fields per ``HMGET`` while a worker copies a whole per-user or per-item hash."""


def read_rows(store: Store, key: str, n_rows: int) -> list[bytes | None]:
    """Fields ``"0"`` to ``n_rows - 1`` of the hash ``key``, in batches of ``ROW_BATCH``."""
    rows: list[bytes | None] = []
    for start in range(0, n_rows, ROW_BATCH):
        fields = [str(r) for r in range(start, min(start + ROW_BATCH, n_rows))]
        rows.extend(store.pipeline_execute([("hmget", (key, fields))], what="version read")[0])
    return rows


@dataclass(frozen=True)
class ConsumedLists:
    """Every user's consumed records (``RECORD``) held by a worker, user after user: user
    ``u``'s are ``records[offsets[u]:offsets[u + 1]]``."""

    records: np.ndarray
    offsets: np.ndarray

    def of(self, user: int) -> np.ndarray:
        """User ``user``'s records."""
        return self.records[int(self.offsets[user]):int(self.offsets[user + 1])]


def read_consumed(store: Store, version: ModelVersion) -> ConsumedLists:
    """Every user's consumed lists of ``version``, copied from Redis."""
    rows = read_rows(store, version.keys.data("consumed"), version.n_users)
    lengths = np.fromiter((len(row) if row else 0 for row in rows), dtype=np.int64,
                          count=version.n_users)
    if (lengths % RECORD.itemsize).any():
        raise StoreUnavailable(f"model {version.name!r} version {version.version} has "
                               "malformed consumed lists")
    offsets = np.zeros(version.n_users + 1, dtype=np.int64)
    np.cumsum(lengths // RECORD.itemsize, out=offsets[1:])
    records = np.frombuffer(b"".join(row for row in rows if row), dtype=RECORD)
    return ConsumedLists(records, offsets)


def consumed_bytes(version: ModelVersion) -> int | None:
    """Memory :func:`read_consumed` takes for ``version``, None when its metadata does not say
    (versions loaded before the loaders recorded ``n_interactions``)."""
    try:
        n_interactions = int(version.meta.get("n_interactions", ""))
    except ValueError:
        return None
    return (n_interactions + version.n_users + 1) * RECORD.itemsize


def member_mask(values: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Boolean mask of the entries of ``values`` that occur in ``pool``.

    A sort of ``pool`` and a binary search per value: the cost depends on the two arrays'
    lengths only, never on the catalogue's size.
    """
    if len(pool) == 0 or len(values) == 0:
        return np.zeros(len(values), dtype=bool)
    pool = np.sort(pool)
    pos = np.searchsorted(pool, values)
    pos[pos == len(pool)] = 0
    return pool[pos] == values


@dataclass
class ModelVersion:
    """The immutable, per-version data a worker holds in memory.

    Attributes
    ----------
    name, version, family, algorithm : str
    meta : dict of str -> str
        The version's ``meta`` hash (sizes, hyperparameters the family needs).
    keys : VersionKeys
        Names of the version's Redis keys.
    user_ids, item_ids : list
        Original ids in inner-index order (JSON types kept).
    popular_items : np.ndarray of int64, shape (n_items,)
        Inner items by training popularity, most popular first.
    popular_scores : np.ndarray of float64, shape (n_items,)
        Their interaction counts divided by the largest count.
    extra : any
        What the family handler's ``load_version`` returned.
    """

    name: str
    version: str
    family: str
    algorithm: str
    meta: dict[str, str]
    keys: VersionKeys
    user_ids: list
    item_ids: list
    popular_items: np.ndarray
    popular_scores: np.ndarray
    extra: Any = None
    _by_id: dict = field(default_factory=dict, repr=False)
    _by_text: dict = field(default_factory=dict, repr=False)
    _item_text: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for i, u in enumerate(self.user_ids):
            self._by_id.setdefault(u, i)
            self._by_text.setdefault(str(u), i)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def user_index(self, user: Any) -> int:
        """Inner index of an original user id (``1`` and ``"1"`` both match), -1 if unknown."""
        idx = self._by_id.get(user)
        if idx is None:
            idx = self._by_text.get(str(user), -1)
        return idx

    def answer_text(self, key: str, items: np.ndarray, scores: np.ndarray) -> str:
        """``json.dumps({key: [[item, score], ...]})`` with original ids for inner ``items``.

        Each item's JSON text is made once per version, on its first answer.
        """
        texts = self._item_text
        pairs = []
        for i, s in zip(items.tolist(), scores.tolist()):
            text = texts.get(i)
            if text is None:
                text = texts[i] = json.dumps(self.item_ids[i])
            pairs.append(f"[{text}, {s!r}]" if math.isfinite(s) else
                         f"[{text}, {json.dumps(s)}]")
        return f"{{{json.dumps(key)}: [{', '.join(pairs)}]}}"

    def popular(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` most popular items and their scores (the cold-start answer)."""
        return self.popular_items[:n], self.popular_scores[:n]


def load_version(store: Store, name: str, version: str, handler: FamilyHandler) -> ModelVersion:
    """Read a version's immutable data in one pipeline, then the family's own part."""
    keys = VersionKeys(name, version)
    meta_raw, user_ids, item_ids, popular = store.pipeline_execute([
        ("hgetall", (keys.meta,)),
        ("get", (keys.data("user_ids"),)),
        ("get", (keys.data("item_ids"),)),
        ("get", (keys.data("popular"),)),
    ], what="version read")
    meta = {k.decode(): v.decode() for k, v in meta_raw.items()}
    if meta.get("state") != "complete" or user_ids is None or item_ids is None or \
            popular is None:
        log.error("%s: active version %s is incomplete in Redis", name, version)
        raise StoreUnavailable(f"model {name!r} version {version} is incomplete in the store")
    records = unpack_records(popular)
    counts = records["value"].astype(np.float64)
    top = counts[0] if len(counts) and counts[0] > 0 else 1.0
    mv = ModelVersion(
        name=name, version=version, family=meta.get("family", ""),
        algorithm=meta.get("algorithm", name), meta=meta, keys=keys,
        user_ids=json.loads(user_ids), item_ids=json.loads(item_ids),
        popular_items=records["index"].astype(np.int64),
        popular_scores=counts / top,
    )
    mv.extra = handler.load_version(mv)
    return mv


class _Entry:
    __slots__ = ("current", "checked_at", "lock")

    def __init__(self) -> None:
        self.current: ModelVersion | None = None
        self.checked_at = float("-inf")
        self.lock = threading.Lock()


class ActiveModels:
    """Per-worker cache of the active version of each model name.

    With a positive ``poll_interval`` a background thread of the worker re-reads the pointer
    of every model it serves once per interval and, when the pointer moved, reads the new
    version's data before the version takes over: requests neither wait for the check nor for
    the load, and use no Redis round trip for it. Should the thread fall behind (no check for
    two intervals, e.g. while Redis is away), the next request checks itself while other
    threads keep answering from the version they have. With an interval of 0 every request
    checks.
    """

    def __init__(self, store: Store, handler: FamilyHandler, poll_interval: float):
        self.store = store
        self.handler = handler
        self.poll_interval = poll_interval
        self._fresh_for = 2 * poll_interval
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._poller: threading.Thread | None = None

    def get(self, name: str) -> ModelVersion:
        """The version to answer one request with.

        Raises
        ------
        NotFound
            No version of ``name`` is active, or it belongs to another family.
        StoreUnavailable
            Redis cannot be reached.
        """
        entry = self._entries.get(name)
        if entry is not None and entry.current is not None and \
                time.monotonic() - entry.checked_at < self._fresh_for:
            return entry.current
        return self._refresh(name, entry)

    def _refresh(self, name: str, entry: _Entry | None) -> ModelVersion:
        self._start_poller()
        if entry is None:
            with self._lock:
                entry = self._entries.setdefault(name, _Entry())
        if not entry.lock.acquire(blocking=entry.current is None):
            assert entry.current is not None
            return entry.current  # another thread is checking; answer with what we have
        try:
            if entry.current is not None and \
                    time.monotonic() - entry.checked_at < self.poll_interval:
                return entry.current
            entry.current = self._check(name, entry.current)
            entry.checked_at = time.monotonic()
            return entry.current
        except NotFound:
            self._forget(name)
            raise
        except Exception:
            if entry.current is None:  # keep no entries for names that never resolved
                self._forget(name)
            raise
        finally:
            entry.lock.release()

    def _start_poller(self) -> None:
        """Start the polling thread in this process (again after a fork, which ends it)."""
        if self.poll_interval <= 0 or (self._poller is not None and self._poller.is_alive()):
            return
        with self._lock:
            if self._poller is not None and self._poller.is_alive():
                return
            self._poller = threading.Thread(target=_poll_loop,
                                            args=(weakref.ref(self), self.poll_interval),
                                            name="libreco-version-poll", daemon=True)
            self._poller.start()

    def poll(self) -> None:
        """Check the pointer of every model this worker serves once (the thread's work)."""
        for name, entry in list(self._entries.items()):
            with entry.lock:
                if entry.current is None:  # never resolved: the requests asking for it do
                    continue
                try:
                    entry.current = self._check(name, entry.current)
                    entry.checked_at = time.monotonic()
                    self.store.suspect = False
                except NotFound:
                    self._forget(name)
                except StoreUnavailable:
                    self.store.suspect = True  # counted and logged by the store
                except Exception:
                    log.exception("%s: checking the active version failed", name)

    def _check(self, name: str, current: ModelVersion | None) -> ModelVersion:
        """Read the pointer; load the version it names when it is not ``current``."""
        version, family = self.store.pipeline_execute([
            ("get", (ModelKeys(name).active,)),
            ("hget", (MODELS_KEY, name)),
        ], what="version check")
        if version is None:
            raise NotFound(f"no model named {name!r} is loaded")
        family_name = family.decode() if family is not None else ""
        if family_name != self.handler.family:
            raise NotFound(f"model {name!r} is a {family_name or 'unknown'} model; this "
                           f"service serves {self.handler.family} models")
        version_id = version.decode()
        if current is not None and current.version == version_id:
            return current
        t0 = time.perf_counter()
        loaded = load_version(self.store, name, version_id, self.handler)
        old = current.version if current is not None else None
        metrics.version_changed(name, old, version_id)
        log.info("%s: serving version %s%s (%d users, %d items, read in %.2fs)", name,
                 version_id, f" (was {old})" if old else "", loaded.n_users, loaded.n_items,
                 time.perf_counter() - t0)
        return loaded

    def _forget(self, name: str) -> None:
        with self._lock:
            entry = self._entries.pop(name, None)
        if entry is not None and entry.current is not None:
            metrics.version_gone(name, entry.current.version)

    def loaded(self) -> dict[str, str]:
        """Model name -> version this worker currently serves."""
        return {n: e.current.version for n, e in list(self._entries.items())
                if e.current is not None}


def _poll_loop(models: weakref.ReferenceType[ActiveModels], interval: float) -> None:
    """Poll until the app that owns ``models`` is gone."""
    while True:
        time.sleep(interval)
        owner = models()
        if owner is None:
            return
        owner.poll()
        del owner
