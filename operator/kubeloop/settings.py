"""Settings of every kubeloop process, read from KUBELOOP_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """One typed place for configuration; each field is KUBELOOP_<FIELD> in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="KUBELOOP_", use_attribute_docstrings=True, extra="ignore"
    )

    mlflow_tracking_uri: str = "http://127.0.0.1:5000"
    """MLflow tracking server (tracking + model registry)."""
    s3_endpoint: str = "http://127.0.0.1:8333"
    """S3 endpoint URL for samples, snapshots and the prediction log."""
    s3_access_key: SecretStr = SecretStr("kubeloop")
    """S3 access key id."""
    s3_secret_key: SecretStr = SecretStr("kubeloop")
    """S3 secret access key."""
    s3_region: str = "us-east-1"
    """S3 region."""
    s3_timeout_seconds: float = 10.0
    """Read timeout of one S3 request."""
    s3_retries: int = Field(default=3, ge=0)
    """Retries, with exponential backoff, of an S3 request that could not reach the server."""
    state_dir: Path = Path(".kubeloop")
    """Directory of the local mode: server data, logs, model cards, plots."""
    namespaces: list[str] = Field(default_factory=list)
    """Namespaces the operator watches; all namespaces when empty."""
    trainer_image: str = "ghcr.io/kubeloop/trainer:0.1.0"
    """Default image of training pods."""
    predictor_image: str = "ghcr.io/kubeloop/predictor:0.1.0"
    """Default image of predictor pods."""
    metrics_port: int = Field(default=8080, ge=1, le=65535)
    """Port of the operator's /metrics and health endpoint."""
    metrics_host: str = "0.0.0.0"
    """Address the operator's /metrics endpoint binds to (all interfaces: Prometheus scrapes
    it from other pods)."""
    s3_secret_name: str | None = None
    """Secret with the S3 credentials, given by reference to training and predictor pods
    (it must exist in their namespace); their pods get no S3 credentials when unset."""
    s3_secret_access_key_field: str = "AWS_ACCESS_KEY_ID"
    """Key of the access key id in that Secret (and in a FeedbackDataset's storage.secretRef)."""
    s3_secret_secret_key_field: str = "AWS_SECRET_ACCESS_KEY"
    """Key of the secret access key in that Secret (and in storage.secretRef)."""
    child_pod_security_context: dict[str, Any] = Field(
        default_factory=lambda: {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
    )
    """securityContext of the trainer and predictor pods (JSON), unless their spec.template
    sets one."""
    child_security_context: dict[str, Any] = Field(
        default_factory=lambda: {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
    )
    """securityContext of the trainer and predictor containers (JSON), unless their
    spec.template sets one; /tmp is a writable emptyDir."""
    predictor_cpu: str = "1"
    """CPU request and limit of a predictor whose ServedModel sets no spec.resources."""
    predictor_memory: str = "1Gi"
    """Memory request and limit of a predictor whose ServedModel sets no spec.resources."""
    kserve_deployment_mode: Literal["Serverless", "RawDeployment", "Standard"] = "Serverless"
    """KServe's default deployment mode in the cluster (the inferenceservice-config ConfigMap's
    deploy.defaultDeploymentMode); a ServedModel's template annotation
    serving.kserve.io/deploymentMode overrides it for its InferenceService."""
    trainer_active_deadline_seconds: int | None = Field(default=None, ge=1)
    """activeDeadlineSeconds of training Jobs whose TrainingJob sets none; none when unset."""
    poll_seconds: float = Field(default=10.0, gt=0)
    """Interval of the idle reconcile: storage polls, registry polls, canary steps."""
    discovery_seconds: float = Field(default=30.0, ge=0)
    """How long the operator trusts the API server's answer to whether it serves a kind
    (KServe's InferenceService, Kubeflow Trainer's TrainJob, JobSet, autoscaling/v2)."""
    log_level: str = "INFO"
    """Logging level of kubeloop processes."""


def load() -> Settings:
    """Settings from the environment."""
    return Settings()
