"""The chart lints, renders for every CI values file, and every object is valid.

Core objects are validated against the strict Kubernetes schemas of ``kubernetes-validate``
(unknown fields refused) for each supported Kubernetes version; ServiceMonitor and PodMonitor
objects against the Prometheus Operator CRDs vendored in ``../shared/schemas``.
"""

from __future__ import annotations

import copy
import functools
import re

import jsonschema
import pytest
import yaml

from tests.charts.conftest import CHART, CI_VALUES, KUBE_VERSIONS, SCHEMAS, require, run_helm

kubernetes_validate = require("kubernetes_validate")
from kubernetes_validate import utils as kv_utils  # noqa: E402
from referencing import Registry, Resource  # noqa: E402

CRD_FILES = {
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
    "PodMonitor": "monitoring.coreos.com_podmonitors.yaml",
}
# Gateway API has no vendored schema; its route is checked by the invariant tests.
NO_SCHEMA = {"HTTPRoute"}


def test_ci_values_cover_every_family_and_mode():
    names = {p.name for p in CI_VALUES}
    for wanted in ("knn-values.yaml", "vector-values.yaml", "tf-sidecar-values.yaml",
                   "tf-deployment-values.yaml", "external-redis-values.yaml",
                   "all-values.yaml"):
        assert wanted in names
    modes = set()
    for path in CI_VALUES:
        values = yaml.safe_load(path.read_text())
        modes.add(values.get("tfServing", {}).get("mode"))
    assert {"sidecar", "deployment"} <= modes


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda p: p.name if p else "defaults")
def test_helm_lint_strict(helm, values):
    args = ["lint", "--strict", str(CHART)]
    if values is not None:
        args += ["-f", str(values)]
    result = run_helm(helm, *args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


@functools.cache
def _definitions(schema_dir: str):
    return kv_utils.schema_contents(f"kubernetes-json-schema/{schema_dir}/_definitions.json",
                                    schema_dir)


@functools.cache
def kubernetes_validator(version: str, kind: str, api_version: str):
    """The strict validator ``kubernetes_validate.validate`` uses, built once per kind.

    ``kubernetes_validate.validate`` reads and resolves the schema files on every call, which
    makes hundreds of objects slow; this builds the same validator from the same files once.
    """
    known = [v for v in kv_utils.all_versions()
             if kv_utils.major_minor(v) <= kv_utils.major_minor(version)]
    schema_dir = f"v{known[-1]}-local-strict"
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = kv_utils.schema_contents(
            f"kubernetes-json-schema/{schema_dir}/{kind.lower()}-{api}.json", version)
    except FileNotFoundError:
        return None
    registry = Resource.from_contents(_definitions(schema_dir)) @ (
        Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def kubernetes_problems(obj: dict, version: str) -> list[str]:
    validator = kubernetes_validator(version, obj["kind"], obj["apiVersion"])
    name = f"{obj['kind']} {obj['metadata']['name']}"
    if validator is None:
        return [f"{name}: {obj['apiVersion']} is not a Kubernetes {version} kind"]
    return [f"{name}: {'/'.join(str(p) for p in e.path)}: {e.message}"
            for e in validator.iter_errors(obj)]


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_objects_are_valid_kubernetes(rendered_ci, values, version):
    problems = []
    for obj in rendered_ci[(values.name, version)]:
        if obj["kind"] in CRD_FILES or obj["kind"] in NO_SCHEMA:
            continue
        problems += kubernetes_problems(obj, version)
    assert not problems, "\n".join(problems)


def test_the_cached_validator_agrees_with_kubernetes_validate(rendered_ci):
    """Same verdicts as the library's own entry point, on a valid and a broken object."""
    deployment = copy.deepcopy(rendered_ci[("all-values.yaml", KUBE_VERSIONS[0])]
                               .kind("Deployment")[0])
    kubernetes_validate.validate(deployment, f"{KUBE_VERSIONS[0]}.0", strict=True)
    assert kubernetes_problems(deployment, KUBE_VERSIONS[0]) == []

    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, f"{KUBE_VERSIONS[0]}.0", strict=True)
    assert any("imagePullPolicyy" in p for p in kubernetes_problems(deployment,
                                                                    KUBE_VERSIONS[0]))


def strict(schema):
    """An OpenAPI schema that refuses unknown fields, as the API server does with
    ``fieldValidation=Strict`` (except where the schema keeps unknown fields)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


@pytest.fixture(scope="module")
def crd_validators():
    validators = {}
    for kind, filename in CRD_FILES.items():
        crd = yaml.safe_load((SCHEMAS / filename).read_text())
        group = crd["spec"]["group"]
        for version in crd["spec"]["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            validators[(kind, f"{group}/{version['name']}")] = jsonschema.Draft4Validator(schema)
    return validators


def test_monitors_are_valid_against_the_operator_crds(rendered_ci, crd_validators):
    seen = set()
    problems = []
    for rendered in rendered_ci.values():
        for obj in rendered:
            if obj["kind"] not in CRD_FILES:
                continue
            seen.add(obj["kind"])
            validator = crd_validators.get((obj["kind"], obj["apiVersion"]))
            assert validator is not None, f"no CRD version for {obj['apiVersion']}"
            for error in validator.iter_errors(obj):
                where = "/".join(str(p) for p in error.path)
                problems.append(f"{obj['kind']} {obj['metadata']['name']}: {where}: "
                                f"{error.message}")
    assert seen == set(CRD_FILES), "the CI values must render a ServiceMonitor and a PodMonitor"
    assert not problems, "\n".join(problems)


def test_the_strict_crd_check_refuses_unknown_fields(crd_validators):
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
               "metadata": {"name": "m"},
               "spec": {"selector": {}, "endpoints": [{"port": "http", "pathh": "/metrics"}]}}
    validator = crd_validators[("ServiceMonitor", "monitoring.coreos.com/v1")]
    assert any("pathh" in e.message for e in validator.iter_errors(monitor))


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_notes_render_and_show_every_model(helm, values, tmp_path):
    """NOTES.txt (which ``helm template`` skips) through a client-side dry run."""
    result = run_helm(helm, "install", "libreco", str(CHART), "--dry-run=client",
                      "--namespace", "recs", "-f", str(values),
                      check=True)
    notes = result.stdout.split("NOTES:", 1)[1]
    config = yaml.safe_load(values.read_text())
    models = [config.get("model", {}), *config.get("extraModels", [])]
    for model in models:
        name = model.get("name") or model.get("algorithm", "item_cf")
        assert f"localhost:5000/{name}/recommend" in notes
    assert "helm test libreco -n recs" in notes
