"""skaffold.yaml: valid against the vendored Skaffold schema, and consistent with the chart."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml

from tests.charts.conftest import CHART, REPO, SCHEMAS, pod_spec, render

SKAFFOLD = yaml.safe_load((REPO / "skaffold.yaml").read_text())
RELEASE = SKAFFOLD["deploy"]["helm"]["releases"][0]


def artifact_env(image: str) -> str:
    """Skaffold's template suffix for an image name (non-alphanumerics become ``_``)."""
    return re.sub(r"[^A-Za-z0-9]", "_", image)


def test_skaffold_yaml_is_valid_against_the_schema():
    schema = json.loads((SCHEMAS / "skaffold-v4beta14.json").read_text())
    assert SKAFFOLD["apiVersion"] == "skaffold/v4beta14"
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(SKAFFOLD)]
    assert not errors, errors


def test_the_schema_check_would_catch_a_typo():
    schema = json.loads((SCHEMAS / "skaffold-v4beta14.json").read_text())
    broken = json.loads(json.dumps(SKAFFOLD))
    broken["build"]["artifacts"][0]["docker"]["dockerFile"] = "Dockerfile.knn"
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_one_artifact_per_dockerfile():
    dockerfiles = sorted(p.name for p in REPO.glob("Dockerfile.*"))
    artifacts = SKAFFOLD["build"]["artifacts"]
    assert sorted(a["docker"]["dockerfile"] for a in artifacts) == dockerfiles
    for artifact in artifacts:
        family = artifact["docker"]["dockerfile"].split(".", 1)[1]
        assert artifact["image"] == f"libreco-{family}"
        assert artifact.get("context", ".") == "."


def test_images_reach_the_chart_through_set_value_templates():
    templates = RELEASE["setValueTemplates"]
    for artifact in SKAFFOLD["build"]["artifacts"]:
        family = artifact["docker"]["dockerfile"].split(".", 1)[1]
        env = artifact_env(artifact["image"])
        assert templates[f"images.{family}.repository"] == "{{.IMAGE_REPO_" + env + "}}"
        assert templates[f"images.{family}.tag"] == "{{.IMAGE_TAG_" + env + "}}"
    assert (REPO / RELEASE["chartPath"]).resolve() == CHART.resolve()
    assert "latest" not in json.dumps(SKAFFOLD["build"]["tagPolicy"])


def test_local_profiles_load_images_instead_of_pushing():
    profiles = {p["name"]: p for p in SKAFFOLD["profiles"]}
    assert {"kind", "minikube"} <= set(profiles)
    for name in ("kind", "minikube"):
        patches = profiles[name]["patches"]
        assert {"op": "add", "path": "/build/local/push", "value": False} in patches
        assert profiles[name]["activation"][0]["kubeContext"].startswith(name)


@pytest.fixture(scope="module")
def skaffold_render(helm):
    """The chart as skaffold installs it, with made-up image repositories and tags."""
    values = {}
    for key, template in RELEASE["setValueTemplates"].items():
        kind, env = re.fullmatch(r"\{\{\.IMAGE_(REPO|TAG)_(\w+)\}\}", template).groups()
        values[key] = env.replace("_", "-") if kind == "REPO" else "3f9c2ab"
    values.update({k: str(v) for k, v in RELEASE.get("setValues", {}).items()})
    files = [REPO / f for f in RELEASE.get("valuesFiles", [])]
    return render(helm, files, values)


def test_the_skaffold_release_renders_with_the_built_images(skaffold_render):
    images = {c["image"] for d in skaffold_render.kind("Deployment")
              for c in pod_spec(d)["containers"]}
    for artifact in SKAFFOLD["build"]["artifacts"]:
        assert f"{artifact['image']}:3f9c2ab" in images


def test_port_forwards_name_rendered_services(skaffold_render):
    # helm names objects <release>-<chart> unless the release name holds the chart name
    name = RELEASE["name"]
    prefix = name if "libreco" in name else f"{name}-libreco"
    services = {s["metadata"]["name"].replace("recs-libreco", prefix): s
                for s in skaffold_render.kind("Service")}
    forwards = SKAFFOLD["portForward"]
    assert len({f["localPort"] for f in forwards}) == len(forwards)
    for forward in forwards:
        assert forward["resourceType"] == "service"
        service = services[forward["resourceName"]]
        assert forward["port"] in {p["port"] for p in service["spec"]["ports"]}
    families = {f["resourceName"].rsplit("-", 1)[1] for f in forwards}
    assert families == {"knn", "vector", "tf"}
