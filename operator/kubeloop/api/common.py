"""Pieces shared by the three resources: base model, conditions, metadata."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "kubeloop.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


def cel_rules(*rules: tuple[str, str]) -> dict[str, Any]:
    """Schema extras with (CEL rule, message) pairs that the API server checks on apply.

    They land in the CRD as x-kubernetes-validations; the models' own validators say the
    same for `kubeloop validate` and the operator.
    """
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}


LIST_SET: dict[str, Any] = {"x-kubernetes-list-type": "set"}
"""Schema extra: the API server refuses a list of scalars with a repeated item."""


class ApiModel(BaseModel):
    """Base of every API object: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=AliasGenerator(alias=to_camel),
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as it is stored in Kubernetes: camelCase, no unset optionals."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """One observation of the object's state, in the Kubernetes convention."""

    type: str
    """Kind of condition, e.g. Ready, Succeeded, RolledOut, GateFailed."""
    status: ConditionStatus
    """Whether the condition holds: True, False or Unknown."""
    reason: str = ""
    """One CamelCase word a program can match on."""
    message: str = ""
    """What happened and, when something is wrong, what to do about it."""
    last_transition_time: str = ""
    """RFC 3339 time at which status last changed."""
    observed_generation: int = 0
    """metadata.generation of the spec this condition was computed from."""


class ObjectMeta(BaseModel):
    """The subset of metadata kubeloop reads; everything else is kept as is."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    namespace: str = "default"
    generation: int = 0
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class SecretKeyRef(ApiModel):
    """A key of a Secret in the resource's namespace."""

    name: str = Field(min_length=1)
    """Name of the Secret."""
    key: str = Field(min_length=1)
    """Key inside the Secret."""


class CustomResource(BaseModel):
    """Envelope of a custom resource; subclasses fix kind, spec and status."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    KIND: ClassVar[str]
    PLURAL: ClassVar[str]
    SHORT_NAMES: ClassVar[tuple[str, ...]]
    DESCRIPTION: ClassVar[str]
    PRINTER_COLUMNS: ClassVar[tuple[dict[str, str | int], ...]]

    api_version: Literal["kubeloop.io/v1alpha1"] = Field(
        default="kubeloop.io/v1alpha1", alias="apiVersion"
    )
    kind: str
    metadata: ObjectMeta
