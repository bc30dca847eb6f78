"""kubeloop's CRDs on a real API server: stored as generated (but the CEL rules, which v1.20
predates), the printer columns `kubectl get` shows, the server's defaults being the models'
defaults, and set-typed lists refusing duplicates."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeloop.api import validation
from kubeloop.reconcile.common import spec_body
from tests.envtest import control_plane
from tests.operator_harness import FD, SM, TJ, Cluster, not_kept, path

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
CRDS = sorted((ROOT / "crds").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "examples" / "digits").glob("*.yaml"))
PLURALS = {"TrainingJob": TJ, "FeedbackDataset": FD, "ServedModel": SM}
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


@pytest.mark.parametrize("crd_file", CRDS, ids=[p.stem for p in CRDS])
async def test_stored_as_generated(cluster: Cluster, crd_file: Path) -> None:
    generated = yaml.safe_load(crd_file.read_text())
    name = generated["metadata"]["name"]
    code, stored = await cluster.call(
        "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
    )
    assert code == 200, stored
    for sent, kept in zip(generated["spec"]["versions"], stored["spec"]["versions"], strict=True):
        sent = control_plane.without_unsupported(sent)
        assert kept["schema"] == sent["schema"], "the server dropped or changed schema fields"
        assert kept["subresources"] == sent["subresources"]
        columns = [(c["name"], c["type"], c["jsonPath"]) for c in kept["additionalPrinterColumns"]]
        assert columns == [
            (c["name"], c["type"], c["jsonPath"]) for c in sent["additionalPrinterColumns"]
        ]
    assert stored["spec"]["names"] == {
        **generated["spec"]["names"],
        "listKind": stored["spec"]["names"]["listKind"],
    }


async def test_kubectl_get_shows_the_printer_columns(cluster: Cluster) -> None:
    body = manifest("trainingjob-base")
    await cluster.create(TJ, body)
    status = {
        "phase": "Succeeded",
        "progress": {"epoch": 30, "epochs": 30, "percent": 100},
        "modelVersion": "3",
        "metrics": {"overall": 0.97},
    }
    await cluster.patch(TJ, body["metadata"]["name"], {"status": status}, "status")
    url = path(TJ, namespace=cluster.namespace)
    async with cluster.http.request("GET", url, headers={"Accept": TABLE}) as response:
        table = await response.json()
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == ["Name", "Phase", "Progress", "Model", "Version", "Accuracy", "Age"]
    (row,) = table["rows"]
    assert row["cells"][:6] == ["digits-base", "Succeeded", 100, "digits", "3", 0.97]


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
async def test_the_servers_defaults_are_the_models(cluster: Cluster, example: Path) -> None:
    """Each example, and the example with every optional spec field left out: the server
    keeps what was sent, and each default it adds is the one the models give. (It defaults
    fields of objects that are present; the models also fill absent objects.)"""
    full = manifest(example.stem)
    for body in (full, minimal(full)):
        body["metadata"]["name"] = f"{example.stem}-{'full' if body is full else 'minimal'}"
        sent = copy.deepcopy(body)
        stored = await cluster.create(PLURALS[body["kind"]], body)
        model = validation.resource_for(sent)
        assert model is not None
        read = model.model_validate(spec_body(sent)).spec.to_wire()
        assert not_kept(sent["spec"], stored["spec"]) == [], "pruned or changed by the server"
        assert not_kept(stored["spec"], read) == [], "the server's defaults differ"
    assert stored["spec"] != sent["spec"], "the server defaulted nothing in the minimal one"


async def test_processes_per_node_are_a_number_or_auto(cluster: Cluster) -> None:
    """numProcPerNode is int-or-string: the server keeps 2 a number, and defaults auto."""
    for name, distributed, stored_as in (
        ("ddp-two", {"numProcPerNode": 2}, {"numNodes": 1, "numProcPerNode": 2}),
        ("ddp-auto", {}, {"numNodes": 1, "numProcPerNode": "auto"}),
    ):
        body = manifest("trainingjob-base")
        body["metadata"]["name"] = name
        body["spec"]["distributed"] = distributed
        stored = await cluster.create(TJ, body)
        assert stored["spec"]["distributed"] == stored_as


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("FeedbackDataset", ("spec", "classes"), ["0", "1", "1"]),
        ("ServedModel", ("spec", "canary", "steps"), [10, 10, 50]),
    ],
)
async def test_set_typed_lists_refuse_duplicates(
    cluster: Cluster, kind: str, field: tuple[str, ...], value: list[Any]
) -> None:
    body = manifest({"FeedbackDataset": "feedbackdataset", "ServedModel": "servedmodel"}[kind])
    target = body
    for key in field[:-1]:
        target = target.setdefault(key, {})
    target[field[-1]] = value
    body["metadata"]["namespace"] = cluster.namespace
    code, answer = await cluster.call(
        "POST", path(PLURALS[kind], namespace=cluster.namespace), body
    )
    assert code == 422, answer
    assert "Duplicate value" in answer["message"]


def columns(version: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(c["name"], c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]


def manifest(stem: str) -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "examples" / "digits" / f"{stem}.yaml").read_text()))


def minimal(body: dict[str, Any]) -> dict[str, Any]:
    """`body` with only the spec fields the CRD requires (at the top of the spec)."""
    crd = next(
        yaml.safe_load(p.read_text())
        for p in CRDS
        if yaml.safe_load(p.read_text())["spec"]["names"]["kind"] == body["kind"]
    )
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    required = schema.get("required") or []
    spec = {k: v for k, v in body["spec"].items() if k in required}
    return {**copy.deepcopy(body), "spec": copy.deepcopy(spec)}
