"""An object checked against a CRD as an API server checks it on create: its OpenAPI schema
(types, required fields, enums, patterns, bounds; a field the schema does not know is an error
here, where the server would prune it silently) and its `x-kubernetes-validations` rules,
evaluated with cel-python on the object with the schema's defaults filled in.

Two parts of the API server are stood in for: its defaulting, and `isSorted` from its CEL list
library (k8s.io/apiserver/pkg/cel/library). Rules on `oldSelf` (transition rules: they hold
for a create) are not evaluated.
"""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml
from celpy import celtypes

_ENV = celpy.Environment()


def _is_sorted(items: celtypes.ListType) -> celtypes.BoolType:
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(items)))


def holds(rule: str, value: Any) -> bool:
    program = _ENV.program(_ENV.compile(rule), functions={"isSorted": _is_sorted})
    return bool(program.evaluate({"self": celpy.json_to_cel(value)}))


def defaulted(schema: dict[str, Any], value: Any) -> Any:
    """`value` with the schema's defaults filled into fields of objects that are present."""
    if isinstance(value, dict):
        out = dict(value)
        for key, sub in schema.get("properties", {}).items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = defaulted(sub, out[key])
        return out
    if isinstance(value, list) and "items" in schema:
        return [defaulted(schema["items"], item) for item in value]
    return value


def violations(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    """What the rules and set-typed lists of `schema` say of `value` (defaulted)."""
    found = [
        f"{path}: {rule['message']}"
        for rule in schema.get("x-kubernetes-validations", [])
        if "oldSelf" not in rule["rule"] and not holds(rule["rule"], value)
    ]
    if schema.get("x-kubernetes-list-type") == "set":
        items = [json.dumps(v, sort_keys=True) for v in value]
        found += [f"{path}: Duplicate value: {v}" for v in sorted(set(items)) if items.count(v) > 1]
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                found += violations(sub, value[key], f"{path}.{key}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                found += violations(extra, item, f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found += violations(schema["items"], item, f"{path}[{index}]")
    return found


def _closed(schema: Any) -> Any:
    """The schema with unknown fields refused: objects with properties get
    additionalProperties false unless they keep unknown fields."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _closed(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def load(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


def check(crd: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    """Why the API server with `crd` installed would refuse `manifest`; empty when it would not."""
    group, version = manifest["apiVersion"].split("/")
    assert crd["spec"]["group"] == group, (crd["spec"]["group"], group)
    assert crd["spec"]["names"]["kind"] == manifest["kind"]
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    root = served["schema"]["openAPIV3Schema"]
    metadata_free = {**root, "properties": {**root["properties"], "metadata": {"type": "object"}}}
    validator = jsonschema.Draft7Validator(_closed(metadata_free))
    found = [
        f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(manifest)
    ]
    return found + violations(root, defaulted(root, manifest), "")
