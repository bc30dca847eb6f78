"""kubeloop's objects on one machine: `<state>/objects.json`, written through on every change.

What the API server gives an object, this gives it too: a uid (the trainer's "already
registered by an earlier attempt" check relies on it), a generation that moves with the spec,
a creation time. Events are printed. Every write replaces the file atomically, so a killed
`kubeloop up` leaves the objects as the last completed write left them.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kubeloop.api import validation
from kubeloop.api.common import ApiModel
from kubeloop.api.times import format_time, utc_now
from kubeloop.local import files
from kubeloop.reconcile.common import spec_body
from kubeloop.reconcile.ports import Body, Event

Key = tuple[str, str, str]
"""(kind, namespace, name)."""

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class InvalidManifest(ValueError):
    """A manifest the API server would refuse; the message names every problem."""


def key_of(body: Body) -> Key:
    metadata = body.get("metadata") or {}
    return (str(body.get("kind")), str(metadata.get("namespace") or "default"), metadata["name"])


def path_inside(root: Path, *parts: str) -> Path:
    """`root/parts...`, refused (ValueError) unless it stays inside `root`: a name from a
    manifest never writes elsewhere."""
    for part in parts:
        if not _DNS_SUBDOMAIN.match(part) or len(part) > 253:
            raise ValueError(f"{part!r} is not a DNS-1123 name; it cannot name a local file")
    path = root.joinpath(*parts).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"{'/'.join(parts)!r} leaves {root}")
    return path


class LocalObjects:
    """The objects `kubeloop up` reconciles, as the operator's API server would keep them."""

    def __init__(self, state_dir: Path, say: Callable[[str], None] = print) -> None:
        self._file = state_dir / "objects.json"
        self._say = say
        self.items: dict[Key, Body] = {}
        if self._file.exists():
            for body in json.loads(self._file.read_text()):
                self.items[key_of(body)] = body

    # --- what a user does: kubectl apply ---------------------------------------------------

    def apply(self, manifest: Body) -> str:
        """Create or update an object, as `kubectl apply` does; InvalidManifest when refused."""
        errors = validation.schema_errors(manifest)
        metadata = manifest.get("metadata") if isinstance(manifest.get("metadata"), dict) else {}
        name = metadata.get("name") if isinstance(metadata, dict) else None
        if isinstance(name, str) and not _DNS_SUBDOMAIN.match(name):
            errors = [*errors, f"metadata.name: {name!r} is not a DNS-1123 subdomain name"]
        if errors:
            raise InvalidManifest(f"{manifest.get('kind')}/{name}: " + "; ".join(errors))
        body = json.loads(json.dumps(spec_body(manifest)))
        body["metadata"].setdefault("namespace", "default")
        key = key_of(body)
        old = self.items.get(key)
        if old is None:
            body["metadata"].update(
                uid=str(uuid.uuid4()), generation=1, creationTimestamp=format_time(utc_now())
            )
        else:
            kept = {
                k: old["metadata"][k] for k in ("uid", "creationTimestamp") if k in old["metadata"]
            }
            generation = int(old["metadata"].get("generation", 1))
            if old.get("spec") != body.get("spec"):
                generation += 1
            body["metadata"].update(kept, generation=generation)
            body["status"] = old.get("status", {})
        self.items[key] = body
        self._save()
        return "configured" if old is not None else "created"

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        found = self.items.pop((kind, namespace, name), None) is not None
        self._save()
        return found

    # --- the reconciles' port (kubeloop.reconcile.ports.Objects) -------------------------------

    def get(self, kind: str, namespace: str, name: str) -> Body | None:
        found = self.items.get((kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def create(self, manifest: Body, owner: Body) -> bool:
        if key_of(manifest) in self.items:
            return False
        owner_metadata = owner.get("metadata") or {}
        reference = {
            "apiVersion": owner.get("apiVersion"),
            "kind": owner.get("kind"),
            "name": owner_metadata.get("name"),
            "uid": owner_metadata.get("uid"),
            "controller": True,
        }
        child = copy.deepcopy(manifest)
        child["metadata"]["ownerReferences"] = [reference]
        self.apply(child)
        return True

    def write_status(self, body: Body, status: ApiModel) -> None:
        stored = self.items.get(key_of(body))
        if stored is None:
            return  # deleted meanwhile
        stored["status"] = status.to_wire()
        self._save()

    def emit(self, body: Body, events: Sequence[Event]) -> None:
        for event in events:
            mark = "!" if event.type == "Warning" else "-"
            self._say(f"{mark} {body['kind']}/{body['metadata']['name']}: {event.message}")

    # --- reading -------------------------------------------------------------------------

    def of_kind(self, kind: str) -> list[Body]:
        """Copies of the objects of `kind`, in the order they were created."""
        return [copy.deepcopy(b) for k, b in self.items.items() if k[0] == kind]

    def _save(self) -> None:
        files.write_json(self._file, list(self.items.values()), indent=1)


def status_of(body: Body | None) -> dict[str, Any]:
    return dict((body or {}).get("status") or {})
