{{/*
Names and labels.
*/}}
{{- define "pullprobe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pullprobe.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pullprobe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pullprobe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pullprobe.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "pullprobe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "pullprobe.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Where the pod finds its files.
*/}}
{{- define "pullprobe.configDir" -}}/etc/pullprobe/config{{- end }}
{{- define "pullprobe.credentialsDir" -}}/etc/pullprobe/registry-credentials{{- end }}
{{- define "pullprobe.caDir" -}}/etc/pullprobe/ca{{- end }}

{{/*
Seconds in a probes.yaml duration ("90s", "2m", "1h30m", "500ms"), rounded up.
*/}}
{{- define "pullprobe.seconds" -}}
{{- $ms := 0 }}
{{- $unitMs := dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 "d" 86400000 "w" 604800000 }}
{{- range regexFindAll "[0-9]+(ms|s|m|h|d|w)" (toString .) -1 }}
{{- $n := regexFind "^[0-9]+" . }}
{{- $unit := trimPrefix $n . }}
{{- $ms = add $ms (mul (atoi $n) (get $unitMs $unit)) }}
{{- end }}
{{- div (add $ms 999) 1000 }}
{{- end }}

{{/*
A number of seconds as a probes.yaml duration: "2h", "20m" or "90s".
*/}}
{{- define "pullprobe.duration" -}}
{{- $s := int64 . }}
{{- if and (gt $s 0) (eq (mod $s 3600) 0) }}{{ div $s 3600 }}h
{{- else if and (gt $s 0) (eq (mod $s 60) 0) }}{{ div $s 60 }}m
{{- else }}{{ $s }}s
{{- end }}
{{- end }}

{{/*
The largest gap, in units, between values of a cron field over a cycle of
`cycle` units: "0,20,40" over 60 → 20; "5" over 60 → 60.
*/}}
{{- define "pullprobe.cronGap" -}}
{{- $values := splitList "," .field }}
{{- $gap := 0 }}
{{- range $a := $values }}
{{- $next := add (atoi $a) $.cycle }}
{{- range $b := $values }}
{{- $candidate := atoi $b }}
{{- if le $candidate (atoi $a) }}{{ $candidate = add $candidate $.cycle }}{{ end }}
{{- if lt $candidate $next }}{{ $next = $candidate }}{{ end }}
{{- end }}
{{- $gap = max $gap (sub $next (atoi $a)) }}
{{- end }}
{{- $gap }}
{{- end }}

{{/*
Seconds between two scheduled runs of the CronJob: cronjob.interval when set,
else read off cronjob.schedule.
*/}}
{{- define "pullprobe.scheduleSeconds" -}}
{{- $c := .Values.cronjob }}
{{- $schedule := regexReplaceAll "\\s+" (trim $c.schedule) " " }}
{{- $fail := printf "cannot tell the time between runs of cronjob.schedule %q: set cronjob.interval (e.g. 10m)" $c.schedule }}
{{- $macros := dict "@hourly" 3600 "@daily" 86400 "@midnight" 86400 "@weekly" 604800 }}
{{- $fields := splitList " " $schedule }}
{{- if $c.interval }}
{{- include "pullprobe.seconds" $c.interval }}
{{- else if hasKey $macros $schedule }}
{{- get $macros $schedule }}
{{- else if ne (len $fields) 5 }}
{{- fail $fail }}
{{- else if not (and (eq (index $fields 2) "*") (eq (index $fields 3) "*") (eq (index $fields 4) "*")) }}
{{- fail $fail }}
{{- else }}
{{- $minute := index $fields 0 }}
{{- $hour := index $fields 1 }}
{{- $numbers := "^[0-9]+(,[0-9]+)*$" }}
{{- if and (eq $hour "*") (regexMatch "^\\*(/[0-9]+)?$" $minute) }}
{{- mul 60 (atoi (default "1" (trimPrefix "/" (trimPrefix "*" $minute)))) }}
{{- else if and (eq $hour "*") (regexMatch $numbers $minute) }}
{{- mul 60 (atoi (include "pullprobe.cronGap" (dict "field" $minute "cycle" 60))) }}
{{- else if and (regexMatch "^[0-9]+$" $minute) (regexMatch "^\\*/[0-9]+$" $hour) }}
{{- mul 3600 (atoi (trimPrefix "*/" $hour)) }}
{{- else if and (regexMatch "^[0-9]+$" $minute) (regexMatch $numbers $hour) }}
{{- mul 3600 (atoi (include "pullprobe.cronGap" (dict "field" $hour "cycle" 24))) }}
{{- else }}
{{- fail $fail }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Whether pullprobe pages Alertmanager itself (config.alerting.alertmanager set).
*/}}
{{- define "pullprobe.directAlerting" -}}
{{- if and .Values.config.alerting (get (.Values.config.alerting | default dict) "alertmanager") }}true{{ end }}
{{- end }}

