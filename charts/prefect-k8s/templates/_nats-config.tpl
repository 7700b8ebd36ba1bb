{{/*
The bundled NATS's ConfigMap (nats.conf and auth.conf), defined here so that
the StatefulSet's pod template can carry its checksum.
*/}}
{{- define "prefect-k8s.natsConfigMap" -}}
{{- $ns := include "prefect-k8s.namespace" . }}
{{- $cluster := .Values.nats.cluster.enabled }}
{{- $pool := .Values.worker.config.workPool }}
{{- $token := include "prefect-k8s.poolToken" $pool }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: prefect-k8s-nats-config
  namespace: {{ $ns | quote }}
  labels:
    {{- include "prefect-k8s.labels" (dict "component" "nats") | nindent 4 }}
data:
  # (Without a final newline in a cluster, as deploy/overlays/nats-cluster has it.)
  nats.conf: {{ ternary "|-" "|" $cluster }}
    server_name: $POD_NAME
    port: 4222
    http_port: 8222
    lame_duck_duration: 30s
    jetstream {
      store_dir: /data
      max_memory_store: 64MB
      max_file_store: 8GB
    }
    include auth.conf
    {{- if $cluster }}
    cluster {
      name: prefect-k8s
      port: 6222
      authorization {
        user: prefect-k8s-route
        password: $PREFECT_K8S_NATS_ROUTE_PASSWORD
      }
      routes: [
        $PREFECT_K8S_NATS_ROUTE_0
        $PREFECT_K8S_NATS_ROUTE_1
        $PREFECT_K8S_NATS_ROUTE_2
      ]
    }
    {{- end }}
  auth.conf: |
    # The NATS users of the prefect-k8s agent, work pool {{ $pool | quote }}: one per service,
    # each allowed the subjects its code uses and nothing else; no anonymous
    # access. Printed by `prefect-k8s nats-auth`; see docs/install.md,
    # "Security model". nats-server reads the passwords from its environment.
    authorization {
      users = [
        {
          user: "prefect-k8s-poller"
          password: $PREFECT_K8S_NATS_POLLER_PASSWORD
          permissions: {
            publish: { allow: [
              "$JS.API.STREAM.INFO.PREFECT_K8S_FLOW_RUNS"
              "$JS.API.STREAM.CREATE.PREFECT_K8S_FLOW_RUNS"
              "$JS.API.STREAM.INFO.PREFECT_K8S_DEAD_LETTERS"
              "$JS.API.STREAM.CREATE.PREFECT_K8S_DEAD_LETTERS"
              {{ printf "flow-runs.due.%s" $token | quote }}
            ] }
            subscribe: { allow: [
              "_INBOX.prefect-k8s-poller.>"
            ] }
          }
        }
        {
          user: "prefect-k8s-dispatcher"
          password: $PREFECT_K8S_NATS_DISPATCHER_PASSWORD
          permissions: {
            publish: { allow: [
              "$JS.API.STREAM.INFO.PREFECT_K8S_FLOW_RUNS"
              "$JS.API.STREAM.CREATE.PREFECT_K8S_FLOW_RUNS"
              "$JS.API.STREAM.INFO.PREFECT_K8S_DEAD_LETTERS"
              "$JS.API.STREAM.CREATE.PREFECT_K8S_DEAD_LETTERS"
              {{ printf "$JS.API.CONSUMER.CREATE.PREFECT_K8S_FLOW_RUNS.dispatcher-%s.flow-runs.due.%s" $token $token | quote }}
              {{ printf "$JS.API.CONSUMER.INFO.PREFECT_K8S_FLOW_RUNS.dispatcher-%s" $token | quote }}
              {{ printf "$JS.API.CONSUMER.MSG.NEXT.PREFECT_K8S_FLOW_RUNS.dispatcher-%s" $token | quote }}
              {{ printf "$JS.ACK.PREFECT_K8S_FLOW_RUNS.dispatcher-%s.>" $token | quote }}
              "flow-runs.dead.>"
            ] }
            subscribe: { allow: [
              "_INBOX.prefect-k8s-dispatcher.>"
            ] }
          }
        }
      ]
    }
{{- end -}}
