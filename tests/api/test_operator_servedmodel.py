"""ServedModel through the real operator and a real MLflow registry: the first version, the gate
(promotion, and a regressed slice kept out), canary steps, the Deployment runtime, and a
cluster without KServe."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kubeloop.local import services
from kubeloop.registry import Registry
from tests.api.conftest import Cluster
from tests.model_versions import registered, served_model, unique
from tests.operator_harness import API, ISVC, SM, OperatorFactory, condition, eventually, status_of

HPA = "autoscaling/v2/horizontalpodautoscalers"

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def status_where(cluster: Cluster, name: str, **expected: Any) -> dict[str, Any] | None:
    status = await status_of(cluster, SM, name)
    return status if all(status.get(k) == v for k, v in expected.items()) else None


def args_of(isvc: dict[str, Any]) -> list[str]:
    (container,) = isvc["spec"]["predictor"]["containers"]
    return list(container["args"])


async def test_first_version_then_gate_promotes_or_keeps_serving(
    cluster: Cluster,
    operator: OperatorFactory,
    mlflow_server: services.Service,
    registry: Registry,
    s3_env: str,
) -> None:
    tracking = mlflow_server.url
    model = unique("gate")
    running = await operator(KUBELOOP_MLFLOW_TRACKING_URI=tracking)
    baseline = {"accuracy": 0.90, "accuracy.base": 0.95, "accuracy.new-user": 0.60}
    await registered(tracking, model, baseline)
    await cluster.create(
        f"{API}/feedbackdatasets",
        {
            "apiVersion": API,
            "kind": "FeedbackDataset",
            "metadata": {"name": "digits-fb"},
            "spec": {
                "storage": {"bucket": "kubeloop", "prefix": "feedback/digits/"},
                "classes": ["0", "1"],
                "inputShape": [8, 8],
                "slices": ["base", "new-user"],
            },
        },
    )
    await cluster.create(SM, served_model("digits", model, feedbackDataset="digits-fb"))

    status = await eventually(
        lambda: status_where(cluster, "digits", servingVersion="1"), "the first version", 30
    )
    rolled = condition(status, "RolledOut")
    assert (rolled["status"], rolled["reason"]) == ("True", "FirstVersion")
    assert "nothing to compare" in rolled["message"]
    champion = await asyncio.to_thread(registry.get_by_alias, model, "champion")
    assert champion is not None
    assert champion.version == "1"
    isvc = await eventually(lambda: cluster.get(ISVC, "digits"), "the InferenceService")
    args = args_of(isvc)
    assert args[args.index("--model-uri") + 1] == f"models:/{model}@champion"
    assert args[args.index("--feedback-prefix") + 1] == "feedback/digits/"
    assert args[args.index("--input-shape") + 1] == "8,8"
    assert isvc["metadata"]["ownerReferences"][0]["uid"] == "uid-digits"
    assert condition(status, "Ready")["status"] == "False"

    # KServe reports the predictor ready.
    ready = {
        "url": "http://digits.default.example.com",
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    await cluster.patch(ISVC, "digits", {"status": ready}, "status")

    async def is_ready() -> dict[str, Any] | None:
        status = await status_of(cluster, SM, "digits")
        return status if condition(status, "Ready").get("status") == "True" else None

    status = await eventually(is_ready, "Ready")
    assert status["url"] == "http://digits.default.example.com"

    # A better candidate (no slice falls): promoted at once, no canary configured.
    await registered(
        tracking, model, {"accuracy": 0.93, "accuracy.base": 0.96, "accuracy.new-user": 0.70}
    )
    status = await eventually(
        lambda: status_where(cluster, "digits", servingVersion="2"), "the promotion", 30
    )
    assert status["gate"]["verdict"] == "Passed"
    assert status["gate"]["sliceDeltas"] == pytest.approx({"base": 0.01, "new-user": 0.1})
    champion = await asyncio.to_thread(registry.get_by_alias, model, "champion")
    assert champion is not None
    assert champion.version == "2"
    assert "candidateVersion" not in status

    # A candidate that forgets the new users' slice: kept out, said loudly.
    await registered(
        tracking, model, {"accuracy": 0.95, "accuracy.base": 0.99, "accuracy.new-user": 0.60}
    )
    status = await eventually(
        lambda: status_where(cluster, "digits", candidateVersion="3"), "the gate's verdict", 30
    )
    assert status["servingVersion"] == "2"
    assert status["gate"]["verdict"] == "Failed"
    assert status["gate"]["failedSlices"] == ["new-user"]
    failed = condition(status, "GateFailed")
    assert (failed["status"], failed["reason"]) == ("True", "SliceRegression")
    assert "new-user" in failed["message"]
    champion = await asyncio.to_thread(registry.get_by_alias, model, "champion")
    assert champion is not None
    assert champion.version == "2"
    reasons = await cluster.said("digits", "Promoted", "Promoted", "GatePassed", "GateFailed")
    assert reasons.count("Promoted") == 2
    warnings = [e for e in await cluster.events("digits") if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["GateFailed"]
    exported = await running.metrics()
    assert 'kubeloop_gate_verdicts_total{result="Passed"} 1.0' in exported
    assert 'kubeloop_gate_verdicts_total{result="Failed"} 1.0' in exported
    assert 'servedmodel="digits",version="2"} 1.0' in exported
    assert 'kubeloop_reconcile_total{kind="ServedModel",result="ok"}' in exported

    # Asked on the cluster: the annotation rolls the alias back to the version 2 replaced.
    asked = {"metadata": {"annotations": {"kubeloop.io/rollback": "after-v3"}}}
    await cluster.patch(SM, "digits", asked)
    status = await eventually(
        lambda: status_where(cluster, "digits", rollbackRequest="after-v3"), "the rollback", 30
    )
    assert status["servingVersion"] == "1"
    champion = await asyncio.to_thread(registry.get_by_alias, model, "champion")
    assert champion is not None
    assert champion.version == "1"
    await cluster.said("digits", "Rollback")


async def test_canary_steps_then_promotion(
    cluster: Cluster, operator: OperatorFactory, mlflow_server: services.Service
) -> None:
    tracking = mlflow_server.url
    model = unique("canary")
    await operator(KUBELOOP_MLFLOW_TRACKING_URI=tracking)
    await registered(tracking, model, {"accuracy": 0.9, "accuracy.base": 0.9})
    canary = {"steps": [20, 60], "stepSeconds": 2}
    await cluster.create(SM, served_model("canary", model, canary=canary))
    await eventually(lambda: status_where(cluster, "canary", servingVersion="1"), "v1", 30)
    await registered(tracking, model, {"accuracy": 0.92, "accuracy.base": 0.91})

    async def isvc_where(percent: int | None, uri: str) -> dict[str, Any] | None:
        isvc = await cluster.get(ISVC, "canary")
        if isvc is None:
            return None
        predictor = isvc["spec"]["predictor"]
        found = predictor.get("canaryTrafficPercent") == percent
        return isvc if found and f"--model-uri {uri}" in " ".join(args_of(isvc)) else None

    await eventually(lambda: isvc_where(20, f"models:/{model}/2"), "canary at 20%", 30)
    # The status is written just after the InferenceService: wait for it too.
    status = await eventually(
        lambda: status_where(cluster, "canary", candidateVersion="2"), "the canary's status", 30
    )
    assert status["servingVersion"] == "1"
    assert condition(status, "RolledOut")["reason"] == "Canary"
    await eventually(lambda: isvc_where(60, f"models:/{model}/2"), "canary at 60%", 30)
    await eventually(lambda: isvc_where(None, f"models:/{model}@champion"), "promoted", 30)
    status = await eventually(
        lambda: status_where(cluster, "canary", servingVersion="2"), "serving 2", 30
    )
    assert status.get("canaryPercent") == 0
    reasons = await cluster.said("canary", "CanaryStarted", "CanaryStep")
    assert reasons.count("CanaryStarted") == 1
    assert reasons.count("CanaryStep") == 1


async def test_deployment_runtime_without_kserve(
    cluster: Cluster, operator: OperatorFactory, mlflow_server: services.Service
) -> None:
    tracking = mlflow_server.url
    model = unique("plain")
    await operator(KUBELOOP_MLFLOW_TRACKING_URI=tracking)
    await registered(tracking, model, {"accuracy": 0.9})
    await cluster.create(
        SM, served_model("plain", model, runtime="deployment", minReplicas=2, maxReplicas=3)
    )
    deployment = await eventually(
        lambda: cluster.get("apps/v1/deployments", "plain-predictor"), "the Deployment", 30
    )
    assert "replicas" not in deployment["spec"], "2 to 3 replicas: the autoscaler's to set"
    hpa = await eventually(lambda: cluster.get(HPA, "plain-predictor"), "the autoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 3)
    assert hpa["spec"]["scaleTargetRef"]["name"] == "plain-predictor"
    service = await eventually(lambda: cluster.get("v1/services", "plain"), "the Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert await cluster.get(ISVC, "plain") is None
    await cluster.patch(
        "apps/v1/deployments", "plain-predictor", {"status": {"availableReplicas": 2}}, "status"
    )

    async def is_ready() -> dict[str, Any] | None:
        status = await status_of(cluster, SM, "plain")
        return status if condition(status, "Ready").get("status") == "True" else None

    status = await eventually(is_ready, "Ready")
    assert status["url"] == "http://plain.default.svc.cluster.local"

    # Switching to KServe replaces the Deployment and Service with an InferenceService.
    change = {"metadata": {"generation": 2}, "spec": {"runtime": "kserve"}}
    await cluster.patch(SM, "plain", change)
    await eventually(lambda: cluster.get(ISVC, "plain"), "the InferenceService")

    async def replaced() -> bool:
        gone = await cluster.get("apps/v1/deployments", "plain-predictor") is None
        gone = gone and await cluster.get(HPA, "plain-predictor") is None
        return gone and await cluster.get("v1/services", "plain") is None

    await eventually(replaced, "the Deployment, its autoscaler and the Service removed")


@pytest.mark.without_kserve
async def test_missing_kserve_is_said_in_a_condition(
    cluster: Cluster, operator: OperatorFactory
) -> None:
    await operator()
    await cluster.create(SM, served_model("nokserve", "digits"))

    async def said() -> dict[str, Any] | None:
        status = await status_of(cluster, SM, "nokserve")
        return status if condition(status, "Ready").get("reason") == "KServeNotInstalled" else None

    status = await eventually(said, "the KServeNotInstalled condition")
    assert "runtime: deployment" in condition(status, "Ready")["message"]
    await cluster.said("nokserve", "KServeNotInstalled")


async def test_a_canary_kserve_cannot_split_is_refused_in_a_condition(
    cluster: Cluster, operator: OperatorFactory
) -> None:
    """In RawDeployment mode KServe ignores canaryTrafficPercent: a canary there would be a
    full rollout, so the ServedModel says so instead of creating an InferenceService."""
    await operator(KUBELOOP_KSERVE_DEPLOYMENT_MODE="RawDeployment")
    canary = {"steps": [10, 50], "stepSeconds": 60}
    await cluster.create(SM, served_model("rawcanary", "digits", canary=canary))

    async def said() -> dict[str, Any] | None:
        status = await status_of(cluster, SM, "rawcanary")
        return status if condition(status, "Ready").get("reason") == "CanaryUnsupported" else None

    status = await eventually(said, "the CanaryUnsupported condition")
    assert (
        "RawDeployment mode ignores canaryTrafficPercent" in condition(status, "Ready")["message"]
    )
    await cluster.said("rawcanary", "CanaryUnsupported")
    assert await cluster.get(ISVC, "rawcanary") is None
