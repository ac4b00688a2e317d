"""jobs.trigger against the Kubernetes client's own API objects, with no cluster.

``BatchV1Api`` is replaced by a mock built from its spec, so every call must exist on the real
class with the arguments the real client takes; the Jobs passed in and out are the client's
``V1Job`` models.
"""

from __future__ import annotations

import copy
import json
from unittest import mock

import pytest

client = pytest.importorskip("kubernetes.client")
from kubernetes.client.exceptions import ApiException  # noqa: E402

from jobs import trigger  # noqa: E402

MANIFEST = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {
        "generateName": "recs-libreco-load-item-cf-",
        "labels": {"app.kubernetes.io/component": "load", "libreco.io/model": "item-cf"},
    },
    "spec": {
        "backoffLimit": 3,
        "ttlSecondsAfterFinished": 3600,
        "template": {
            "metadata": {"labels": {"libreco.io/redis-client": "true"}},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "load",
                    "image": "libreco/libreco-knn:0.1.0",
                    "command": ["python", "-m", "jobs.load"],
                    "args": ["--model-dir", "/models/item_cf", "--name", "item_cf"],
                    "envFrom": [{"configMapRef": {"name": "recs-libreco-knn"}}],
                    "env": [{"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {
                        "name": "recs-libreco-redis", "key": "redis-password"}}}],
                    "securityContext": {"allowPrivilegeEscalation": False,
                                        "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "models", "mountPath": "/models",
                                      "readOnly": True}],
                }],
                "volumes": [{"name": "models", "persistentVolumeClaim": {
                    "claimName": "recs-libreco-models", "readOnly": True}}],
            },
        },
    },
}


def job_named(name: str, *conditions: str, succeeded: int | None = None):
    """A V1Job as the API returns it, with the given True conditions."""
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name, namespace="recs"),
        status=client.V1JobStatus(
            succeeded=succeeded,
            conditions=[client.V1JobCondition(type=c, status="True") for c in conditions]))


@pytest.fixture
def batch():
    api = mock.create_autospec(client.BatchV1Api, instance=True)
    api.create_namespaced_job.side_effect = lambda namespace, body: job_named(
        body.metadata.generate_name + "x7k2p")
    return api


@pytest.fixture
def template_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps(MANIFEST))
    return path


def serialized(job) -> dict:
    return client.ApiClient().sanitize_for_serialization(job)


def test_create_load_job_sends_the_template_as_a_v1job(batch):
    created = trigger.create_load_job(batch, "recs", MANIFEST, triggered_by="train-abc")

    batch.create_namespaced_job.assert_called_once()
    kwargs = batch.create_namespaced_job.call_args.kwargs
    assert kwargs["namespace"] == "recs"
    body = kwargs["body"]
    assert isinstance(body, client.V1Job)
    assert body.spec.template.spec.containers[0].command == ["python", "-m", "jobs.load"]
    assert body.spec.template.spec.containers[0].env[0].value_from.secret_key_ref.key == (
        "redis-password")
    expected = copy.deepcopy(MANIFEST)
    expected["metadata"]["annotations"] = {trigger.TRIGGERED_BY: "train-abc"}
    assert serialized(body) == expected
    assert created.metadata.name == "recs-libreco-load-item-cf-x7k2p"


def test_the_template_itself_is_not_modified(batch):
    before = copy.deepcopy(MANIFEST)
    trigger.create_load_job(batch, "recs", MANIFEST, triggered_by="train-abc")
    assert before == MANIFEST


@pytest.mark.parametrize("path, change", [
    ("spec.template.spec.containers[0].comand", lambda m: m["spec"]["template"]["spec"]
     ["containers"][0].__setitem__("comand", ["x"])),
    ("spec.backofLimit", lambda m: m["spec"].__setitem__("backofLimit", 2)),
])
def test_fields_the_client_would_drop_are_refused(batch, path, change):
    manifest = copy.deepcopy(MANIFEST)
    change(manifest)
    with pytest.raises(trigger.TemplateError, match=path.replace("[", r"\[").replace("]", r"\]")):
        trigger.create_load_job(batch, "recs", manifest)
    batch.create_namespaced_job.assert_not_called()


@pytest.mark.parametrize("change, message", [
    (lambda m: m.__setitem__("kind", "CronJob"), "kind"),
    (lambda m: m.__setitem__("apiVersion", "batch/v1beta1"), "apiVersion"),
    (lambda m: m["metadata"].pop("generateName"), "generateName"),
    (lambda m: m.pop("spec"), "spec"),
])
def test_manifests_that_are_not_named_jobs_are_refused(change, message):
    manifest = copy.deepcopy(MANIFEST)
    change(manifest)
    with pytest.raises(trigger.TemplateError, match=message):
        trigger.build_job(manifest)


@pytest.mark.parametrize("job, outcome", [
    (job_named("j"), None),
    (job_named("j", "Complete"), True),
    (job_named("j", succeeded=1), True),
    (job_named("j", "Failed"), False),
    (client.V1Job(metadata=client.V1ObjectMeta(name="j")), None),
])
def test_job_outcome(job, outcome):
    assert trigger.job_outcome(job) is outcome


