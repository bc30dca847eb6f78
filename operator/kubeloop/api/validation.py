"""Check manifests as the API server would (CRD schema), then as the operator does (models).

No side effects: each takes a manifest dict and returns readable problems, empty when valid.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from functools import cache
from typing import Any

import jsonschema
from pydantic import ValidationError

from kubeloop.api import RESOURCES, common, crd, feedbackdataset, servedmodel, trainingjob
from kubeloop.api.common import API_VERSION, CustomResource

_BY_KIND: dict[str, type[CustomResource]] = {r.KIND: r for r in RESOURCES}
_PATTERNS = {
    common.DNS_SUBDOMAIN: "an object name: lowercase letters, digits, '-' and '.', starting and "
    "ending with a letter or digit",
    common.NO_WHITESPACE: "an image reference: one word, no whitespace",
    feedbackdataset.KEY_PREFIX: "a key prefix of path segments each ending in '/', none "
    "starting with '.' (e.g. feedback/digits/)",
    servedmodel.ALIAS: "an MLflow alias: letters, digits, '_' and '-'",
    trainingjob.REGISTERED_MODEL: "an MLflow model name: letters, digits, '-', '_' and '.', "
    "starting with a letter or digit",
}
"""What each pattern of the models means, for a person reading the schema's refusal."""


def resource_for(manifest: dict[str, Any]) -> type[CustomResource] | None:
    """The kubeloop resource class of `manifest`, or None when it is not one of ours."""
    if manifest.get("apiVersion") != API_VERSION:
        return None
    return _BY_KIND.get(str(manifest.get("kind")))


def schema_errors(manifest: dict[str, Any]) -> list[str]:
    """Problems the CRD's OpenAPI schema finds, each as 'path: message'."""
    resource = resource_for(manifest)
    if resource is None:
        return [_not_ours(manifest)]
    return [_line(path, message) for path, message in _schema_problems(resource, manifest)]


def model_errors(manifest: dict[str, Any]) -> list[str]:
    """Problems the models find beyond the schema (cross-field rules, unknown fields)."""
    resource = resource_for(manifest)
    if resource is None:
        return [_not_ours(manifest)]
    return [_line(path, message) for path, message in _model_problems(resource, manifest)]


def manifest_errors(manifest: dict[str, Any]) -> list[str]:
    """Everything the schema and the models find in `manifest`, each problem once.

    A model error about a field the schema already named is left out: both say the same
    thing in other words (e.g. a missing field, or a number below its minimum).
    """
    resource = resource_for(manifest)
    if resource is None:
        return [_not_ours(manifest)]
    schema = _schema_problems(resource, manifest)
    named = _named_fields(resource, manifest)
    models = [(p, m) for p, m in _model_problems(resource, manifest) if not _is_under(p, named)]
    return [_line(path, message) for path, message in [*schema, *models]]


def field_path(parts: Iterable[Any]) -> str:
    """A field's path as kubeloop's messages write it: spec.datasets[0].name."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _not_ours(manifest: dict[str, Any]) -> str:
    return (
        f"not a kubeloop resource: apiVersion {manifest.get('apiVersion')!r}, kind "
        f"{manifest.get('kind')!r} (expected {API_VERSION} and one of {sorted(_BY_KIND)})"
    )


def _schema_problems(
    resource: type[CustomResource], manifest: dict[str, Any]
) -> list[tuple[str, str]]:
    return [
        (field_path(e.absolute_path), _message(e)) for e in _schema_violations(resource, manifest)
    ]


def _message(error: jsonschema.ValidationError) -> str:
    meaning = _PATTERNS.get(error.validator_value) if error.validator == "pattern" else None
    return f"{error.instance!r} is not {meaning}" if meaning else error.message


def _schema_violations(
    resource: type[CustomResource], manifest: dict[str, Any]
) -> list[jsonschema.ValidationError]:
    errors = _validator(resource).iter_errors(manifest)
    return sorted(errors, key=lambda e: list(map(str, e.path)))


def _named_fields(resource: type[CustomResource], manifest: dict[str, Any]) -> set[str]:
    """The fields the schema's problems are about: a missing field's own path, not only the
    object's that lacks it (jsonschema places `required` at the object)."""
    named: set[str] = set()
    for error in _schema_violations(resource, manifest):
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [p for p in error.validator_value if p not in error.instance]
            named.update(field_path([*error.absolute_path, p]) for p in missing)
        else:
            named.add(field_path(error.absolute_path))
    return named


def _model_problems(
    resource: type[CustomResource], manifest: dict[str, Any]
) -> list[tuple[str, str]]:
    body = {k: v for k, v in manifest.items() if k != "status"}
    try:
        resource.model_validate(body)
    except ValidationError as error:
        return [_pydantic_problem(e) for e in error.errors()]
    return []


def _is_under(path: str, named: set[str]) -> bool:
    """Whether `path` is one of the `named` fields or inside one."""
    return any(path == field or path.startswith((f"{field}.", f"{field}[")) for field in named)


def _line(path: str, message: str) -> str:
    return f"{path or '(root)'}: {message}"


def _list_set(
    validator: Any, value: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    """`x-kubernetes-list-type: set`, which the API server checks and jsonschema does not."""
    del schema
    if value != "set" or not validator.is_type(instance, "array"):
        return
    items = [json.dumps(item, sort_keys=True) for item in instance]
    repeated = sorted({item for item in items if items.count(item) > 1})
    if repeated:
        yield jsonschema.ValidationError(f"items must be unique; repeated: {', '.join(repeated)}")


_Validator = jsonschema.validators.extend(
    jsonschema.Draft7Validator, {"x-kubernetes-list-type": _list_set}
)


@cache
def _validator(resource: type[CustomResource]) -> Any:
    version = crd.build_crd(resource)["spec"]["versions"][0]
    return _Validator(version["schema"]["openAPIV3Schema"])


def _pydantic_problem(error: Any) -> tuple[str, str]:
    location = field_path(error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field; check its spelling against `kubectl explain`"
    return location, message
