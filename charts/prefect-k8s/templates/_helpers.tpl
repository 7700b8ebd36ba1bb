{{/* The namespace of the agent's objects. */}}
{{- define "prefect-k8s.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride -}}
{{- end -}}

{{/*
The namespace of the flow-run Jobs (flowRuns.namespace). prefect-worker's
worker.config.jobNamespace names the namespaces its observer watches; the
reporter watches this one, so that value may only be null or this namespace.
*/}}
{{- define "prefect-k8s.jobNamespace" -}}
{{- $ns := default (include "prefect-k8s.namespace" .) .Values.flowRuns.namespace -}}
{{- with .Values.worker.config.jobNamespace -}}
{{- if ne (toString .) $ns -}}
{{- fail (printf "worker.config.jobNamespace %q (prefect-worker: the namespaces its observer watches) must be null or the flow-run namespace %q: the reporter watches where the dispatchers create the Jobs; set flowRuns.namespace to move them" (toString .) $ns) -}}
{{- end -}}
{{- end -}}
{{- $ns -}}
{{- end -}}

{{/* Labels of an object of a component: (dict "component" "poller"). */}}
{{- define "prefect-k8s.labels" -}}
app.kubernetes.io/name: prefect-k8s
app.kubernetes.io/part-of: prefect-k8s
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Selector labels of a component's pods. */}}
{{- define "prefect-k8s.selectorLabels" -}}
app.kubernetes.io/name: prefect-k8s
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The agent image. */}}
{{- define "prefect-k8s.image" -}}
{{- printf "%s:%s" .Values.worker.image.repository (default .Chart.AppVersion .Values.worker.image.tag) -}}
{{- end -}}

{{/* The ServiceAccount of a service: (dict "service" "poller" "context" $). */}}
{{- define "prefect-k8s.serviceAccountName" -}}
{{- $values := index .context.Values .service -}}
{{- default (printf "prefect-k8s-%s" .service) $values.serviceAccount.name -}}
{{- end -}}

{{/*
A work pool as one NATS subject token, as the services compute it
(flow_run_proto::subjects::pool_token): the name when it has only ASCII
letters, digits, - and _, else the name with others replaced by _ and the
first 4 bytes of its SHA-256.
*/}}
{{- define "prefect-k8s.poolToken" -}}
{{- $pool := . -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" $pool -}}
{{- $pool -}}
{{- else -}}
{{- printf "%s-%s" (regexReplaceAll "[^A-Za-z0-9_-]" $pool "_") (sha256sum $pool | trunc 8) -}}
{{- end -}}
{{- end -}}

{{/* The Prefect API URL. */}}
{{- define "prefect-k8s.apiUrl" -}}
{{- if eq .Values.worker.apiConfig "cloud" -}}
{{- $cloud := .Values.worker.cloudApiConfig -}}
{{- printf "%s/accounts/%s/workspaces/%s" $cloud.cloudUrl (required "worker.cloudApiConfig.accountId is required with worker.apiConfig cloud" $cloud.accountId) (required "worker.cloudApiConfig.workspaceId is required with worker.apiConfig cloud" $cloud.workspaceId) -}}
{{- else -}}
{{- $cloud := .Values.worker.cloudApiConfig -}}
{{- if or $cloud.accountId $cloud.workspaceId -}}
{{- fail "worker.cloudApiConfig.accountId/workspaceId are set but worker.apiConfig is selfHostedServer (the default of this chart; prefect-worker's default is cloud): set worker.apiConfig=cloud for Prefect Cloud, or leave the ids empty for a self-hosted server" -}}
{{- end -}}
{{- required "worker.selfHostedServerApiConfig.apiUrl is required" .Values.worker.selfHostedServerApiConfig.apiUrl -}}
{{- end -}}
{{- end -}}

{{/* The Prefect credentials of a service container, by secretKeyRef only. */}}
{{- define "prefect-k8s.prefectEnv" -}}
{{- $secret := .Values.worker.cloudApiConfig.apiKeySecret -}}
- name: PREFECT_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret.name | quote }}
      key: {{ $secret.key | quote }}
      {{- if ne .Values.worker.apiConfig "cloud" }}
      # A Prefect server without authentication needs no key.
      optional: true
      {{- end }}
{{- $basic := .Values.worker.selfHostedServerApiConfig.basicAuth }}
{{- if and (ne .Values.worker.apiConfig "cloud") $basic.enabled }}
- name: PREFECT_API_AUTH_STRING
  valueFrom:
    secretKeyRef:
      name: {{ required "worker.selfHostedServerApiConfig.basicAuth.existingSecret is required with basicAuth.enabled" $basic.existingSecret | quote }}
      key: auth-string
{{- end }}
{{- end -}}

{{/* The worker name of the poller and the dispatchers (worker.config.name). */}}
{{- define "prefect-k8s.workerNameEnv" -}}
{{- if not (kindIs "invalid" .Values.worker.config.name) }}
- name: PREFECT_K8S_WORKER_NAME
  value: {{ .Values.worker.config.name | toString | quote }}
{{- end }}
{{- end -}}

