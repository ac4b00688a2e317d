"""``python -m jobs.load``: a model directory into Redis, with exit codes Jobs can act on."""

from __future__ import annotations

import logging

from jobs.load import main
from services.core.store import ModelKeys
from tests.services.conftest import (  # noqa: F401 - the Redis and model fixtures
    free_port,
    knn_models,
    redis_client,
    redis_server,
)


def test_loads_and_activates(redis_server, redis_client, knn_models,  # noqa: F811
                             monkeypatch, caplog):
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    with caplog.at_level(logging.INFO):
        assert main(["--model-dir", str(knn_models.paths["user_cf"])]) == 0
    version = redis_client.get(ModelKeys("user_cf").active)
    assert version is not None
    messages = [r.getMessage() for r in caplog.records]
    assert any("part sim written and checked" in m for m in messages)
    assert any(m.startswith(f"loaded {knn_models.paths['user_cf']} (knn) as version "
                            f"{version.decode()} in ") for m in messages)


def test_name_option(redis_server, redis_client, knn_models, monkeypatch):  # noqa: F811
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    assert main(["--model-dir", str(knn_models.paths["item_cf"]), "--name", "books"]) == 0
    assert redis_client.exists(ModelKeys("books").active)


def test_exit_codes(redis_server, knn_models, tmp_path, monkeypatch, caplog):  # noqa: F811
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    assert main(["--model-dir", str(tmp_path / "missing")]) == 2
    monkeypatch.setenv("REDIS_URL", "localhost:6379")
    assert main(["--model-dir", str(knn_models.paths["item_cf"])]) == 2
    assert "REDIS_URL" in caplog.text
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("LIBRECO_REDIS_TIMEOUT", "0.2")
    assert main(["--model-dir", str(knn_models.paths["item_cf"])]) == 1
    assert "keeps serving" in caplog.text
