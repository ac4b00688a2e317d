"""Real servers for the service tests: redis-server and gunicorn, started by the test session.

``redis-server`` must be installed (``make redis``). Outside CI a missing binary skips the
Redis tests; with ``CI=true`` it fails them, so that CI can never pass without running them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from libreco.algorithms import ItemCF, UserCF
from libreco.data import DatasetPure
from libreco.data.synthetic import generate
from libreco.utils import save_knn

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, interval: float = 0.02, what: str = "condition") -> Any:
    """Call ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # the thing waited for is not there yet
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class RedisServer:
    """A ``redis-server`` process on a free loopback port, in its own folder."""

    def __init__(self, folder: Path, port: int | None = None):
        self.folder = folder
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.folder), "--save", "", "--appendonly", "no", "--dbfilename", "dump.rdb",
             "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        wait_for(client.ping, 10, what=f"redis-server on port {self.port}")
        client.close()
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def kill(self) -> None:
        """SIGKILL: the server dies without saving."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None


def _redis_available() -> None:
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed (make redis, or apt-get install redis-server)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    """One redis-server for the session; tests flush it through ``redis_client``."""
    _redis_available()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_factory(tmp_path) -> Iterator[Any]:
    """Start extra redis-servers for a test (stopped afterwards)."""
    _redis_available()
    started: list[RedisServer] = []

    def make(port: int | None = None, folder: Path | None = None) -> RedisServer:
        server = RedisServer(folder or tmp_path / f"redis{len(started)}", port).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def redis_client(redis_server) -> Iterator[redis.Redis]:
    """A client of the session's server, on an empty database."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


# -- models ---------------------------------------------------------------------------------
class KnnModels:
    """Fitted ItemCF and UserCF models on generated data, saved with ``save_knn``."""

    def __init__(self, folder: Path, seed: int = 11, n_users: int = 300, n_items: int = 200,
                 n_interactions: int = 6000, task: str = "ranking", k: int = 20):
        df = generate(n_users=n_users, n_items=n_items, n_interactions=n_interactions,
                      seed=seed, features=False)
        self.train, self.info = DatasetPure.build_trainset(df)
        self.models = {}
        self.paths = {}
        for cls in (ItemCF, UserCF):
            model = cls(task=task, data_info=self.info, k_sim=k).fit(self.train, verbose=0)
            path = folder / f"{model.algorithm}_{task}_{seed}"
            save_knn(path, model, self.train, k=k)
            self.models[model.algorithm] = model
            self.paths[model.algorithm] = path


@pytest.fixture(scope="session")
def knn_models(tmp_path_factory) -> KnnModels:
    return KnnModels(tmp_path_factory.mktemp("knn"))


@pytest.fixture(scope="session")
def knn_models_b(tmp_path_factory) -> KnnModels:
    """Other data with the same user ids, so that answers differ from ``knn_models``."""
    return KnnModels(tmp_path_factory.mktemp("knn_b"), seed=23, n_interactions=5000)


# -- gunicorn -------------------------------------------------------------------------------
def http(method: str, url: str, body: Any = None, timeout: float = 10.0,
         raw: bytes | None = None) -> tuple[int, Any]:
    """One HTTP request with the standard library; returns (status, parsed JSON or text)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def child_pids(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (gunicorn's workers)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name is in parentheses and may contain spaces
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            out.add(int(entry.name))
    return out


class Gunicorn:
    """``gunicorn -c python:services.gunicorn_conf <app>`` as a subprocess."""

    def __init__(self, app: str, env: dict[str, str], log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_dir = log.parent / f"metrics-{self.port}"
        full_env = {**os.environ, "LIBRECO_PORT": str(self.port), "LIBRECO_WORKERS": "2",
                    "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
                    "PYTHONPATH": str(ROOT), **env,
                    # the "worker <pid> ready" lines that booted() counts are INFO lines
                    "LIBRECO_LOG_LEVEL": "INFO"}
        self.log = log
        self._log_file = open(log, "w")  # noqa: SIM115 - open while gunicorn runs
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "gunicorn", "-c", "python:services.gunicorn_conf", app],
            cwd=ROOT, env=full_env, stdout=self._log_file, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: http("GET", self.url + "/healthz", timeout=1)[0] == 200, 30,
                     what="gunicorn /healthz")
            wait_for(lambda: len(self.workers()) == 2, 10, what="two gunicorn workers")
            # both apps built: a signal now never meets a worker that is still booting
            wait_for(lambda: self.booted() >= 2, 30, what="two booted gunicorn workers")
        except AssertionError:
            self.stop()
            raise AssertionError("gunicorn did not start:\n" + log.read_text()[-3000:]) from None

    def workers(self) -> set[int]:
        return child_pids(self.proc.pid)

    def booted(self) -> int:
        """Workers that logged the ``post_worker_init`` line of ``services.gunicorn_conf``."""
        self._log_file.flush()
        return sum(1 for line in self.log.read_text().splitlines()
                   if line.rstrip().endswith(" ready") and "worker " in line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log_file.close()


@pytest.fixture
def gunicorn_factory(tmp_path) -> Iterator[Any]:
    started: list[Gunicorn] = []

    def make(env: dict[str, str], app: str = "services.knn.knn_deploy:app") -> Gunicorn:
        g = Gunicorn(app, env, tmp_path / f"gunicorn{len(started)}.log")
        started.append(g)
        return g

    yield make
    for g in started:
        g.stop()


@pytest.fixture(scope="session")
def tf_models(tmp_path_factory):
    """DeepFM, DIN and YouTubeRanking fitted once per session (see ``tf_models.TFModels``)."""
    pytest.importorskip("tensorflow")
    from tests.services.tf_models import TFModels

    return TFModels(tmp_path_factory.mktemp("tf"))
