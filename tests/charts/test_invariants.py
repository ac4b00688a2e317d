"""Invariants that keep the rendered release working, over every CI values file.

Selectors reach their pods, Service and probe ports exist, HPAs own their Deployments' replica
counts, hooks clean up after themselves, every container is restricted, images are pinned,
secrets travel by reference only, and a config change rolls the pods.
"""

from __future__ import annotations

import base64
import re

import pytest
import yaml

from tests.charts.conftest import (
    CI_VALUES,
    KUBE_VERSIONS,
    RELEASE,
    containers,
    pod_labels,
    pod_spec,
    render,
)

# every CI values file at the newest version; the older version renders the same templates
CASES = [(p.name, KUBE_VERSIONS[-1]) for p in CI_VALUES]
WORKLOADS = ("Deployment", "StatefulSet", "Job", "CronJob", "Pod")
SERVICE_ENV = {
    "REDIS_URL", "REDIS_PASSWORD", "LIBRECO_REDIS_MODE", "LIBRECO_REDIS_SENTINELS",
    "LIBRECO_REDIS_SENTINEL_MASTER", "LIBRECO_MODEL", "LIBRECO_K_NEIGHBORS", "LIBRECO_N_REC",
    "LIBRECO_MAX_N_REC", "LIBRECO_COLD_START", "LIBRECO_PORT", "LIBRECO_WORKERS",
    "LIBRECO_THREADS", "LIBRECO_TIMEOUT", "LIBRECO_GRACEFUL_TIMEOUT", "LIBRECO_LOG_LEVEL",
    "PROMETHEUS_MULTIPROC_DIR", "TF_SERVING_URL", "LIBRECO_MODEL_DIR", "LIBRECO_TF_TIMEOUT",
    "LIBRECO_POLL_INTERVAL",
}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.fixture(params=CASES, ids=lambda c: c[0])
def rendered(request, rendered_ci):
    return rendered_ci[request.param]


def values_of(case_name: str) -> dict:
    return yaml.safe_load(next(p for p in CI_VALUES if p.name == case_name).read_text())


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def workloads(rendered):
    return [o for o in rendered if o["kind"] in WORKLOADS]


def long_running(rendered):
    """Deployments and StatefulSets: the pods that Services, HPAs and PDBs point at."""
    return [o for o in rendered if o["kind"] in ("Deployment", "StatefulSet")]


def container_ports(obj) -> dict:
    """``{name: number}`` of every container port of a workload's pods."""
    return {p["name"]: p["containerPort"] for c in containers(pod_spec(obj))
            for p in c.get("ports", []) if "name" in p}


def images(rendered):
    for obj in workloads(rendered):
        for c in containers(pod_spec(obj)):
            yield obj, c["image"]
    for cm in rendered.kind("ConfigMap"):
        if "job.yaml" in cm.get("data", {}):
            job = yaml.safe_load(cm["data"]["job.yaml"])
            for c in containers(pod_spec(job)):
                yield job, c["image"]


# -- names and selectors ----------------------------------------------------------------------
def test_names_are_dns_labels(rendered):
    for obj in rendered:
        name = obj["metadata"].get("name") or obj["metadata"].get("generateName")
        assert DNS_LABEL.match(name), f"{obj['kind']} name {name!r}"
        assert len(name) <= 63, f"{obj['kind']} {name} is longer than 63 characters"


def test_workload_selectors_match_their_pod_labels(rendered):
    for obj in long_running(rendered) + rendered.kind("PodDisruptionBudget"):
        if obj["kind"] == "PodDisruptionBudget":
            selected = [w for w in long_running(rendered)
                        if selects(obj["spec"]["selector"]["matchLabels"], pod_labels(w))]
            assert len(selected) == 1, f"PDB {obj['metadata']['name']} selects {len(selected)}"
            continue
        assert selects(obj["spec"]["selector"]["matchLabels"], pod_labels(obj)), (
            obj["metadata"]["name"])


