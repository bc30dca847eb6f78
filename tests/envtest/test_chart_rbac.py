"""The Helm chart's RBAC on a real API server: the operator, with its release's ServiceAccount
token and the Deployment's arguments (leader election through kopf's peering included),
reconciles all three kinds through every path that calls the API, in both modes (all
namespaces: a ClusterRole; watchNamespaces: a Role in each) and is refused nothing.

Then, after every other envtest test, the chart is checked against what the operator's
ServiceAccounts actually asked for in all of them (the audit log): each (API group,
resource[/subresource], verb) the chart grants was used, and each one used is granted, in
both modes. Nothing about the operator's calls is written down here: they are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kubeloop.api.samples import LIVE_ACCURACY
from kubeloop.local import services
from kubeloop.storage import ObjectStore
from tests import helm_chart
from tests.envtest import audit, control_plane, kubelet, runs
from tests.envtest.conftest import TRAINJOB_CRD
from tests.envtest.releases import Release
from tests.feedback_samples import (
    PREFIX,
    feedback_dataset,
    new_bucket,
    put_samples,
    s3_secret,
    s3_settings,
)
from tests.helm_chart import CLUSTER, Rule
from tests.model_versions import registered, served_model, unique
from tests.operator_harness import (
    FD,
    ISVC,
    SM,
    TJ,
    Cluster,
    Operators,
    eventually,
    training_job,
)

pytestmark = pytest.mark.slow
DEPLOYMENTS, SERVICES = "apps/v1/deployments", "v1/services"
JOBSETS = "jobset.x-k8s.io/v1alpha2/jobsets"
TRAINJOBS = "trainer.kubeflow.org/v1alpha1/trainjobs"
AUTOSCALERS = "autoscaling/v2beta2/horizontalpodautoscalers"
"""Kubernetes 1.20's (the envtest release): autoscaling/v2 came in 1.23."""
PluralOf = Callable[[str, str], str]
"""(apiVersion, kind) -> the resource's plural, as the API server's discovery says."""


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["cluster", "namespaces"])
async def test_the_releases_service_account_reconciles_every_kind_unrefused(
    mode: str,
    cluster: Cluster,
    operators: Operators,
    chart_releases: dict[str, Release],
    object_store: ObjectStore,
    mlflow_server: services.Service,
    plane: control_plane.ControlPlane,
) -> None:
    release = chart_releases[mode]
    where = (
        dataclasses.replace(cluster, namespace=release.watched[0]) if release.watched else cluster
    )
    model = unique("rbac")
    await registered(mlflow_server.url, model, {"accuracy": 0.9})
    await where.create("v1/secrets", s3_secret("kubeloop-s3"))
    await where.create(TJ, training_job("left"))

    await operators.start(
        *release.operator_args(),
        kubeconfig=release.kubeconfig,
        KUBELOOP_MLFLOW_TRACKING_URI=mlflow_server.url,
        KUBELOOP_DISCOVERY_SECONDS="0",
        **s3_settings(object_store),
    )
    await eventually(lambda: where.get("batch/v1/jobs", "left"), "the left TrainingJob's Job")
    # Its pod runs (the test plays its node): the operator reads the trainer's log tail for
    # the progress (no kubelet answers here, but the request is made).
    pod = await eventually(lambda: kubelet.job_pod(where, "left"), "the left Job's pod", 30)
    await kubelet.report_running(where, pod)
    await eventually(lambda: _phase(where, "left", "Running"), "the left TrainingJob Running")
    await eventually(lambda: _peered(where, release), "the operator's record in its peering")
    for namespace in release.watched[1:]:  # a Role in each watched namespace
        await where.create(TJ, training_job("elsewhere"), namespace)
        await eventually(lambda n=namespace: where.get("batch/v1/jobs", "elsewhere", n), namespace)  # type: ignore[misc]  # the default binds the loop variable

    # A dataset reading its own S3 Secret and holding back on a ServedModel's KPI.
    bucket = new_bucket(object_store)
    await where.create("v1/secrets", s3_secret("fd-s3"))
    await asyncio.to_thread(
        object_store.put_json, bucket, f"{PREFIX}{LIVE_ACCURACY}", {"versions": {}}
    )
    await put_samples(object_store, bucket, 3)
    kpi = {"servedModel": "served", "minAccuracy": 0.9}
    dataset = feedback_dataset("fd", bucket, threshold=3, kpi=kpi)
    dataset["spec"]["storage"]["secretRef"] = "fd-s3"
    await where.create(FD, dataset)

    # A ServedModel through both runtimes and back, and a spec change in each.
    await where.create(SM, served_model("served", model))
    await eventually(lambda: where.get(ISVC, "served"), "the InferenceService", 30)
    await eventually(lambda: where.get(TJ, "fd-gen-1"), "the dataset's TrainingJob", 30)
    # Someone labels the dataset: the event's version is not the one the operator wrote, so
    # its reconcile reads the dataset afresh (get).
    await where.patch(FD, "fd", {"metadata": {"labels": {"team": "vision"}}})
    await change(where, {"minReplicas": 2, "maxReplicas": 2})
    await eventually(lambda: _isvc_replicas(where, 2), "the InferenceService patched")
    await change(where, {"runtime": "deployment"})
    await eventually(lambda: where.get(SERVICES, "served"), "the Service", 30)
    await eventually(lambda: _gone(where, ISVC, "served"), "the InferenceService deleted")
    service = await eventually(lambda: where.get(SERVICES, "served"), "the Service")
    label = next(iter(service["metadata"]["labels"]))
    patch = {"metadata": {"labels": {label: None}}}
    await where.patch(SERVICES, "served", patch)  # someone edits it: the operator restores it
    await eventually(lambda: _labelled(where, label), "the Service's label restored")
    await change(where, {"minReplicas": 3, "maxReplicas": 3})
    await eventually(lambda: _deployment_replicas(where, 3), "the Deployment patched")
    await change(where, {"minReplicas": 1, "maxReplicas": 4})  # autoscaled
    hpa = await eventually(lambda: where.get(AUTOSCALERS, "served-predictor"), "the autoscaler")
    resource = hpa["spec"]["metrics"][0]["resource"]  # the API server kept what it knows
    assert resource["target"] == {"type": "Utilization", "averageUtilization": 80}
    await change(where, {"minReplicas": 2, "maxReplicas": 2})
    await eventually(lambda: _gone(where, AUTOSCALERS, "served-predictor"), "autoscaler deleted")
    await change(where, {"maxReplicas": 3})
    await eventually(lambda: where.get(AUTOSCALERS, "served-predictor"), "the autoscaler again")
    await change(where, {"runtime": "kserve"})
    await eventually(lambda: _gone(where, DEPLOYMENTS, "served-predictor"), "Deployment deleted")
    await eventually(lambda: _gone(where, AUTOSCALERS, "served-predictor"), "autoscaler deleted")
    await eventually(lambda: where.get(ISVC, "served"), "the InferenceService again", 30)

    # Several nodes: a JobSet while only JobSet is installed, a TrainJob once Kubeflow Trainer
    # is (the operator asks the API server each time: KUBELOOP_DISCOVERY_SECONDS=0).
    await where.create(TJ, training_job("nodes-set", distributed={"numNodes": 2}))
    await eventually(lambda: where.get(JOBSETS, "nodes-set"), "the JobSet", 30)
    await eventually(lambda: _recorded(where, "nodes-set"), "the JobSet recorded and looked at")
    with trainer_installed(plane):
        await where.create(TJ, training_job("nodes-train", distributed={"numNodes": 2}))
        await eventually(lambda: where.get(TRAINJOBS, "nodes-train"), "the TrainJob", 30)
        await eventually(lambda: _recorded(where, "nodes-train"), "the TrainJob looked at")


