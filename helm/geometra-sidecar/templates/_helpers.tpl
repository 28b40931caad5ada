{{/*
Named templates of the geometra-sidecar chart.

Public (for app charts that depend on this chart):
  geometra-sidecar.initContainers  the sidecar as a list item, in native mode only (else nothing)
  geometra-sidecar.containers      the sidecar as a list item, in container mode only (else nothing)
  geometra-sidecar.container       the sidecar as a list item, whatever the mode
  geometra-sidecar.volumes         the pod volumes it needs, as list items
  geometra-sidecar.podAnnotations  scrape annotations (+ config checksum if rollOnConfigChange), as map lines
  geometra-sidecar.configmap       the ConfigMap document
  geometra-sidecar.config          the config.yaml text
  geometra-sidecar.configMapName   the ConfigMap's name
  geometra-sidecar.mode            "native" or "container"
  geometra-sidecar.terminationGracePeriodSeconds  the pod's grace period (seconds) the drain timeout is derived from

Each takes either
  - the top-level context `$`: in this chart, or in a parent chart whose values
    hold this chart's values under the key "geometra-sidecar" (the dependency's
    name); or
  - (dict "root" $ "values" <this chart's values>), e.g. when the dependency
    has an alias: (dict "root" $ "values" .Values.sidecar).
*/}}

{{/*
Internal dispatcher: (list "<internal template>" <argument>) normalises the
argument into (dict "root" <top-level context> "v" <sidecar values>) and
includes the internal template with it.
*/}}
{{- define "geometra-sidecar._call" -}}
{{- $name := index . 0 -}}
{{- $arg := index . 1 -}}
{{- $c := dict -}}
{{- if hasKey $arg "root" -}}
{{- $c = dict "root" $arg.root "v" $arg.values -}}
{{- else if hasKey $arg.Values "geometra-sidecar" -}}
{{- $c = dict "root" $arg "v" (index $arg.Values "geometra-sidecar") -}}
{{- else -}}
{{- $c = dict "root" $arg "v" $arg.Values -}}
{{- end -}}
{{- include $name $c -}}
{{- end -}}

{{/* ---------- names and labels (internal, take the normalised dict) ---------- */}}

{{- define "geometra-sidecar._name" -}}
{{- default "geometra-sidecar" .v.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "geometra-sidecar._fullname" -}}
{{- if .v.fullnameOverride -}}
{{- .v.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "geometra-sidecar._name" . -}}
{{- if contains $name .root.Release.Name -}}
{{- .root.Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .root.Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "geometra-sidecar._configMapName" -}}
{{- printf "%s-config" (include "geometra-sidecar._fullname" . | trunc 56 | trimSuffix "-") -}}
{{- end -}}

{{- define "geometra-sidecar._labels" -}}
app.kubernetes.io/name: {{ include "geometra-sidecar._name" . }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: telemetry-sidecar
app.kubernetes.io/part-of: geometra
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{- define "geometra-sidecar._mode" -}}
{{- if eq .v.sidecarMode "container" -}}container{{- else if eq .v.sidecarMode "native" -}}native{{- else -}}
{{- fail (printf "geometra-sidecar: sidecarMode must be native or container, not %q" .v.sidecarMode) -}}
{{- end -}}
{{- end -}}

{{- define "geometra-sidecar._port" -}}
{{- /* the port of a "host:port" listen address */ -}}
{{- splitList ":" . | last -}}
{{- end -}}