def test_selectors_do_not_overlap(rendered):
    """Two Deployments whose selectors match each other's pods fight over them."""
    objs = long_running(rendered)
    for a in objs:
        for b in objs:
            if a is not b:
                assert not selects(a["spec"]["selector"]["matchLabels"], pod_labels(b)), (
                    f"{a['metadata']['name']} selects the pods of {b['metadata']['name']}")


def test_services_reach_pods_on_existing_ports(rendered):
    for svc in rendered.kind("Service"):
        selected = [w for w in long_running(rendered)
                    if selects(svc["spec"]["selector"], pod_labels(w))]
        assert selected, f"Service {svc['metadata']['name']} selects no pods"
        for port in svc["spec"]["ports"]:
            for w in selected:
                target = port["targetPort"]
                ports = container_ports(w)
                assert target in ports or target in ports.values(), (
                    f"Service {svc['metadata']['name']} targets {target!r}, "
                    f"{w['metadata']['name']} has {ports}")


def test_statefulset_has_its_governing_service(rendered):
    for sts in rendered.kind("StatefulSet"):
        headless = rendered.get("Service", sts["spec"]["serviceName"])
        assert headless["spec"]["clusterIP"] == "None"


def test_every_model_has_a_deployment_a_service_and_its_config(rendered):
    for cm in rendered.kind("ConfigMap"):
        env = cm.get("data", {})
        if "LIBRECO_MODEL" not in env:
            continue
        name = cm["metadata"]["name"]
        family = name.rsplit("-", 1)[-1]
        deployment = rendered.get("Deployment", name)
        rendered.get("Service", name)
        service = next(c for c in pod_spec(deployment)["containers"] if c["name"] == "service")
        assert service["command"] == ["gunicorn"]
        assert service["args"] == ["-c", "python:services.gunicorn_conf",
                                   f"services.{family}.{family}_deploy:app"]
        assert {"configMapRef": {"name": name}} in service["envFrom"]
        assert set(env) <= SERVICE_ENV, set(env) - SERVICE_ENV


