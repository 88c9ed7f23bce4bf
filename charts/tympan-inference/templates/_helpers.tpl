{{/* Names and labels shared by the templates. */}}

{{- define "tympan-inference.fullname" -}}
{{- printf "%s-tympan-inference" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tympan-inference.labels" -}}
app.kubernetes.io/name: tympan-inference
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The ServiceAccount the predictor runs as ("" = the namespace default). */}}
{{- define "tympan-inference.serviceAccountName" -}}
{{- if .Values.serviceAccount.name -}}
{{- .Values.serviceAccount.name -}}
{{- else if .Values.s3.enabled -}}
{{- include "tympan-inference.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the S3 credentials: an existing one or the chart's own. */}}
{{- define "tympan-inference.s3SecretName" -}}
{{- if .Values.s3.existingSecret -}}
{{- .Values.s3.existingSecret -}}
{{- else -}}
{{- printf "%s-s3" (include "tympan-inference.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Whole CPUs in the CPU limit (at least 1): torch's thread count, so it is not throttled. */}}
{{- define "tympan-inference.threads" -}}
{{- $cpu := toString (dig "limits" "cpu" "1" .Values.resources) -}}
{{- $n := 1 -}}
{{- if hasSuffix "m" $cpu -}}
{{- $n = div (atoi (trimSuffix "m" $cpu)) 1000 -}}
{{- else -}}
{{- $n = int (floor (float64 $cpu)) -}}
{{- end -}}
{{- max 1 $n -}}
{{- end -}}