{{/*
probes.yaml: config from values, plus the credentials, CA bundle, (without
discovery.kubernetes.pullSecrets) `pull_secrets: false` on `kubernetes:`
probes, and (in cronjob mode) interval and resolve_timeout the chart wires in.
*/}}
{{- define "pullprobe.config" -}}
{{- $config := deepCopy .Values.config }}
{{- range $registry := ($config.registries | default list) }}
{{- if and $.Values.registryCredentials.existingSecret (not (hasKey $registry "auth")) }}
{{- $_ := set $registry "auth" (dict "docker_config" (printf "%s/.dockerconfigjson" (include "pullprobe.credentialsDir" $))) }}
{{- end }}
{{- if $.Values.caBundle.existingSecret }}
{{- $tls := get $registry "tls" | default dict }}
{{- if not (hasKey $tls "ca_file") }}
{{- $_ := set $tls "ca_file" (printf "%s/%s" (include "pullprobe.caDir" $) $.Values.caBundle.key) }}
{{- end }}
{{- $_ := set $registry "tls" $tls }}
{{- end }}
{{- end }}
{{- if not .Values.discovery.kubernetes.pullSecrets }}
{{- range $probe := ($config.probes | default list) }}
{{- if and (hasKey $probe "kubernetes") (not (hasKey ($probe.kubernetes | default dict) "pull_secrets")) }}
{{- $rule := $probe.kubernetes | default dict }}
{{- $_ := set $rule "pull_secrets" false }}
{{- $_ := set $probe "kubernetes" $rule }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq .Values.mode "cronjob" }}
{{- $period := int64 (include "pullprobe.scheduleSeconds" .) }}
{{- $defaults := get $config "defaults" | default dict }}
{{- if not (hasKey $defaults "interval") }}
{{- $_ := set $defaults "interval" (include "pullprobe.duration" $period) }}
{{- end }}
{{- $_ := set $config "defaults" $defaults }}
{{- if include "pullprobe.directAlerting" . }}
{{- $am := $config.alerting.alertmanager }}
{{- if not (hasKey $am "resolve_timeout") }}
{{- $_ := set $am "resolve_timeout" (include "pullprobe.duration" (mul 4 $period)) }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
activeDeadlineSeconds of a CronJob run, from the probe timeouts: one pull
(probe × frontend) takes at most timeout × platforms (`all` counts as 4);
`concurrency` pulls run at once, so a run ends within
sum(pulls) / concurrency + the longest pull; plus 120 s for start-up and
delivery to Pushgateway and Alertmanager (30 s of retries per endpoint).
A frontend list counts its entries, `frontends: dns` counts as 4 addresses, a
node's mirror configuration as 4 (mirrors, the upstream and node-order).
*/}}
{{- define "pullprobe.activeDeadlineSeconds" -}}
{{- if .Values.cronjob.activeDeadlineSeconds }}
{{- .Values.cronjob.activeDeadlineSeconds }}
{{- else }}
{{- $config := .Values.config }}
{{- $defaults := $config.defaults | default dict }}
{{- $defaultTimeout := int64 (include "pullprobe.seconds" (get $defaults "timeout" | default "2m")) }}
{{- $defaultPlatforms := get $defaults "platforms" | default (list "linux/amd64") }}
{{- $concurrency := int64 (get $defaults "concurrency" | default 4) }}
{{- $frontends := dict }}
{{- range $r := ($config.registries | default list) }}
{{- $f := get $r "frontends" | default "single" }}
{{- $n := 1 }}
{{- if kindIs "slice" $f }}{{ $n = len $f }}{{ else if or (kindIs "map" $f) (eq (toString $f) "dns") }}{{ $n = 4 }}{{ end }}
{{- $_ := set $frontends $r.name $n }}
{{- end }}
{{- $total := 0 }}
{{- $longest := 0 }}
{{- range $p := $config.probes }}
{{- $timeout := $defaultTimeout }}
{{- if hasKey $p "timeout" }}{{ $timeout = int64 (include "pullprobe.seconds" $p.timeout) }}{{ end }}
{{- $platforms := $defaultPlatforms }}
{{- if hasKey $p "platforms" }}{{ $platforms = $p.platforms }}{{ end }}
{{- $k := 1 }}
{{- if kindIs "slice" $platforms }}{{ $k = max 1 (len $platforms) }}{{ else if eq (toString $platforms) "all" }}{{ $k = 4 }}{{ end }}
{{- $pull := mul $timeout $k }}
{{- $f := 1 }}
{{- if and (hasKey $p "registry") (hasKey $frontends (toString $p.registry)) }}{{ $f = get $frontends (toString $p.registry) }}{{ end }}
{{- $total = add $total (mul $pull $f) }}
{{- $longest = max $longest $pull }}
{{- end }}
{{- add (div (add $total (sub $concurrency 1)) $concurrency) $longest 120 }}
{{- end }}
{{- end }}

