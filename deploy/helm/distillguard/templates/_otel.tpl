{{/*
OpenTelemetry environment of the server container (values otel.*): the
standard OTEL_* variables, read by the server's OpenTelemetry SDK
(README, Tracing and OTLP). Nothing is rendered without an OTLP endpoint
except OTEL_SERVICE_NAME when set: the server then exports nothing and
does not trace, and Prometheus scraping is the same either way.
*/}}
{{- define "distillguard.otelEnv" -}}
{{- $o := .Values.otel -}}
{{- if or $o.endpoint $o.tracesEndpoint $o.metricsEndpoint }}
{{- with $o.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with $o.tracesEndpoint }}
- name: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with $o.metricsEndpoint }}
- name: OTEL_EXPORTER_OTLP_METRICS_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $o.protocol | quote }}
{{- if $o.headersSecret.name }}
- name: OTEL_EXPORTER_OTLP_HEADERS
  valueFrom:
    secretKeyRef:
      name: {{ $o.headersSecret.name }}
      key: {{ required "otel.headersSecret.key names the key of otel.headersSecret.name holding OTEL_EXPORTER_OTLP_HEADERS" $o.headersSecret.key }}
{{- end }}
{{- with $o.tracesSampler }}
- name: OTEL_TRACES_SAMPLER
  value: {{ . | quote }}
{{- end }}
{{- with $o.tracesSamplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ . | quote }}
{{- end }}
{{- if gt (int $o.metricExportIntervalMillis) 0 }}
- name: OTEL_METRIC_EXPORT_INTERVAL
  value: {{ $o.metricExportIntervalMillis | int | toString | quote }}
{{- end }}
{{- /* The pod's identity from the downward API, referenced by
     OTEL_RESOURCE_ATTRIBUTES below ($(VAR) is expanded by the kubelet
     from variables defined earlier in the list). */}}
- name: OTEL_K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: OTEL_K8S_NAMESPACE_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: OTEL_K8S_NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: OTEL_K8S_POD_UID
  valueFrom:
    fieldRef:
      fieldPath: metadata.uid
{{- $attrs := list "k8s.pod.name=$(OTEL_K8S_POD_NAME)" "k8s.namespace.name=$(OTEL_K8S_NAMESPACE_NAME)" "k8s.node.name=$(OTEL_K8S_NODE_NAME)" "service.instance.id=$(OTEL_K8S_POD_UID)" }}
{{- range $k, $v := $o.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%s" $k $v) }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attrs | quote }}
{{- end }}
{{- with $o.serviceName }}
- name: OTEL_SERVICE_NAME
  value: {{ . | quote }}
{{- end }}
{{- end -}}
