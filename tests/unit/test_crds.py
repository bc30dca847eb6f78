"""The CRDs in crds/ are generated from the models and are valid Kubernetes objects."""

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kubeloop import api, cli
from kubeloop.api import crd

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSIONS = ["1.25.0", kubernetes_validate.latest_version()]


@pytest.mark.parametrize("directory", ["crds", "helm/kubeloop/crds"])
def test_committed_crds_match_the_models(directory: str) -> None:
    assert cli.main(["crds", "--check", "--dir", str(ROOT / directory)]) == 0


def test_check_names_the_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["crds", "--dir", str(tmp_path)]) == 0
    stale = tmp_path / crd.crd_filename(api.ServedModel)
    stale.write_text(stale.read_text().replace("kserve", "knative"))
    assert cli.main(["crds", "--check", "--dir", str(tmp_path)]) == 1
    assert str(stale) in capsys.readouterr().err


@pytest.mark.parametrize("resource", api.RESOURCES, ids=lambda r: r.KIND)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_crd_is_a_valid_kubernetes_object(resource: type[api.TrainingJob], version: str) -> None:
    kubernetes_validate.validate(crd.build_crd(resource), version, strict=True)


@pytest.mark.parametrize("resource", api.RESOURCES, ids=lambda r: r.KIND)
def test_crd_shape(resource: type[api.TrainingJob]) -> None:
    doc = crd.build_crd(resource)
    names = doc["spec"]["names"]
    (version,) = doc["spec"]["versions"]
    assert names["categories"] == ["kubeloop"]
    assert names["shortNames"] == list(resource.SHORT_NAMES)
    assert version["subresources"] == {"status": {}}
    assert {c["name"] for c in version["additionalPrinterColumns"]} >= {"Age"}
    _assert_structural(version["schema"]["openAPIV3Schema"], "root")


def test_schema_carries_required_enums_minimums_and_defaults() -> None:
    spec = _spec_schema(api.ServedModel)
    assert spec["required"] == ["registeredModel"]
    assert spec["properties"]["runtime"]["enum"] == ["kserve", "deployment"]
    assert spec["properties"]["runtime"]["default"] == "kserve"
    threshold = _spec_schema(api.FeedbackDataset)["properties"]["retrain"]["properties"][
        "threshold"
    ]
    assert (threshold["type"], threshold["minimum"]) == ("integer", 1)
    gpu = _spec_schema(api.TrainingJob)["properties"]["resources"]["properties"]["gpu"]
    assert gpu == {**gpu, "type": "integer", "minimum": 0, "default": 0}


def test_every_field_is_described_for_kubectl_explain() -> None:
    for resource in api.RESOURCES:
        for path, node in _walk(_spec_schema(resource), "spec"):
            assert node.get("description"), f"{resource.KIND} {path} has no description"


def test_generated_files_are_yaml_of_the_crd(tmp_path: Path) -> None:
    cli.main(["crds", "--dir", str(tmp_path)])
    for resource in api.RESOURCES:
        text = (tmp_path / crd.crd_filename(resource)).read_text()
        assert yaml.safe_load(text) == crd.build_crd(resource)


def _spec_schema(resource: Any) -> dict[str, Any]:
    schema: dict[str, Any] = crd.build_crd(resource)["spec"]["versions"][0]["schema"]
    return schema["openAPIV3Schema"]["properties"]["spec"]  # type: ignore[no-any-return]


def _walk(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, child in node.get("properties", {}).items():
        found.append((f"{path}.{name}", child))
        found.extend(_walk(child, f"{path}.{name}"))
    if "items" in node:
        found.extend(_walk(node["items"], f"{path}[]"))
    return found


def _assert_structural(node: dict[str, Any], path: str) -> None:
    """Kubernetes' structural-schema rules that pydantic output could break."""
    untyped = ("x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string")
    assert "type" in node or any(node.get(allowed) for allowed in untyped), path
    for banned in ("$ref", "anyOf", "oneOf", "allOf", "title", "const", "additionalProperties"):
        if banned == "additionalProperties" and "properties" not in node:
            continue
        assert banned not in node, f"{path} has {banned}"
    for name, child in node.get("properties", {}).items():
        _assert_structural(child, f"{path}.{name}")
    if "items" in node:
        _assert_structural(node["items"], f"{path}[]")
