"""Service configuration: defaults, then the environment, then an explicit override.

Every setting has an environment variable of the same name in the Helm values. Values are
checked once, when the app is built, and every problem is reported together in one
:class:`ConfigError` whose message names each variable and what it accepts.

This module imports only the standard library, so the gunicorn config file and the loaders can
validate settings without importing Flask or Redis.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar
from urllib.parse import urlparse

RedisMode = Literal["standalone", "sentinel", "cluster"]
ColdStart = Literal["popular", "404"]

REDIS_MODES: tuple[RedisMode, ...] = ("standalone", "sentinel", "cluster")
COLD_START: tuple[ColdStart, ...] = ("popular", "404")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MIN_MAX_N_REC = 1000
"""``LIBRECO_MAX_N_REC`` may not be set below this: clients may always ask for 1,000 items."""

T = TypeVar("T")


class ConfigError(ValueError):
    """One or more settings are invalid; the message lists every problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class RedisSettings:
    """How to reach Redis.

    Attributes
    ----------
    url : str
        ``REDIS_URL``; ``redis://``, ``rediss://`` or ``unix://``. In sentinel mode only its
        database number and credentials are used.
    password : str or None
        ``REDIS_PASSWORD``; overrides a password in the URL.
    mode : {"standalone", "sentinel", "cluster"}
        ``LIBRECO_REDIS_MODE``.
    sentinels : tuple of (host, port)
        ``LIBRECO_REDIS_SENTINELS`` as ``"host:port,host:port"`` (sentinel mode).
    sentinel_master : str
        ``LIBRECO_REDIS_SENTINEL_MASTER``, the monitored master's name (sentinel mode).
    timeout : float
        ``LIBRECO_REDIS_TIMEOUT``: seconds to connect and to wait for an answer. Short, so
        that a request fails fast with 503 while Redis is away.
    """

    url: str = "redis://localhost:6379/0"
    password: str | None = None
    mode: RedisMode = "standalone"
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = "mymaster"
    timeout: float = 1.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RedisSettings:
        """Read the Redis settings alone (the loaders need nothing else)."""
        reader = _Reader(os.environ if environ is None else environ)
        settings = _redis_settings(reader)
        reader.raise_if_invalid()
        return settings


