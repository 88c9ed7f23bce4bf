{{/* Names and labels shared by the templates. */}}

{{- define "tympan-platform.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tympan-platform.labels" -}}
app.kubernetes.io/part-of: tympan-platform
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "mlflow"). */}}
{{- define "tympan-platform.selector" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "tympan-platform.s3SecretName" -}}
{{- .Values.s3.existingSecret | default (printf "%s-s3" (include "tympan-platform.fullname" .)) -}}
{{- end -}}

{{- define "tympan-platform.dbSecretName" -}}
{{- .Values.postgresql.existingSecret | default (printf "%s-db" (include "tympan-platform.fullname" .)) -}}
{{- end -}}

{{/* The S3 endpoint MLflow clients use: explicit, else the bundled MinIO, else none (AWS). */}}
{{- define "tympan-platform.s3EndpointUrl" -}}
{{- if .Values.s3.endpointUrl -}}
{{- .Values.s3.endpointUrl -}}
{{- else if .Values.minio.enabled -}}
{{- printf "http://%s-minio.%s.svc:9000" (include "tympan-platform.fullname" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* Pod and container security settings every component shares. */}}
{{- define "tympan-platform.containerSecurity" -}}
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
{{- end -}}
