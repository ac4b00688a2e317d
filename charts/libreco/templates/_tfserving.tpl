{{/* TF Serving helpers, shared by the sidecar and the Deployment modes. */}}

{{/* The monitoring configuration of TF Serving: Prometheus metrics on the REST port. */}}
{{- define "libreco.tfServing.monitoringConfig" -}}
prometheus_config {
  enable: true
  path: "/monitoring/prometheus/metrics"
}
{{- end -}}

{{/*
The model configuration of TF Serving: the tf model, with its newest `tfServing.keepVersions`
versions loaded, so that requests naming the version that is active in Redis are still answered
while the next version loads. libreco.tfServing.modelConfig (dict "root" $ "model" $m).
*/}}
{{- define "libreco.tfServing.modelConfig" -}}
model_config_list {
  config {
    name: {{ .model.algorithm | quote }}
    base_path: {{ printf "/models/tf_serving/%s" .model.algorithm | quote }}
    model_platform: "tensorflow"
    model_version_policy {
      latest {
        num_versions: {{ int .root.Values.tfServing.keepVersions }}
      }
    }
  }
}
{{- end -}}

{{/* Both configuration files, as one string whose hash rolls the TF Serving pods when it changes. */}}
{{- define "libreco.tfServing.config" -}}
{{ include "libreco.tfServing.modelConfig" . }}
{{ include "libreco.tfServing.monitoringConfig" .root }}
{{- end -}}

{{/*
The TF Serving container serving one tf model: libreco.tfServing.container (dict "root" $
"model" $m "sidecar" true). The model arrives after install (training runs as a hook), so the
startup probe allows for a long wait. GET /v1/models/<name>/metadata answers 200 only once a
version is AVAILABLE (the status URL /v1/models/<name> already answers 200 while it is LOADING),
which makes it the readiness check.
*/}}
{{- define "libreco.tfServing.container" -}}
{{- $root := .root -}}
{{- $tfs := $root.Values.tfServing -}}
{{- $m := .model -}}
name: tf-serving
image: {{ include "libreco.image" (dict "image" $tfs.image "root" $root) }}
imagePullPolicy: {{ $tfs.image.pullPolicy }}
{{- if .sidecar }}
restartPolicy: Always
{{- end }}
command:
  - tensorflow_model_server
args:
  - {{ printf "--port=%d" (int $tfs.grpcPort) }}
  - {{ printf "--rest_api_port=%d" (int $tfs.restPort) }}
  - --model_config_file=/etc/tf-serving/models.config
  - {{ printf "--file_system_poll_wait_seconds=%d" (int $tfs.pollSeconds) }}
  - --monitoring_config_file=/etc/tf-serving/monitoring.config
ports:
  - name: tfs-grpc
    containerPort: {{ int $tfs.grpcPort }}
    protocol: TCP
  - name: tfs-rest
    containerPort: {{ int $tfs.restPort }}
    protocol: TCP
startupProbe:
  httpGet:
    path: {{ printf "/v1/models/%s/metadata" $m.algorithm }}
    port: tfs-rest
  periodSeconds: 10
  failureThreshold: {{ int $tfs.startupFailureThreshold }}
  timeoutSeconds: 3
readinessProbe:
  httpGet:
    path: {{ printf "/v1/models/%s/metadata" $m.algorithm }}
    port: tfs-rest
  periodSeconds: 10
  failureThreshold: 3
  timeoutSeconds: 3
livenessProbe:
  tcpSocket:
    port: tfs-grpc
  periodSeconds: 20
  failureThreshold: 3
  timeoutSeconds: 3
resources:
  {{- toYaml $tfs.resources | nindent 2 }}
securityContext:
  {{- include "libreco.securityContext.container" $root | nindent 2 }}
volumeMounts:
  - name: models
    mountPath: /models
    readOnly: true
  - name: tf-serving-config
    mountPath: /etc/tf-serving
    readOnly: true
  - name: tmp
    mountPath: /tmp
{{- end -}}