{{- define "geometra-sidecar._image" -}}
{{- $img := .v.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (required "geometra-sidecar: image.tag must be set" $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* ---------- paths inside the container ---------- */}}
{{- define "geometra-sidecar._configDir" -}}/etc/geometra-sidecar{{- end -}}
{{- define "geometra-sidecar._queueDir" -}}/var/lib/geometra-sidecar/queue{{- end -}}
{{- define "geometra-sidecar._tokenDir" -}}/var/run/secrets/geometra-sidecar/forward-token{{- end -}}
{{- define "geometra-sidecar._tlsDir" -}}/var/run/secrets/geometra-sidecar/forward-tls{{- end -}}
{{- define "geometra-sidecar._fleetKeyDir" -}}/var/run/secrets/geometra-sidecar/fleet-key{{- end -}}
{{- define "geometra-sidecar._hashKeyDir" -}}/var/run/secrets/geometra-sidecar/redaction{{- end -}}
{{- define "geometra-sidecar._rwTokenDir" -}}/var/run/secrets/geometra-sidecar/remote-write-token{{- end -}}
{{- define "geometra-sidecar._rwPasswordDir" -}}/var/run/secrets/geometra-sidecar/remote-write-password{{- end -}}
{{- define "geometra-sidecar._rwTlsDir" -}}/var/run/secrets/geometra-sidecar/remote-write-tls{{- end -}}
{{- define "geometra-sidecar._browserAuthDir" -}}/var/run/secrets/geometra-sidecar/browser-auth{{- end -}}

{{/* ---------- the sidecar's config.yaml ---------- */}}

{{- define "geometra-sidecar._forwardEndpoint" -}}
{{- /* (dict "c" <ctx> "signal" "logs") -> YAML of one forward endpoint */ -}}
{{- $v := .c.v -}}
{{- $f := $v.forwarding -}}
{{- $sig := index $f .signal -}}
{{- $url := default $f.endpoint $sig.endpoint -}}
{{- if not $url -}}
{{- fail (printf "geometra-sidecar: forwarding.%s.enabled is true but neither forwarding.%s.endpoint nor forwarding.endpoint is set" .signal .signal) -}}
{{- end -}}
{{- $ep := dict "endpoint" $url "protocol" $f.protocol "timeout" $f.timeout "compression" $f.compression -}}
{{- if $f.headers -}}
{{- $_ := set $ep "headers" $f.headers -}}
{{- end -}}
{{- if $f.bearerTokenSecret.name -}}
{{- $_ := set $ep "bearer_token_file" (printf "%s/token" (include "geometra-sidecar._tokenDir" .c)) -}}
{{- end -}}
{{- if $f.tls.secretName -}}
{{- $tls := dict -}}
{{- if $f.tls.caKey -}}{{- $_ := set $tls "ca_file" (printf "%s/ca.crt" (include "geometra-sidecar._tlsDir" .c)) -}}{{- end -}}
{{- if $f.tls.certKey -}}{{- $_ := set $tls "cert_file" (printf "%s/tls.crt" (include "geometra-sidecar._tlsDir" .c)) -}}{{- end -}}
{{- if $f.tls.keyKey -}}{{- $_ := set $tls "key_file" (printf "%s/tls.key" (include "geometra-sidecar._tlsDir" .c)) -}}{{- end -}}
{{- $_ := set $ep "tls" $tls -}}
{{- end -}}
{{- toYaml $ep -}}
{{- end -}}

{{- define "geometra-sidecar._remoteWrite" -}}
{{- /* <ctx> -> YAML of the remote_write section, or nothing when off.
       With urlSecret the section has no url: GEOMETRA_REMOTE_WRITE_URL
       (secretKeyRef, see _container) fills it in. */ -}}
{{- $rw := .v.remoteWrite -}}
{{- $basic := $rw.basicAuth -}}
{{- if and $rw.url $rw.urlSecret.name -}}
{{- fail "geometra-sidecar: remoteWrite.url and remoteWrite.urlSecret.name exclude each other (a URL that carries credentials belongs in the Secret only)" -}}
{{- end -}}
{{- if and $rw.bearerTokenSecret.name (or $basic.username $basic.passwordSecret.name) -}}
{{- fail "geometra-sidecar: remoteWrite.bearerTokenSecret and remoteWrite.basicAuth exclude each other" -}}
{{- end -}}
{{- if and $basic.username (not $basic.passwordSecret.name) -}}
{{- fail "geometra-sidecar: remoteWrite.basicAuth.username needs remoteWrite.basicAuth.passwordSecret.name (a Secret holding the password)" -}}
{{- end -}}
{{- if and $basic.passwordSecret.name (not $basic.username) -}}
{{- fail "geometra-sidecar: remoteWrite.basicAuth.passwordSecret needs remoteWrite.basicAuth.username" -}}
{{- end -}}
{{- if or $rw.url $rw.urlSecret.name -}}
{{- $sec := dict "interval" $rw.interval "timeout" $rw.timeout -}}
{{- if $rw.url -}}{{- $_ := set $sec "url" $rw.url -}}{{- end -}}
{{- if $rw.externalLabels -}}{{- $_ := set $sec "external_labels" $rw.externalLabels -}}{{- end -}}
{{- if $rw.headers -}}{{- $_ := set $sec "headers" $rw.headers -}}{{- end -}}
{{- if $rw.bearerTokenSecret.name -}}
{{- $_ := set $sec "bearer_token_file" (printf "%s/token" (include "geometra-sidecar._rwTokenDir" .)) -}}
{{- end -}}
{{- if $basic.username -}}
{{- $_ := set $sec "basic_auth" (dict "username" $basic.username "password_file" (printf "%s/password" (include "geometra-sidecar._rwPasswordDir" .))) -}}
{{- end -}}
{{- if $rw.tls.secretName -}}
{{- $tls := dict -}}
{{- if $rw.tls.caKey -}}{{- $_ := set $tls "ca_file" (printf "%s/ca.crt" (include "geometra-sidecar._rwTlsDir" .)) -}}{{- end -}}
{{- if $rw.tls.certKey -}}{{- $_ := set $tls "cert_file" (printf "%s/tls.crt" (include "geometra-sidecar._rwTlsDir" .)) -}}{{- end -}}
{{- if $rw.tls.keyKey -}}{{- $_ := set $tls "key_file" (printf "%s/tls.key" (include "geometra-sidecar._rwTlsDir" .)) -}}{{- end -}}
{{- $_ := set $sec "tls" $tls -}}
{{- end -}}
{{- toYaml $sec -}}
{{- else if or $rw.bearerTokenSecret.name $basic.username $basic.passwordSecret.name $rw.tls.secretName $rw.externalLabels $rw.headers -}}
{{- fail "geometra-sidecar: remoteWrite settings are given but neither remoteWrite.url nor remoteWrite.urlSecret.name is set" -}}
{{- end -}}
{{- end -}}

{{- define "geometra-sidecar._browser" -}}
{{- /* <ctx> -> YAML of the receivers.browser section, or nothing when off.
       Listens on 0.0.0.0:<browser.port>; the token secret is a mounted
       Secret (see _container and _volumes), never inlined. */ -}}
{{- $v := .v -}}
{{- $b := $v.browser -}}
{{- if $b.enabled -}}
{{- $port := $b.port | int -}}
{{- $taken := dict (printf "%d" ($v.metrics.port | int)) "metrics.port" (include "geometra-sidecar._port" $v.otlp.grpc.listen) "otlp.grpc.listen" -}}
{{- if $v.otlp.http.enabled -}}
{{- $_ := set $taken (include "geometra-sidecar._port" $v.otlp.http.listen) "otlp.http.listen" -}}
{{- end -}}
{{- with index $taken (printf "%d" $port) -}}
{{- fail (printf "geometra-sidecar: browser.port %d is already taken by %s (the browser listener needs a port of its own)" $port .) -}}
{{- end -}}
{{- $l := $b.limits -}}
{{- $maxBody := $l.maxBodyBytes | int64 -}}
{{- if gt $maxBody ($v.limits.maxInFlightBytes | int64) -}}
{{- fail (printf "geometra-sidecar: browser.limits.maxBodyBytes (%d) must be at most limits.maxInFlightBytes (%d)" $maxBody ($v.limits.maxInFlightBytes | int64)) -}}
{{- end -}}
{{- if and $v.limits.maxInFlightBytesPerConnection (gt $maxBody ($v.limits.maxInFlightBytesPerConnection | int64)) -}}
{{- fail (printf "geometra-sidecar: browser.limits.maxBodyBytes (%d) must be at most limits.maxInFlightBytesPerConnection (%d)" $maxBody ($v.limits.maxInFlightBytesPerConnection | int64)) -}}
{{- end -}}
{{- $a := $b.auth -}}
{{- if and $a.audience (not $a.secret.name) -}}
{{- fail "geometra-sidecar: browser.auth.audience needs browser.auth.secret.name (a Secret holding the HS256 key): without it no token is checked at all" -}}
{{- end -}}
{{- $r := $b.rateLimit -}}
{{- $auth := dict "clock_skew" $a.clockSkew "rotation_overlap" $a.rotationOverlap -}}
{{- if $a.secret.name -}}
{{- $_ := set $auth "jwt_hs256_secret_file" (printf "%s/secret" (include "geometra-sidecar._browserAuthDir" .)) -}}
{{- end -}}
{{- if $a.audience -}}
{{- $_ := set $auth "audience" $a.audience -}}
{{- end -}}
{{- $sec := dict
  "listen" (printf "0.0.0.0:%d" $port)
  "service_name" $b.serviceName
  "cors_allowed_origins" $b.corsAllowedOrigins
  "cors_allowed_headers" $b.corsAllowedHeaders
  "cors_max_age" ($b.corsMaxAge | int64)
  "trusted_proxies" $b.trustedProxies
  "max_body_bytes" $maxBody
  "max_items_per_request" ($l.maxItemsPerRequest | int64)
  "max_attributes_per_item" ($l.maxAttributesPerItem | int64)
  "max_attribute_value_bytes" ($l.maxAttributeValueBytes | int64)
  "rate_limit" (dict
    "requests_per_second" ($r.requestsPerSecond | float64)
    "burst" ($r.burst | int64)
    "items_per_second" ($r.itemsPerSecond | float64)
    "global_items_per_second" ($r.globalItemsPerSecond | float64)
    "max_clients" ($r.maxClients | int64)
    "ipv6_prefix" ($r.ipv6Prefix | int64))
  "auth" $auth
-}}
{{- toYaml $sec -}}
{{- end -}}
{{- end -}}

{{- define "geometra-sidecar._config" -}}
{{- $v := .v -}}
{{- $l := $v.limits -}}
{{- $http := dict "max_body_bytes" ($l.otlpHttpMaxBodyBytes | int64) "cors_allowed_origins" $v.otlp.http.corsAllowedOrigins "cors_allowed_headers" $v.otlp.http.corsAllowedHeaders "cors_max_age" ($v.otlp.http.corsMaxAge | int64) -}}
{{- if $v.otlp.http.enabled -}}
{{- $_ := set $http "listen" $v.otlp.http.listen -}}
{{- else -}}
{{- $_ := set $http "listen" nil -}}
{{- end -}}
{{- $cfg := dict
  "receivers" (dict
    "otlp_grpc" (dict "listen" $v.otlp.grpc.listen "max_message_bytes" ($l.otlpGrpcMaxMessageBytes | int64))
    "otlp_http" $http
    "max_value_depth" ($l.maxValueDepth | int64)
    "max_in_flight_bytes" ($l.maxInFlightBytes | int64))
  "server" (dict "listen" (printf "0.0.0.0:%d" ($v.metrics.port | int)))
  "store" (dict
    "max_series_per_metric" ($l.maxSeriesPerMetric | int64)
    "series_ttl" $l.seriesTtl
    "active_users_window" $l.activeUsersWindow
    "max_active_users" ($l.maxActiveUsers | int64)
    "max_series" ($l.maxSeries | int64)
    "max_series_bytes" ($l.maxSeriesBytes | int64)
    "max_label_value_bytes" ($l.maxLabelValueBytes | int64)
    "max_passthrough_families" ($l.maxPassthroughFamilies | int64)
    "passthrough_share_percent" ($l.passthroughSharePercent | int64)
    "histograms" $v.metrics.histograms
    "native_histogram_schema" ($v.metrics.nativeHistogramSchema | int64)
    "native_histogram_max_buckets" ($v.metrics.nativeHistogramMaxBuckets | int64)
    "distinct_sketch_precision" ($v.metrics.distinctSketchPrecision | int64))
  "passthrough" (dict
    "enabled" $v.passthrough.enabled
    "scope_labels" $v.passthrough.scopeLabels
    "resource_labels" $v.passthrough.resourceLabels)
  "telemetry" (dict "log_level" $v.logging.level "log_format" $v.logging.format)
-}}
{{- if $v.metrics.distinctKeySecret.name -}}
{{- $_ := set (index $cfg "store") "distinct_key_file" (printf "%s/fleet-key" (include "geometra-sidecar._fleetKeyDir" .)) -}}
{{- end -}}
{{- if $l.maxInFlightBytesPerConnection -}}
{{- $_ := set (index $cfg "receivers") "max_in_flight_bytes_per_connection" ($l.maxInFlightBytesPerConnection | int64) -}}
{{- end -}}
{{- $keep := include "geometra-sidecar._keepAccepting" . | int64 -}}
{{- if gt $keep 0 -}}
{{- $_ := set (index $cfg "receivers") "keep_accepting_for" (printf "%ds" $keep) -}}
{{- end -}}
{{- $browser := include "geometra-sidecar._browser" . -}}
{{- if $browser -}}
{{- $_ := set (index $cfg "receivers") "browser" ($browser | fromYaml) -}}
{{- end -}}
{{- $o := $v.telemetry.otlp -}}
{{- if $o.endpoint -}}
{{- $otlp := dict "endpoint" $o.endpoint "protocol" $o.protocol "interval" $o.interval "timeout" $o.timeout -}}
{{- if $o.headers -}}{{- $_ := set $otlp "headers" $o.headers -}}{{- end -}}
{{- if $o.resource -}}{{- $_ := set $otlp "resource" $o.resource -}}{{- end -}}
{{- $_ := set (index $cfg "telemetry") "otlp" $otlp -}}
{{- end -}}
{{- if $v.rules -}}
{{- $_ := set $cfg "rules" $v.rules -}}
{{- end -}}
{{- if $v.extraRules -}}
{{- $_ := set $cfg "extra_rules" $v.extraRules -}}
{{- end -}}
{{- $f := $v.forwarding -}}
{{- $q := $v.queue -}}
{{- $fwd := dict
  "batch" (dict "max_items" ($f.batch.maxItems | int64) "max_bytes" ($f.batch.maxBytes | int64) "timeout" $f.batch.timeout)
  "retry" (dict "initial_interval" $f.retry.initialInterval "max_interval" $f.retry.maxInterval "max_elapsed" $f.retry.maxElapsed)
  "queue" (dict "max_items" ($q.maxItems | int64) "max_bytes" ($q.maxBytes | int64) "max_disk_bytes" ($q.maxDiskBytes | int64))
  "drain_timeout" (include "geometra-sidecar._drainTimeout" .)
-}}
{{- range $signal := list "logs" "traces" "metrics" -}}
{{- if (index $f $signal).enabled -}}
{{- $_ := set $fwd $signal (include "geometra-sidecar._forwardEndpoint" (dict "c" $ "signal" $signal) | fromYaml) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $cfg "forward" $fwd -}}
{{- $rw := include "geometra-sidecar._remoteWrite" . -}}
{{- if $rw -}}
{{- $_ := set $cfg "remote_write" ($rw | fromYaml) -}}
{{- end -}}
{{- $r := $v.redaction -}}
{{- $red := dict -}}
{{- if $r.attributes -}}
{{- $attrs := list -}}
{{- $needsKey := false -}}
{{- range $a := $r.attributes -}}
{{- $item := dict "key" $a.key "action" $a.action -}}
{{- if hasKey $a "maxLength" -}}{{- $_ := set $item "max_length" ($a.maxLength | int64) -}}{{- end -}}
{{- if eq $a.action "hash" -}}{{- $needsKey = true -}}{{- end -}}
{{- $attrs = append $attrs $item -}}
{{- end -}}
{{- $_ := set $red "attributes" $attrs -}}
{{- if and $needsKey (not $r.hashKeySecret.name) -}}
{{- fail "geometra-sidecar: redaction action hash needs redaction.hashKeySecret.name (a Secret holding the hashing key)" -}}
{{- end -}}
{{- end -}}
{{- if $r.hashKeySecret.name -}}
{{- $_ := set $red "hash_key_file" (printf "%s/hash-key" (include "geometra-sidecar._hashKeyDir" .)) -}}
{{- end -}}
{{- if $red -}}
{{- $_ := set $cfg "redaction" $red -}}
{{- end -}}
{{- if $v.configOverrides -}}
{{- $cfg = mustMergeOverwrite $cfg (deepCopy $v.configOverrides) -}}
{{- end -}}
# geometra-sidecar config, rendered by the geometra-sidecar Helm chart from its values.
{{ toYaml $cfg }}
{{- end -}}

{{- /* receivers.keep_accepting_for, in seconds: keepAcceptingSeconds when set,
else 5 in container mode (the app, stopped at the same time, exports its last
telemetry after SIGTERM) and 0 in native mode (the kubelet stops a native
sidecar after the app has exited). */ -}}
{{- define "geometra-sidecar._keepAccepting" -}}
{{- if kindIs "invalid" .v.keepAcceptingSeconds -}}
{{- if eq (include "geometra-sidecar._mode" .) "container" -}}5{{- else -}}0{{- end -}}
{{- else -}}
{{- .v.keepAcceptingSeconds | int64 -}}
{{- end -}}
{{- end -}}

{{- /* forward.drain_timeout: forwarding.drainTimeout when set, else the pod's
grace period less the time it keeps accepting and 5s (the sidecar then still
has the time to write what it left and exit before the kubelet's SIGKILL). A
drain that cannot finish in the grace period is refused: the pod would be
killed mid-drain, losing what a drain that stops in time counts and keeps. */ -}}
{{- define "geometra-sidecar._drainTimeout" -}}
{{- $grace := .v.terminationGracePeriodSeconds | int64 -}}
{{- $keep := include "geometra-sidecar._keepAccepting" . | int64 -}}
{{- $d := .v.forwarding.drainTimeout -}}
{{- if not $d -}}
{{- if lt (sub $grace (add $keep 5)) 1 -}}
{{- fail (printf "geometra-sidecar: terminationGracePeriodSeconds %d leaves no time to drain (the drain timeout is the grace period less keepAcceptingSeconds %d and 5s); raise it or set forwarding.drainTimeout" $grace $keep) -}}
{{- end -}}
{{- printf "%ds" (sub $grace (add $keep 5)) -}}
{{- else -}}
{{- $n := regexFind "^[0-9]+" $d | int64 -}}
{{- $ms := dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 -}}
{{- $unit := trimPrefix (toString $n) $d -}}
{{- if ge (add (mul $n (index $ms $unit)) (mul $keep 1000)) (mul $grace 1000) -}}
{{- fail (printf "geometra-sidecar: forwarding.drainTimeout %s and keepAcceptingSeconds %d are not shorter than terminationGracePeriodSeconds %d: the pod would be killed mid-drain; leave forwarding.drainTimeout empty to derive it" $d $keep $grace) -}}
{{- end -}}
{{- $d -}}
{{- end -}}
{{- end -}}

{{- define "geometra-sidecar._terminationGracePeriodSeconds" -}}
{{- .v.terminationGracePeriodSeconds | int64 -}}
{{- end -}}

{{- define "geometra-sidecar._configmap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "geometra-sidecar._configMapName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "geometra-sidecar._labels" . | nindent 4 }}
data:
  config.yaml: |
    {{- include "geometra-sidecar._config" . | nindent 4 }}
{{- end -}}

{{/* ---------- pod pieces ---------- */}}

{{- define "geometra-sidecar._podAnnotations" -}}
{{- /* the sidecar reloads a changed ConfigMap in place; rolling the pods on
       every config change is opt-in (rollOnConfigChange) */ -}}
{{- if .v.rollOnConfigChange }}
checksum/geometra-sidecar-config: {{ include "geometra-sidecar._config" . | sha256sum }}
{{- end }}
{{- if .v.scrapeAnnotations.enabled }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .v.metrics.port | int | quote }}
prometheus.io/path: {{ .v.metrics.path | quote }}
{{- end }}
{{- end -}}

