{{/*
Names. Kubernetes names are at most 63 characters.
*/}}
{{- define "perseid-jobs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "perseid-jobs.fullname" -}}
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

{{- define "perseid-jobs.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "perseid-jobs.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "perseid-jobs.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "perseid-jobs.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Labels: the app.kubernetes.io set on every object; selector labels never
change after install, so they hold no version.
*/}}
{{- define "perseid-jobs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "perseid-jobs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "perseid-jobs.labels" -}}
helm.sh/chart: {{ include "perseid-jobs.chart" . }}
{{ include "perseid-jobs.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: perseid-jobs
{{- end }}

{{/*
Pool helpers take (dict "root" $ "pool" $pool).
*/}}
{{- define "perseid-jobs.poolFullname" -}}
{{- printf "%s-%s" (include "perseid-jobs.fullname" .root) .pool.name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "perseid-jobs.poolSelectorLabels" -}}
{{ include "perseid-jobs.selectorLabels" .root }}
app.kubernetes.io/component: worker
perseid-jobs/pool: {{ .pool.name }}
{{- end }}

{{- define "perseid-jobs.poolLabels" -}}
{{ include "perseid-jobs.labels" .root }}
app.kubernetes.io/component: worker
perseid-jobs/pool: {{ .pool.name }}
{{- end }}

{{/*
Lays .src over .dst in place: maps merge key by key, anything else (lists,
strings, numbers, false) replaces. Unlike sprig's mergeOverwrite, a 0 or a
false in .src wins.
*/}}
{{- define "perseid-jobs.overlay" -}}
{{- $dst := .dst }}
{{- range $k, $v := .src }}
{{- if and (kindIs "map" $v) (kindIs "map" (get $dst $k)) }}
{{- include "perseid-jobs.overlay" (dict "dst" (get $dst $k) "src" $v) }}
{{- else }}
{{- $_ := set $dst $k $v }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The pools as a JSON list, each pool laid over poolDefaults. Numbers come back
as floats from JSON, so templates read them through `int`. Also refuses what
the schema cannot express.
Usage: {{ range $pool := include "perseid-jobs.pools" . | fromJsonArray }}
*/}}
{{- define "perseid-jobs.pools" -}}
{{- $pools := list }}
{{- $seen := dict }}
{{- range $p := .Values.pools }}
{{- $pool := deepCopy $.Values.poolDefaults }}
{{- include "perseid-jobs.overlay" (dict "dst" $pool "src" (deepCopy $p)) }}
{{- if hasKey $seen $pool.name }}
{{- fail (printf "pools: the name %q is used by two pools; give each pool its own name" $pool.name) }}
{{- end }}
{{- $_ := set $seen $pool.name true }}
{{- if and $pool.autoscaling.enabled (gt (int $pool.autoscaling.minReplicas) (int $pool.autoscaling.maxReplicas)) }}
{{- fail (printf "pools[%s].autoscaling: minReplicas (%d) is above maxReplicas (%d)" $pool.name (int $pool.autoscaling.minReplicas) (int $pool.autoscaling.maxReplicas)) }}
{{- end }}
{{- if and (eq $pool.spool.type "persistentVolumeClaim") (or $pool.autoscaling.enabled (gt (int $pool.replicas) 1)) }}
{{- fail (printf "pools[%s].spool: a persistentVolumeClaim spool is one volume for the pool and a spool must belong to one worker; use replicas: 1 without autoscaling, or spool.type hostPath or emptyDir" $pool.name) }}
{{- end }}
{{- $pools = append $pools $pool }}
{{- end }}
{{- toJson $pools }}
{{- end }}

{{/*
The Secret-backed and plain environment of a worker container.
*/}}
{{- define "perseid-jobs.env" -}}
{{- $root := .root }}
{{- $pool := .pool -}}
- name: PERSEID_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "redis.existingSecret: name the Secret that holds the Redis URL" $root.Values.redis.existingSecret }}
      key: {{ $root.Values.redis.urlKey }}
- name: PERSEID_NAMESPACE
  value: {{ $root.Values.namespace | quote }}
{{- with $root.Values.partitions }}
- name: PERSEID_PARTITIONS
  value: {{ . | quote }}
{{- end }}
- name: PERSEID_SLOTS
  value: {{ int $pool.slots | quote }}
- name: PERSEID_JOBS_DIR
  value: {{ $root.Values.jobs.dir | quote }}
- name: PERSEID_LOGS_DIR
  value: {{ $root.Values.worker.logsDir | quote }}
- name: PERSEID_DRAIN_TIMEOUT
  value: {{ printf "%ds" (int $pool.drainTimeoutSeconds) | quote }}
- name: PERSEID_HEARTBEAT
  value: {{ $root.Values.worker.heartbeat | quote }}
- name: PERSEID_LEASE_TTL
  value: {{ $root.Values.worker.leaseTtl | quote }}
{{- if not (kindIs "invalid" $root.Values.worker.maxLogBytes) }}
- name: PERSEID_MAX_LOG_BYTES
  value: {{ int64 $root.Values.worker.maxLogBytes | quote }}
{{- end }}
- name: PERSEID_LOG_LEVEL
  value: {{ $root.Values.worker.logLevel | quote }}
- name: PERSEID_METRICS_PORT
  value: {{ int $root.Values.worker.metricsPort | quote }}
- name: PERSEID_BUCKET
  value: {{ $root.Values.bucket.url | quote }}
{{- with $root.Values.bucket.endpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with $root.Values.bucket.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- with $root.Values.bucket.credentials }}
{{- if .existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .secretAccessKeyKey }}
{{- end }}
{{- end }}
{{- with $root.Values.worker.env }}
{{ toYaml . }}
{{- end }}
{{- with $pool.env }}
{{ toYaml . }}
{{- end }}
{{- end }}
