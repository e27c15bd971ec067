{{/* Chart name. */}}
{{- define "wsfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: <release>-<chart> unless the release already contains the chart name. */}}
{{- define "wsfleet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "wsfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object, without the instance (selector labels carry it). */}}
{{- define "wsfleet.baseLabels" -}}
helm.sh/chart: {{ include "wsfleet.chart" . }}
app.kubernetes.io/part-of: wsfleet
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Common labels of objects that have no selector labels. */}}
{{- define "wsfleet.labels" -}}
{{ include "wsfleet.baseLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of the operator's objects (base + selector labels). */}}
{{- define "wsfleet.operator.labels" -}}
{{ include "wsfleet.baseLabels" . }}
{{ include "wsfleet.operator.selectorLabels" . }}
{{- end -}}

{{/* Labels of the optional Redis's objects (base + selector labels). */}}
{{- define "wsfleet.redis.labels" -}}
{{ include "wsfleet.baseLabels" . }}
{{ include "wsfleet.redis.selectorLabels" . }}
{{- end -}}

{{/* Selector labels of the operator. */}}
{{- define "wsfleet.operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wsfleet.name" . }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Selector labels of the optional Redis. */}}
{{- define "wsfleet.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wsfleet.name" . }}-redis
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{- define "wsfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "wsfleet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "wsfleet.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* True when the operator is limited to one namespace. */}}
{{- define "wsfleet.namespaced" -}}
{{- if .Values.operator.watchNamespace -}}true{{- end -}}
{{- end -}}

{{/* True when the prometheus-operator API exists (or is forced by the user with --api-versions). */}}
{{- define "wsfleet.hasMonitoringAPI" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" -}}true{{- end -}}
{{- end -}}

{{/*
The namespaced rules the operator needs wherever it reconciles fleets: one rule per
(apiGroup, resource), the same as wsfleet_operator.rbac.REQUIRED_RULES (checked by
tests/packaging/test_rbac.py; tests/cluster/test_rbac.py checks them against a real API
server). kopf watches the owned kinds to repair drift; nothing is ever deleted by the
operator (the garbage collector removes a fleet's objects with it).
*/}}
{{- define "wsfleet.rbac.workloadRules" -}}
# The custom resource: kopf watches fleets and patches finalizers and progress annotations.
- apiGroups: ["wsfleet.io"]
  resources: ["websocketfleets"]
  verbs: ["get", "list", "watch", "patch"]
# Status: desired/ready replicas, conditions, last decision, forecast accuracy (merge-patched,
# never read through /status).
- apiGroups: ["wsfleet.io"]
  resources: ["websocketfleets/status"]
  verbs: ["patch"]
# Owned gateway objects: created, watched for drift, drift repaired, scaled (replicas
# patch). Never deleted by the operator: the garbage collector removes them with their fleet.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Gateway pods: connection-aware scale-down lists them and sets pod-deletion-cost annotations.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "patch"]
# Cache pre-warm before a forecast peak: read, by name, the Secrets a fleet's spec names
# (auth.apiKeySecretRef, redis.secretRef). `get` only: never list or watch, so the operator
# cannot enumerate Secrets; names differ per fleet, so resourceNames cannot narrow it.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# Kubernetes Events for every scaling action (kopf and the operator both post core/v1 Events).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- /*
  Never granted: "namespaces" (list, watch). kopf asks for them only when it runs namespaced
  with glob patterns; the chart passes one exact --namespace (the operator then turns kopf's
  scanning off) or --all-namespaces (kopf never lists namespaces).
*/}}
{{- end -}}

{{/* Command-line arguments of `wsfleet operator` besides the namespace choice. */}}
{{- define "wsfleet.operator.args" -}}
- --liveness-port={{ .Values.operator.healthPort }}
- --metrics-port={{ .Values.operator.metricsPort }}
- --log-level={{ .Values.operator.logLevel }}
{{- if .Values.operator.peering.enabled }}
- --peering={{ .Values.operator.peering.name }}
{{- end }}
{{- if not .Values.operator.forecast }}
- --no-forecast
{{- end }}
{{- end -}}

