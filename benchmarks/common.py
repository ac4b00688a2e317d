"""What the benchmarks share: the host, the checkout, private servers and wrk runs."""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HELLO_BODY_ENV = "LIBRECO_BENCH_HELLO_BODY"
"""File whose bytes :func:`hello_app` answers with."""


# -- the host and the checkout ----------------------------------------------------------------
def cpu_model() -> str:
    """The processor's name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def host() -> dict[str, Any]:
    """The processor, core count, Python, platform and load average of this host."""
    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
            "platform": platform.platform(), "load_average": list(os.getloadavg())}


def source() -> str:
    """The checkout's commit, marked when the code under test differs from it."""
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                                "services", "libreco", "jobs", "tests"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "unknown"
    if not commit:
        return "unknown"
    return f"{commit} with uncommitted changes" if dirty else commit


# -- HTTP ---------------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port that nothing listens on at 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str) -> int:
    """The status of a GET, 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def post(url: str, body: dict) -> tuple[int, bytes]:
    """POST ``body`` as JSON; the status and the answer's bytes."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def hello_app():
    """A Flask app whose recommend route answers a constant body (gunicorn app factory): the
    floor of what Flask under gunicorn costs per request on this machine."""
    from flask import Flask, Response

    body = Path(os.environ[HELLO_BODY_ENV]).read_bytes()
    app = Flask("hello")

    @app.post("/<name>/recommend")
    def recommend(name: str) -> Response:
        return Response(body, status=200, mimetype="application/json")

    @app.get("/readyz")
    def ready() -> Response:
        return Response("{}", status=200, mimetype="application/json")

    return app


# -- private servers ----------------------------------------------------------------------------
class RedisProcess:
    """A redis-server on a free loopback port, without persistence, in ``folder``."""

    def __init__(self, folder: Path):
        import redis

        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(10)


class Gunicorn:
    """``app`` under gunicorn with ``services/gunicorn_conf.py``, started and answering 200 on
    ``/readyz``."""

    def __init__(self, app: str, env: dict[str, str], log: Path, timeout: float = 120.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "w")  # noqa: SIM115 - open while gunicorn runs
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:services.gunicorn_conf", app],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "LIBRECO_PORT": str(self.port),
                 "LIBRECO_LOG_LEVEL": "WARNING", **env})
        deadline = time.monotonic() + timeout
        while http_status(self.url + "/readyz") != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{app} did not become ready; see {log}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


# -- wrk ----------------------------------------------------------------------------------------
def wrk_script(path: Path, users: list, fields: dict[str, Any]) -> None:
    """A wrk script posting ``{"user": <a random one of users>, **fields}``; each user keeps
    its JSON type (string or number)."""
    ids = ",".join(json.dumps(u) for u in users)
    rest = "".join(f", {json.dumps(k)}: {json.dumps(v)}" for k, v in fields.items())
    path.write_text(f"""
local users = {{{ids}}}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
math.randomseed(os.time())
request = function()
  local u = users[math.random(1, #users)]
  local user = type(u) == "string" and ('"' .. u .. '"') or tostring(u)
  return wrk.format(nil, nil, nil, '{{"user": ' .. user .. '{rest}}}')
end
""")


def run_wrk(url: str, script: Path, seconds: int, connections: int) -> dict[str, Any]:
    """One wrk run; latency percentiles in ms, errors = socket errors + non-2xx answers, and
    the load average before and after."""
    before = [round(x, 2) for x in os.getloadavg()]
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency",
                          "--timeout", "5s", "-s", str(script), url],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    result: dict[str, Any] = {"load_average_before": before,
                              "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    result["requests_per_s"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in", out)
    result["requests"] = int(m.group(1)) if m else 0
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"\s{pct}(?:\.0+)?%\s+([\d.]+)(us|ms|s)\b", out)
        if m:
            scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
            result[f"p{pct}_ms"] = round(float(m.group(1)) * scale, 3)
    errors = {"socket": 0, "non_2xx": 0}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors["socket"] = sum(int(g) for g in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors["non_2xx"] = int(m.group(1))
    result["errors"] = errors["socket"] + errors["non_2xx"]
    result["error_kinds"] = errors
    if "p99_ms" not in result or result["requests"] == 0:
        raise RuntimeError(f"wrk gave no latency figures:\n{out}")
    return result
