"""The loader functions' public surface: imports, argument checks, family registry."""

from __future__ import annotations

import subprocess
import sys

import pytest

import services
from libreco.algorithms import Popular
from libreco.utils.artifacts import ArtifactError
from services.loaders import FAMILY_LOADERS, family_loader
from services.loaders.knn import load_knn, sim2redis
from tests.services.conftest import ROOT


def test_guide_names_are_exported():
    assert set(services.__all__) == {"sim2redis", "user_consumed2redis", "vector2redis",
                                     "save_faiss_index", "data_info2redis", "seq2redis"}
    from services import sim2redis as exported

    assert exported is sim2redis
    with pytest.raises(AttributeError):
        services.no_such_loader  # noqa: B018


def test_importing_services_loads_no_heavy_stack():
    code = ("import sys, services, services.knn.knn_deploy as d; "
            "from services import sim2redis, user_consumed2redis; "
            "print(sorted(m for m in ('tensorflow', 'faiss', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_family_registry():
    assert family_loader("knn") is load_knn
    assert FAMILY_LOADERS["knn"] == "services.loaders.knn:load_knn"
    with pytest.raises(ValueError, match="no loader"):
        family_loader("quantum")


def test_wrong_family_and_missing_directory(redis_client, tmp_path, suite_data):
    train, _, info = suite_data["pure"]
    Popular(task="ranking", data_info=info).fit(train, verbose=0).save(tmp_path / "pop")
    with pytest.raises(ArtifactError, match="baseline"):
        sim2redis(tmp_path / "pop", client=redis_client)
    with pytest.raises(ArtifactError, match="not found"):
        sim2redis(tmp_path / "nothing", client=redis_client)
    assert redis_client.keys("*") == []
