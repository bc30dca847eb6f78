"""Check manifests as the API server would (CRD schema), then as the operator does (models).

No side effects: both take a manifest dict and return readable problems, empty when valid.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jsonschema
from pydantic import ValidationError

from kubeloop.api import RESOURCES, crd
from kubeloop.api.common import API_VERSION, CustomResource

_BY_KIND: dict[str, type[CustomResource]] = {r.KIND: r for r in RESOURCES}


def resource_for(manifest: dict[str, Any]) -> type[CustomResource] | None:
    """The kubeloop resource class of `manifest`, or None when it is not one of ours."""
    if manifest.get("apiVersion") != API_VERSION:
        return None
    return _BY_KIND.get(str(manifest.get("kind")))


def schema_errors(manifest: dict[str, Any]) -> list[str]:
    """Problems the CRD's OpenAPI schema finds, each as 'path: message'."""
    resource = resource_for(manifest)
    if resource is None:
        return [
            f"not a kubeloop resource: apiVersion {manifest.get('apiVersion')!r}, kind "
            f"{manifest.get('kind')!r} (expected {API_VERSION} and one of {sorted(_BY_KIND)})"
        ]
    validator = jsonschema.Draft7Validator(_openapi_schema(resource))
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.path)))
    return [f"{_path(e.absolute_path) or '(root)'}: {e.message}" for e in errors]


def model_errors(manifest: dict[str, Any]) -> list[str]:
    """Problems the models find beyond the schema (cross-field rules, unknown fields)."""
    resource = resource_for(manifest)
    if resource is None:
        return schema_errors(manifest)
    body = {k: v for k, v in manifest.items() if k != "status"}
    try:
        resource.model_validate(body)
    except ValidationError as error:
        return [_pydantic_message(e) for e in error.errors()]
    return []


def manifest_errors(manifest: dict[str, Any]) -> list[str]:
    """Everything wrong with `manifest`: schema problems first, else model problems."""
    return schema_errors(manifest) or model_errors(manifest)


@cache
def _openapi_schema(resource: type[CustomResource]) -> dict[str, Any]:
    version = crd.build_crd(resource)["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _pydantic_message(error: Any) -> str:
    location = _path(error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field; check its spelling against `kubectl explain`"
    return f"{location}: {message}"
