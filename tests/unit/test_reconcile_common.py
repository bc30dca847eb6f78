"""Shared reconcile helpers: merge patches, subset checks, child names, owners, times."""

from __future__ import annotations

from datetime import UTC, datetime

from kubeloop.reconcile.common import (
    Owner,
    child_name,
    format_time,
    is_subset,
    label_problems,
    merge_patch,
    parse_time,
    without_nulls,
)


def test_merge_patch_sets_changes_and_removes_what_is_gone() -> None:
    old = {"phase": "Running", "gate": {"verdict": "Failed", "sliceDeltas": {"a": -0.1}}, "x": 1}
    new = {"phase": "Running", "gate": {"verdict": "Passed", "sliceDeltas": {"b": 0.1}}}
    assert merge_patch(old, new) == {
        "x": None,
        "gate": {"verdict": "Passed", "sliceDeltas": {"a": None, "b": 0.1}},
    }
    assert merge_patch(new, new) == {}
    assert merge_patch({"l": [1, 2]}, {"l": [1]}) == {"l": [1]}


def test_is_subset_ignores_server_defaults_and_reads_none_as_absent() -> None:
    desired = {"spec": {"containers": [{"name": "c", "image": "i"}], "canary": None}}
    current = {
        "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicy": "Always"}]},
        "status": {},
    }
    assert is_subset(desired, current)
    assert not is_subset(desired, {"spec": {**current["spec"], "canary": 10}})
    assert not is_subset({"spec": {"containers": [{"image": "j"}]}}, current)
    assert not is_subset({"a": [1, 2]}, {"a": [1]})
    assert without_nulls(desired) == {"spec": {"containers": [{"name": "c", "image": "i"}]}}


def test_child_names() -> None:
    assert child_name("digits", "-predictor") == "digits-predictor"
    long = child_name("x" * 80)
    assert len(long) == 63
    assert long == child_name("x" * 80)
    assert child_name("x" * 80) != child_name("x" * 81)
    assert len(child_name("digits" * 10, max_length=45)) == 45


def test_owner_reference_is_a_controller() -> None:
    body = {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "tj", "uid": "u"},
    }
    reference = Owner.of(body).reference()
    assert reference == {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "TrainingJob",
        "name": "tj",
        "uid": "u",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_times_round_trip() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert format_time(moment) == "2026-01-02T03:04:05Z"
    assert parse_time("2026-01-02T03:04:05Z") == moment
    assert parse_time(None) is None


def test_label_problems() -> None:
    assert label_problems({"kueue.x-k8s.io/queue-name": "gpu", "a": ""}, "l") == []
    assert len(label_problems({"-bad": "v", "ok": "-bad-"}, "l")) == 2