def test_main_creates_the_job_from_the_environment_and_waits(batch, template_file):
    batch.read_namespaced_job.side_effect = [
        job_named("recs-libreco-load-item-cf-x7k2p"),
        job_named("recs-libreco-load-item-cf-x7k2p", "Complete"),
    ]
    env = {"LIBRECO_LOAD_JOB_TEMPLATE": str(template_file), "POD_NAMESPACE": "recs",
           "POD_NAME": "retrain-item-cf-29000-abcde", "LIBRECO_LOAD_WAIT_SECONDS": "30"}

    assert trigger.main(["--poll", "0"], environ=env, batch_api=batch) == trigger.EXIT_OK

    body = batch.create_namespaced_job.call_args.kwargs["body"]
    assert body.metadata.annotations[trigger.TRIGGERED_BY] == "retrain-item-cf-29000-abcde"
    assert batch.read_namespaced_job.call_count == 2
    batch.read_namespaced_job.assert_called_with(name="recs-libreco-load-item-cf-x7k2p",
                                                 namespace="recs")


def test_main_without_waiting_only_creates(batch, template_file):
    env = {"LIBRECO_LOAD_JOB_TEMPLATE": str(template_file), "POD_NAMESPACE": "recs"}
    assert trigger.main(["--wait", "0"], environ=env, batch_api=batch) == trigger.EXIT_OK
    batch.create_namespaced_job.assert_called_once()
    batch.read_namespaced_job.assert_not_called()


def test_main_reports_a_failed_load(batch, template_file):
    batch.read_namespaced_job.return_value = job_named("x", "Failed")
    args = ["--template", str(template_file), "--namespace", "recs", "--poll", "0"]
    assert trigger.main(args, environ={}, batch_api=batch) == trigger.EXIT_JOB_FAILED


def test_main_gives_up_waiting(batch, template_file):
    batch.read_namespaced_job.return_value = job_named("x")
    args = ["--template", str(template_file), "--namespace", "recs", "--poll", "0",
            "--wait", "0.05"]
    assert trigger.main(args, environ={}, batch_api=batch) == trigger.EXIT_TIMEOUT
    assert batch.read_namespaced_job.call_count >= 1


def test_main_reports_a_forbidden_create(batch, template_file):
    batch.create_namespaced_job.side_effect = ApiException(status=403, reason="Forbidden")
    args = ["--template", str(template_file), "--namespace", "recs"]
    assert trigger.main(args, environ={}, batch_api=batch) == trigger.EXIT_API


def test_main_refuses_a_bad_template_before_calling_the_api(batch, tmp_path):
    bad = tmp_path / "job.yaml"
    bad.write_text("kind: Job\napiVersion: batch/v1\nmetadata: {}\nspec: {}\n")
    args = ["--template", str(bad), "--namespace", "recs"]
    assert trigger.main(args, environ={}, batch_api=batch) == trigger.EXIT_INVALID
    missing = ["--template", str(tmp_path / "absent.yaml"), "--namespace", "recs"]
    assert trigger.main(missing, environ={}, batch_api=batch) == trigger.EXIT_INVALID
    batch.create_namespaced_job.assert_not_called()


def test_main_needs_a_namespace(batch, template_file, monkeypatch, tmp_path):
    monkeypatch.setattr(trigger, "SERVICE_ACCOUNT_NAMESPACE", tmp_path / "absent")
    args = ["--template", str(template_file)]
    assert trigger.main(args, environ={}, batch_api=batch) == trigger.EXIT_INVALID


def test_namespace_falls_back_to_the_service_account(monkeypatch, tmp_path):
    namespace_file = tmp_path / "namespace"
    namespace_file.write_text("recs\n")
    monkeypatch.setattr(trigger, "SERVICE_ACCOUNT_NAMESPACE", namespace_file)
    assert trigger.current_namespace({}) == "recs"
    assert trigger.current_namespace({"POD_NAMESPACE": "other"}) == "other"


def test_main_uses_the_in_cluster_configuration(batch, template_file, monkeypatch):
    from kubernetes import config

    loaded = []
    monkeypatch.setattr(config, "load_incluster_config", lambda: loaded.append(True))
    monkeypatch.setattr(client, "BatchV1Api", lambda: batch)
    args = ["--template", str(template_file), "--namespace", "recs", "--wait", "0"]
    assert trigger.main(args, environ={}) == trigger.EXIT_OK
    assert loaded == [True]
    batch.create_namespaced_job.assert_called_once()


def test_main_outside_a_cluster_says_so(template_file, monkeypatch):
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    def not_in_cluster():
        raise ConfigException("Service host/port is not set.")

    monkeypatch.setattr(config, "load_incluster_config", not_in_cluster)
    args = ["--template", str(template_file), "--namespace", "recs"]
    assert trigger.main(args, environ={}) == trigger.EXIT_API
