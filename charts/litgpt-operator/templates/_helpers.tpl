{{/* Names and labels shared by every object of the chart. */}}

{{- define "litgpt-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "litgpt-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "litgpt-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "litgpt-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "litgpt-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "litgpt-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "litgpt-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "litgpt-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "litgpt-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Peering is on when asked for; the schema makes it mandatory for more than one replica. */}}
{{- define "litgpt-operator.peering" -}}
{{- if .Values.peering.enabled }}true{{ end }}
{{- end }}

{{/* The generated RBAC rules (rbac-rules.yaml, from operator/litgpt_operator/rbac.py). */}}
{{- define "litgpt-operator.rules" -}}
{{- $rules := .Files.Get "rbac-rules.yaml" | fromYaml }}
{{- index $rules .key | toYaml }}
{{- end }}
