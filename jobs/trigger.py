"""Start a model's Redis loading Job through the Kubernetes API (scheduled retraining).

When training runs on a schedule (the chart's ``training.schedule``), nobody runs
``helm upgrade`` afterwards, so the finished run itself creates the loading Job: the chart
renders that Job as a manifest into a ConfigMap, mounts it into the training pod, and this module
creates a Job from it with the pod's own service account (a Role that allows only creating and
reading Jobs in the release's namespace). The new version then reaches the services as any load
does: written beside the active one, checked, and activated.

Entry points, both reading the same environment:

- ``python -m jobs.trigger``: the chart's CronJob runs training in an init container and this
  as its main container, so it runs only after training succeeded;
- ``jobs.trigger.main([])``: what ``python -m jobs.train --trigger-load`` calls at the end of
  a successful run.

Environment (each also a command-line option):

``LIBRECO_LOAD_JOB_TEMPLATE`` (``--template``)
    Path of the loading Job manifest, YAML or JSON, with ``metadata.generateName`` (or
    ``metadata.name``). Default ``/etc/libreco/load-job/job.yaml``.
``POD_NAMESPACE`` (``--namespace``)
    Namespace to create the Job in; default: the service account's namespace.
``POD_NAME``
    Recorded on the created Job in the ``libreco.io/triggered-by`` annotation.
``LIBRECO_LOAD_WAIT_SECONDS`` (``--wait``)
    Seconds to wait for the Job to finish; 0 returns as soon as it is created. Default 600.

Exit status: 0 the Job was created (and succeeded, when waiting); 1 the Job failed; 2 the
template or the options are invalid; 3 the API refused or could not be reached; 4 the Job did
not finish in time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger("libreco.jobs")

DEFAULT_TEMPLATE = "/etc/libreco/load-job/job.yaml"
DEFAULT_WAIT_SECONDS = 600
TRIGGERED_BY = "libreco.io/triggered-by"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

EXIT_OK, EXIT_JOB_FAILED, EXIT_INVALID, EXIT_API, EXIT_TIMEOUT = 0, 1, 2, 3, 4


class TemplateError(ValueError):
    """The loading Job manifest cannot be turned into a Job as written."""


def read_template(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a Job manifest (YAML or JSON) from ``path``.

    Raises
    ------
    TemplateError
        If the file is missing, does not parse, or does not describe a ``batch/v1`` Job with a
        name or a ``generateName``.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise TemplateError(f"cannot read the loading Job template {path}: {e}") from e
    try:
        manifest = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise TemplateError(f"{path} is not valid YAML: {e}") from e
    check_manifest(manifest, source=str(path))
    return manifest


def check_manifest(manifest: object, source: str = "template") -> None:
    """Raise :class:`TemplateError` unless ``manifest`` is a named ``batch/v1`` Job."""
    if not isinstance(manifest, dict):
        raise TemplateError(f"{source}: expected a Job object, got {type(manifest).__name__}")
    problems = []
    if manifest.get("apiVersion") != "batch/v1":
        problems.append(f"apiVersion is {manifest.get('apiVersion')!r}, expected 'batch/v1'")
    if manifest.get("kind") != "Job":
        problems.append(f"kind is {manifest.get('kind')!r}, expected 'Job'")
    metadata = manifest.get("metadata") or {}
    if not (metadata.get("generateName") or metadata.get("name")):
        problems.append("metadata needs generateName (or name)")
    if not isinstance(manifest.get("spec"), dict):
        problems.append("spec is missing")
    if problems:
        raise TemplateError(f"{source}: " + "; ".join(problems))


def build_job(manifest: Mapping[str, Any], triggered_by: str | None = None):
    """Turn a Job manifest into the client's ``V1Job``, checking that nothing is lost.

    Parameters
    ----------
    manifest : mapping
        A ``batch/v1`` Job as the API writes it (camelCase keys).
    triggered_by : str, optional
        Name of the pod that starts the Job, kept in the ``libreco.io/triggered-by``
        annotation.

    Returns
    -------
    kubernetes.client.V1Job

    Raises
    ------
    TemplateError
        If the client's model would drop a field of the manifest (an unknown or misspelled
        key): creating such a Job would silently run something else than the template says.
    """
    from kubernetes import client

    check_manifest(manifest)
    wanted = json.loads(json.dumps(manifest))
    if triggered_by:
        annotations = wanted["metadata"].setdefault("annotations", {})
        annotations[TRIGGERED_BY] = triggered_by
    job = _deserialize_job(client, wanted)
    kept = client.ApiClient().sanitize_for_serialization(job)
    lost = _lost_paths(wanted, kept)
    if lost:
        raise TemplateError("the loading Job template has fields the Kubernetes client does "
                            "not know: " + ", ".join(lost))
    return job


def create_load_job(batch_api, namespace: str, manifest: Mapping[str, Any],
                    triggered_by: str | None = None):
    """Create the loading Job described by ``manifest`` in ``namespace``.

    Parameters
    ----------
    batch_api : kubernetes.client.BatchV1Api
        The API to create the Job with.
    namespace : str
        Namespace of the release.
    manifest : mapping
        The Job manifest (see :func:`build_job`).
    triggered_by : str, optional
        Name of the pod that starts the Job.

    Returns
    -------
    kubernetes.client.V1Job
        The Job as the API server created it (its name resolved from ``generateName``).
    """
    job = build_job(manifest, triggered_by=triggered_by)
    created = batch_api.create_namespaced_job(namespace=namespace, body=job)
    logger.info("created loading Job %s/%s", namespace, created.metadata.name)
    return created


def job_outcome(job) -> bool | None:
    """``True`` once the Job succeeded, ``False`` once it failed, ``None`` while it runs."""
    status = job.status
    if status is None:
        return None
    for condition in status.conditions or ():
        if condition.status == "True" and condition.type == "Complete":
            return True
        if condition.status == "True" and condition.type == "Failed":
            return False
    if status.succeeded:
        return True
    return None


def wait_for_job(batch_api, namespace: str, name: str, timeout: float, poll: float = 5.0,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> bool:
    """Poll the Job until it finishes; return whether it succeeded.

    Uses ``get`` on Jobs only (the Role allows nothing more).

    Raises
    ------
    TimeoutError
        If the Job has not finished after ``timeout`` seconds.
    """
    deadline = clock() + timeout
    while True:
        outcome = job_outcome(batch_api.read_namespaced_job(name=name, namespace=namespace))
        if outcome is not None:
            return outcome
        if clock() >= deadline:
            raise TimeoutError(f"loading Job {namespace}/{name} still runs after {timeout:g} s")
        sleep(poll)


def current_namespace(environ: Mapping[str, str]) -> str | None:
    """The namespace from ``POD_NAMESPACE``, else from the mounted service account."""
    if environ.get("POD_NAMESPACE"):
        return environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def parse_args(argv: list[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.trigger",
        description="Create a model's loading Job from a manifest through the Kubernetes API.")
    parser.add_argument("--template",
                        default=environ.get("LIBRECO_LOAD_JOB_TEMPLATE", DEFAULT_TEMPLATE),
                        help="Job manifest, YAML or JSON (env LIBRECO_LOAD_JOB_TEMPLATE)")
    parser.add_argument("--namespace", default=current_namespace(environ),
                        help="namespace of the Job (env POD_NAMESPACE)")
    parser.add_argument("--wait", type=float,
                        default=float(environ.get("LIBRECO_LOAD_WAIT_SECONDS",
                                                  DEFAULT_WAIT_SECONDS)),
                        help="seconds to wait for the Job to finish, 0 not to wait "
                             "(env LIBRECO_LOAD_WAIT_SECONDS)")
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between two checks")
    parser.add_argument("--kubeconfig",
                        help="use this kubeconfig instead of the in-cluster configuration")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None,
         batch_api=None) -> int:
    """Create the loading Job, optionally wait for it, and return an exit status.

    Parameters
    ----------
    argv : list of str, optional
        Command-line options; ``[]`` reads everything from the environment.
    environ : mapping, optional
        Defaults to ``os.environ``.
    batch_api : kubernetes.client.BatchV1Api, optional
        Defaults to one built from the in-cluster configuration (or ``--kubeconfig``).
    """
    environ = os.environ if environ is None else environ
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args = parse_args(argv, environ)
    except ValueError as e:
        logger.error("invalid option: %s", e)
        return EXIT_INVALID
    if not args.namespace:
        logger.error("no namespace: set POD_NAMESPACE or pass --namespace")
        return EXIT_INVALID
    try:
        manifest = read_template(args.template)
        build_job(manifest)
    except TemplateError as e:
        logger.error("%s", e)
        return EXIT_INVALID

    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    try:
        api = batch_api if batch_api is not None else _batch_api(args.kubeconfig)
        created = create_load_job(api, args.namespace, manifest,
                                  triggered_by=environ.get("POD_NAME") or None)
        if args.wait <= 0:
            return EXIT_OK
        name = created.metadata.name
        logger.info("waiting up to %g s for loading Job %s", args.wait, name)
        succeeded = wait_for_job(api, args.namespace, name, timeout=args.wait, poll=args.poll)
    except ConfigException as e:
        logger.error("no Kubernetes configuration: %s", e)
        return EXIT_API
    except ApiException as e:
        hint = " (does the service account's Role allow it?)" if e.status == 403 else ""
        logger.error("Kubernetes API refused: %s %s%s", e.status, e.reason, hint)
        return EXIT_API
    except TimeoutError as e:
        logger.error("%s", e)
        return EXIT_TIMEOUT
    if succeeded:
        logger.info("loading Job %s succeeded", name)
        return EXIT_OK
    logger.error("loading Job %s failed; the active model version is unchanged", name)
    return EXIT_JOB_FAILED


def _batch_api(kubeconfig: str | None):
    from kubernetes import client, config

    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)
    else:
        config.load_incluster_config()
    return client.BatchV1Api()


def _deserialize_job(client, data: dict[str, Any]):
    """A ``V1Job`` from API-shaped data, for the pydantic clients (>= 35) and the older ones."""
    if hasattr(client.V1Job, "from_dict"):
        return client.V1Job.from_dict(data)

    class _Response:
        def __init__(self, text: str):
            self.data = text

    return client.ApiClient().deserialize(_Response(json.dumps(data)), "V1Job")


def _lost_paths(wanted: Any, kept: Any, path: str = "") -> list[str]:
    """Paths of ``wanted`` whose value does not survive in ``kept``."""
    if isinstance(wanted, dict):
        if not isinstance(kept, dict):
            return [path or "."]
        lost = []
        for key, value in wanted.items():
            if value is None:
                continue
            if key not in kept:
                lost.append(f"{path}.{key}" if path else key)
            else:
                lost.extend(_lost_paths(value, kept[key], f"{path}.{key}" if path else key))
        return lost
    if isinstance(wanted, list):
        if not isinstance(kept, list) or len(kept) != len(wanted):
            return [path]
        lost = []
        for n, (w, k) in enumerate(zip(wanted, kept, strict=True)):
            lost.extend(_lost_paths(w, k, f"{path}[{n}]"))
        return lost
    return [] if wanted == kept else [path]


if __name__ == "__main__":
    sys.exit(main())
