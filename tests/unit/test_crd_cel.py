"""The CRDs' cross-field rules, checked as the API server checks them on `kubectl apply`.

Each `x-kubernetes-validations` rule is compiled and evaluated with cel-python on the
defaulted object, and `x-kubernetes-list-type: set` lists are checked for repeats. Two
parts of the API server are stood in for here: its defaulting (schema defaults filled into
missing fields) and `isSorted`, from its CEL list library (k8s.io/apiserver/pkg/cel/library).
Every example passes; each broken spec is refused with the rule's message, and the models
(`kubeloop validate`, the operator) refuse it too.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import pytest

from kubeloop import api, manifests
from kubeloop.api import crd, validation
from tests import crd_schema

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RESOURCES = {r.KIND: r for r in (api.TrainingJob, api.FeedbackDataset, api.ServedModel)}
_ENV = celpy.Environment()


def apply(manifest: dict[str, Any]) -> list[str]:
    """What the API server's CEL rules and list types say of `manifest`."""
    schema = crd.build_crd(RESOURCES[manifest["kind"]])["spec"]["versions"][0]["schema"]
    root = schema["openAPIV3Schema"]
    return crd_schema.violations(root, crd_schema.defaulted(root, manifest), "")


def _example(kind: str) -> dict[str, Any]:
    for _, manifest in manifests.load(EXAMPLES / "digits"):
        if manifest["kind"] == kind:
            return copy.deepcopy(manifest)
    raise AssertionError(f"no {kind} example")


def _rules(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [r["rule"] for r in node.get("x-kubernetes-validations", [])]
        return own + [rule for value in node.values() for rule in _rules(value)]
    if isinstance(node, list):
        return [rule for value in node for rule in _rules(value)]
    return []


def test_every_rule_compiles_and_the_resources_have_some() -> None:
    rules = [rule for r in RESOURCES.values() for rule in _rules(crd.build_crd(r))]
    assert len(rules) >= 4
    for rule in rules:
        _ENV.compile(rule)


def test_every_example_passes() -> None:
    examples = manifests.load(EXAMPLES / "digits")
    assert {m["kind"] for _, m in examples} == set(RESOURCES)
    for file, manifest in examples:
        assert apply(manifest) == [], file


def _broken_dataset(manifest: dict[str, Any]) -> None:
    manifest["spec"]["datasets"][0]["feedbackDataset"] = "digits-feedback"


def _no_source(manifest: dict[str, Any]) -> None:
    template = manifest["spec"]["retrain"]["trainingTemplate"]
    template["datasets"][0] = {"name": "base"}


def _replicas(manifest: dict[str, Any]) -> None:
    manifest["spec"]["minReplicas"] = 3  # maxReplicas left to its default, 1


def _steps_out_of_order(manifest: dict[str, Any]) -> None:
    manifest["spec"]["canary"] = {"steps": [50, 20]}


def _steps_repeated(manifest: dict[str, Any]) -> None:
    manifest["spec"]["canary"] = {"steps": [20, 20]}


def _shares_over_the_request(manifest: dict[str, Any]) -> None:
    manifest["spec"]["review"] = {"auditShare": 0.75, "goldShare": 0.5}


def _classes_repeated(manifest: dict[str, Any]) -> None:
    manifest["spec"]["classes"] = ["0", "1", "1"]


def _no_processes(manifest: dict[str, Any]) -> None:
    manifest["spec"]["distributed"] = {"numProcPerNode": 0}


def _processes_in_words(manifest: dict[str, Any]) -> None:
    manifest["spec"]["distributed"] = {"numProcPerNode": "many"}


@pytest.mark.parametrize(
    ("kind", "breaks", "refusal"),
    [
        (
            "TrainingJob",
            _broken_dataset,
            ".spec.datasets[0]: set exactly one of uri or feedbackDataset",
        ),
        (
            "FeedbackDataset",
            _no_source,
            ".spec.retrain.trainingTemplate.datasets[0]: set exactly one of uri or feedbackDataset",
        ),
        (
            "TrainingJob",
            _no_processes,
            ".spec.distributed.numProcPerNode: numProcPerNode is a number of processes",
        ),
        (
            "TrainingJob",
            _processes_in_words,
            ".spec.distributed.numProcPerNode: numProcPerNode is a number of processes",
        ),
        ("ServedModel", _replicas, ".spec: minReplicas must not be above maxReplicas"),
        ("ServedModel", _steps_out_of_order, ".spec.canary.steps: canary steps must be strictly"),
        ("ServedModel", _steps_repeated, ".spec.canary.steps: Duplicate value: 20"),
        ("FeedbackDataset", _classes_repeated, '.spec.classes: Duplicate value: "1"'),
        (
            "FeedbackDataset",
            _shares_over_the_request,
            ".spec.review: auditShare and goldShare together exceed the whole request",
        ),
    ],
)
def test_a_broken_spec_is_refused_on_apply_and_by_the_models(
    kind: str, breaks: Any, refusal: str
) -> None:
    manifest = _example(kind)
    breaks(manifest)
    refused = apply(manifest)
    assert len(refused) == 1, refused
    assert refused[0].startswith(refusal)
    assert validation.model_errors(manifest), "the models must refuse it too"
