{{/*
The operator looks its objects up by fixed names (Secrets sluice-operator-tls and
sluice-gateway-keys, Lease sluice-operator-leader, MutatingWebhookConfiguration
sluice-operator) and keeps its own pods out of its webhook by the label
app.kubernetes.io/name=sluice-operator, so these names are not release-prefixed:
one release per cluster.
*/}}
{{- define "sluice.name" -}}sluice-operator{{- end -}}

{{- define "sluice.labels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: sluice
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* [registry/]repository@digest when a digest is given, else [registry/]repository:tag
(tag defaults to appVersion); registry is global.imageRegistry. */}}
{{- define "sluice.image" -}}
{{- $repository := .image.repository -}}
{{- with .registry -}}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository -}}
{{- end -}}
{{- if .image.digest -}}
{{ $repository }}@{{ .image.digest }}
{{- else -}}
{{ $repository }}:{{ .image.tag | default .appVersion }}
{{- end -}}
{{- end -}}

{{- define "sluice.serviceHost" -}}
{{ include "sluice.name" . }}.{{ .Release.Namespace }}.svc
{{- end -}}

{{- define "sluice.gatewayURL" -}}
{{- if .Values.gateway.url -}}
{{ .Values.gateway.url }}
{{- else -}}
https://{{ include "sluice.serviceHost" . }}:{{ .Values.service.port }}
{{- end -}}
{{- end -}}
