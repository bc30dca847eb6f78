"""Pieces shared by the three resources: base model, conditions, metadata."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import AfterValidator, AliasGenerator, BaseModel, ConfigDict, Field
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

INT64_MAX = 2**53 - 1
"""The largest integer a CRD schema can bound by: the API server reads a schema's `maximum`
as a float64, in which 2**63 - 1 rounds to 2**63 and overflows to -2**63 (it then refuses every
default, as a real v1.20 API server did). 2**53 - 1 is exact, and far above any count here."""
INT32_MAX = 2**31 - 1
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""A Kubernetes object name (DNS-1123 subdomain, at most 253 characters)."""
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""A namespace name (DNS-1123 label, at most 63 characters)."""
NO_WHITESPACE = r"^\S+$"

Int64 = Annotated[int, Field(le=INT64_MAX)]
"""An integer the API server can store (int64), bounded where a CRD schema can say it."""
Int32 = Annotated[int, Field(le=INT32_MAX)]
"""An integer that ends up in an int32 field of a child object (replicas, a Job's seconds),
or a duration in seconds that date arithmetic must be able to add (68 years at most)."""

ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
"""The name of a Kubernetes object in the same namespace."""

_T = TypeVar("_T")


def _no_repeats(items: list[_T]) -> list[_T]:
    repeated = sorted({str(item) for item in items if items.count(item) > 1})
    if repeated:
        raise ValueError(f"items must be unique; repeated: {', '.join(repeated)}")
    return items


StringSet = Annotated[list[str], Field(json_schema_extra=LIST_SET), AfterValidator(_no_repeats)]
"""A list of strings without repeats, refused by the API server (list type set) and the models."""
ObjectNameSet = Annotated[
    list[ObjectName], Field(json_schema_extra=LIST_SET), AfterValidator(_no_repeats)
]
"""Names of objects in the same namespace, without repeats."""


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
    observed_generation: Int64 = 0
    """metadata.generation of the spec this condition was computed from."""


class ObjectMeta(BaseModel):
    """The subset of metadata kubeloop reads; everything else is kept as is.

    Names are what the API server allows, so that no name a cluster would refuse reaches a
    runtime that builds file names or S3 keys from it (`kubeloop up`).
    """

    model_config = ConfigDict(extra="allow")

    name: ObjectName
    namespace: str = Field(default="default", max_length=63, pattern=DNS_LABEL)
    generation: Int64 = 0
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class SecretKeyRef(ApiModel):
    """A key of a Secret in the resource's namespace."""

    name: ObjectName
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