{{/*
The volumes and mounts both modes share.
*/}}
{{- define "pullprobe.volumes" -}}
- name: config
  configMap:
    name: {{ include "pullprobe.fullname" . }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .Values.registryCredentials.existingSecret }}
- name: registry-credentials
  secret:
    secretName: {{ .Values.registryCredentials.existingSecret }}
    defaultMode: 288  # 0440: owner and group (fsGroup) read
    items:
      - key: .dockerconfigjson
        path: .dockerconfigjson
{{- end }}
{{- if .Values.caBundle.existingSecret }}
- name: ca-bundle
  secret:
    secretName: {{ .Values.caBundle.existingSecret }}
    defaultMode: 292  # 0444
    items:
      - key: {{ .Values.caBundle.key }}
        path: {{ .Values.caBundle.key }}
{{- end }}
{{- if .Values.nodeMirrors.hostPath.enabled }}
{{- if ne .Values.mode "deployment" }}
{{- fail "nodeMirrors.hostPath is for mode: deployment (a CronJob's pods land on any node): use nodeMirrors.files" }}
{{- end }}
# The node's own mirror configuration, as its container runtime reads it.
- name: node-mirrors-host
  hostPath:
    path: {{ .Values.nodeMirrors.hostPath.path }}
    type: Directory
{{- end }}
{{- with .Values.nodeMirrors.files }}
- name: node-mirrors
  configMap:
    name: {{ include "pullprobe.fullname" $ }}-node-mirrors
    defaultMode: 292  # 0444
    items:
      {{- range $path := keys . | sortAlpha }}
      - key: {{ include "pullprobe.nodeMirrorKey" $path }}
        path: {{ $path }}
      {{- end }}
{{- end }}
{{- end }}

{{/*
The ConfigMap key of a node mirror file: keys cannot hold `/`, paths can.
*/}}
{{- define "pullprobe.nodeMirrorKey" -}}
file-{{ . | sha256sum | trunc 16 }}
{{- end }}

{{- define "pullprobe.volumeMounts" -}}
- name: config
  mountPath: {{ include "pullprobe.configDir" . }}
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.registryCredentials.existingSecret }}
- name: registry-credentials
  mountPath: {{ include "pullprobe.credentialsDir" . }}
  readOnly: true
{{- end }}
{{- if .Values.caBundle.existingSecret }}
- name: ca-bundle
  mountPath: {{ include "pullprobe.caDir" . }}
  readOnly: true
{{- end }}
{{- if .Values.nodeMirrors.hostPath.enabled }}
- name: node-mirrors-host
  mountPath: {{ .Values.nodeMirrors.hostPath.path }}
  readOnly: true
{{- end }}
{{- if .Values.nodeMirrors.files }}
- name: node-mirrors
  mountPath: {{ .Values.nodeMirrors.mountPath }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
The pods' ServiceAccount: created for `serviceAccount.create`, for `kubernetes:`
discovery (whose RBAC binds it) and for a workload identity (whose annotations
it carries).
*/}}
{{- define "pullprobe.workloadIdentity" -}}
{{- with .Values.workloadIdentity }}
{{- if or .aws.roleArn .gcp.serviceAccount .azure.clientId }}true{{ end }}
{{- end }}
{{- end }}

{{- define "pullprobe.serviceAccountCreate" -}}
{{- if or .Values.serviceAccount.create .Values.discovery.kubernetes.enabled (include "pullprobe.workloadIdentity" .) }}true{{ end }}
{{- end }}

