"""Several nodes: the TrainJob (Kubeflow Trainer) and the JobSet the operator renders, checked
as data against their real CRDs (tests/vendor, versions in its README): schema, unknown fields
and CEL rules, for 1 x 1, 1 x P and N x P; the Job for one node beside them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubeloop.reconcile import builders
from tests import crd_schema
from tests.unit.test_builders_kubernetes import DEFAULTS, RICH, training_job, validate

VENDOR = Path(__file__).resolve().parents[1] / "vendor"
TRAINJOB_CRD = crd_schema.load(VENDOR / "kubeflow-trainer" / "trainer.kubeflow.org_trainjobs.yaml")
JOBSET_CRD = crd_schema.load(VENDOR / "jobset" / "jobset.x-k8s.io_jobsets.yaml")
TRAINER = VENDOR / "kubeflow-trainer"
SHAPES = [(1, 1), (1, 4), (3, 2)]
"""(numNodes, numProcPerNode)"""


def shaped(nodes: int, processes: int, **spec: Any) -> Any:
    return training_job(distributed={"numNodes": nodes, "numProcPerNode": processes}, **spec)


@pytest.mark.parametrize(("nodes", "processes"), SHAPES)
def test_a_trainjob_is_valid_and_carries_the_spec(nodes: int, processes: int) -> None:
    tj = shaped(nodes, processes, queueName="gpus", resources={"gpu": processes})
    trainjob = builders.build_train_job(tj, DEFAULTS)
    assert crd_schema.check(TRAINJOB_CRD, trainjob) == []
    spec = trainjob["spec"]
    assert spec["runtimeRef"] == {"name": "torch-distributed"}
    trainer = spec["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (nodes, processes)
    assert trainer["command"] == [
        "python",
        "-m",
        "torch.distributed.run",
        "-m",
        "kubeloop.training",
    ]
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == processes
    assert trainjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpus"
    (patch,) = spec["runtimePatches"]
    (replicated,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert replicated["name"] == "node"
    pod = replicated["template"]["spec"]["template"]
    assert builders.MANIFEST_ANNOTATION in pod["metadata"]["annotations"]
    assert pod["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpus"
    (container,) = pod["spec"]["containers"]
    assert container["name"] == "node"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/etc/kubeloop", "/tmp"} <= mounts
    assert ("/dev/shm" in mounts) == (nodes * processes > 1)


def test_a_trainjob_passes_the_templates_scheduling_on() -> None:
    rich = {**RICH.spec.to_wire(), "distributed": {"numNodes": 2, "numProcPerNode": 2}}
    trainjob = builders.build_train_job(training_job(**rich), DEFAULTS)
    assert crd_schema.check(TRAINJOB_CRD, trainjob) == []
    pod = trainjob["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"][
        "replicatedJobs"
    ][0]["template"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "trainer"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "A100"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    env = {e["name"] for e in trainjob["spec"]["trainer"]["env"]}
    assert {"HF_TOKEN", "KUBELOOP_MLFLOW_TRACKING_URI", "HOME"} <= env


def test_the_runtime_a_trainjob_names_has_the_job_and_container_it_patches() -> None:
    """Kubeflow Trainer's own torch-distributed ClusterTrainingRuntime, valid for its CRD,
    is the one TrainJobs name, with the replicated job and container their patch targets."""
    runtime = crd_schema.load(TRAINER / "torch_distributed.yaml")
    crd = crd_schema.load(TRAINER / "trainer.kubeflow.org_clustertrainingruntimes.yaml")
    assert crd_schema.check(crd, runtime) == []
    assert runtime["metadata"]["name"] == builders.TRAINJOB_RUNTIME
    (replicated,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert replicated["name"] == builders.TRAINJOB_NODE
    containers = replicated["template"]["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == [builders.TRAINJOB_NODE]


def test_the_check_catches_what_the_trainer_crd_refuses() -> None:
    trainjob = builders.build_train_job(shaped(2, 2), DEFAULTS)
    trainjob["spec"]["trainer"]["numNodes"] = "two"
    trainjob["spec"]["runtimeRef"]["kind"] = "x" * 300
    trainjob["spec"]["trainer"]["replicas"] = 2
    trainjob["metadata"]["name"] = "Digits"
    found = crd_schema.check(TRAINJOB_CRD, trainjob)
    assert any(f.startswith("spec.trainer.numNodes: 'two' is not of type 'integer'") for f in found)
    assert any(f.startswith("spec.runtimeRef.kind:") for f in found)
    assert any("'replicas' was unexpected" in f for f in found)
    assert ": metadata.name must match RFC 1035 DNS label format" in found


@pytest.mark.parametrize(("nodes", "processes"), SHAPES)
def test_a_jobset_is_valid_and_ranks_its_nodes(nodes: int, processes: int) -> None:
    jobset = builders.build_jobset(shaped(nodes, processes, queueName="gpus"), DEFAULTS)
    assert crd_schema.check(JOBSET_CRD, jobset) == []
    (replicated,) = jobset["spec"]["replicatedJobs"]
    job = replicated["template"]["spec"]
    assert (replicated["replicas"], job["parallelism"], job["completions"]) == (1, nodes, nodes)
    assert job["completionMode"] == "Indexed"
    # Its Job, as the JobSet controller makes it, is a valid batch/v1 Job.
    validate({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": job})
    (container,) = job["template"]["spec"]["containers"]
    name = jobset["metadata"]["name"]
    assert container["command"][:3] == ["python", "-m", "torch.distributed.run"]
    assert f"--nnodes={nodes}" in container["command"]
    assert f"--nproc-per-node={processes}" in container["command"]
    assert f"--master-addr={name}-node-0-0.{name}" in container["command"]
    assert "--node-rank=$(JOB_COMPLETION_INDEX)" in container["command"]
    assert "JOB_COMPLETION_INDEX" in {e["name"] for e in container["env"]}
    assert jobset["spec"]["network"] == {"enableDNSHostnames": True}
    assert jobset["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpus"