# -- autoscaling, disruption, routing ---------------------------------------------------------
def test_hpa_targets_a_rendered_deployment_without_replicas(rendered):
    for hpa in rendered.kind("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment" and ref["apiVersion"] == "apps/v1"
        target = rendered.get("Deployment", ref["name"])
        assert "replicas" not in target["spec"], f"{ref['name']} has replicas and an HPA"
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert hpa["spec"]["metrics"]
    scaled = {h["spec"]["scaleTargetRef"]["name"] for h in rendered.kind("HorizontalPodAutoscaler")}
    for deployment in rendered.kind("Deployment"):
        if deployment["metadata"]["name"] not in scaled:
            assert deployment["spec"]["replicas"] >= 1


def test_rolling_updates_never_drop_below_the_replica_count(rendered):
    for deployment in rendered.kind("Deployment"):
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_routes_point_at_rendered_services(rendered):
    services = {s["metadata"]["name"]: s for s in rendered.kind("Service")}
    for ingress in rendered.kind("Ingress"):
        assert ingress["spec"]["ingressClassName"]
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] in services, backend["name"]
                ports = {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
                assert backend["port"]["name"] in ports
    for route in rendered.kind("HTTPRoute"):
        assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
        assert route["spec"]["parentRefs"]
        for rule in route["spec"]["rules"]:
            assert rule["matches"][0]["path"]["type"] == "PathPrefix"
            for ref in rule["backendRefs"]:
                assert ref["name"] in services, ref["name"]
                ports = {p["port"] for p in services[ref["name"]]["spec"]["ports"]}
                assert ref["port"] in ports


def test_every_model_is_routed_by_its_name(rendered):
    for ingress in rendered.kind("Ingress") + rendered.kind("HTTPRoute"):
        if ingress["kind"] == "Ingress":
            prefixes = {p["path"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]}
        else:
            prefixes = {r["matches"][0]["path"]["value"] for r in ingress["spec"]["rules"]}
        for cm in rendered.kind("ConfigMap"):
            if "LIBRECO_MODEL" in cm.get("data", {}):
                assert "/" + cm["data"]["LIBRECO_MODEL"] in prefixes


def test_monitors_select_rendered_objects(rendered):
    for monitor in rendered.kind("ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        services = [s for s in rendered.kind("Service")
                    if selects(selector, s["metadata"]["labels"])]
        assert services
        port = monitor["spec"]["endpoints"][0]["port"]
        assert all(port in {p["name"] for p in s["spec"]["ports"]} for s in services)
    for monitor in rendered.kind("PodMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        pods = [w for w in long_running(rendered) if selects(selector, pod_labels(w))]
        assert pods
        port = monitor["spec"]["podMetricsEndpoints"][0]["port"]
        assert all(port in container_ports(w) for w in pods)


def test_network_policies_select_pods_and_name_real_ports(rendered):
    for policy in rendered.kind("NetworkPolicy"):
        selected = [w for w in long_running(rendered)
                    if selects(policy["spec"]["podSelector"]["matchLabels"], pod_labels(w))]
        assert selected, policy["metadata"]["name"]
        for rule in policy["spec"]["ingress"]:
            for port in rule["ports"]:
                assert all(port["port"] in container_ports(w) for w in selected)


def test_only_redis_clients_reach_redis(rendered):
    redis_policies = [p for p in rendered.kind("NetworkPolicy")
                      if p["spec"]["podSelector"]["matchLabels"].get(
                          "app.kubernetes.io/component") == "redis"]
    if not rendered.kind("StatefulSet") or not rendered.kind("NetworkPolicy"):
        return
    (policy,) = redis_policies
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    allowed = peer["podSelector"]["matchLabels"]
    clients = {o["metadata"]["name"] for o in workloads(rendered)
               if selects(allowed, pod_labels(o))}
    names_by_component = {}
    for o in workloads(rendered):
        component = pod_labels(o).get("app.kubernetes.io/component")
        names_by_component.setdefault(component, set()).add(o["metadata"]["name"])
    for component in ("knn", "vector", "tf", "load"):
        assert names_by_component.get(component, set()) <= clients, component
    for component in ("train", "test", "tf-serving", "redis"):
        assert not names_by_component.get(component, set()) & clients, component


# -- hooks and Jobs ---------------------------------------------------------------------------
def test_hooks_carry_a_delete_policy(rendered):
    hooks = [o for o in rendered if "helm.sh/hook" in o["metadata"].get("annotations", {})]
    assert hooks
    for obj in hooks:
        assert obj["metadata"]["annotations"].get("helm.sh/hook-delete-policy"), (
            obj["metadata"]["name"])


def test_each_model_is_trained_then_loaded_after_install_and_upgrade(rendered):
    jobs = rendered.kind("Job")
    if not jobs:
        return
    by_model = {}
    for job in jobs:
        component = job["metadata"]["labels"]["app.kubernetes.io/component"]
        by_model.setdefault(job["metadata"]["labels"]["libreco.io/model"], {})[component] = job
    for model, pair in by_model.items():
        train, load = pair["train"], pair["load"]
        for job in (train, load):
            assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
        weight = lambda j: int(j["metadata"]["annotations"]["helm.sh/hook-weight"])  # noqa: E731
        assert weight(train) < weight(load), model
        train_c = pod_spec(train)["containers"][0]
        load_c = pod_spec(load)["containers"][0]
        assert train_c["command"] == ["python", "-m", "jobs.train"]
        assert load_c["command"] == ["python", "-m", "jobs.load"]
        output = train_c["args"][train_c["args"].index("--output") + 1]
        assert load_c["args"][load_c["args"].index("--model-dir") + 1] == output
        claims = [{v["name"]: v["persistentVolumeClaim"]["claimName"]
                   for v in pod_spec(j)["volumes"] if "persistentVolumeClaim" in v}["models"]
                  for j in (train, load)]
        assert claims[0] == claims[1], "training and loading must share the model volume"


def test_training_uses_generated_data_unless_a_file_is_configured(rendered_ci):
    for (case, _), rendered in rendered_ci.items():
        data_file = values_of(case).get("training", {}).get("data", {}).get("file")
        for job in rendered.kind("Job") + rendered.kind("CronJob"):
            spec = pod_spec(job)
            for c in containers(spec):
                if c.get("command") != ["python", "-m", "jobs.train"]:
                    continue
                if data_file:
                    assert f"/data/{data_file}" in c["args"] and "--generate" not in c["args"]
                else:
                    assert "--generate" in c["args"] and "--data" not in c["args"]


def test_scheduled_training_starts_the_load_job_through_the_api(rendered_ci):
    from jobs import trigger

    scheduled = [(case, r) for (case, _), r in rendered_ci.items() if r.kind("CronJob")]
    assert scheduled, "a CI values file must schedule training"
    for case, rendered in scheduled:
        schedule = values_of(case)["training"]["schedule"]
        (role,) = rendered.kind("Role")
        assert role["rules"] == [{"apiGroups": ["batch"], "resources": ["jobs"],
                                  "verbs": ["create", "get", "list", "watch"]}]
        (binding,) = rendered.kind("RoleBinding")
        assert binding["roleRef"]["name"] == role["metadata"]["name"]
        for cron in rendered.kind("CronJob"):
            assert cron["spec"]["schedule"] == schedule
            assert cron["spec"]["concurrencyPolicy"] == "Forbid"
            spec = pod_spec(cron)
            account = spec["serviceAccountName"]
            assert {"kind": "ServiceAccount", "name": account,
                    "namespace": "recs"} in binding["subjects"]
            assert rendered.get("ServiceAccount", account)["automountServiceAccountToken"]
            (train,) = spec["initContainers"]
            (start,) = spec["containers"]
            assert train["command"] == ["python", "-m", "jobs.train"]
            assert start["command"] == ["python", "-m", "jobs.trigger"]
            env = {e["name"]: e for e in start["env"]}
            assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == (
                "metadata.namespace")
            template_dir = env["LIBRECO_LOAD_JOB_TEMPLATE"]["value"].rsplit("/", 1)[0]
            mount = next(m for m in start["volumeMounts"] if m["mountPath"] == template_dir)
            volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
            cm = rendered.get("ConfigMap", volume["configMap"]["name"])
            manifest = yaml.safe_load(cm["data"]["job.yaml"])

            # the template is the hook's loading Job, and the client takes it field for field
            model = cron["metadata"]["labels"]["libreco.io/model"]
            hook = next(j for j in rendered.kind("Job")
                        if j["metadata"]["labels"]["libreco.io/model"] == model
                        and j["metadata"]["labels"]["app.kubernetes.io/component"] == "load")
            assert manifest["spec"] == hook["spec"]
            assert "helm.sh/hook" not in manifest["metadata"].get("annotations", {})
            trigger.build_job(manifest, triggered_by="retrain-pod")


def test_only_scheduled_training_gets_an_api_token(rendered):
    for obj in workloads(rendered):
        spec = pod_spec(obj)
        if obj["kind"] == "CronJob":
            assert spec["automountServiceAccountToken"] is True
        else:
            assert spec["automountServiceAccountToken"] is False, obj["metadata"]["name"]


# -- security ---------------------------------------------------------------------------------
def test_every_container_is_restricted(rendered):
    for obj in workloads(rendered):
        spec = pod_spec(obj)
        name = f"{obj['kind']} {obj['metadata']['name']}"
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, name
        assert pod_sc.get("runAsUser", 1) != 0, name
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", name
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(key), name
        assert not any("hostPath" in v for v in spec.get("volumes", [])), name
        for c in containers(spec):
            sc = c["securityContext"]
            where = f"{name} container {c['name']}"
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc.get("privileged", False) is False, where
            assert "ALL" in sc["capabilities"]["drop"], where
            assert not sc["capabilities"].get("add"), where
            assert sc.get("runAsUser", 1) != 0, where


def test_every_container_has_resources(rendered):
    for obj in workloads(rendered):
        for c in containers(pod_spec(obj)):
            resources = c["resources"]
            assert resources["requests"]["memory"] and resources["limits"]["memory"], (
                obj["metadata"]["name"], c["name"])


def test_writable_paths_are_volumes(rendered):
    """With a read-only root filesystem, /tmp and the metrics folder must be mounts."""
    for obj in workloads(rendered):
        spec = pod_spec(obj)
        volumes = {v["name"] for v in spec.get("volumes", [])}
        volumes |= {t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])}
        for c in containers(spec):
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, (obj["metadata"]["name"], c["name"])
            assert set(mounts.values()) <= volumes
        for c in spec["containers"]:
            env = {}
            for source in c.get("envFrom", []):
                env.update(rendered.get("ConfigMap", source["configMapRef"]["name"])["data"])
            if "PROMETHEUS_MULTIPROC_DIR" in env and c["name"] == "service":
                assert env["PROMETHEUS_MULTIPROC_DIR"] in {m["mountPath"]
                                                           for m in c["volumeMounts"]}


