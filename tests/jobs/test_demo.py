"""``make demo`` end to end: train one model per family, start Redis, load, serve, query, stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.demo import free_port, port_in_use

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("tensorflow")
pytest.importorskip("faiss")


@pytest.mark.slow
def test_demo_trains_loads_serves_and_answers_every_family(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "TF_SERVING_URL",
                                                            "LIBRECO_MODEL_DIR")}
    out = subprocess.run(
        [sys.executable, "-m", "jobs.demo", "--once", "--port", str(port),
         "--interactions", "20000", "--models-dir", str(tmp_path / "models")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    # the seed requests answered for user 1, each with ten distinct items
    blocks = out.stdout.split("\n$ python ")[1:]
    scripts = [b.split(" ", 1)[0] for b in blocks]
    assert scripts == ["services/knn/knn_request.py", "services/vector/vector_request.py",
                       "services/tf/tf_request.py", "services/tf/tf_request.py"], \
        out.stdout[-3000:]
    assert "--algo din" in blocks[2] and "--algo deepfm" in blocks[3]
    decoder = json.JSONDecoder()
    for block in blocks:
        answer, _ = decoder.raw_decode(block[block.index("{"):])
        (key, pairs), = answer.items()
        assert key == "recommend list for user (1)"
        items = [item for item, _ in pairs]
        assert len(items) == 10 == len(set(items))
        scores = [score for _, score in pairs]
        assert scores == sorted(scores, reverse=True)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["models"] == ["item_cf", "als", "din", "deepfm"]
    # everything it started is stopped: the port is free again, no model left half written
    assert not port_in_use(port)
    for algorithm in summary["models"]:
        assert (tmp_path / "models" / algorithm / "manifest.json").is_file()
