{{/* The namespace whose MayastorPools are managed. */}}
{{- define "msp-operator.watchNamespace" -}}
{{- default .Release.Namespace .Values.watchNamespace -}}
{{- end -}}
