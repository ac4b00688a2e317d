{{/*
Helpers of the libreco chart, named libreco.<component>.<thing>.
*/}}

{{/* The chart name, shortened to fit a DNS label. */}}
{{- define "libreco.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every object name: <release>-<chart>, or the release name when it already holds the chart name. */}}
{{- define "libreco.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The name of one component's objects: libreco.component.fullname (dict "root" $ "component" "redis"). */}}
{{- define "libreco.component.fullname" -}}
{{- printf "%s-%s" (include "libreco.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "libreco.labels.common" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: libreco
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: libreco.labels.selector (dict "root" $ "component" "knn"). */}}
{{- define "libreco.labels.selector" -}}
app.kubernetes.io/name: {{ include "libreco.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component's objects: the common labels plus the selector labels. */}}
{{- define "libreco.labels.component" -}}
{{ include "libreco.labels.common" .root }}
{{ include "libreco.labels.selector" . }}
{{- end -}}

{{/*
The models to serve, as a JSON list: `model` first, then `extraModels`. Each entry is completed
with `name` (default: the algorithm), `slug` (the name as a DNS label), `dir` (its directory on
the model volume) and `deployment` (the top-level deployment settings with the entry's own
`deployment` overrides applied two levels deep, so an override of `false` or 0 also counts).
Read it with `include "libreco.models" . | fromJsonArray`.
*/}}
{{- define "libreco.models" -}}
{{- $models := list -}}
{{- range $entry := prepend (.Values.extraModels | default list) .Values.model -}}
{{- $m := deepCopy $entry -}}
{{- $name := $m.name | default $m.algorithm -}}
{{- $_ := set $m "name" $name -}}
{{- $_ := set $m "slug" ($name | replace "_" "-") -}}
{{- $_ := set $m "dir" (printf "/models/%s" $m.algorithm) -}}
{{- $_ := set $m "kNeighbors" ($m.kNeighbors | default $.Values.model.kNeighbors) -}}
{{- $_ := set $m "nRec" ($m.nRec | default $.Values.model.nRec) -}}
{{- $_ := set $m "maxNRec" ($m.maxNRec | default $.Values.model.maxNRec) -}}
{{- $_ := set $m "coldStart" ($m.coldStart | default $.Values.model.coldStart) -}}
{{- $_ := set $m "trainParams" ($m.trainParams | default dict) -}}
{{- $settings := deepCopy $.Values.deployment -}}
{{- range $key, $value := ($m.deployment | default dict) -}}
{{- if and (kindIs "map" $value) (kindIs "map" (get $settings $key)) -}}
{{- $inner := get $settings $key -}}
{{- range $k, $v := $value -}}
{{- $_ := set $inner $k $v -}}
{{- end -}}
{{- else -}}
{{- $_ := set $settings $key $value -}}
{{- end -}}
{{- end -}}
{{- $_ := set $m "deployment" $settings -}}
{{- $models = append $models $m -}}
{{- end -}}
{{- toJson $models -}}
{{- end -}}

{{/* The model of one family as a JSON object, or "{}" when the family is not enabled. */}}
{{- define "libreco.models.byFamily" -}}
{{- $found := dict -}}
{{- range $m := include "libreco.models" .root | fromJsonArray -}}
{{- if eq $m.family $.family -}}
{{- $found = $m -}}
{{- end -}}
{{- end -}}
{{- toJson $found -}}
{{- end -}}

{{/* Whether the tf family runs with TF Serving in the given mode ("sidecar" or "deployment"): "true" or "". */}}
{{- define "libreco.tfServing.inMode" -}}
{{- $tf := include "libreco.models.byFamily" (dict "root" .root "family" "tf") | fromJson -}}
{{- if and $tf .root.Values.tfServing.enabled (eq .root.Values.tfServing.mode .mode) -}}
true
{{- end -}}
{{- end -}}

{{/* A number as a plain integer when it is whole (Helm reads YAML numbers as floats: 1e+06 must print as 1000000). */}}
{{- define "libreco.number" -}}
{{- if and (kindIs "float64" .) (eq . (float64 (int64 .))) -}}
{{- int64 . -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end -}}

{{/* An image reference from an image map: libreco.image (dict "image" .Values.images.knn "root" $). */}}
{{- define "libreco.image" -}}
{{- $repo := .image.repository -}}
{{- if .image.registry -}}
{{- $repo = printf "%s/%s" .image.registry .image.repository -}}
{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repo .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (.image.tag | default .root.Chart.AppVersion | toString) -}}
{{- end -}}
{{- end -}}

{{/* The image of a family's service, training and loading containers. */}}
{{- define "libreco.image.family" -}}
{{- include "libreco.image" (dict "image" (get .root.Values.images .family) "root" .root) -}}
{{- end -}}

{{/* The claim holding the model directories. */}}
{{- define "libreco.modelStorage.claimName" -}}
{{- .Values.modelStorage.existingClaim | default (include "libreco.component.fullname" (dict "root" . "component" "models")) -}}
{{- end -}}

{{/* The Service account of the services, the hooks and the tests (no API token mounted). */}}
{{- define "libreco.serviceAccount.name" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "libreco.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* The Service account of scheduled training, allowed to create and read Jobs. */}}
{{- define "libreco.serviceAccount.trainerName" -}}
{{- include "libreco.component.fullname" (dict "root" . "component" "trainer") -}}
{{- end -}}

{{/* Redis: the Secret holding the password, or "" when there is no password. */}}
{{- define "libreco.redis.secretName" -}}
{{- if .Values.redis.enabled -}}
{{- .Values.redis.auth.existingSecret | default (include "libreco.component.fullname" (dict "root" . "component" "redis")) -}}
{{- else -}}
{{- .Values.externalRedis.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* Redis: the key of the password in that Secret. */}}
{{- define "libreco.redis.secretKey" -}}
{{- if .Values.redis.enabled -}}
{{- .Values.redis.auth.existingSecretPasswordKey -}}
{{- else -}}
{{- .Values.externalRedis.existingSecretPasswordKey -}}
{{- end -}}
{{- end -}}

{{/* Redis: the URL the services and Jobs use, never with a password in it. */}}
{{- define "libreco.redis.url" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s:6379/%d" (include "libreco.component.fullname" (dict "root" . "component" "redis")) (int .Values.redis.database) -}}
{{- else -}}
{{- .Values.externalRedis.url -}}
{{- end -}}
{{- end -}}

{{/* Redis: the environment every Redis client of the chart gets (the ConfigMap part). */}}
{{- define "libreco.redis.env" -}}
{{- with include "libreco.redis.url" . }}
REDIS_URL: {{ . | quote }}
{{- end }}
{{- if .Values.redis.enabled }}
LIBRECO_REDIS_MODE: "standalone"
{{- else }}
LIBRECO_REDIS_MODE: {{ .Values.externalRedis.mode | quote }}
{{- if eq .Values.externalRedis.mode "sentinel" }}
LIBRECO_REDIS_SENTINELS: {{ join "," .Values.externalRedis.sentinels | quote }}
LIBRECO_REDIS_SENTINEL_MASTER: {{ .Values.externalRedis.sentinelMaster | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Redis: the password as an environment variable taken from its Secret (nothing without a password). */}}
{{- define "libreco.redis.passwordEnv" -}}
{{- with include "libreco.redis.secretName" . }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ include "libreco.redis.secretKey" $ }}
{{- end }}
{{- end -}}

{{/* The Service of TF Serving (mode deployment). */}}
{{- define "libreco.tfServing.fullname" -}}
{{- include "libreco.component.fullname" (dict "root" . "component" "tf-serving") -}}
{{- end -}}

{{/* The ConfigMap of one model: libreco.config.name (dict "root" $ "model" $m). */}}
{{- define "libreco.config.name" -}}
{{- include "libreco.component.fullname" (dict "root" .root "component" .model.family) -}}
{{- end -}}

{{/*
The environment of one model's service and Jobs, as ConfigMap data (the names the services
read). The Deployment hashes it into its checksum/config annotation.
*/}}
{{- define "libreco.config.data" -}}
{{- $root := .root -}}
{{- $m := .model -}}
{{- $d := $m.deployment -}}
{{- include "libreco.redis.env" $root }}
LIBRECO_MODEL: {{ $m.name | quote }}
LIBRECO_K_NEIGHBORS: {{ int $m.kNeighbors | quote }}
LIBRECO_N_REC: {{ int $m.nRec | quote }}
LIBRECO_MAX_N_REC: {{ int $m.maxNRec | quote }}
LIBRECO_COLD_START: {{ $m.coldStart | toString | quote }}
LIBRECO_PORT: "5000"
LIBRECO_WORKERS: {{ int $d.gunicorn.workers | quote }}
LIBRECO_THREADS: {{ int $d.gunicorn.threads | quote }}
LIBRECO_TIMEOUT: {{ int $d.gunicorn.timeout | quote }}
LIBRECO_GRACEFUL_TIMEOUT: {{ int $d.gunicorn.gracefulTimeout | quote }}
LIBRECO_LOG_LEVEL: {{ $d.logLevel | quote }}
LIBRECO_POLL_INTERVAL: {{ include "libreco.number" $d.pollInterval | quote }}
PROMETHEUS_MULTIPROC_DIR: "/var/run/libreco/metrics"
{{- if eq $m.family "tf" }}
{{- if include "libreco.tfServing.inMode" (dict "root" $root "mode" "sidecar") }}
TF_SERVING_URL: {{ printf "http://127.0.0.1:%d" (int $root.Values.tfServing.restPort) | quote }}
{{- else if include "libreco.tfServing.inMode" (dict "root" $root "mode" "deployment") }}
TF_SERVING_URL: {{ printf "http://%s:%d" (include "libreco.tfServing.fullname" $root) (int $root.Values.tfServing.restPort) | quote }}
{{- end }}
{{- if $root.Values.tfServing.enabled }}
LIBRECO_TF_TIMEOUT: {{ include "libreco.number" $root.Values.tfServing.requestTimeout | quote }}
{{- else }}
LIBRECO_MODEL_DIR: "/models/tf_serving"
{{- end }}
{{- end }}
{{- end -}}

{{/* The pod security context of every pod. */}}
{{- define "libreco.securityContext.pod" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{/* The container security context of every container. */}}
{{- define "libreco.securityContext.container" -}}
{{- toYaml .Values.containerSecurityContext -}}
{{- end -}}

{{/* The image pull secrets of every pod. */}}
{{- define "libreco.pod.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets -}}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}

{{/* The arguments of `python -m jobs.train` for one model: libreco.train.args (dict "root" $ "model" $m). */}}
{{- define "libreco.train.args" -}}
{{- $root := .root -}}
{{- $m := .model -}}
- --algorithm
- {{ $m.algorithm | quote }}
- --output
- {{ $m.dir | quote }}
{{- if $root.Values.training.data.file }}
- --data
- {{ printf "/data/%s" $root.Values.training.data.file | quote }}
{{- else }}
- --generate
- {{ include "libreco.number" $root.Values.training.generate | quote }}
{{- end }}
{{- range $key, $value := $m.trainParams }}
- --param
- {{ printf "%s=%s" $key (include "libreco.number" $value) | quote }}
{{- end }}
{{- if eq $m.family "tf" }}
- --tf-serving-dir
- "/models/tf_serving"
{{- end }}
{{- range $root.Values.training.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/* The training container of one model (hook Job and CronJob alike). */}}
{{- define "libreco.train.container" -}}
{{- $root := .root -}}
{{- $m := .model -}}
name: train
image: {{ include "libreco.image.family" (dict "root" $root "family" $m.family) }}
imagePullPolicy: {{ (get $root.Values.images $m.family).pullPolicy }}
command:
  - python
  - -m
  - jobs.train
args:
  {{- include "libreco.train.args" . | nindent 2 }}
resources:
  {{- toYaml $root.Values.training.resources | nindent 2 }}
securityContext:
  {{- include "libreco.securityContext.container" $root | nindent 2 }}
volumeMounts:
  - name: models
    mountPath: /models
  - name: tmp
    mountPath: /tmp
  {{- if $root.Values.training.data.existingClaim }}
  - name: data
    mountPath: /data
    readOnly: true
  {{- end }}
{{- end -}}

{{/* The volumes of a training pod. */}}
{{- define "libreco.train.volumes" -}}
- name: models
  persistentVolumeClaim:
    claimName: {{ include "libreco.modelStorage.claimName" . }}
- name: tmp
  emptyDir: {}
{{- if .Values.training.data.existingClaim }}
- name: data
  persistentVolumeClaim:
    claimName: {{ .Values.training.data.existingClaim }}
    readOnly: true
{{- end }}
{{- end -}}

{{/*
The spec of one model's loading Job: libreco.load.jobSpec (dict "root" $ "model" $m). The Helm
hook Job and the template that scheduled training starts share it.
*/}}
{{- define "libreco.load.jobSpec" -}}
{{- $root := .root -}}
{{- $m := .model -}}
backoffLimit: {{ int $root.Values.loading.backoffLimit }}
activeDeadlineSeconds: {{ int $root.Values.loading.activeDeadlineSeconds }}
ttlSecondsAfterFinished: {{ int $root.Values.loading.ttlSecondsAfterFinished }}
template:
  metadata:
    labels:
      {{- include "libreco.labels.component" (dict "root" $root "component" "load") | nindent 6 }}
      libreco.io/model: {{ $m.slug }}
      libreco.io/redis-client: "true"
  spec:
    restartPolicy: Never
    serviceAccountName: {{ include "libreco.serviceAccount.name" $root }}
    automountServiceAccountToken: false
    {{- with include "libreco.pod.imagePullSecrets" $root }}{{ . | nindent 4 }}{{ end }}
    securityContext:
      {{- include "libreco.securityContext.pod" $root | nindent 6 }}
    containers:
      - name: load
        image: {{ include "libreco.image.family" (dict "root" $root "family" $m.family) }}
        imagePullPolicy: {{ (get $root.Values.images $m.family).pullPolicy }}
        command:
          - python
          - -m
          - jobs.load
        args:
          - --model-dir
          - {{ $m.dir | quote }}
          - --name
          - {{ $m.name | quote }}
        envFrom:
          - configMapRef:
              name: {{ include "libreco.config.name" . }}
        env:
          - name: LIBRECO_VERSION_GRACE
            value: {{ include "libreco.number" $root.Values.loading.versionGrace | quote }}
          {{- with include "libreco.redis.passwordEnv" $root }}
          {{- . | trim | nindent 10 }}
          {{- end }}
        resources:
          {{- toYaml $root.Values.loading.resources | nindent 10 }}
        securityContext:
          {{- include "libreco.securityContext.container" $root | nindent 10 }}
        volumeMounts:
          - name: models
            mountPath: /models
            readOnly: true
          - name: tmp
            mountPath: /tmp
    volumes:
      - name: models
        persistentVolumeClaim:
          claimName: {{ include "libreco.modelStorage.claimName" $root }}
          readOnly: true
      - name: tmp
        emptyDir: {}
{{- end -}}

{{/* The JSON body of a recommendation request for one model, as the test hook sends it. */}}
{{- define "libreco.tests.request" -}}
{{- $root := .root -}}
{{- $m := .model -}}
{{- $body := dict "user" ($root.Values.tests.user | toString) "n_rec" (int $root.Values.tests.nRec) -}}
{{- if eq $m.family "knn" -}}
{{- $_ := set $body "k_neighbors" (int $m.kNeighbors) -}}
{{- else if eq $m.family "vector" -}}
{{- $_ := set $body "use_faiss" true -}}
{{- end -}}
{{- toJson $body -}}
{{- end -}}

{{/*
Checks that need more than one value at a time. Fails once, listing every problem and the value
that fixes it.
*/}}
{{- define "libreco.validateValues" -}}
{{- $problems := list -}}
{{- $families := dict -}}
{{- $names := dict -}}
{{- range $m := include "libreco.models" . | fromJsonArray -}}
{{- if hasKey $families $m.family -}}
{{- $problems = append $problems (printf "family %q is served twice: keep one entry per family across model and extraModels" $m.family) -}}
{{- end -}}
{{- $_ := set $families $m.family true -}}
{{- if hasKey $names $m.name -}}
{{- $problems = append $problems (printf "model name %q is used twice: set model.name / extraModels[].name" $m.name) -}}
{{- end -}}
{{- $_ := set $names $m.name true -}}
{{- $a := $m.deployment.autoscaling -}}
{{- if and $a.enabled (lt (int $a.maxReplicas) (int $a.minReplicas)) -}}
{{- $problems = append $problems (printf "%s: deployment.autoscaling.maxReplicas (%d) is below minReplicas (%d)" $m.name (int $a.maxReplicas) (int $a.minReplicas)) -}}
{{- end -}}
{{- if and $a.enabled (not (or $a.targetCPUUtilizationPercentage $a.targetMemoryUtilizationPercentage)) -}}
{{- $problems = append $problems (printf "%s: autoscaling needs deployment.autoscaling.targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" $m.name) -}}
{{- end -}}
{{- if le (int $m.deployment.terminationGracePeriodSeconds) (int $m.deployment.gunicorn.gracefulTimeout) -}}
{{- $problems = append $problems (printf "%s: deployment.terminationGracePeriodSeconds must exceed deployment.gunicorn.gracefulTimeout" $m.name) -}}
{{- end -}}
{{- end -}}
{{- if .Values.redis.enabled -}}
{{- if or .Values.externalRedis.url .Values.externalRedis.sentinels -}}
{{- $problems = append $problems "externalRedis is configured while redis.enabled is true: set redis.enabled=false to use the external Redis" -}}
{{- end -}}
{{- else -}}
{{- if and (ne .Values.externalRedis.mode "sentinel") (not .Values.externalRedis.url) -}}
{{- $problems = append $problems "redis.enabled is false: set externalRedis.url (or externalRedis.mode=sentinel with externalRedis.sentinels)" -}}
{{- end -}}
{{- if and (eq .Values.externalRedis.mode "sentinel") (not .Values.externalRedis.sentinels) -}}
{{- $problems = append $problems "externalRedis.mode is sentinel: list the sentinels in externalRedis.sentinels" -}}
{{- end -}}
{{- if regexMatch "^rediss?://[^/]*@" .Values.externalRedis.url -}}
{{- $problems = append $problems "externalRedis.url holds credentials: put the password in a Secret and name it in externalRedis.existingSecret" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.httpRoute.enabled (not .Values.httpRoute.parentRefs) -}}
{{- $problems = append $problems "httpRoute.enabled needs httpRoute.parentRefs (the Gateway to attach to)" -}}
{{- end -}}
{{- if and .Values.metrics.podMonitor.enabled (not (include "libreco.tfServing.inMode" (dict "root" . "mode" "sidecar"))) (not (include "libreco.tfServing.inMode" (dict "root" . "mode" "deployment"))) -}}
{{- $problems = append $problems "metrics.podMonitor.enabled scrapes TF Serving: serve a tf model with tfServing.enabled=true" -}}
{{- end -}}
{{- if and (not .Values.training.onInstall) (not .Values.training.schedule) -}}
{{- $problems = append $problems "training.onInstall is false and training.schedule is empty: no model would ever be trained" -}}
{{- end -}}
{{- if $problems -}}
{{- fail (printf "\n\nlibreco: invalid values:\n  - %s\n" (join "\n  - " $problems)) -}}
{{- end -}}
{{- end -}}
