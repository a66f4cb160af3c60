{{/* Names and labels. */}}
{{- define "distillguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "distillguard.fullname" -}}
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

{{- define "distillguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "distillguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "distillguard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "distillguard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: ext-proc
{{- end -}}

{{- define "distillguard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "distillguard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "distillguard.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Name of the Secret holding the scoring secret, admin token and Redis password. */}}
{{- define "distillguard.secretName" -}}
{{- default (include "distillguard.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Where the server reads its files. */}}
{{- define "distillguard.configDir" -}}/etc/distillguard/config{{- end -}}
{{- define "distillguard.secretDir" -}}/etc/distillguard/secrets{{- end -}}
{{- define "distillguard.redisSecretDir" -}}/etc/distillguard/redis{{- end -}}
{{- define "distillguard.tlsDir" -}}/etc/distillguard/tls{{- end -}}

{{/* terminationGracePeriodSeconds: preStop sleep + drain grace + 5 s for the process to exit. */}}
{{- define "distillguard.terminationGracePeriodSeconds" -}}
{{- add (int .Values.drain.preStopSleepSeconds) (int .Values.drain.graceSeconds) 5 -}}
{{- end -}}

{{/*
Validates values that would otherwise render a broken or unsafe release.
Included by every template that depends on them.
*/}}
{{- define "distillguard.validate" -}}
{{- if not (has .Values.secretDelivery (list "inline" "files")) -}}
{{- fail (printf "secretDelivery must be inline or files, not %q" .Values.secretDelivery) -}}
{{- end -}}
{{- if and (eq .Values.secretDelivery "inline") .Values.secrets.existingSecret -}}
{{- fail "secrets.existingSecret needs secretDelivery=files: with inline delivery the chart writes the secrets into the config file itself" -}}
{{- end -}}
{{- if and .Values.redis.enabled (eq .Values.secretDelivery "inline") .Values.redis.existingSecret.name -}}
{{- fail "redis.existingSecret needs secretDelivery=files; with inline delivery set redis.password" -}}
{{- end -}}
{{- if and .Values.redis.enabled .Values.redis.password .Values.secrets.existingSecret (not .Values.redis.existingSecret.name) -}}
{{- fail "with secrets.existingSecret the chart renders no Secret for redis.password: put the password in a Secret and set redis.existingSecret" -}}
{{- end -}}
{{- if and .Values.redis.enabled (empty .Values.redis.addrs) -}}
{{- fail "redis.enabled needs redis.addrs (host:port of an existing Redis; the chart ships none)" -}}
{{- end -}}
{{- if lt (int .Values.drain.graceSeconds) 0 -}}
{{- fail "drain.graceSeconds must not be negative" -}}
{{- end -}}
{{- if lt (int .Values.drain.preStopSleepSeconds) 0 -}}
{{- fail "drain.preStopSleepSeconds must not be negative" -}}
{{- end -}}
{{- $c := .Values.config | default dict -}}
{{- $server := get $c "server" | default dict -}}
{{- range $k := list "grpc_addr" "admin_addr" "drain_grace" -}}
{{- if hasKey $server $k -}}
{{- fail (printf "config.server.%s is set by the chart (ports.*, drain.graceSeconds); remove it from config" $k) -}}
{{- end -}}
{{- end -}}
{{- if hasKey $server "tls" -}}
{{- fail "config.server.tls is set by the chart (tls.secretName); remove it from config" -}}
{{- end -}}
{{- $scoring := get $c "scoring" | default dict -}}
{{- range $k := list "secret" "secret_file" "redis" -}}
{{- if hasKey $scoring $k -}}
{{- fail (printf "config.scoring.%s is set by the chart (secrets.*, redis.*); remove it from config" $k) -}}
{{- end -}}
{{- end -}}
{{- $admin := get $c "admin" | default dict -}}
{{- if or (hasKey $admin "token") (hasKey $admin "token_file") -}}
{{- fail "config.admin.token is set by the chart (secrets.adminToken); remove it from config" -}}
{{- end -}}
{{- range $v := concat .Values.extraVolumes .Values.extraVolumeMounts -}}
{{- if has $v.name (list "config" "secrets" "redis-secret" "tls") -}}
{{- fail (printf "extraVolumes and extraVolumeMounts: %q is a volume of the chart's own; name yours otherwise" $v.name) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.networkPolicy.enabled (empty .Values.networkPolicy.envoyPeers) -}}
{{- fail "networkPolicy.enabled needs networkPolicy.envoyPeers (the Envoy pods that call the processor); an empty list would admit every pod" -}}
{{- end -}}
{{- end -}}

{{/*
The distillguard config file: the user's config, with the keys the chart
owns laid over it.
*/}}
{{- define "distillguard.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) -}}
{{- $server := dict "grpc_addr" (printf ":%d" (int .Values.ports.grpc)) "admin_addr" (printf "0.0.0.0:%d" (int .Values.ports.admin)) "drain_grace" (printf "%ds" (int .Values.drain.graceSeconds)) -}}
{{- if .Values.tls.secretName -}}
{{- $tls := dict "cert_file" (printf "%s/tls.crt" (include "distillguard.tlsDir" .)) "key_file" (printf "%s/tls.key" (include "distillguard.tlsDir" .)) -}}
{{- if .Values.tls.clientCA -}}
{{- $_ := set $tls "client_ca_file" (printf "%s/ca.crt" (include "distillguard.tlsDir" .)) -}}
{{- end -}}
{{- $_ := set $server "tls" $tls -}}
{{- end -}}
{{- $scoring := dict -}}
{{- $admin := dict -}}
{{- $files := eq .Values.secretDelivery "files" -}}
{{- if $files -}}
{{- if or .Values.secrets.existingSecret .Values.secrets.scoringSecret -}}
{{- $_ := set $scoring "secret_file" (printf "%s/%s" (include "distillguard.secretDir" .) .Values.secrets.keys.scoringSecret) -}}
{{- end -}}
{{- if or .Values.secrets.existingSecret .Values.secrets.adminToken -}}
{{- $_ := set $admin "token_file" (printf "%s/%s" (include "distillguard.secretDir" .) .Values.secrets.keys.adminToken) -}}
{{- end -}}
{{- else -}}
{{- if .Values.secrets.scoringSecret -}}
{{- $_ := set $scoring "secret" .Values.secrets.scoringSecret -}}
{{- end -}}
{{- if .Values.secrets.adminToken -}}
{{- $_ := set $admin "token" .Values.secrets.adminToken -}}
{{- end -}}
{{- end -}}
{{- if .Values.redis.enabled -}}
{{- $redis := dict "addrs" .Values.redis.addrs -}}
{{- if .Values.redis.existingSecret.name -}}
{{- $_ := set $redis "password_file" (printf "%s/%s" (include "distillguard.redisSecretDir" .) .Values.redis.existingSecret.key) -}}
{{- else if and .Values.redis.password $files -}}
{{- $_ := set $redis "password_file" (printf "%s/redis-password" (include "distillguard.secretDir" .)) -}}
{{- else if .Values.redis.password -}}
{{- $_ := set $redis "password" .Values.redis.password -}}
{{- end -}}
{{- $_ := set $scoring "redis" $redis -}}
{{- end -}}
{{- $chart := dict "server" $server -}}
{{- if $scoring -}}{{- $_ := set $chart "scoring" $scoring -}}{{- end -}}
{{- if $admin -}}{{- $_ := set $chart "admin" $admin -}}{{- end -}}
{{- toYaml (mustMergeOverwrite $cfg $chart) -}}
{{- end -}}

{{/* Whether the chart renders a Secret for secrets (files delivery). */}}
{{- define "distillguard.ownSecret" -}}
{{- if and (eq .Values.secretDelivery "files") (not .Values.secrets.existingSecret) (or .Values.secrets.scoringSecret .Values.secrets.adminToken (and .Values.redis.enabled .Values.redis.password)) -}}true{{- end -}}
{{- end -}}
