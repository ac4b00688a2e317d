{{/* HTTP routing helpers shared by the Ingress and the HTTPRoute. */}}

{{/*
The URL prefixes of every model and the Service answering them, as a JSON list of
{"prefix", "service"}: `/<model name>` for each model, and `/vector` for the vector family.
*/}}
{{- define "libreco.routes" -}}
{{- $routes := list -}}
{{- range $m := include "libreco.models" . | fromJsonArray -}}
{{- $service := include "libreco.config.name" (dict "root" $ "model" $m) -}}
{{- $routes = append $routes (dict "prefix" (printf "/%s" $m.name) "service" $service) -}}
{{- if and (eq $m.family "vector") (ne $m.name "vector") -}}
{{- $routes = append $routes (dict "prefix" "/vector" "service" $service) -}}
{{- end -}}
{{- end -}}
{{- toJson $routes -}}
{{- end -}}
