{{/* Redis helpers. */}}

{{/* The Redis configuration file (the password is added on the command line from the Secret). */}}
{{- define "libreco.redis.config" -}}
bind * -::*
port 6379
protected-mode yes
{{- if .Values.redis.maxmemory }}
maxmemory {{ .Values.redis.maxmemory }}
{{- end }}
# Model keys must never be evicted: a full Redis refuses writes, and a load then fails cleanly.
maxmemory-policy noeviction
{{- if .Values.redis.persistence.enabled }}
appendonly yes
appendfsync everysec
{{- else }}
appendonly no
save ""
{{- end }}
{{- end -}}
