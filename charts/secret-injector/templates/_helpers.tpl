{{/* The chart name, or nameOverride. */}}
{{- define "secret-injector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The full name of the release's objects: "<release>-<chart>", or the release name alone when
it already contains the chart name. Truncated to leave room for suffixes like "-metrics".
*/}}
{{- define "secret-injector.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "secret-injector.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "secret-injector.labels" -}}
helm.sh/chart: {{ include "secret-injector.chart" . }}
{{ include "secret-injector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: secret-injector
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels that select the webhook pods (never change them: Deployment selectors are immutable). */}}
{{- define "secret-injector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "secret-injector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The webhook's ServiceAccount name. */}}
{{- define "secret-injector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "secret-injector.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The image reference: repository[:tag][@digest]. */}}
{{- define "secret-injector.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Name of both webhook configurations (cluster-scoped, so the namespace is part of it). */}}
{{- define "secret-injector.webhookConfigurationName" -}}
{{- printf "%s-%s" (include "secret-injector.fullname" .) .Release.Namespace | trunc 253 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of the Secret that holds the serving certificate, whatever the TLS mode. */}}
{{- define "secret-injector.tlsSecretName" -}}
{{- if eq .Values.tls.mode "existingSecret" -}}
{{- .Values.tls.existingSecret.name -}}
{{- else if eq .Values.tls.mode "selfManaged" -}}
{{- default (printf "%s-tls" (include "secret-injector.fullname" .)) .Values.tls.selfManaged.secretName -}}
{{- else -}}
{{- printf "%s-tls" (include "secret-injector.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The cert-manager Certificate of the serving certificate. */}}
{{- define "secret-injector.certificateName" -}}
{{- printf "%s-serving" (include "secret-injector.fullname" .) -}}
{{- end -}}

{{/* True when the chart creates its own cert-manager CA chain (no issuer given). */}}
{{- define "secret-injector.ownIssuer" -}}
{{- if and (eq .Values.tls.mode "certManager") (not .Values.tls.certManager.issuerRef.name) -}}
true
{{- end -}}
{{- end -}}

{{/* The annotation prefix with its trailing slash: "secret-injector.io/". */}}
{{- define "secret-injector.prefix" -}}
{{- printf "%s/" (trimSuffix "/" .Values.config.annotationPrefix) -}}
{{- end -}}

{{/*
Namespaces neither webhook ever sees: kube-system, kube-node-lease, the release's own
namespace (no self-mutation, no dependency loop) and the user's additions.
*/}}
{{- define "secret-injector.excludedNamespaces" -}}
{{- $names := list "kube-system" "kube-node-lease" .Release.Namespace -}}
{{- range .Values.webhooks.excludeNamespaces -}}
{{- $names = append $names . -}}
{{- end -}}
{{- toJson (uniq $names) -}}
{{- end -}}

{{/*
The namespaceSelector of both webhooks: the user's selector with our exclusion appended to
its matchExpressions. Requirements of a selector are ANDed, so no user value can widen the
webhooks to the excluded namespaces.
*/}}
{{- define "secret-injector.namespaceSelector" -}}
{{- $user := .Values.webhooks.namespaceSelector -}}
{{- $expressions := list -}}
{{- range (get $user "matchExpressions" | default list) -}}
{{- $expressions = append $expressions . -}}
{{- end -}}
{{- $exclusion := dict "key" "kubernetes.io/metadata.name" "operator" "NotIn" "values" (include "secret-injector.excludedNamespaces" . | fromJsonArray) -}}
{{- $expressions = append $expressions $exclusion -}}
{{- $selector := dict "matchExpressions" $expressions -}}
{{- with (get $user "matchLabels") -}}
{{- $_ := set $selector "matchLabels" . -}}
{{- end -}}
{{- toYaml $selector -}}
{{- end -}}

{{/*
CEL: the pod is not a mirror pod (a kubelet's static pod). Mirror pods can't be changed and
must never be denied, or the kubelet cannot report them.
*/}}
{{- define "secret-injector.celNotMirror" -}}
!has(object.metadata.annotations) || !('kubernetes.io/config.mirror' in object.metadata.annotations)
{{- end -}}

{{/* CEL: the pod carries at least one annotation with our prefix. */}}
{{- define "secret-injector.celHasPrefix" -}}
has(object.metadata.annotations) && object.metadata.annotations.exists(k, k.startsWith('{{ include "secret-injector.prefix" . }}'))
{{- end -}}

{{/* CEL: the pod opted in (<prefix>inject == "true"). */}}
{{- define "secret-injector.celOptedIn" -}}
has(object.metadata.annotations) && '{{ include "secret-injector.prefix" . }}inject' in object.metadata.annotations && object.metadata.annotations['{{ include "secret-injector.prefix" . }}inject'] == 'true'
{{- end -}}

{{/*
The clientConfig of a webhook; pass (list $ "/path"). In existingSecret mode the caBundle
comes from values; cert-manager's cainjector fills it in certManager mode, the webhook
itself in selfManaged mode.
*/}}
{{- define "secret-injector.clientConfig" -}}
{{- $ := index . 0 -}}
service:
  name: {{ include "secret-injector.fullname" $ }}
  namespace: {{ $.Release.Namespace }}
  path: {{ index . 1 }}
  port: {{ $.Values.service.port }}
{{- if eq $.Values.tls.mode "existingSecret" }}
caBundle: {{ $.Values.tls.existingSecret.caBundle }}
{{- end }}
{{- end -}}

{{/* Annotations of both webhook configurations. */}}
{{- define "secret-injector.webhookAnnotations" -}}
{{- if eq .Values.tls.mode "certManager" -}}
cert-manager.io/inject-ca-from: {{ printf "%s/%s" .Release.Namespace (include "secret-injector.certificateName" .) }}
{{- end -}}
{{- end -}}

{{/*
True when the pod needs a Kubernetes API token: to manage SecretProviderClasses, to keep
the self-managed certificate and caBundle, or to log in to Vault with its ServiceAccount.
*/}}
{{- define "secret-injector.needsApiToken" -}}
{{- if or .Values.config.kubernetes.manageSecretProviderClasses (eq .Values.tls.mode "selfManaged") (eq .Values.config.providers.vault.auth.method "kubernetes") -}}
true
{{- end -}}
{{- end -}}

{{/* Directories of the files the chart mounts into the webhook container. */}}
{{- define "secret-injector.configDir" -}}/etc/secret-injector/config{{- end -}}
{{- define "secret-injector.policyDir" -}}/etc/secret-injector/policy{{- end -}}
{{- define "secret-injector.tlsDir" -}}/etc/secret-injector/tls{{- end -}}
{{- define "secret-injector.vaultCaDir" -}}/etc/secret-injector/vault-ca{{- end -}}
{{- define "secret-injector.vaultCredentialsDir" -}}/etc/secret-injector/vault-credentials{{- end -}}

{{/* True when the webhook needs cluster-wide permissions (else no ClusterRole at all). */}}
{{- define "secret-injector.needsClusterRole" -}}
{{- if or .Values.config.kubernetes.manageSecretProviderClasses (eq .Values.tls.mode "selfManaged") -}}
true
{{- end -}}
{{- end -}}