@dataclass(frozen=True)
class Config:
    """Everything a service reads from its environment.

    Attributes
    ----------
    redis : RedisSettings
    model : str or None
        ``LIBRECO_MODEL``: the model a family's default route serves, and the one ``/readyz``
        waits for. Unset means any loaded model of the family.
    k_neighbors : int
        ``LIBRECO_K_NEIGHBORS``: neighbours used when a request does not say (knn).
    n_rec : int
        ``LIBRECO_N_REC``: items returned when a request does not say.
    max_n_rec : int
        ``LIBRECO_MAX_N_REC``: the largest ``n_rec`` a request may ask for (at least 1,000).
    cold_start : {"popular", "404"}
        ``LIBRECO_COLD_START``: answer unknown users with popular items or with 404.
    poll_interval : float
        ``LIBRECO_POLL_INTERVAL``: seconds between two checks of a model's active version, in
        [0, 1]; 0 checks on every request.
    log_level : str
        ``LIBRECO_LOG_LEVEL``.
    tf_serving_url, model_dir : str or None
        ``TF_SERVING_URL`` and ``LIBRECO_MODEL_DIR`` (tf family).
    tf_timeout : float
        ``LIBRECO_TF_TIMEOUT``: seconds to wait for TF Serving (tf family).
    table_memory_mb : int
        ``LIBRECO_TABLE_MEMORY_MB``: how large a per-version table (e.g. ItemCF's neighbour
        lists) a worker may copy into its memory to answer without reading it from Redis per
        request; 0 keeps every table in Redis.
    environ : mapping
        The variables the configuration was read from (overrides applied), for the settings a
        family reads itself (e.g. ``LIBRECO_TF_CANDIDATES``).
    """

    redis: RedisSettings = field(default_factory=RedisSettings)
    model: str | None = None
    k_neighbors: int = 10
    n_rec: int = 10
    max_n_rec: int = 1000
    cold_start: ColdStart = "popular"
    poll_interval: float = 0.5
    log_level: str = "INFO"
    tf_serving_url: str | None = None
    model_dir: str | None = None
    tf_timeout: float = 2.0
    table_memory_mb: int = 512
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 overrides: Mapping[str, str | int | float] | None = None) -> Config:
        """Build the configuration from the environment, then ``overrides``.

        Parameters
        ----------
        environ : mapping, optional
            Defaults to ``os.environ``.
        overrides : mapping, optional
            Values keyed by the same variable names (``{"LIBRECO_COLD_START": "404"}``),
            applied on top of the environment; tests use it.

        Raises
        ------
        ConfigError
            Listing every invalid variable.
        """
        env: dict[str, str] = dict(os.environ if environ is None else environ)
        for key, value in (overrides or {}).items():
            env[key] = str(value)
        r = _Reader(env)
        d = cls()
        redis = _redis_settings(r)
        model = r.get("LIBRECO_MODEL", None, str) or None
        if model is not None and not _is_model_name(model):
            r.problem("LIBRECO_MODEL", model, "a model name of letters, digits, '_' and '-'")
        k_neighbors = r.get("LIBRECO_K_NEIGHBORS", d.k_neighbors, _positive_int)
        max_n_rec = r.get("LIBRECO_MAX_N_REC", d.max_n_rec, _positive_int)
        if max_n_rec < MIN_MAX_N_REC:
            r.problem("LIBRECO_MAX_N_REC", env.get("LIBRECO_MAX_N_REC"),
                      f"an integer >= {MIN_MAX_N_REC}")
            max_n_rec = MIN_MAX_N_REC
        n_rec = r.get("LIBRECO_N_REC", d.n_rec, _positive_int)
        if n_rec > max_n_rec:
            r.problem("LIBRECO_N_REC", env.get("LIBRECO_N_REC"),
                      f"an integer from 1 to LIBRECO_MAX_N_REC ({max_n_rec})")
        cold_start = r.get("LIBRECO_COLD_START", d.cold_start, _choice(COLD_START))
        poll = r.get("LIBRECO_POLL_INTERVAL", d.poll_interval, _float_between(0.0, 1.0))
        log_level = r.get("LIBRECO_LOG_LEVEL", d.log_level, _choice(LOG_LEVELS, upper=True))
        tf_url = r.get("TF_SERVING_URL", None, _http_url) or None
        model_dir = r.get("LIBRECO_MODEL_DIR", None, str) or None
        tf_timeout = r.get("LIBRECO_TF_TIMEOUT", d.tf_timeout, _positive_float)
        table_mb = r.get("LIBRECO_TABLE_MEMORY_MB", d.table_memory_mb, _non_negative_int)
        r.raise_if_invalid()
        return cls(redis=redis, model=model, k_neighbors=k_neighbors, n_rec=n_rec,
                   max_n_rec=max_n_rec, cold_start=cold_start, poll_interval=poll,
                   log_level=log_level, tf_serving_url=tf_url, model_dir=model_dir,
                   tf_timeout=tf_timeout, table_memory_mb=table_mb, environ=env)


@dataclass(frozen=True)
class LoadSettings:
    """How loaders write versions.

    Attributes
    ----------
    grace_period : float
        ``LIBRECO_VERSION_GRACE``: seconds a replaced version stays in Redis for requests in
        flight before a later load deletes it.
    stale_after : float
        ``LIBRECO_STALE_AFTER``: seconds without a write after which an unfinished version
        (its load died) is deleted by a later load.
    batch : int
        ``LIBRECO_LOAD_BATCH``: hash fields per Redis command while writing.
    """

    grace_period: float = 60.0
    stale_after: float = 3600.0
    batch: int = 1000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LoadSettings:
        r = _Reader(os.environ if environ is None else environ)
        d = cls()
        grace = r.get("LIBRECO_VERSION_GRACE", d.grace_period, _non_negative_float)
        stale = r.get("LIBRECO_STALE_AFTER", d.stale_after, _non_negative_float)
        batch = r.get("LIBRECO_LOAD_BATCH", d.batch, _positive_int)
        r.raise_if_invalid()
        return cls(grace_period=grace, stale_after=stale, batch=batch)


