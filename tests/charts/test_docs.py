"""docs/kubernetes.md matches the chart: its commands and values files render, the objects it
names exist, and its values reference lists every value."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from tests.charts.conftest import CHART, REPO, render, run_helm, template_args

DOC = (REPO / "docs" / "kubernetes.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC, re.DOTALL)


def helm_commands() -> list[list[str]]:
    """Every ``helm install`` / ``helm upgrade`` of the doc, continuation lines joined."""
    commands = []
    for block in code_blocks("bash"):
        text = re.sub(r"\\\n\s*", " ", block)
        for line in text.splitlines():
            line = line.split(" #", 1)[0].strip()
            if re.match(r"helm (install|upgrade)\b", line):
                commands.append(shlex.split(line))
    return commands


def values_overrides(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    files, sets = [], {}
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag in ("-f", "--values"):
            files.append(value)
        elif flag == "--set":
            for pair in value.split(","):
                key, _, val = pair.partition("=")
                sets[key] = val
    return files, sets


COMMANDS = helm_commands()


def test_the_doc_has_install_and_upgrade_commands():
    verbs = {argv[1] for argv in COMMANDS}
    assert {"install", "upgrade"} <= verbs
    for argv in COMMANDS:
        assert "charts/libreco" in argv, " ".join(argv)


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[1:3] + a[4:])[:60])
def test_every_helm_command_of_the_doc_renders(helm, argv):
    files, sets = values_overrides(argv)
    for path in files:
        assert (REPO / path).is_file(), path
    result = run_helm(helm, *template_args([REPO / f for f in files], sets), check=False)
    assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stderr}"


@pytest.mark.parametrize("block", [b for b in code_blocks("yaml")], ids=lambda b: b[:30])
def test_every_values_example_of_the_doc_renders(helm, tmp_path, block):
    values = yaml.safe_load(block)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(defaults), set(values) - set(defaults)
    path = tmp_path / "values.yaml"
    path.write_text(block)
    result = run_helm(helm, *template_args([path]), check=False)
    assert result.returncode == 0, result.stderr


def test_objects_the_doc_names_exist(helm):
    rendered = render(helm, set_values={"training.schedule": "@daily"}, release="libreco")
    kinds = {"svc": "Service", "deployment": "Deployment", "cronjob": "CronJob"}
    named = re.findall(r"\b(svc|deployment|cronjob)/([a-z0-9-]+)", DOC)
    assert named
    for short, name in named:
        assert name in rendered.names(kinds[short]), f"{short}/{name}"
    pods = {f"{s['metadata']['name']}-0" for s in rendered.kind("StatefulSet")}
    for pod in re.findall(r"kubectl -n \S+ exec (\S+)", DOC):
        assert pod in pods


def test_the_values_reference_lists_every_value():
    documented = re.findall(r"^\s*## @param (\S+)", (CHART / "values.yaml").read_text(),
                            re.MULTILINE)
    reference = DOC.split("## Values reference", 1)[1]
    missing = [p for p in documented if f"`{p}`" not in reference]
    assert not missing, missing
