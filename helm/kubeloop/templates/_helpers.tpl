{{/* Name of the chart, overridable. */}}
{{- define "kubeloop.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "kubeloop.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "kubeloop.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "kubeloop.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the operator pod. */}}
{{- define "kubeloop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubeloop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "kubeloop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubeloop.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image. */}}
{{- define "kubeloop.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
RBAC rules in the namespaces the operator watches (every namespace without watchNamespaces).
Each rule names the code that needs it; tests/envtest/test_chart_rbac.py keeps them exact.
*/}}
{{- define "kubeloop.namespacedRules" -}}
# kopf watches the three kinds and puts its timer's finalizer on a training TrainingJob;
# kubeloop reads them, and a FeedbackDataset creates the next TrainingJob.
- apiGroups: [kubeloop.io]
  resources: [trainingjobs]
  verbs: [get, list, watch, create, patch]
- apiGroups: [kubeloop.io]
  resources: [feedbackdatasets, servedmodels]
  verbs: [get, list, watch]
# Runtime.write_status.
- apiGroups: [kubeloop.io]
  resources: [trainingjobs/status, feedbackdatasets/status, servedmodels/status]
  verbs: [patch]
# Children carry ownerReferences with blockOwnerDeletion, which clusters enforcing
# OwnerReferencesPermissionEnforcement (OpenShift) allow only with this.
- apiGroups: [kubeloop.io]
  resources: [trainingjobs/finalizers, feedbackdatasets/finalizers, servedmodels/finalizers]
  verbs: [update]
# A TrainingJob's trainer: its Job (kopf watches the Jobs too) and pods; on several nodes
# Kubeflow Trainer's TrainJob, or a JobSet (watched once their CRDs exist).
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create]
- apiGroups: [trainer.kubeflow.org]
  resources: [trainjobs]
  verbs: [get, list, watch, create]
- apiGroups: [jobset.x-k8s.io]
  resources: [jobsets]
  verbs: [get, list, watch, create]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# The trainer's log tail while it trains: its last epoch line is the TrainingJob's progress.
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
# A FeedbackDataset's storage.secretRef.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# Events of kubeloop and of kopf.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# A ServedModel's predictor: a KServe InferenceService, or a Deployment (stable and canary),
# a Service and, between minReplicas and maxReplicas, a HorizontalPodAutoscaler.
- apiGroups: [serving.kserve.io]
  resources: [inferenceservices]
  verbs: [get, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, patch, delete]
{{- end }}
