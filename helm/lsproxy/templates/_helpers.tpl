{{/* Names ---------------------------------------------------------------- */}}

{{- define "lsproxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lsproxy.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lsproxy.controlName" -}}
{{- printf "%s-control" (include "lsproxy.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lsproxy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lsproxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lsproxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lsproxy.labels" -}}
helm.sh/chart: {{ include "lsproxy.chart" . }}
{{ include "lsproxy.selectorLabels" . }}
app.kubernetes.io/version: {{ include "lsproxy.imageTag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- /* The Secrets the pods read that the chart does not own, for Reloader. */}}
{{- define "lsproxy.reloadSecrets" -}}
{{- $names := list (include "lsproxy.secretName" .) }}
{{- if and (ne .Values.redis.mode "none") .Values.redis.auth.enabled .Values.redis.auth.existingSecret }}
{{- $names = append $names .Values.redis.auth.existingSecret }}
{{- end }}
{{- if and (ne .Values.redis.mode "none") .Values.redis.tls.caSecret }}
{{- $names = append $names .Values.redis.tls.caSecret }}
{{- end }}
{{- join "," (uniq $names) }}
{{- end }}

{{- define "lsproxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lsproxy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "lsproxy.secretName" -}}
{{- if .Values.secrets.create }}
{{- include "lsproxy.fullname" . }}
{{- else }}
{{- default (include "lsproxy.fullname" .) .Values.secrets.existingSecret }}
{{- end }}
{{- end }}

{{- define "lsproxy.redisSecretName" -}}
{{- default (include "lsproxy.secretName" .) .Values.redis.auth.existingSecret }}
{{- end }}

{{- define "lsproxy.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "lsproxy.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "lsproxy.imageTag" .) }}
{{- end }}
{{- end }}

{{/* Configuration ----------------------------------------------------------

lsproxy.configKeys: the options accepted under .Values.config, as a JSON
list of YAML keys (LSPROXY_<KEY upper-cased> each). deploy/deploy_test.go
checks that these plus the variables the templates set cover every option
lsproxy knows (config.Names), and nothing else.
*/}}
{{- define "lsproxy.configKeys" -}}
{{- list
  "provider" "environment" "redirect_url" "scopes"
  "upstream_url" "authorize_url" "token_url" "client_auth" "pkce"
  "tenant_header" "location_header" "refresh_before" "log_level" "log_format"
  "upstream_timeout" "token_timeout" "lock_ttl"
  "read_header_timeout" "body_read_timeout" "idle_timeout" "shutdown_timeout"
  "max_replay_body_bytes" "max_header_bytes"
  "breaker_failures" "breaker_open_for" "cache_ttl" "cache_max_bytes"
  "redis_wait_replicas" "redis_wait_timeout"
  "invalid_grant_guard_threshold" "invalid_grant_guard_window"
  "state_ttl" "authorize_link_ttl" "identify" "identify_retry" "location_preferred" "console_session_idle" "success_url" "webhook_url"
  "webhook_retry_schedule" "webhook_timeout" "webhook_lease" "webhook_poll_interval"
  "console_oidc_issuer" "console_oidc_client_id" "console_oidc_redirect_url"
  "console_oidc_allowed_emails" "console_oidc_allowed_groups"
  "refresher_interval" "refresher_concurrency" "refresh_idle_margin"
  "rate_limit" "rate_limit_wait" "rate_limit_max_block" "rate_limit_costs" "rate_limit_key_share"
  "allow_unauthenticated" | toJson }}
{{- end }}

{{/* lsproxy.chartOwnedKeys: options the chart sets itself, with where to set them instead. */}}
{{- define "lsproxy.chartOwnedKeys" -}}
{{- dict
  "listen" "bindAddress, ports.proxy and mode"
  "control_listen" "bindAddress and ports.control"
  "client_id" "secrets.clientId (Secret key client-id)"
  "client_secret" "secrets.clientSecret (Secret key client-secret)"
  "client_secret_file" "secrets.clientSecret (Secret key client-secret)"
  "admin_token" "secrets.adminToken (Secret key admin-token)"
  "admin_token_file" "secrets.adminToken (Secret key admin-token)"
  "encryption_key" "secrets.encryptionKey (Secret key encryption-key)"
  "encryption_key_file" "secrets.encryptionKey (Secret key encryption-key)"
  "encryption_keys" "secrets.previousEncryptionKeys (Secret key previous-encryption-keys)"
  "client_keys" "secrets.clientKeys (Secret key client-keys)"
  "webhook_secret" "secrets.webhookSecret (Secret key webhook-secret)"
  "webhook_secret_file" "secrets.webhookSecret (Secret key webhook-secret)"
  "webhook_secrets" "secrets.webhookSecrets (Secret key webhook-secrets)"
  "console_oidc_client_secret" "secrets.consoleOidcClientSecret (Secret key console-oidc-client-secret)"
  "console_oidc_client_secret_file" "secrets.consoleOidcClientSecret (Secret key console-oidc-client-secret)"
  "redis_url" "redis.mode and redis.standalone.url"
  "redis_sentinel_master" "redis.sentinel.masterName"
  "redis_sentinel_addrs" "redis.sentinel.addrs"
  "redis_cluster_addrs" "redis.cluster.addrs"
  "redis_password" "redis.auth"
  "redis_password_file" "redis.auth"
  "redis_ca_file" "redis.tls.caSecret"
  "redis_tls" "redis.tls.enabled"
  "tls_cert_file" "tls.proxy.secretName"
  "tls_key_file" "tls.proxy.secretName"
  "control_tls_cert_file" "tls.control.secretName"
  "control_tls_key_file" "tls.control.secretName"
  "redis_key_prefix" "redis.keyPrefix"
  "data_dir" "persistence (redis.mode none)"
  | toJson }}
{{- end }}

{{/* lsproxy.envValue renders one config value as an environment string:
lists comma-joined, whole numbers without an exponent. */}}
{{- define "lsproxy.envValue" -}}
{{- if kindIs "slice" . }}
{{- join "," . }}
{{- else if kindIs "float64" . }}
{{- if eq (float64 (int64 .)) . }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{- define "lsproxy.proxyListen" -}}
{{- $host := .Values.bindAddress }}
{{- if eq .Values.mode "sidecar" }}{{ $host = "127.0.0.1" }}{{ end }}
{{- if contains ":" $host }}{{ printf "[%s]:%v" $host .Values.ports.proxy }}{{ else }}{{ printf "%s:%v" $host .Values.ports.proxy }}{{ end }}
{{- end }}

{{- define "lsproxy.controlListen" -}}
{{- $host := .Values.bindAddress }}
{{- if contains ":" $host }}{{ printf "[%s]:%v" $host .Values.ports.control }}{{ else }}{{ printf "%s:%v" $host .Values.ports.control }}{{ end }}
{{- end }}

{{/* Validation -------------------------------------------------------------

lsproxy.validate fails the render with a message naming the value to fix.
Every template that renders a workload includes it. */}}
{{- define "lsproxy.validate" -}}
{{- $v := .Values }}
{{- if not (has $v.mode (list "gateway" "sidecar")) }}
{{- fail (printf "lsproxy: mode must be gateway or sidecar; got %q" $v.mode) }}
{{- end }}
{{- if not (has $v.redis.mode (list "none" "standalone" "sentinel" "cluster")) }}
{{- fail (printf "lsproxy: redis.mode must be none, standalone, sentinel or cluster; got %q" $v.redis.mode) }}
{{- end }}

{{- /* The embedded store is one bbolt file opened by one process. */}}
{{- if eq $v.redis.mode "none" }}
{{- if or (gt (int $v.replicaCount) 1) $v.autoscaling.enabled }}
{{- fail (printf "lsproxy: the embedded store (redis.mode: none) is single-process, so it cannot serve replicaCount: %v%s. Configure Redis (redis.mode: standalone, sentinel or cluster) to run more than one replica, or set replicaCount: 1 and autoscaling.enabled: false." $v.replicaCount (ternary " with autoscaling.enabled" "" $v.autoscaling.enabled)) }}
{{- end }}
{{- if not $v.persistence.enabled }}
{{- fail "lsproxy: the embedded store (redis.mode: none) needs persistence.enabled: true; without a volume every tenant's refresh token is lost when the pod goes" }}
{{- end }}
{{- end }}
{{- if eq $v.redis.mode "standalone" }}
{{- $url := $v.redis.standalone.url | default "" }}
{{- if not (or (hasPrefix "redis://" $url) (hasPrefix "rediss://" $url)) }}
{{- fail "lsproxy: redis.standalone.url must be a redis:// or rediss:// URL (redis.mode: standalone)" }}
{{- end }}
{{- if contains ":" (get (urlParse $url) "userinfo") }}
{{- fail "lsproxy: redis.standalone.url must not contain a password; use redis.auth (a Secret)" }}
{{- end }}
{{- if and $v.redis.tls.caSecret (not (hasPrefix "rediss://" $url)) }}
{{- fail "lsproxy: redis.tls.caSecret needs a rediss:// redis.standalone.url" }}
{{- end }}
{{- if $v.redis.tls.enabled }}
{{- fail "lsproxy: redis.tls.enabled is for sentinel and cluster; with redis.mode: standalone use a rediss:// redis.standalone.url" }}
{{- end }}
{{- end }}
{{- if and (eq $v.redis.mode "sentinel") (or (not $v.redis.sentinel.masterName) (not $v.redis.sentinel.addrs)) }}
{{- fail "lsproxy: redis.mode: sentinel needs redis.sentinel.masterName and redis.sentinel.addrs" }}
{{- end }}
{{- if and (eq $v.redis.mode "cluster") (not $v.redis.cluster.addrs) }}
{{- fail "lsproxy: redis.mode: cluster needs redis.cluster.addrs" }}
{{- end }}
{{- if or (contains "{" $v.redis.keyPrefix) (contains "}" $v.redis.keyPrefix) }}
{{- fail "lsproxy: redis.keyPrefix must not contain { or } (keys use Redis Cluster hash tags)" }}
{{- end }}

{{- /* config: known keys only, none the chart owns. */}}
{{- $known := include "lsproxy.configKeys" . | fromJsonArray }}
{{- $owned := include "lsproxy.chartOwnedKeys" . | fromJson }}
{{- range $key, $_ := $v.config }}
{{- if hasKey $owned $key }}
{{- fail (printf "lsproxy: config.%s is set by the chart; use %s" $key (get $owned $key)) }}
{{- else if not (has $key $known) }}
{{- fail (printf "lsproxy: config.%s is not an lsproxy option (see config.example.yaml; keys are lower_snake_case)" $key) }}
{{- end }}
{{- end }}

{{- /* Secrets the chart creates. */}}
{{- if $v.secrets.create }}
{{- range $field := list "clientId" "clientSecret" "encryptionKey" "adminToken" }}
{{- if not (get $v.secrets $field) }}
{{- fail (printf "lsproxy: secrets.%s is required with secrets.create: true (or create the Secret yourself: secrets.create: false, secrets.existingSecret)" $field) }}
{{- end }}
{{- end }}
{{- range $i, $key := prepend ($v.secrets.previousEncryptionKeys | default list) $v.secrets.encryptionKey }}
{{- if or (ne (len (b64dec $key)) 32) (ne (b64enc (b64dec $key)) $key) }}
{{- fail (printf "lsproxy: %s must be standard base64 of exactly 32 bytes (openssl rand -base64 32)" (ternary "secrets.encryptionKey" (printf "secrets.previousEncryptionKeys[%d]" (sub $i 1)) (eq $i 0))) }}
{{- end }}
{{- end }}
{{- if and (eq $v.mode "gateway") (not $v.secrets.clientKeys) (not $v.config.allow_unauthenticated) }}
{{- fail "lsproxy: the gateway's proxy listener is reachable from other pods, so it needs caller keys: set secrets.clientKeys (lsproxy hash-key), or config.allow_unauthenticated: true" }}
{{- end }}
{{- if and $v.redis.auth.enabled (not $v.redis.auth.existingSecret) (not $v.redis.auth.password) }}
{{- fail "lsproxy: redis.auth.enabled needs redis.auth.password (or redis.auth.existingSecret)" }}
{{- end }}
{{- end }}

{{- /* Onboarding routes: the host and path come from redirect_url. */}}
{{- if or $v.ingress.enabled $v.httpRoute.enabled }}
{{- $u := urlParse ($v.config.redirect_url | default "") }}
{{- if or (not $u.host) (not (has $u.scheme (list "http" "https"))) }}
{{- fail "lsproxy: ingress and httpRoute need config.redirect_url, the public https URL of /oauth/callback (its host is the route's host)" }}
{{- end }}
{{- if ne $u.path "/oauth/callback" }}
{{- fail (printf "lsproxy: config.redirect_url's path must be /oauth/callback (the control listener serves /oauth/start and /oauth/callback at the root); got %q" $u.path) }}
{{- end }}
{{- end }}
{{- if and $v.httpRoute.enabled (not $v.httpRoute.parentRefs) }}
{{- fail "lsproxy: httpRoute.enabled needs httpRoute.parentRefs (the Gateway to attach to)" }}
{{- end }}

{{- if eq $v.mode "sidecar" }}
{{- if not $v.sidecar.containers }}
{{- fail "lsproxy: mode: sidecar needs sidecar.containers (the app containers that call http://127.0.0.1:8080)" }}
{{- end }}
{{- end }}
{{- if and (eq $v.mode "gateway") $v.sidecar.service.enabled }}
{{- fail "lsproxy: sidecar.service is for mode: sidecar" }}
{{- end }}
{{- $shutdown := include "lsproxy.seconds" ($v.config.shutdown_timeout | default "25s") | int }}
{{- /* Refreshes started during the drain get their own budget after it:
token_timeout + 10s for the write (SPEC §3 rule 16). */}}
{{- $refreshes := add (include "lsproxy.seconds" ($v.config.token_timeout | default "10s") | int) 10 }}
{{- if le (int $v.terminationGracePeriodSeconds) (add (int $v.lifecycle.preStopSleepSeconds) $shutdown $refreshes) }}
{{- fail (printf "lsproxy: terminationGracePeriodSeconds (%v) must exceed lifecycle.preStopSleepSeconds (%v) plus config.shutdown_timeout (%ds) plus the refresh budget (config.token_timeout + 10s = %ds), or SIGKILL cuts the drain or a refresh short" $v.terminationGracePeriodSeconds $v.lifecycle.preStopSleepSeconds $shutdown $refreshes) }}
{{- end }}
{{- end }}

{{/* lsproxy.seconds: whole seconds of a Go duration made of h, m and s
parts ("25s", "1m30s"); 0 for anything else (sub-second parts are ignored). */}}
{{- define "lsproxy.seconds" -}}
{{- $d := toString . }}
{{- $total := 0 }}
{{- if regexMatch "^([0-9]+h)?([0-9]+m)?([0-9]+s)?$" $d }}
{{- range $part := regexFindAll "[0-9]+[hms]" $d -1 }}
{{- $n := trimSuffix "h" (trimSuffix "m" (trimSuffix "s" $part)) | int }}
{{- if hasSuffix "h" $part }}{{ $total = add $total (mul $n 3600) }}
{{- else if hasSuffix "m" $part }}{{ $total = add $total (mul $n 60) }}
{{- else }}{{ $total = add $total $n }}{{ end }}
{{- end }}
{{- end }}
{{- $total }}
{{- end }}

{{/* Pod ----------------------------------------------------------------------*/}}

{{- define "lsproxy.probe" -}}
{{- $ := index . 0 }}{{ $path := index . 1 }}{{ $timing := index . 2 -}}
httpGet:
  path: {{ $path }}
  port: control
  {{- if $.Values.tls.control.secretName }}
  scheme: HTTPS
  {{- end }}
{{ toYaml $timing }}
{{- end }}

{{/* lsproxy.container: the lsproxy container (gateway container, sidecar
container or native sidecar init container), after its "- name: lsproxy". */}}
{{- define "lsproxy.container" -}}
{{- $v := .Values -}}
image: {{ include "lsproxy.image" . | quote }}
imagePullPolicy: {{ $v.image.pullPolicy }}
args: ["serve"]
{{- if and (eq $v.mode "sidecar") $v.sidecar.native }}
restartPolicy: Always
{{- end }}
ports:
  {{- if eq $v.mode "gateway" }}
  - name: proxy
    containerPort: {{ $v.ports.proxy }}
    protocol: TCP
  {{- end }}
  - name: control
    containerPort: {{ $v.ports.control }}
    protocol: TCP
envFrom:
  - configMapRef:
      name: {{ include "lsproxy.fullname" . }}
env:
  - name: LSPROXY_CLIENT_ID
    valueFrom:
      secretKeyRef:
        name: {{ include "lsproxy.secretName" . }}
        key: client-id
  - name: LSPROXY_CLIENT_SECRET_FILE
    value: /run/secrets/lsproxy/client-secret
  - name: LSPROXY_ENCRYPTION_KEY_FILE
    value: /run/secrets/lsproxy/encryption-key
  - name: LSPROXY_ADMIN_TOKEN_FILE
    value: /run/secrets/lsproxy/admin-token
  - name: LSPROXY_ENCRYPTION_KEYS
    valueFrom:
      secretKeyRef:
        name: {{ include "lsproxy.secretName" . }}
        key: previous-encryption-keys
        optional: true
  {{- if eq $v.mode "gateway" }}
  - name: LSPROXY_CLIENT_KEYS
    valueFrom:
      secretKeyRef:
        name: {{ include "lsproxy.secretName" . }}
        key: client-keys
        optional: true
  {{- end }}
  - name: LSPROXY_WEBHOOK_SECRET
    valueFrom:
      secretKeyRef:
        name: {{ include "lsproxy.secretName" . }}
        key: webhook-secret
        optional: true
  - name: LSPROXY_WEBHOOK_SECRETS
    valueFrom:
      secretKeyRef:
        name: {{ include "lsproxy.secretName" . }}
        key: webhook-secrets
        optional: true
  - name: LSPROXY_CONSOLE_OIDC_CLIENT_SECRET
    valueFrom:
      secretKeyRef:
        name: {{ include "lsproxy.secretName" . }}
        key: console-oidc-client-secret
        optional: true
  {{- if and (ne $v.redis.mode "none") $v.redis.auth.enabled }}
  - name: LSPROXY_REDIS_PASSWORD_FILE
    value: /run/secrets/lsproxy-redis/{{ $v.redis.auth.existingSecretPasswordKey }}
  {{- end }}
  {{- with $v.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
livenessProbe:
  {{- include "lsproxy.probe" (list . "/healthz" $v.probes.liveness) | nindent 2 }}
readinessProbe:
  {{- include "lsproxy.probe" (list . "/readyz" $v.probes.readiness) | nindent 2 }}
startupProbe:
  {{- include "lsproxy.probe" (list . "/healthz" $v.probes.startup) | nindent 2 }}
{{- if gt (int $v.lifecycle.preStopSleepSeconds) 0 }}
lifecycle:
  preStop:
    sleep:
      seconds: {{ $v.lifecycle.preStopSleepSeconds }}
{{- end }}
resources:
  {{- toYaml $v.resources | nindent 2 }}
securityContext:
  {{- toYaml $v.securityContext | nindent 2 }}
volumeMounts:
  - name: secrets
    mountPath: /run/secrets/lsproxy
    readOnly: true
  {{- if and (ne $v.redis.mode "none") $v.redis.auth.enabled }}
  - name: redis-auth
    mountPath: /run/secrets/lsproxy-redis
    readOnly: true
  {{- end }}
  {{- if and (ne $v.redis.mode "none") $v.redis.tls.caSecret }}
  - name: redis-ca
    mountPath: /run/secrets/lsproxy-redis-ca
    readOnly: true
  {{- end }}
  {{- if eq $v.redis.mode "none" }}
  - name: data
    mountPath: /data
  {{- end }}
  {{- if $v.tls.proxy.secretName }}
  - name: tls-proxy
    mountPath: /run/secrets/lsproxy-tls/proxy
    readOnly: true
  {{- end }}
  {{- if $v.tls.control.secretName }}
  - name: tls-control
    mountPath: /run/secrets/lsproxy-tls/control
    readOnly: true
  {{- end }}
  - name: tmp
    mountPath: /tmp
  {{- with $v.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