{{- define "geometra-sidecar._probe" -}}
{{- /* (dict "path" "/healthz" "p" <probe values>) */ -}}
httpGet:
  path: {{ .path }}
  port: metrics
{{- range $k := list "initialDelaySeconds" "periodSeconds" "timeoutSeconds" "failureThreshold" }}
{{- if hasKey $.p $k }}
{{ $k }}: {{ index $.p $k | int }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "geometra-sidecar._container" -}}
{{- $v := .v -}}
{{- $mode := include "geometra-sidecar._mode" . -}}
- name: {{ $v.containerName }}
  image: {{ include "geometra-sidecar._image" . | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if eq $mode "native" }}
  # native sidecar (Kubernetes 1.29+): starts before the app, stops after it
  restartPolicy: Always
  {{- end }}
  args:
    - --config={{ include "geometra-sidecar._configDir" . }}/config.yaml
    {{- if $v.queue.persistent }}
    - --queue-dir={{ include "geometra-sidecar._queueDir" . }}
    {{- end }}
    {{- range $v.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    # Listen addresses and log format also as environment variables, equal
    # to the config: environment variables override config.yaml, so one set
    # elsewhere (an older image, a platform default) cannot silently win.
    - name: GEOMETRA_OTLP_GRPC_LISTEN
      value: {{ $v.otlp.grpc.listen | quote }}
    - name: GEOMETRA_OTLP_HTTP_LISTEN
      {{- if $v.otlp.http.enabled }}
      value: {{ $v.otlp.http.listen | quote }}
      {{- else }}
      value: "off"
      {{- end }}
    - name: GEOMETRA_METRICS_LISTEN
      value: {{ printf "0.0.0.0:%d" ($v.metrics.port | int) | quote }}
    - name: GEOMETRA_LOG_FORMAT
      value: {{ $v.logging.format | quote }}
    {{- with $v.remoteWrite.urlSecret }}
    {{- if .name }}
    # The remote-write URL may carry tenant credentials: it comes from a
    # Secret, never the ConfigMap, and fills in remote_write.url.
    - name: GEOMETRA_REMOTE_WRITE_URL
      valueFrom:
        secretKeyRef:
          name: {{ .name | quote }}
          key: {{ .key | quote }}
    {{- end }}
    {{- end }}
    # The pod's identity for the sidecar's own telemetry (telemetry.otlp):
    # resource attributes k8s.pod.name, k8s.namespace.name, k8s.node.name, k8s.pod.uid
    - name: K8S_POD_NAME
      valueFrom: { fieldRef: { fieldPath: metadata.name } }
    - name: K8S_NAMESPACE_NAME
      valueFrom: { fieldRef: { fieldPath: metadata.namespace } }
    - name: K8S_NODE_NAME
      valueFrom: { fieldRef: { fieldPath: spec.nodeName } }
    - name: K8S_POD_UID
      valueFrom: { fieldRef: { fieldPath: metadata.uid } }
    {{- with $v.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: otlp-grpc
      containerPort: {{ include "geometra-sidecar._port" $v.otlp.grpc.listen }}
      protocol: TCP
    {{- if $v.otlp.http.enabled }}
    - name: otlp-http
      containerPort: {{ include "geometra-sidecar._port" $v.otlp.http.listen }}
      protocol: TCP
    {{- end }}
    - name: metrics
      containerPort: {{ $v.metrics.port | int }}
      protocol: TCP
    {{- if $v.browser.enabled }}
    # the browser listener (receivers.browser): the one port facing the internet
    - name: browser
      containerPort: {{ $v.browser.port | int }}
      protocol: TCP
    {{- end }}
  {{- if $v.probes.startup.enabled }}
  startupProbe:
    {{- include "geometra-sidecar._probe" (dict "path" "/readyz" "p" $v.probes.startup) | nindent 4 }}
  {{- end }}
  {{- if $v.probes.liveness.enabled }}
  livenessProbe:
    {{- include "geometra-sidecar._probe" (dict "path" "/healthz" "p" $v.probes.liveness) | nindent 4 }}
  {{- end }}
  {{- if $v.probes.readiness.enabled }}
  readinessProbe:
    {{- include "geometra-sidecar._probe" (dict "path" "/readyz" "p" $v.probes.readiness) | nindent 4 }}
  {{- end }}
  {{- with $v.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  volumeMounts:
    - name: geometra-sidecar-config
      mountPath: {{ include "geometra-sidecar._configDir" . }}
      readOnly: true
    {{- if $v.forwarding.bearerTokenSecret.name }}
    - name: geometra-sidecar-forward-token
      mountPath: {{ include "geometra-sidecar._tokenDir" . }}
      readOnly: true
    {{- end }}
    {{- if $v.forwarding.tls.secretName }}
    - name: geometra-sidecar-forward-tls
      mountPath: {{ include "geometra-sidecar._tlsDir" . }}
      readOnly: true
    {{- end }}
    {{- if $v.metrics.distinctKeySecret.name }}
    - name: geometra-sidecar-fleet-key
      mountPath: {{ include "geometra-sidecar._fleetKeyDir" . }}
      readOnly: true
    {{- end }}
    {{- if $v.redaction.hashKeySecret.name }}
    - name: geometra-sidecar-redaction-key
      mountPath: {{ include "geometra-sidecar._hashKeyDir" . }}
      readOnly: true
    {{- end }}
    {{- if $v.remoteWrite.bearerTokenSecret.name }}
    - name: geometra-sidecar-remote-write-token
      mountPath: {{ include "geometra-sidecar._rwTokenDir" . }}
      readOnly: true
    {{- end }}
    {{- if $v.remoteWrite.basicAuth.passwordSecret.name }}
    - name: geometra-sidecar-remote-write-password
      mountPath: {{ include "geometra-sidecar._rwPasswordDir" . }}
      readOnly: true
    {{- end }}
    {{- if $v.remoteWrite.tls.secretName }}
    - name: geometra-sidecar-remote-write-tls
      mountPath: {{ include "geometra-sidecar._rwTlsDir" . }}
      readOnly: true
    {{- end }}
    {{- if and $v.browser.enabled $v.browser.auth.secret.name }}
    - name: geometra-sidecar-browser-auth
      mountPath: {{ include "geometra-sidecar._browserAuthDir" . }}
      readOnly: true
    {{- end }}
    {{- if $v.queue.persistent }}
    - name: geometra-sidecar-queue
      mountPath: {{ include "geometra-sidecar._queueDir" . }}
    {{- end }}
    {{- with $v.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{- define "geometra-sidecar._volumes" -}}
{{- $v := .v -}}
- name: geometra-sidecar-config
  configMap:
    name: {{ include "geometra-sidecar._configMapName" . }}
    items:
      - key: config.yaml
        path: config.yaml
{{- with $v.forwarding.bearerTokenSecret }}
{{- if .name }}
- name: geometra-sidecar-forward-token
  secret:
    secretName: {{ .name }}
    defaultMode: 0444
    items:
      - key: {{ .key }}
        path: token
{{- end }}
{{- end }}
{{- with $v.forwarding.tls }}
{{- if .secretName }}
- name: geometra-sidecar-forward-tls
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0444
    items:
      {{- if .caKey }}
      - key: {{ .caKey }}
        path: ca.crt
      {{- end }}
      {{- if .certKey }}
      - key: {{ .certKey }}
        path: tls.crt
      {{- end }}
      {{- if .keyKey }}
      - key: {{ .keyKey }}
        path: tls.key
      {{- end }}
{{- end }}
{{- end }}
{{- with $v.metrics.distinctKeySecret }}
{{- if .name }}
- name: geometra-sidecar-fleet-key
  secret:
    secretName: {{ .name }}
    defaultMode: 0444
    items:
      - key: {{ .key }}
        path: fleet-key
{{- end }}
{{- end }}
{{- with $v.redaction.hashKeySecret }}
{{- if .name }}
- name: geometra-sidecar-redaction-key
  secret:
    secretName: {{ .name }}
    defaultMode: 0444
    items:
      - key: {{ .key }}
        path: hash-key
{{- end }}
{{- end }}
{{- with $v.remoteWrite.bearerTokenSecret }}
{{- if .name }}
- name: geometra-sidecar-remote-write-token
  secret:
    secretName: {{ .name }}
    defaultMode: 0444
    items:
      - key: {{ .key }}
        path: token
{{- end }}
{{- end }}
{{- with $v.remoteWrite.basicAuth.passwordSecret }}
{{- if .name }}
- name: geometra-sidecar-remote-write-password
  secret:
    secretName: {{ .name }}
    defaultMode: 0444
    items:
      - key: {{ .key }}
        path: password
{{- end }}
{{- end }}
{{- with $v.remoteWrite.tls }}
{{- if .secretName }}
- name: geometra-sidecar-remote-write-tls
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0444
    items:
      {{- if .caKey }}
      - key: {{ .caKey }}
        path: ca.crt
      {{- end }}
      {{- if .certKey }}
      - key: {{ .certKey }}
        path: tls.crt
      {{- end }}
      {{- if .keyKey }}
      - key: {{ .keyKey }}
        path: tls.key
      {{- end }}
{{- end }}
{{- end }}
{{- if $v.browser.enabled }}
{{- with $v.browser.auth.secret }}
{{- if .name }}
- name: geometra-sidecar-browser-auth
  secret:
    secretName: {{ .name }}
    defaultMode: 0444
    items:
      - key: {{ .key }}
        path: secret
{{- end }}
{{- end }}
{{- end }}
{{- if $v.queue.persistent }}
{{- $vol := $v.queue.volume }}
- name: geometra-sidecar-queue
  {{- if eq $vol.type "emptyDir" }}
  emptyDir:
    sizeLimit: {{ $vol.size }}
  {{- else if eq $vol.type "ephemeral" }}
  ephemeral:
    volumeClaimTemplate:
      metadata:
        labels:
          {{- include "geometra-sidecar._labels" . | nindent 10 }}
      spec:
        accessModes: ["ReadWriteOnce"]
        {{- with $vol.storageClassName }}
        storageClassName: {{ . }}
        {{- end }}
        resources:
          requests:
            storage: {{ $vol.size }}
  {{- else if eq $vol.type "persistentVolumeClaim" }}
  persistentVolumeClaim:
    claimName: {{ required "geometra-sidecar: queue.volume.claimName is required with queue.volume.type persistentVolumeClaim" $vol.claimName }}
  {{- else }}
  {{- fail (printf "geometra-sidecar: queue.volume.type must be emptyDir, ephemeral or persistentVolumeClaim, not %q" $vol.type) }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* ---------- public entry points ---------- */}}

{{- define "geometra-sidecar.container" -}}
{{- include "geometra-sidecar._call" (list "geometra-sidecar._container" .) -}}
{{- end -}}

{{- define "geometra-sidecar._initContainers" -}}
{{- if eq (include "geometra-sidecar._mode" .) "native" -}}
{{- include "geometra-sidecar._container" . -}}
{{- end -}}
{{- end -}}
{{- define "geometra-sidecar.initContainers" -}}
{{- include "geometra-sidecar._call" (list "geometra-sidecar._initContainers" .) -}}
{{- end -}}

{{- define "geometra-sidecar._containers" -}}
{{- if eq (include "geometra-sidecar._mode" .) "container" -}}
{{- include "geometra-sidecar._container" . -}}
{{- end -}}
{{- end -}}
{{- define "geometra-sidecar.containers" -}}
{{- include "geometra-sidecar._call" (list "geometra-sidecar._containers" .) -}}
{{- end -}}

{{- define "geometra-sidecar.volumes" -}}
{{- include "geometra-sidecar._call" (list "geometra-sidecar._volumes" .) -}}
{{- end -}}

{{- define "geometra-sidecar.podAnnotations" -}}
{{- include "geometra-sidecar._call" (list "geometra-sidecar._podAnnotations" .) -}}
{{- end -}}

{{- define "geometra-sidecar.configmap" -}}
{{- include "geometra-sidecar._call" (list "geometra-sidecar._configmap" .) -}}
{{- end -}}

{{- define "geometra-sidecar.config" -}}
{{- include "geometra-sidecar._call" (list "geometra-sidecar._config" .) -}}
{{- end -}}

{{- define "geometra-sidecar.configMapName" -}}
{{- include "geometra-sidecar._call" (list "geometra-sidecar._configMapName" .) -}}
{{- end -}}

{{- define "geometra-sidecar.mode" -}}
{{- include "geometra-sidecar._call" (list "geometra-sidecar._mode" .) -}}
{{- end -}}

{{- define "geometra-sidecar.terminationGracePeriodSeconds" -}}
{{- include "geometra-sidecar._call" (list "geometra-sidecar._terminationGracePeriodSeconds" .) -}}
{{- end -}}

{{- define "geometra-sidecar.fullname" -}}
{{- include "geometra-sidecar._call" (list "geometra-sidecar._fullname" .) -}}
{{- end -}}

{{- define "geometra-sidecar.labels" -}}
{{- include "geometra-sidecar._call" (list "geometra-sidecar._labels" .) -}}
{{- end -}}

{{/* Name of the browser listener's Service (this chart only). */}}
{{- define "geometra-sidecar.browserServiceName" -}}
{{- printf "%s-browser" (include "geometra-sidecar.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end -}}

{{/* Selector labels of the standalone demo Deployment (this chart only). */}}
{{- define "geometra-sidecar.demoSelectorLabels" -}}
app.kubernetes.io/name: geometra-sidecar-demo
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
