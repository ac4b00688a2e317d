"""values.schema.json and the validation helper refuse what cannot work, and say why.

Also: the schema is self-contained, the defaults pass it, and every value is documented.
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml

from tests.charts.conftest import CHART, CI_VALUES, run_helm, template_args

SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def refuse(helm, set_values: dict[str, str], *messages: str, values_text: str | None = None,
           tmp_path=None) -> str:
    """Render with these values, expect failure, and return helm's message."""
    files = []
    if values_text is not None:
        path = tmp_path / "values.yaml"
        path.write_text(values_text)
        files.append(path)
    result = run_helm(helm, *template_args(files, set_values), check=False)
    assert result.returncode != 0, f"{set_values} {values_text} rendered without an error"
    for message in messages:
        assert message in result.stderr, result.stderr
    return result.stderr


@pytest.mark.parametrize("set_values, message", [
    ({"model.family": "graph"}, "/model/family"),
    ({"model.algorithm": "als"}, "/model/algorithm"),
    ({"model.family": "tf", "model.algorithm": "item_cf"}, "/model/algorithm"),
    ({"model.family": "vector", "model.algorithm": "din"}, "/model/algorithm"),
    ({"model.kNeighbors": "0"}, "/model/kNeighbors"),
    ({"model.nRec": "0"}, "/model/nRec"),
    ({"model.maxNRec": "100"}, "/model/maxNRec"),
    ({"model.coldStart": "random"}, "/model/coldStart"),
    ({"model.name": "Item CF"}, "/model/name"),
    ({"model.colour": "red"}, "colour"),
    ({"unknownTopLevel": "1"}, "unknownTopLevel"),
    ({"deployment.replicas": "3"}, "replicas"),
    ({"deployment.gunicorn.workers": "0"}, "/deployment/gunicorn/workers"),
    ({"images.knn.tag": "latest"}, "/images/knn/tag"),
    ({"images.vector.digest": "sha256:abc"}, "/images/vector/digest"),
    ({"tfServing.mode": "both"}, "/tfServing/mode"),
    ({"tfServing.image.tag": "latest"}, "/tfServing/image/tag"),
    ({"externalRedis.mode": "replica"}, "/externalRedis/mode"),
    ({"externalRedis.url": "http://redis:6379"}, "/externalRedis/url"),
    ({"hooks.deletePolicy": "never"}, "/hooks/deletePolicy"),
    ({"training.schedule": "daily"}, "/training/schedule"),
    ({"containerSecurityContext.readOnlyRootFilesystem": "false"},
     "/containerSecurityContext"),
    ({"podSecurityContext.runAsNonRoot": "false"}, "/podSecurityContext"),
])
def test_schema_refuses(helm, set_values, message):
    refuse(helm, set_values, message)


def test_extra_models_are_checked_like_the_model(helm, tmp_path):
    refuse(helm, {}, "/extraModels/0/algorithm", tmp_path=tmp_path, values_text=(
        "extraModels:\n  - family: tf\n    algorithm: item_cf\n"))
    refuse(helm, {}, "/extraModels/0/kNeighbors", tmp_path=tmp_path, values_text=(
        "extraModels:\n  - family: vector\n    algorithm: als\n    kNeighbors: 0\n"))
    refuse(helm, {}, "/extraModels/0", tmp_path=tmp_path, values_text=(
        "extraModels:\n  - family: vector\n    algorithm: als\n    colour: red\n"))


def test_cross_value_problems_are_reported_together(helm, tmp_path):
    message = refuse(helm, {}, "libreco: invalid values", tmp_path=tmp_path, values_text=(
        "extraModels:\n  - family: knn\n    algorithm: user_cf\n"
        "redis:\n  enabled: false\n"
        "httpRoute:\n  enabled: true\n"))
    assert "family \"knn\" is served twice" in message
    assert "set externalRedis.url" in message
    assert "httpRoute.parentRefs" in message


@pytest.mark.parametrize("set_values, message", [
    ({"redis.enabled": "false", "externalRedis.url": "redis://user:pw@r:6379/0"},
     "holds credentials"),
    ({"externalRedis.url": "redis://r:6379/0"}, "set redis.enabled=false"),
    ({"redis.enabled": "false", "externalRedis.mode": "sentinel"}, "externalRedis.sentinels"),
    ({"deployment.autoscaling.enabled": "true", "deployment.autoscaling.minReplicas": "5",
      "deployment.autoscaling.maxReplicas": "2"}, "maxReplicas"),
    ({"deployment.terminationGracePeriodSeconds": "10"}, "terminationGracePeriodSeconds"),
    ({"metrics.podMonitor.enabled": "true"}, "tfServing.enabled"),
    ({"training.onInstall": "false"}, "no model would ever be trained"),
])
def test_validation_helper_refuses(helm, set_values, message):
    refuse(helm, set_values, message)


@pytest.mark.parametrize("set_values", [
    {"model.coldStart": "404"},
    {"model.family": "vector", "model.algorithm": "youtube_match"},
    {"model.family": "tf", "model.algorithm": "youtube_ranking", "tfServing.enabled": "false"},
    {"redis.enabled": "false", "externalRedis.mode": "cluster",
     "externalRedis.url": "rediss://cache:6380/0"},
    {"training.onInstall": "false", "training.schedule": "@daily"},
])
def test_schema_accepts(helm, set_values):
    result = run_helm(helm, *template_args(set_values=set_values), check=False)
    assert result.returncode == 0, result.stderr


def test_schema_is_self_contained_and_valid():
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    refs = re.findall(r'"\$ref":\s*"([^"]*)"', json.dumps(SCHEMA))
    assert refs and all(ref.startswith("#/") for ref in refs)


def test_defaults_and_ci_values_pass_the_schema():
    validator = jsonschema.Draft7Validator(SCHEMA)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert not list(validator.iter_errors(defaults))
    for path in CI_VALUES:
        merged = merge(defaults, yaml.safe_load(path.read_text()))
        errors = [e.message for e in validator.iter_errors(merged)]
        assert not errors, (path.name, errors)


def test_every_object_in_the_schema_refuses_unknown_keys():
    """Our own objects refuse unknown keys; Kubernetes objects passed through say so."""

    def walk(node, where):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                allowed = node.get("additionalProperties")
                passthrough = allowed is True and re.search(
                    "Kubernetes|Gateway API", node.get("description", ""))
                assert allowed is False or passthrough, where
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for n, value in enumerate(node):
                walk(value, f"{where}/{n}")

    walk(SCHEMA, "#")


def test_every_value_is_documented():
    text = (CHART / "values.yaml").read_text()
    documented = set(re.findall(r"^\s*## @param (\S+)", text, re.MULTILINE))
    defaults = yaml.safe_load(text)

    def leaves(node, prefix=""):
        if isinstance(node, dict) and node:
            for key, value in node.items():
                yield from leaves(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}")
        else:
            yield prefix

    for path in leaves(defaults):
        parts = path.split(".")
        prefixes = {".".join(parts[:n]) for n in range(1, len(parts) + 1)}
        assert prefixes & documented, f"{path} has no '## @param' line"
    for path in documented:
        node = defaults
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, f"@param {path} is not a value"
            node = node[part]


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
