"""What every reconcile shares: names, labels, owners, events, times and merge patches.

No side effects.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from kubeloop.api import validation
from kubeloop.api.common import CustomResource

LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "kubeloop"
LABEL_TRAININGJOB = "kubeloop.io/trainingjob"
LABEL_FEEDBACKDATASET = "kubeloop.io/feedbackdataset"
LABEL_GENERATION = "kubeloop.io/generation"
LABEL_SERVEDMODEL = "kubeloop.io/servedmodel"
LABEL_TRACK = "kubeloop.io/track"

_NOT_DNS = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class Owner:
    """The object that owns a child, as a controller ownerReference names it."""

    api_version: str
    kind: str
    name: str
    uid: str

    def reference(self) -> dict[str, Any]:
        """The controller ownerReference: the child is garbage-collected with its owner."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Owner:
        """The owner described by an object's apiVersion, kind and metadata."""
        metadata = body.get("metadata", {})
        return cls(
            str(body.get("apiVersion", "")),
            str(body.get("kind", "")),
            str(metadata.get("name", "")),
            str(metadata.get("uid", "")),
        )


@dataclass(frozen=True)
class Event:
    """Something a person watching the object should hear about.

    The operator posts it as a Kubernetes Event; the local mode logs it.
    """

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def child_name(name: str, suffix: str = "", max_length: int = 63) -> str:
    """A deterministic DNS-1123 label for a child of `name`: `name` + `suffix` when it fits.

    Longer names are cut and end in a hash of the full name, so two long names never collide
    and the same owner always gets the same child name.
    """
    full = f"{name}{suffix}"
    base = _NOT_DNS.sub("-", full.lower()).strip("-") or "x"
    if base == full and len(full) <= max_length:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    head = base[: max_length - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}"


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC, as Kubernetes writes timestamps."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    """The moment an RFC 3339 timestamp names, or None when there is none."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`; empty when they are equal."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        previous = old.get(key)
        if isinstance(value, Mapping) and isinstance(previous, Mapping):
            nested = merge_patch(previous, value)
            if nested:
                patch[key] = nested
        elif key not in old or previous != value:
            patch[key] = value
    return patch


def is_subset(desired: Any, current: Any) -> bool:
    """Whether `current` already holds everything in `desired` (dicts may hold more keys;
    a None in `desired` means the key must be absent, as in a merge patch).

    Lists must match item by item, so a server that adds defaults inside a list item (a
    container's terminationMessagePolicy, say) does not make the list look different.
    """
    if isinstance(desired, Mapping):
        return isinstance(current, Mapping) and all(
            current.get(key) is None
            if value is None
            else key in current and is_subset(value, current[key])
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(current, list)
            and len(desired) == len(current)
            and all(is_subset(d, c) for d, c in zip(desired, current, strict=True))
        )
    return bool(desired == current)


_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def key_problems(key: str, where: str) -> list[str]:
    """Why `key` is not a valid label or annotation key ([prefix/]name), if it is not."""
    prefix, _, name = key.rpartition("/")
    problems = []
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        problems.append(f"{where}: key {key!r} has a prefix that is not a DNS subdomain")
    if len(name) > 63 or not _QUALIFIED_NAME.match(name):
        problems.append(
            f"{where}: key {key!r} must be at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit (optionally after a DNS prefix and '/')"
        )
    return problems


def label_problems(labels: Mapping[str, str], where: str) -> list[str]:
    """Why `labels` would be refused by the API server in a child's metadata."""
    problems = []
    for key, value in labels.items():
        problems += key_problems(key, where)
        if value and (len(value) > 63 or not _QUALIFIED_NAME.match(value)):
            problems.append(
                f"{where}: value {value!r} of {key!r} must be at most 63 letters, digits, '-', "
                "'_' or '.', starting and ending with a letter or digit"
            )
    return problems


def is_dns_subdomain(name: str) -> bool:
    """Whether `name` can name a Kubernetes object (DNS-1123 subdomain)."""
    return len(name) <= 253 and bool(_DNS_SUBDOMAIN.match(name))


def without_nulls(value: Any) -> Any:
    """`value` with every None-valued key removed, as an object to create must be."""
    if isinstance(value, Mapping):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


StatusT = TypeVar("StatusT", bound=BaseModel)
logger = logging.getLogger(__name__)


def field_names(model: type[BaseModel]) -> set[str]:
    return {f.alias or n for n, f in model.model_fields.items()} | set(model.model_fields)


def read_status(model: type[StatusT], body: dict[str, Any]) -> StatusT:
    """The object's status as `model`, ignoring keys the model does not know (kopf's own).

    A status that no longer parses (edited by hand, say) starts over rather than blocking.
    """
    raw = body.get("status") or {}
    known = field_names(model)
    try:
        return model.model_validate({k: v for k, v in raw.items() if k in known})
    except ValidationError as error:
        logger.warning("ignoring an unreadable status of %s: %s", body.get("metadata"), error)
        return model()


def spec_body(body: dict[str, Any]) -> dict[str, Any]:
    """The parts of a custom object the API models read (no status)."""
    return {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in body}


ResourceT = TypeVar("ResourceT", bound=CustomResource)


def parse(
    resource: type[ResourceT], body: dict[str, Any], problems_of: Callable[[ResourceT], list[str]]
) -> tuple[ResourceT | None, list[str]]:
    """The object in `body` as `resource`, and what is wrong with it: the schema's and the
    models' errors (and then no object), else what `problems_of` finds in the parsed one."""
    problems = validation.model_errors(body)
    if problems:
        return None, problems
    parsed = resource.model_validate(spec_body(body))
    return parsed, problems_of(parsed)


def generation(body: dict[str, Any]) -> int:
    return int(body.get("metadata", {}).get("generation") or 0)
