"""What the operator's runtime remembers of the objects it read and wrote: whether an event's
body can stand for the object, or the reconcile must read it afresh."""

from __future__ import annotations

from typing import Any

import kubernetes

from kubeloop.kube.client import KubeClient
from kubeloop.kube.runtime import Runtime
from kubeloop.settings import Settings


def at(version: str) -> dict[str, Any]:
    return {"metadata": {"name": "tj", "namespace": "ns", "resourceVersion": version}}


def test_a_body_stands_for_the_object_unless_this_process_knows_another_version() -> None:
    rt = Runtime(Settings(), KubeClient(kubernetes.client.ApiClient()))
    where = ("TrainingJob", "ns", "tj")
    assert rt.is_current(*where, at("4")), "nothing known: the event's body is the news"
    rt.saw_version(*where, "5")
    assert rt.is_current(*where, at("5"))
    assert not rt.is_current(*where, at("4")), "older than what this process wrote"
    assert not rt.is_current(*where, at("6")), "someone wrote since: read it again"
    rt.saw_version(*where, None)  # a write that may or may not have landed
    assert not rt.is_current(*where, at("5"))
    assert rt.is_current("TrainingJob", "ns", "other", at("5")), "per object"
    rt.forget(*where)
    assert rt.is_current(*where, at("4"))