def is_model_name(name: str) -> bool:
    """Whether ``name`` may name a model in Redis and in a URL."""
    return _is_model_name(name)


_MODEL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _is_model_name(name: str) -> bool:
    return _MODEL_NAME.fullmatch(name) is not None


# -- parsing helpers ------------------------------------------------------------------------
class _Reader:
    """Reads typed variables and collects problems instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env
        self.problems: list[str] = []

    def get(self, name: str, default: T, parse: Callable[[str], T]) -> T:
        raw = self.env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw.strip())
        except ValueError as e:
            self.problem(name, raw, str(e))
            return default

    def problem(self, name: str, value: object, expected: str) -> None:
        self.problems.append(f"{name}={value!r}: expected {expected}")

    def raise_if_invalid(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)


def _redis_settings(r: _Reader) -> RedisSettings:
    d = RedisSettings()
    url = r.get("REDIS_URL", d.url, _redis_url)
    password = r.get("REDIS_PASSWORD", None, str) or None
    mode = r.get("LIBRECO_REDIS_MODE", d.mode, _choice(REDIS_MODES))
    sentinels = r.get("LIBRECO_REDIS_SENTINELS", (), _host_ports)
    master = r.get("LIBRECO_REDIS_SENTINEL_MASTER", d.sentinel_master, str)
    timeout = r.get("LIBRECO_REDIS_TIMEOUT", d.timeout, _positive_float)
    if mode == "sentinel" and not sentinels:
        r.problem("LIBRECO_REDIS_SENTINELS", r.env.get("LIBRECO_REDIS_SENTINELS", ""),
                  "at least one 'host:port' when LIBRECO_REDIS_MODE=sentinel")
    return RedisSettings(url=url, password=password, mode=mode, sentinels=sentinels,
                         sentinel_master=master, timeout=timeout)


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("a positive integer") from None
    if value < 1:
        raise ValueError("a positive integer")
    return value


def _non_negative_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("an integer >= 0") from None
    if value < 0:
        raise ValueError("an integer >= 0")
    return value


def _positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("a positive number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise ValueError("a positive number of seconds")
    return value


def _non_negative_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("a number of seconds >= 0") from None
    if not 0 <= value < float("inf"):
        raise ValueError("a number of seconds >= 0")
    return value


def _float_between(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"a number of seconds from {lo:g} to {hi:g}") from None
        if not lo <= value <= hi:
            raise ValueError(f"a number of seconds from {lo:g} to {hi:g}")
        return value

    return parse


def _choice(options: tuple[str, ...], upper: bool = False) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.upper() if upper else raw.lower()
        if value not in options:
            raise ValueError("one of " + ", ".join(options))
        return value

    return parse


def _redis_url(raw: str) -> str:
    parsed = urlparse(raw)
    if parsed.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("a URL like redis://host:6379/0 (schemes redis, rediss, unix)")
    if parsed.scheme != "unix" and not parsed.hostname:
        raise ValueError("a URL with a host, like redis://host:6379/0")
    try:
        parsed.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError("a URL with a numeric port, like redis://host:6379/0") from None
    return raw


def _http_url(raw: str) -> str:
    parsed = urlparse(raw)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError("a URL like http://host:8501")
    return raw.rstrip("/")


def _host_ports(raw: str) -> tuple[tuple[str, int], ...]:
    out = []
    for part in raw.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("comma-separated 'host:port' pairs, like "
                             "'redis-a:26379,redis-b:26379'")
        out.append((host, int(port)))
    return tuple(out)