@contextlib.contextmanager
def trainer_installed(plane: control_plane.ControlPlane) -> Iterator[None]:
    """Kubeflow Trainer's TrainJob CRD installed, and removed after (the other mode's run
    starts without it)."""
    crd = list(control_plane.load_crds([TRAINJOB_CRD]))
    name = crd[0]["metadata"]["name"]
    with plane.client() as client:
        control_plane.install_crds(client, crd)
    try:
        yield
    finally:
        with plane.client() as client:
            client.delete(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            deadline = time.monotonic() + 60
            while (
                client.get(
                    f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
                ).status_code
                != 404
            ):
                assert time.monotonic() < deadline, f"CRD {name} not deleted within 60s"
                time.sleep(0.2)


async def _phase(cluster: Cluster, name: str, phase: str) -> dict[str, Any] | None:
    found = ((await cluster.get(TJ, name)) or {}).get("status") or {}
    return found if found.get("phase") == phase else None


async def _recorded(cluster: Cluster, name: str) -> dict[str, Any] | None:
    """The TrainingJob's status once it names its trainer and says it is Pending on it."""
    status = await cluster.get(TJ, name)
    found = (status or {}).get("status") or {}
    return found if found.get("jobName") and found.get("phase") == "Pending" else None


@pytest.mark.after_envtest
@pytest.mark.parametrize("mode", ["cluster", "namespaces"])
def test_the_chart_grants_exactly_what_the_operator_asked_for(
    mode: str, request: pytest.FixtureRequest
) -> None:
    assets, no_assets = control_plane.find_assets()
    if assets is None:
        pytest.skip(no_assets)
    incomplete = runs.what_did_not_run(request.session)
    if incomplete:
        pytest.skip(f"the operator's requests are known only after all envtest tests: {incomplete}")
    # Only now the session's fixtures: a partial run need not start a control plane for this.
    plane: control_plane.ControlPlane = request.getfixturevalue("plane")
    audit_log: audit.AuditLog = request.getfixturevalue("audit_log")
    release: Release = request.getfixturevalue("chart_releases")[mode]
    requests = audit_log.read(users={release.user})
    assert requests, f"{release.user} made no request"
    with plane.client() as client:
        want = needed(release, requests, lambda v, k: control_plane.resource_of(client, v, k)[0])
    have = helm_chart.granted(release.documents, release.account, release.namespace)
    assert set(have) == set(want), "scopes (namespaces, or the cluster) differ"
    for scope, rules in want.items():
        missing, unused = sorted(rules - have[scope]), sorted(have[scope] - rules)
        assert (missing, unused) == ([], []), (
            f"{mode} mode, {scope}: missing {missing}; granted but never used {unused} (a "
            "rule only the cluster mode used means a path test_the_releases_service_account"
            "_reconciles_every_kind_unrefused does not take yet)"
        )


# --- what the operator asked for ---------------------------------------------------------


def needed(
    release: Release, requests: list[audit.Request], plural_of: PluralOf
) -> dict[str, set[Rule]]:
    """scope -> the rules the release's operator used there.

    Every resource request counts, whatever its answer (a 404 was authorized first).
    Non-resource requests (discovery) need no rule: every authenticated user may make them.
    A write setting blockOwnerDeletion in an ownerReference needs `update` on the owner's
    finalizers where OwnerReferencesPermissionEnforcement is on (as here): the admission
    plugin asks the authorizer, which the audit log does not show as a request of its own.
    A server-side apply that created its object (a patch answered 201) needs `create` too:
    the API server asks the authorizer for it before creating through a patch.
    With watchNamespaces the chart gives every watched namespace the same Role: their rules
    are the union over those namespaces.
    """
    by_scope: dict[str, set[Rule]] = {}
    for found in requests:
        if not found.resource:
            continue
        scope = found.namespace or CLUSTER
        rules = {found.rule, *_owner_rules(found, plural_of)}
        if found.verb == "patch" and found.code == 201:
            rules.add((found.group, found.rule[1], "create"))
        by_scope.setdefault(scope, set()).update(rules)
    if not release.watched:
        return {CLUSTER: set().union(*by_scope.values())}
    outside = set(by_scope) - {CLUSTER, *release.watched}
    assert not outside, f"requests in namespaces it does not watch: {sorted(outside)}"
    namespaced = set().union(*(by_scope.get(n, set()) for n in release.watched))
    scopes = dict.fromkeys(release.watched, namespaced)
    if CLUSTER in by_scope:
        scopes[CLUSTER] = by_scope[CLUSTER]
    return scopes


def _owner_rules(found: audit.Request, plural_of: PluralOf) -> set[Rule]:
    body = found.body if isinstance(found.body, dict) else {}
    rules = set()
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("blockOwnerDeletion"):
            group = ref["apiVersion"].rpartition("/")[0]
            rules.add((group, f"{plural_of(ref['apiVersion'], ref['kind'])}/finalizers", "update"))
    return rules


# --- the scenario's steps ----------------------------------------------------------------


async def change(cluster: Cluster, spec: dict[str, Any]) -> None:
    await cluster.patch(SM, "served", {"spec": spec})


async def _peered(cluster: Cluster, release: Release) -> dict[str, Any] | None:
    name = release.operator_args()[-1].removeprefix("--peering=")
    if release.watched:
        found = await cluster.get("kopf.dev/v1/kopfpeerings", name)
    else:
        _, found = await cluster.call("GET", f"/apis/kopf.dev/v1/clusterkopfpeerings/{name}")
    return dict((found or {}).get("status") or {}) or None


async def _gone(cluster: Cluster, resource: str, name: str) -> bool:
    return await cluster.get(resource, name) is None


async def _isvc_replicas(cluster: Cluster, replicas: int) -> bool:
    isvc = await cluster.get(ISVC, "served")
    return bool(isvc) and isvc["spec"]["predictor"].get("minReplicas") == replicas  # type: ignore[index]  # bool(isvc) checked


async def _deployment_replicas(cluster: Cluster, replicas: int) -> bool:
    deployment = await cluster.get(DEPLOYMENTS, "served-predictor")
    return bool(deployment) and deployment["spec"]["replicas"] == replicas  # type: ignore[index]  # bool(deployment) checked


async def _labelled(cluster: Cluster, label: str) -> bool:
    service = await cluster.get(SERVICES, "served")
    return label in ((service or {}).get("metadata", {}).get("labels") or {})