def test_long_running_containers_have_probes(rendered):
    for obj in long_running(rendered):
        spec = pod_spec(obj)
        ports = container_ports(obj)
        running = [*spec["containers"], *(c for c in spec.get("initContainers", [])
                                          if c.get("restartPolicy") == "Always")]
        for c in running:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in c, (obj["metadata"]["name"], c["name"], probe)
                handler = c[probe]
                port = (handler.get("httpGet") or handler.get("tcpSocket") or {}).get("port")
                if port is not None:
                    assert port in ports or port in ports.values()
            if c["name"] == "service":
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
                assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
                assert c["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_images_are_pinned(rendered):
    for obj, image in images(rendered):
        name = image.rsplit("/", 1)[-1]
        if "@sha256:" in image:
            continue
        assert ":" in name, f"{obj['metadata'].get('name')} uses {image} without a tag"
        assert name.rsplit(":", 1)[1].lower() != "latest", image


def test_secrets_travel_by_reference_only(rendered):
    passwords = {base64.b64decode(v).decode() for s in rendered.kind("Secret")
                 for v in s.get("data", {}).values()}
    sensitive = re.compile(r"PASSWORD|TOKEN|SECRET|CREDENTIAL", re.IGNORECASE)
    for obj in workloads(rendered):
        for c in containers(pod_spec(obj)):
            for env in c.get("env", []):
                if sensitive.search(env["name"]):
                    assert "value" not in env, (obj["metadata"]["name"], env["name"])
                    assert "secretKeyRef" in env["valueFrom"]
                    ref = env["valueFrom"]["secretKeyRef"]
                    if ref["name"] in rendered.names("Secret"):
                        assert ref["key"] in rendered.get("Secret", ref["name"])["data"]
                assert env.get("value") not in passwords
            assert not any(p and p in " ".join(c.get("args", [])) for p in passwords)
    for cm in rendered.kind("ConfigMap"):
        text = yaml.safe_dump(cm.get("data", {}))
        assert not any(p and p in text for p in passwords), cm["metadata"]["name"]
        url = cm.get("data", {}).get("REDIS_URL", "")
        assert "@" not in url, f"{cm['metadata']['name']} puts credentials in REDIS_URL"


def test_config_maps_and_secrets_named_by_pods_exist(rendered, request):
    case = request.node.callspec.params["rendered"][0]
    values = values_of(case)
    external = {values.get("externalRedis", {}).get("existingSecret"),
                values.get("redis", {}).get("auth", {}).get("existingSecret")} - {None, ""}
    claims = {values.get("modelStorage", {}).get("existingClaim"),
              values.get("training", {}).get("data", {}).get("existingClaim")} - {None, ""}
    for obj in workloads(rendered):
        spec = pod_spec(obj)
        for v in spec.get("volumes", []):
            if "configMap" in v:
                rendered.get("ConfigMap", v["configMap"]["name"])
            if "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                assert claim in rendered.names("PersistentVolumeClaim") | claims, claim
        for c in containers(spec):
            for source in c.get("envFrom", []):
                rendered.get("ConfigMap", source["configMapRef"]["name"])
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in rendered.names("Secret") | external, ref["name"]


# -- Redis and TF Serving wiring --------------------------------------------------------------
def test_redis_comes_from_the_release_or_from_outside(rendered, request):
    case = request.node.callspec.params["rendered"][0]
    values = values_of(case)
    external = values.get("redis", {}).get("enabled") is False
    urls = {cm["data"].get("REDIS_URL") for cm in rendered.kind("ConfigMap")
            if "LIBRECO_MODEL" in cm.get("data", {})}
    modes = {cm["data"]["LIBRECO_REDIS_MODE"] for cm in rendered.kind("ConfigMap")
             if "LIBRECO_MODEL" in cm.get("data", {})}
    if external:
        assert not rendered.kind("StatefulSet")
        assert urls == {values["externalRedis"].get("url")}
        assert modes == {values["externalRedis"]["mode"]}
        if values["externalRedis"]["mode"] == "sentinel":
            for cm in rendered.kind("ConfigMap"):
                if "LIBRECO_MODEL" in cm.get("data", {}):
                    sentinels = cm["data"]["LIBRECO_REDIS_SENTINELS"].split(",")
                    assert sentinels == values["externalRedis"]["sentinels"]
    else:
        (sts,) = rendered.kind("StatefulSet")
        (redis,) = pod_spec(sts)["containers"]
        assert redis["image"].split(":")[-1] and "redis" in redis["image"]
        assert "$(REDIS_PASSWORD)" in redis["args"]
        service = rendered.get("Service", sts["metadata"]["name"])
        assert urls == {f"redis://{service['metadata']['name']}:6379/0"}
        assert modes == {"standalone"}


def test_tf_serving_modes(rendered, request):
    case = request.node.callspec.params["rendered"][0]
    values = values_of(case)
    tf_cms = [cm for cm in rendered.kind("ConfigMap")
              if cm.get("data", {}).get("LIBRECO_MODEL") and cm["metadata"]["name"].endswith(
                  "-tf")]
    if not tf_cms:
        return
    (cm,) = tf_cms
    tf = rendered.get("Deployment", cm["metadata"]["name"])
    algorithm = next(m["algorithm"] for m in [values.get("model", {}),
                                              *values.get("extraModels", [])]
                     if m.get("family") == "tf")
    tfs = values.get("tfServing", {})
    spec = pod_spec(tf)
    if tfs.get("enabled", True) is False:
        assert "TF_SERVING_URL" not in cm["data"]
        assert cm["data"]["LIBRECO_MODEL_DIR"] == "/models/tf_serving"
        assert not spec.get("initContainers")
        return
    if tfs.get("mode", "sidecar") == "sidecar":
        (sidecar,) = spec["initContainers"]
        assert sidecar["restartPolicy"] == "Always"
        serving = sidecar
        assert cm["data"]["TF_SERVING_URL"] == f"http://127.0.0.1:{tfs.get('restPort', 8501)}"
        assert f"{RELEASE}-libreco-tf-serving" not in rendered.names("Deployment")
    else:
        assert not spec.get("initContainers")
        deployment = rendered.get("Deployment", f"{RELEASE}-libreco-tf-serving")
        (serving,) = pod_spec(deployment)["containers"]
        service = rendered.get("Service", f"{RELEASE}-libreco-tf-serving")
        rest = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "tfs-rest")
        assert cm["data"]["TF_SERVING_URL"] == f"http://{service['metadata']['name']}:{rest}"
    assert serving["image"].startswith("docker.io/tensorflow/serving:")
    # the model config names the algorithm and the folder training exports to
    config_arg = next(a for a in serving["args"] if a.startswith("--model_config_file="))
    config_dir, config_file = config_arg.split("=", 1)[1].rsplit("/", 1)
    mount = next(m for m in serving["volumeMounts"] if m["mountPath"] == config_dir)
    pod = spec if tfs.get("mode", "sidecar") == "sidecar" else pod_spec(deployment)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    model_config = rendered.get("ConfigMap", volume["configMap"]["name"])["data"][config_file]
    assert f'name: "{algorithm}"' in model_config
    assert f'base_path: "/models/tf_serving/{algorithm}"' in model_config
    assert "num_versions: 2" in model_config
    # readiness only once the model is AVAILABLE: the metadata URL answers 200 from then on
    assert serving["readinessProbe"]["httpGet"]["path"] == f"/v1/models/{algorithm}/metadata"
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in serving[
        "volumeMounts"]