{{/* Extra env, envFrom and volume mounts shared by the services' containers. */}}
{{- define "prefect-k8s.extraEnv" -}}
{{- with .Values.worker.extraEnvVars }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "prefect-k8s.envFrom" -}}
- configMapRef:
    name: prefect-k8s-settings
{{- with .Values.worker.extraEnvVarsCM }}
- configMapRef:
    name: {{ . | quote }}
{{- end }}
{{- range .Values.worker.extraEnvVarsCMs }}
- configMapRef:
    name: {{ . | quote }}
{{- end }}
{{- with .Values.worker.extraEnvVarsSecret }}
- secretRef:
    name: {{ . | quote }}
{{- end }}
{{- range .Values.worker.extraEnvVarsSecrets }}
- secretRef:
    name: {{ . | quote }}
{{- end }}
{{- end -}}

{{/*
Pod template metadata of a component:
(dict "component" "poller" "values" .Values.poller "annotations" (dict ...) "context" $).
*/}}
{{- define "prefect-k8s.podMetadata" -}}
{{- $annotations := mergeOverwrite (dict) (default (dict) .annotations) .context.Values.worker.podAnnotations .values.podAnnotations -}}
{{- if .settingsChecksum }}
{{- /* The services read the settings ConfigMap at start only: a change to it
changes this annotation, so `helm upgrade` rolls their pods. */}}
{{- $_ := set $annotations "checksum/settings" (include (print .context.Template.BasePath "/settings.yaml") .context | sha256sum) }}
{{- end }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
labels:
  {{- include "prefect-k8s.labels" . | nindent 2 }}
  {{- with mergeOverwrite (dict) .context.Values.worker.podLabels .values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  # Selected by NATS's NetworkPolicy; no flow-run pod can carry it.
  prefect-k8s.io/component: {{ .component }}
{{- end -}}

{{/* nodeSelector, tolerations and affinity of a component's pods: (dict "values" .Values.poller "context" $). */}}
{{- define "prefect-k8s.scheduling" -}}
{{- $global := .context.Values.worker -}}
{{- with mergeOverwrite (dict) $global.nodeSelector .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with concat $global.tolerations .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default $global.affinity .values.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* imagePullSecrets of the agent's pods. */}}
{{- define "prefect-k8s.imagePullSecrets" -}}
{{- with .Values.worker.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . | quote }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* A service's ServiceAccount: (dict "service" "poller" "context" $ "automount" false). */}}
{{- define "prefect-k8s.serviceAccount" -}}
{{- $ctx := .context -}}
{{- if $ctx.Values.serviceAccount.create }}
{{- $values := index $ctx.Values .service }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "prefect-k8s.serviceAccountName" . | quote }}
  namespace: {{ include "prefect-k8s.namespace" $ctx | quote }}
  labels:
    {{- include "prefect-k8s.labels" (dict "component" .service) | nindent 4 }}
  {{- with mergeOverwrite (dict) $ctx.Values.serviceAccount.annotations $values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- if eq .automount false }}
automountServiceAccountToken: false
{{- end }}
{{- end }}
{{- end -}}

{{/* The NATS user and password of a service (poller or dispatcher). */}}
{{- define "prefect-k8s.natsEnv" -}}
{{- $ctx := .context -}}
# Its own NATS user, with only the permissions its code needs.
- name: NATS_USER
  value: {{ ternary (printf "prefect-k8s-%s" .service) (index $ctx.Values.nats.external (printf "%sUser" .service) | toString) $ctx.Values.nats.enabled | quote }}
- name: NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $ctx.Values.nats.auth.existingSecret | quote }}
      key: {{ printf "%s-password" .service | quote }}
      # A NATS of your own without authentication needs none.
      optional: true
{{- end -}}

{{/* The probes of a service on its health port. */}}
{{- define "prefect-k8s.probes" -}}
readinessProbe:
  grpc:
    port: {{ . }}
  periodSeconds: 5
  failureThreshold: 2
# Until the service has set itself up (the reporter's first list of Jobs and
# pods, say), the liveness probe waits.
startupProbe:
  grpc:
    port: {{ . }}
    service: startup
  periodSeconds: 5
  failureThreshold: 60
# Fails when the main loop stops making progress (see docs/metrics.md).
livenessProbe:
  grpc:
    port: {{ . }}
    service: liveness
  periodSeconds: 10
  failureThreshold: 3
{{- end -}}

{{/* securityContext of the services' pods and containers. */}}
{{- define "prefect-k8s.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{- define "prefect-k8s.containerSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
{{- end -}}

{{/* Spread a component's pods over nodes. */}}
{{- define "prefect-k8s.spread" -}}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: {{ .when }}
    labelSelector:
      matchLabels:
        {{- include "prefect-k8s.selectorLabels" . | nindent 8 }}
{{- end -}}
