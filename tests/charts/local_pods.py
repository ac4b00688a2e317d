"""Run the containers of rendered pods as local processes, the way the kubelet would start them.

A container becomes ``(argv, env)``: its ``command`` and ``args`` with ``$(VAR)`` references
expanded, an environment built from the image's ``ENV`` lines (read from its Dockerfile), then
``envFrom`` ConfigMaps, then ``env`` entries (ConfigMap and Secret keys resolved from the
rendered objects, field references from the pod). What a pod has of its own is mapped to this
machine:

- every volume becomes a folder (one per claim, shared by the pods that mount it; one per pod
  for emptyDirs; ConfigMap volumes are written out), and every path under a mount path, in
  arguments and environment values, is rewritten to that folder;
- each Service name in a URL or address becomes ``127.0.0.1`` with the local port given for it;
- ``python`` and ``gunicorn`` are this interpreter and its gunicorn; the source tree stands in
  for the image's ``/app``.
"""

from __future__ import annotations

import base64
import re
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.charts.conftest import REPO, containers, pod_labels, pod_spec

VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def image_env(dockerfile: Path) -> dict[str, str]:
    """The ``ENV`` settings of a Dockerfile's last stage."""
    text = dockerfile.read_text().replace("\\\n", " ")
    stages = re.split(r"^FROM .*$", text, flags=re.MULTILINE)
    env: dict[str, str] = {}
    for line in stages[-1].splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


@dataclass
class LocalProcess:
    """A container ready to start: its argv, environment and working directory."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path = REPO


@dataclass
class LocalCluster:
    """The rendered objects of a release and the local stand-ins for its pods' surroundings."""

    objects: list[dict]
    root: Path
    service_ports: dict[tuple[str, int], int] = field(default_factory=dict)

    def get(self, kind: str, name: str) -> dict:
        (obj,) = [o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name]
        return obj

    def publish(self, service: str, port: int, local_port: int) -> None:
        """Make ``service:port`` reach ``127.0.0.1:local_port``."""
        self.service_ports[(service, port)] = local_port

    # -- volumes --------------------------------------------------------------------------
    def volume_dir(self, pod_name: str, volume: Mapping) -> Path:
        if "persistentVolumeClaim" in volume:
            path = self.root / "claims" / volume["persistentVolumeClaim"]["claimName"]
        elif "configMap" in volume:
            path = self.root / "configmaps" / volume["configMap"]["name"]
            path.mkdir(parents=True, exist_ok=True)
            for key, text in self.get("ConfigMap", volume["configMap"]["name"])["data"].items():
                (path / key).write_text(text)
        elif "emptyDir" in volume:
            path = self.root / "pods" / pod_name / volume["name"]
        else:
            raise NotImplementedError(f"volume source of {volume['name']}")
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- environment ----------------------------------------------------------------------
    def secret_value(self, name: str, key: str) -> str:
        return base64.b64decode(self.get("Secret", name)["data"][key]).decode()

    def env_value(self, entry: Mapping, pod: Mapping) -> str:
        if "value" in entry:
            return str(entry["value"])
        source = entry["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            return self.secret_value(ref["name"], ref["key"])
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            return self.get("ConfigMap", ref["name"])["data"][ref["key"]]
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            return {"metadata.namespace": "recs", "metadata.name": pod["metadata"]["name"]}[path]
        raise NotImplementedError(f"env source {source}")

    def rewrite(self, text: str, mounts: Mapping[str, Path]) -> str:
        """Paths under a mount path go to its local folder; Service addresses to 127.0.0.1."""
        if mounts:
            # one pass, longest mount path first, so a rewritten path is never rewritten again
            paths = "|".join(re.escape(p) for p in sorted(mounts, key=len, reverse=True))
            text = re.sub(rf"(^|=|:)({paths})(?=/|$|\s)",
                          lambda m: m.group(1) + str(mounts[m.group(2)]), text)
        for (service, port), local_port in self.service_ports.items():
            text = re.sub(rf"\b{re.escape(service)}:{port}\b", f"127.0.0.1:{local_port}", text)
        return text

    def process(self, obj: Mapping, container_name: str, dockerfile: Path | None = None,
                port_env: Mapping[str, int] | None = None) -> LocalProcess:
        """The local process for one container of a rendered workload.

        Parameters
        ----------
        obj : mapping
            A rendered Deployment, StatefulSet, Job, CronJob or Pod.
        container_name : str
            Which of its containers (init containers included).
        dockerfile : Path, optional
            The image's Dockerfile, whose ``ENV`` lines come first.
        port_env : mapping, optional
            Environment variables holding the container's listening port, set to the local
            port instead (a pod has an address of its own; here every process shares one).
        """
        spec = pod_spec(obj)
        (container,) = [c for c in containers(spec) if c["name"] == container_name]
        pod = {"metadata": {"name": obj["metadata"]["name"], "labels": pod_labels(obj)}}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        mounts = {m["mountPath"]: self.volume_dir(obj["metadata"]["name"], volumes[m["name"]])
                  for m in container.get("volumeMounts", []) if m["name"] in volumes}
        mounts.setdefault("/app", REPO)

        env: dict[str, str] = {}
        if dockerfile is not None:
            env.update(image_env(dockerfile))
        for source in container.get("envFrom", []):
            env.update(self.get("ConfigMap", source["configMapRef"]["name"])["data"])
        for entry in container.get("env", []):
            env[entry["name"]] = VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)),
                                             self.env_value(entry, pod))
        env = {k: self.rewrite(v, mounts) for k, v in env.items()}
        env.update({k: str(v) for k, v in (port_env or {}).items()})
        env["PATH"] = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"
        env["PYTHONPATH"] = str(REPO)

        argv = [VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), a)
                for a in [*container.get("command", []), *container.get("args", [])]]
        argv = [self.rewrite(a, mounts) for a in argv]
        argv[0] = local_executable(argv[0])
        return LocalProcess(f"{obj['metadata']['name']}/{container_name}", argv, env)


def local_executable(name: str) -> str:
    if name == "python":
        return sys.executable
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed here")
    return found