# -- config rollout ---------------------------------------------------------------------------
def test_checksum_config_follows_the_config(helm):
    def checksums(**values):
        rendered = render(helm, set_values=values)
        deployment = rendered.get("Deployment", f"{RELEASE}-libreco-knn")
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    base = checksums()
    assert checksums(**{"model.kNeighbors": "25"}) != base
    assert checksums(**{"deployment.gunicorn.workers": "3"}) != base
    assert checksums(**{"externalRedis.url": "redis://r:6379/1", "redis.enabled": "false"}) != (
        base)
    # not part of the pods' environment: no rollout
    assert checksums(**{"ingress.enabled": "true"}) == base
    assert checksums(**{"service.annotations.a": "b"}) == base


# -- the checks above catch what they are meant to catch --------------------------------------
def _first(objs, kind, name_part=""):
    return next(o for o in objs if o["kind"] == kind and name_part in o["metadata"]["name"])


def _service_container(objs):
    return pod_spec(_first(objs, "Deployment", "-knn"))["containers"][0]


def _hpa_target(objs):
    ref = _first(objs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"]
    return _first(objs, "Deployment", ref)


BREAKAGES = {
    "selector": (test_workload_selectors_match_their_pod_labels, lambda objs: _first(
        objs, "Deployment")["spec"]["selector"]["matchLabels"].update(
        {"app.kubernetes.io/component": "other"})),
    "target port": (test_services_reach_pods_on_existing_ports, lambda objs: _first(
        objs, "Service", "-knn")["spec"]["ports"][0].update(targetPort="htp")),
    "replicas with an HPA": (test_hpa_targets_a_rendered_deployment_without_replicas,
                             lambda objs: _hpa_target(objs)["spec"].update(replicas=2)),
    "hook without delete policy": (test_hooks_carry_a_delete_policy, lambda objs: _first(
        objs, "Job")["metadata"]["annotations"].pop("helm.sh/hook-delete-policy")),
    "writable root": (test_every_container_is_restricted, lambda objs: _service_container(
        objs)["securityContext"].update(readOnlyRootFilesystem=False)),
    "added capability": (test_every_container_is_restricted, lambda objs: _service_container(
        objs)["securityContext"]["capabilities"].update(add=["NET_ADMIN"])),
    "latest tag": (test_images_are_pinned, lambda objs: _service_container(objs).update(
        image="libreco/libreco-knn:latest")),
    "no tag": (test_images_are_pinned, lambda objs: _service_container(objs).update(
        image="registry.example.com:5000/libreco-knn")),
    "literal password": (test_secrets_travel_by_reference_only, lambda objs: _service_container(
        objs)["env"].append({"name": "REDIS_PASSWORD", "value": "hunter2"})),
    "password in the URL": (test_secrets_travel_by_reference_only, lambda objs: _first(
        objs, "ConfigMap", "-knn")["data"].update(REDIS_URL="redis://:pw@redis:6379/0")),
    "no readiness probe": (test_long_running_containers_have_probes,
                           lambda objs: _service_container(objs).pop("readinessProbe")),
    "route to nowhere": (test_routes_point_at_rendered_services, lambda objs: _first(
        objs, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"].update(
        name="elsewhere")),
    "training reaches Redis": (test_only_redis_clients_reach_redis, lambda objs: _first(
        objs, "Job", "train")["spec"]["template"]["metadata"]["labels"].update(
        {"libreco.io/redis-client": "true"})),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_the_invariants_catch_a_broken_release(rendered_ci, breakage):
    import copy

    from tests.charts.conftest import Rendered

    check, breaks = BREAKAGES[breakage]
    intact = rendered_ci[("all-values.yaml", KUBE_VERSIONS[-1])]
    check(intact)
    objs = copy.deepcopy(list(intact))
    breaks(objs)
    with pytest.raises(AssertionError):
        check(Rendered(tuple(objs)))
