"""The Helm chart rendered as a release would install it (helm-python-sdk), as plain dicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

CHART = Path(__file__).resolve().parents[1] / "helm" / "kubeloop"
RELEASE = "kubeloop"
RELEASE_NAMESPACE = "kubeloop-system"


def render(
    values: dict[str, Any], name: str = RELEASE, namespace: str = RELEASE_NAMESPACE
) -> list[dict[str, Any]]:
    """The chart's objects (NOTES.txt left out) for an install of release `name`."""
    chart = helm.Chart.load(CHART)
    rendered = chart.render(values, name=name, namespace=namespace, is_install=True)
    documents: list[dict[str, Any]] = []
    for path, text in rendered.items():
        if path.endswith(".txt"):
            continue
        documents.extend(d for d in yaml.safe_load_all(text) if d)
    return documents


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


CLUSTER = "(cluster)"
"""Scope of what a ClusterRoleBinding grants; otherwise a scope is a namespace."""

Rule = tuple[str, str, str]
"""(API group, resource or resource/subresource, verb)."""


def granted(documents: list[dict[str, Any]], account: str, namespace: str) -> dict[str, set[Rule]]:
    """scope -> the rules the rendered chart binds to ServiceAccount `namespace`/`account`.

    Fails on a rule with a wildcard or anything but apiGroups/resources/verbs, on a binding
    to another subject, and on a role bound to nobody.
    """
    roles = {
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d.get("rules") or []
        for d in documents
        if d["kind"] in ("ClusterRole", "Role")
    }
    scopes: dict[str, set[Rule]] = {}
    for binding in (d for d in documents if d["kind"] in ("ClusterRoleBinding", "RoleBinding")):
        subject = {"kind": "ServiceAccount", "name": account, "namespace": namespace}
        assert binding["subjects"] == [subject]
        where = binding["metadata"].get("namespace")
        ref = binding["roleRef"]
        rules = roles.pop((ref["kind"], where if ref["kind"] == "Role" else None, ref["name"]))
        scope = CLUSTER if binding["kind"] == "ClusterRoleBinding" else where
        for rule in rules:
            assert set(rule) == {"apiGroups", "resources", "verbs"}, rule
            expanded = {
                (g, r, v)
                for g in rule["apiGroups"]
                for r in rule["resources"]
                for v in rule["verbs"]
            }
            assert not any("*" in part for grant in expanded for part in grant), rule
            scopes.setdefault(scope, set()).update(expanded)
    assert roles == {}, f"roles bound to nobody: {sorted(roles)}"
    return scopes
