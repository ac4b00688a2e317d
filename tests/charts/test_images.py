"""The Dockerfiles, read (no Docker engine here): pinned bases, a non-root user, the gunicorn
entry point the chart runs, writable paths that match the chart's mounts, the right extras."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.charts.conftest import CHART, REPO, pod_spec, render

FAMILIES = ("knn", "vector", "tf")


def instructions(path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def final_stage(steps):
    last_from = max(n for n, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def env_of(steps) -> dict[str, str]:
    env = {}
    for op, args in steps:
        if op == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", args):
                env[key] = value
    return env


@pytest.fixture(scope="module")
def chart_families(helm):
    """The service Deployment and ConfigMap of each family, as the chart renders them."""
    rendered = render(helm, [CHART / "ci" / "dev-values.yaml"])
    out = {}
    for family in FAMILIES:
        deployment = rendered.get("Deployment", f"recs-libreco-{family}")
        out[family] = (deployment, rendered.get("ConfigMap", f"recs-libreco-{family}")["data"])
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_base_images_are_pinned(family):
    steps = instructions(REPO / f"Dockerfile.{family}")
    args = dict(re.fullmatch(r"(\w+)=(\S+)", a).groups() for op, a in steps
                if op == "ARG" and "=" in a)
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], a.split()[0])
             for op, a in steps if op == "FROM"]
    assert len(bases) >= 2, "build and runtime stages"
    for base in bases:
        if "@sha256:" in base:
            continue
        name, _, tag = base.rpartition(":")
        assert name and tag and tag != "latest" and re.search(r"\d", tag), base


@pytest.mark.parametrize("family", FAMILIES)
def test_runs_as_the_chart_s_non_root_user(family):
    steps = final_stage(instructions(REPO / f"Dockerfile.{family}"))
    users = [a for op, a in steps if op == "USER"]
    assert users, "the runtime stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, "a numeric uid lets runAsNonRoot verify it"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert int(uid) == values["podSecurityContext"]["runAsUser"]
    assert not gid or int(gid) == values["podSecurityContext"]["runAsGroup"]


@pytest.mark.parametrize("family", FAMILIES)
def test_entry_point_is_gunicorn_as_the_chart_runs_it(family, chart_families):
    steps = final_stage(instructions(REPO / f"Dockerfile.{family}"))
    (cmd,) = [json.loads(a) for op, a in steps if op == "CMD"]
    assert not [a for op, a in steps if op == "ENTRYPOINT"]
    assert cmd == ["gunicorn", "-c", "python:services.gunicorn_conf",
                   f"services.{family}.{family}_deploy:app"]
    deployment, _ = chart_families[family]
    service = next(c for c in pod_spec(deployment)["containers"] if c["name"] == "service")
    assert service["command"] + service["args"] == cmd
    exposed = {int(a) for op, a in steps if op == "EXPOSE"}
    assert {p["containerPort"] for p in service["ports"]} <= exposed


@pytest.mark.parametrize("family", FAMILIES)
def test_writable_paths_match_the_chart(family, chart_families):
    steps = final_stage(instructions(REPO / f"Dockerfile.{family}"))
    env = env_of(steps)
    deployment, config = chart_families[family]
    assert env["PROMETHEUS_MULTIPROC_DIR"] == config["PROMETHEUS_MULTIPROC_DIR"]
    assert env["TMPDIR"] == "/tmp" and env["HOME"] == "/tmp"
    assert env["LIBRECO_PORT"] == config["LIBRECO_PORT"]
    service = next(c for c in pod_spec(deployment)["containers"] if c["name"] == "service")
    mounts = {m["mountPath"] for m in service["volumeMounts"]}
    assert {env["PROMETHEUS_MULTIPROC_DIR"], env["TMPDIR"]} <= mounts


@pytest.mark.parametrize("family", FAMILIES)
def test_installs_only_the_extras_of_the_family(family):
    steps = instructions(REPO / f"Dockerfile.{family}")
    installs = [a for op, a in steps if op == "RUN" and "pip install" in a]
    extras = {e for a in installs for m in re.findall(r'"\.\[([\w,]+)\]"', a)
              for e in m.split(",")}
    expected = {"serving", "k8s"} | ({"tf"} if family == "tf" else set())
    assert extras == expected
    copied = {a.split()[0] for op, a in final_stage(steps) if op == "COPY" and "--from" not in a}
    assert {"libreco", "services", "jobs"} <= copied
    env = env_of(final_stage(steps))
    assert env["PYTHONPATH"] == "/app"


def test_dockerignore_keeps_the_context_small():
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "exclude everything, then name what the images need"
    included = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert included == {"pyproject.toml", "README.md", "libreco", "services", "jobs"}
