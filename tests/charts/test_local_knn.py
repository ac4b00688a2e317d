"""The knn release, run as local processes: what ``helm install`` would start, in its order.

The chart is rendered for the knn family; then, as on a cluster: the Redis StatefulSet's
container starts (with the generated password from the rendered Secret), the knn Deployment's
gunicorn starts and is alive but not ready, the post-install hooks run by weight (training on
generated data, then loading into Redis), the service turns ready without a restart and
answers a recommendation request, the ``helm test`` Pod's command passes, and a second
training and loading round (what an upgrade or a scheduled run does) keeps it answering.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from tests.charts.conftest import CHART, REPO, pod_spec, render
from tests.charts.local_pods import LocalCluster, LocalProcess

pytestmark = pytest.mark.slow

RELEASE_PREFIX = "recs-libreco"
MODEL = "item_cf"
N_REC = 7


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(process: LocalProcess, log_dir) -> subprocess.Popen:
    log = open(log_dir / (process.name.replace("/", "_") + ".log"), "wb")  # noqa: SIM115
    return subprocess.Popen(process.argv, env=process.env, cwd=process.cwd, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def run(process: LocalProcess, log_dir, timeout: float) -> None:
    proc = start(process, log_dir)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        pytest.fail(f"{process.name} did not finish in {timeout} s:\n{tail(process, log_dir)}")
    assert code == 0, f"{process.name} exited with {code}:\n{tail(process, log_dir)}"


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def tail(process: LocalProcess, log_dir, lines: int = 40) -> str:
    path = log_dir / (process.name.replace("/", "_") + ".log")
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def http(method: str, url: str, body: dict | None = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_for(url: str, proc: subprocess.Popen, timeout: float, want: int = 200) -> int:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the process behind {url} exited with {proc.returncode}"
        try:
            status, _ = http("GET", url)
        except OSError:
            status = None
        if status == want:
            return status
        time.sleep(0.2)
    return status


def probe_url(container: dict, probe: str, port: int) -> str:
    return f"http://127.0.0.1:{port}{container[probe]['httpGet']['path']}"


@pytest.fixture
def release(helm, tmp_path):
    rendered = render(helm, [CHART / "ci" / "knn-values.yaml"],
                      {"training.generate": "4000", "model.nRec": str(N_REC),
                       "deployment.gunicorn.workers": "2"})
    cluster = LocalCluster(list(rendered), tmp_path / "cluster")
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []
    yield cluster, rendered, logs, procs
    for proc in reversed(procs):
        stop(proc)


def test_knn_release_as_local_processes(release):
    cluster, rendered, logs, procs = release
    dockerfile = REPO / "Dockerfile.knn"

    # Redis, as the StatefulSet runs it, on a port of its own
    redis_port = free_port()
    (sts,) = rendered.kind("StatefulSet")
    cluster.publish(f"{RELEASE_PREFIX}-redis", 6379, redis_port)
    redis = cluster.process(sts, "redis")
    redis.argv += ["--port", str(redis_port), "--bind", "127.0.0.1"]
    redis_proc = start(redis, logs)
    procs.append(redis_proc)
    password = redis.env["REDIS_PASSWORD"]
    assert len(password) >= 16
    wait_redis(redis_port, password, redis_proc)

    # the knn Deployment: gunicorn with the rendered command, config and probes
    http_port = free_port()
    deployment = rendered.get("Deployment", f"{RELEASE_PREFIX}-knn")
    service_port = rendered.get("Service", f"{RELEASE_PREFIX}-knn")["spec"]["ports"][0]["port"]
    cluster.publish(f"{RELEASE_PREFIX}-knn", service_port, http_port)
    service = cluster.process(deployment, "service", dockerfile,
                              port_env={"LIBRECO_PORT": http_port})
    assert service.argv[1:] == ["-c", "python:services.gunicorn_conf",
                                "services.knn.knn_deploy:app"]
    assert service.env["REDIS_URL"] == f"redis://127.0.0.1:{redis_port}/0"
    gunicorn = start(service, logs)
    procs.append(gunicorn)
    container = next(c for c in pod_spec(deployment)["containers"] if c["name"] == "service")
    assert wait_for(probe_url(container, "startupProbe", http_port), gunicorn, 60) == 200, (
        tail(service, logs))
    status, _ = http("GET", probe_url(container, "readinessProbe", http_port))
    assert status != 200, "ready before any model was loaded"

    # the post-install hooks, in Helm's order
    hooks = sorted(rendered.kind("Job"), key=lambda j: (
        int(j["metadata"]["annotations"]["helm.sh/hook-weight"]), j["metadata"]["name"]))
    assert [j["metadata"]["labels"]["app.kubernetes.io/component"] for j in hooks] == [
        "train", "load"]
    for job in hooks:
        (c,) = pod_spec(job)["containers"]
        run(cluster.process(job, c["name"], dockerfile), logs, timeout=300)
    assert (cluster.root / "claims" / f"{RELEASE_PREFIX}-models" / MODEL).is_dir()

    # ready without a restart, and answering
    assert wait_for(probe_url(container, "readinessProbe", http_port), gunicorn, 30) == 200
    url = f"http://127.0.0.1:{http_port}/{MODEL}/recommend"
    status, answer = http("POST", url, {"user": "1", "n_rec": N_REC, "k_neighbors": 10})
    assert status == 200, answer
    ((key, pairs),) = answer.items()
    assert "1" in key
    assert 0 < len(pairs) <= N_REC
    items = [item for item, _ in pairs]
    assert len(set(items)) == len(items)
    scores = [score for _, score in pairs]
    assert scores == sorted(scores, reverse=True)
    status, answer = http("POST", url, {"user": "1"})
    assert status == 200 and len(next(iter(answer.values()))) <= N_REC

    # helm test: the test Pod's own command, pointed at the local service
    (test_pod,) = rendered.kind("Pod")
    run(cluster.process(test_pod, "recommend", dockerfile), logs, timeout=60)

    status, metrics = http("GET", f"http://127.0.0.1:{http_port}/metrics")
    assert status == 200 and "libreco_requests_total" in metrics

    # a new version through the same Jobs (helm upgrade, or a scheduled run): no downtime
    for job in hooks:
        (c,) = pod_spec(job)["containers"]
        run(cluster.process(job, c["name"], dockerfile), logs, timeout=300)
        status, _ = http("POST", url, {"user": "1", "n_rec": 3})
        assert status == 200
    assert gunicorn.poll() is None


def wait_redis(port: int, password: str, proc: subprocess.Popen, timeout: float = 20) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, password=password)
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, "redis-server exited"
        try:
            if client.ping():
                break
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    # the password from the Secret is required
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port).ping()