{{- define "pullprobe.serviceAccountName" -}}
{{- default (include "pullprobe.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/*
The ServiceAccount's annotations: each cloud's workload identity, then serviceAccount.annotations.
*/}}
{{- define "pullprobe.serviceAccountAnnotations" -}}
{{- $annotations := dict }}
{{- with .Values.workloadIdentity.aws.roleArn }}
{{- $_ := set $annotations "eks.amazonaws.com/role-arn" . }}
{{- end }}
{{- with .Values.workloadIdentity.gcp.serviceAccount }}
{{- $_ := set $annotations "iam.gke.io/gcp-service-account" . }}
{{- end }}
{{- with .Values.workloadIdentity.azure.clientId }}
{{- $_ := set $annotations "azure.workload.identity/client-id" . }}
{{- end }}
{{- with .Values.workloadIdentity.azure.tenantId }}
{{- $_ := set $annotations "azure.workload.identity/tenant-id" . }}
{{- end }}
{{- $annotations = merge (deepCopy (.Values.serviceAccount.annotations | default dict)) $annotations }}
{{- if $annotations }}
{{- toYaml $annotations }}
{{- end }}
{{- end }}

{{/*
The pod spec fields both modes share, after `containers`.
*/}}
{{- define "pullprobe.podCommon" -}}
{{- if or (include "pullprobe.serviceAccountCreate" .) .Values.serviceAccount.name }}
serviceAccountName: {{ include "pullprobe.serviceAccountName" . }}
{{- end }}
{{- if .Values.discovery.kubernetes.enabled }}
# `kubernetes:` probes read the API server with this account's token; a cloud's
# webhook projects its own token, so none is mounted otherwise.
automountServiceAccountToken: true
{{- else }}
automountServiceAccountToken: false
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  {{- include "pullprobe.volumes" . | nindent 2 }}
{{- end }}

{{/*
"true" when the images are split over more than one pod (shards > 1), else empty.
*/}}
{{- define "pullprobe.sharded" -}}
{{- if gt (int .Values.shards) 1 }}true{{- end }}
{{- end }}

{{/*
The arguments that make each pod its shard: the index from the pod (Indexed Job
or StatefulSet), the count from the chart.
*/}}
{{- define "pullprobe.shardArgs" -}}
- --shard
- auto
- --shards
- {{ .Values.shards | quote }}
{{- end }}

{{/*
Container fields both modes share, after `args`.
*/}}
{{- define "pullprobe.containerCommon" -}}
image: {{ include "pullprobe.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
resources:
  {{- toYaml .Values.resources | nindent 2 }}
{{- $statefulShards := and (eq .Values.mode "deployment") (include "pullprobe.sharded" .) }}
{{- if or .Values.extraEnv $statefulShards }}
env:
  {{- if $statefulShards }}
  # The StatefulSet pod's ordinal (Kubernetes 1.28+); without the label,
  # pullprobe falls back to the host name's -<ordinal>.
  - name: PULLPROBE_SHARD_INDEX
    valueFrom:
      fieldRef:
        fieldPath: metadata.labels['apps.kubernetes.io/pod-index']
  {{- end }}
  {{- with .Values.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
volumeMounts:
  {{- include "pullprobe.volumeMounts" . | nindent 2 }}
{{- end }}

{{- define "pullprobe.podMetadata" -}}
labels:
  {{- include "pullprobe.selectorLabels" . | nindent 2 }}
  {{- with .Values.workloadIdentity.azure.clientId }}
  # The Entra workload identity webhook injects the token and AZURE_* into labelled pods.
  azure.workload.identity/use: "true"
  {{- end }}
  {{- with .Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  checksum/config: {{ include "pullprobe.config" . | sha256sum }}
  {{- with .Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/*
The namespaces a namespaced (clusterWide: false) discovery RBAC grants, one per
line: discovery.kubernetes.namespaces, else every namespace the `kubernetes:`
probes list. A probe that lists every namespace needs clusterWide.
*/}}
{{- define "pullprobe.discoveryNamespaces" -}}
{{- $namespaces := .Values.discovery.kubernetes.namespaces | default list }}
{{- if not $namespaces }}
{{- range $probe := (.Values.config.probes | default list) }}
{{- if hasKey $probe "kubernetes" }}
{{- $listed := get ($probe.kubernetes | default dict) "namespaces" | default list }}
{{- if not $listed }}
{{- fail (printf "probe %s lists every namespace: set discovery.kubernetes.clusterWide: true, or give it namespaces" $probe.name) }}
{{- end }}
{{- $namespaces = concat $namespaces $listed }}
{{- end }}
{{- end }}
{{- end }}
{{- if not $namespaces }}
{{- fail "discovery.kubernetes.clusterWide is false and no namespace is named: set discovery.kubernetes.namespaces or a kubernetes: probe's namespaces" }}
{{- end }}
{{- range $namespaces | uniq }}
{{ . }}
{{- end }}
{{- end }}

{{/*
The read-only rules of discovery: list and get the workloads whose pod specs
name images; with pullSecrets, get (never list) Secrets, for imagePullSecrets.
*/}}
{{- define "pullprobe.discoveryRules" -}}
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
- apiGroups: [apps]
  resources: [deployments, statefulsets, daemonsets]
  verbs: [get, list]
- apiGroups: [batch]
  resources: [jobs, cronjobs]
  verbs: [get, list]
{{- if .Values.discovery.kubernetes.pullSecrets }}
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
{{- end }}
