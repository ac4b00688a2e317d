"""Where the Prometheus metric files go: never into a service's working directory.

prometheus_client writes ``counter_<pid>.db`` and friends into ``PROMETHEUS_MULTIPROC_DIR``,
and into the working directory when that variable exists but is empty. Both ways a service is
started (an app built in a plain process, gunicorn) are run from an empty folder that must
stay empty.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from services.loaders.knn import load_knn
from tests.services.conftest import PYTHON, ROOT, free_port, http, wait_for

SERVE_ONCE = """
import json, sys
from services.core.app import create_app
client = create_app("knn").test_client()
user = json.loads(sys.argv[1])
answer = client.post("/item_cf/recommend", json={"user": user, "n_rec": 5})
metrics = client.get("/metrics").get_data(as_text=True)
print(json.dumps({"status": answer.status_code, "metrics": metrics}))
"""


def counted_requests(metrics: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("libreco_requests_total{") and 'model="item_cf"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def base_env(redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")}
    return {**env, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url}


@pytest.fixture
def item_cf(redis_client, knn_models):
    redis_client.flushall()
    load_knn(knn_models.paths["item_cf"], client=redis_client)
    return knn_models.info.id2user[0]


def test_an_empty_multiprocess_dir_writes_nothing_into_the_working_directory(
        redis_server, item_cf, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = subprocess.run([PYTHON, "-c", SERVE_ONCE, json.dumps(item_cf)], cwd=cwd,
                         env={**base_env(redis_server.url), "PROMETHEUS_MULTIPROC_DIR": ""},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == 200
    assert counted_requests(result["metrics"]) == 1  # in-process metrics, read back
    assert sorted(p.name for p in cwd.iterdir()) == []


@pytest.mark.slow
def test_gunicorn_without_a_multiprocess_dir_keeps_its_files_out_of_the_working_directory(
        redis_server, item_cf, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    port = free_port()
    log = tmp_path / "gunicorn.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [PYTHON, "-m", "gunicorn", "-c", "python:services.gunicorn_conf",
             "services.knn.knn_deploy:app"], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
            env={**base_env(redis_server.url), "LIBRECO_PORT": str(port),
                 "LIBRECO_WORKERS": "2"})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http("GET", base + "/healthz", timeout=1)[0] == 200, 30,
                 what="gunicorn /healthz")
        for _ in range(20):
            status, _ = http("POST", base + "/item_cf/recommend", {"user": item_cf})
            assert status == 200
        status, metrics = http("GET", base + "/metrics")
        assert status == 200
        assert counted_requests(metrics) == 20  # every worker's files were found and merged
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert sorted(p.name for p in cwd.iterdir()) == [], Path(log).read_text()[-2000:]
